//! The dashboard's state: the watched caches, their merged change counter, the balances'
//! history, and what the routes need to read logs and check requests.

use super::history::History;
use super::view;
use kube::api::Api;
use kube::runtime::reflector::Store;
use std::sync::Arc;
use tokio::sync::watch;
use univrs_api::{CreditLine, Node, Workload};
use univrs_io::token::Token;
use univrs_node_agent::agent::kube::watch::watch_all;

/// What the dashboard serves from.
pub struct Dashboard {
    pub(super) nodes: Store<Node>,
    pub(super) workloads: Store<Workload>,
    pub(super) lines: Store<CreditLine>,
    pub(super) changes: watch::Receiver<u64>,
    pub(super) history: History,
    pub(super) client: kube::Client,
    pub(super) credentials: crate::node_logs::credentials::Credentials,
    pub(super) server: String,
    pub(super) token: Option<Token>,
    /// On loopback: the Host values accepted (`localhost:PORT` and the like).
    pub(super) allowed_hosts: Option<Vec<String>>,
}

impl Dashboard {
    /// Starts the caches of `client` (whose API server is `server`); `token` is required of
    /// every data request when given; `loopback_port` limits Host headers to loopback names.
    pub fn start(
        client: kube::Client,
        credentials: crate::node_logs::credentials::Credentials,
        server: String,
        token: Option<Token>,
        loopback_port: Option<u16>,
    ) -> Arc<Self> {
        let (nodes, node_changes, _) = watch_all(Api::<Node>::all(client.clone()), "Nodes");
        let (workloads, workload_changes, _) =
            watch_all(Api::<Workload>::all(client.clone()), "Workloads");
        let (lines, line_changes, _) =
            watch_all(Api::<CreditLine>::all(client.clone()), "CreditLines");
        let (tx, changes) = watch::channel(0u64);
        let dashboard = Arc::new(Self {
            nodes,
            workloads,
            lines,
            changes,
            history: History::default(),
            client,
            credentials,
            server,
            token,
            allowed_hosts: loopback_port.map(|p| {
                ["localhost", "127.0.0.1", "[::1]"]
                    .iter()
                    .map(|h| format!("{h}:{p}"))
                    .collect()
            }),
        });
        tokio::spawn(merge_changes(
            Arc::downgrade(&dashboard),
            [node_changes, workload_changes, line_changes],
            tx,
        ));
        dashboard
    }

    /// The view of everything cached now.
    pub fn view(&self) -> view::View {
        let (nodes, workloads, lines) = (
            self.nodes.state(),
            self.workloads.state(),
            self.lines.state(),
        );
        view::build(
            &view::Objects {
                nodes: &nodes,
                workloads: &workloads,
                lines: &lines,
            },
            &self.history,
            &self.server,
            &k8s_openapi::jiff::Timestamp::now().to_string(),
        )
    }
}

/// One counter for the three caches' changes; each change also records the balances.
async fn merge_changes(
    dashboard: std::sync::Weak<Dashboard>,
    mut sources: [watch::Receiver<u64>; 3],
    tx: watch::Sender<u64>,
) {
    loop {
        let [a, b, c] = &mut sources;
        let changed = tokio::select! {
            r = a.changed() => r,
            r = b.changed() => r,
            r = c.changed() => r,
        };
        let Some(d) = dashboard.upgrade() else { return };
        if changed.is_err() {
            return;
        }
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        d.history.record(&view::balances(&d.lines.state()), now);
        tx.send_modify(|n| *n += 1);
    }
}
