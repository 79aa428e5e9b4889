//! `univrs join`: join with a token and the CA's pin, then run the agent as the node itself.

use crate::cli::JoinArgs;
use crate::cmd::agent;
use crate::cmd::controller::{init_tracing, shutdown_signal};
use crate::join::{self, certificate};

/// Joins, prints `joined node=… kubeconfig=…`, then runs the agent with the node's own
/// credentials (renewing them as it goes) unless `--no-start`.
pub fn run(args: JoinArgs) -> anyhow::Result<()> {
    let JoinArgs {
        server,
        token,
        ca_cert_hash,
        no_start,
        agent: agent_args,
    } = args;
    init_tracing(agent_args.log_json);
    let node = agent::node_name(agent_args.node_name.clone())?;
    let data_dir = agent_args.data_dir.clone();
    let cfg = agent::config(agent_args)?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let joined = join::join(&join::Request {
            server: &server,
            token: token.as_deref(),
            ca_cert_hash: &ca_cert_hash,
            data_dir: &data_dir,
            node: &node,
        })
        .await?;
        // The one machine-readable line, for scripts and tests.
        println!(
            "joined node={node} kubeconfig={}",
            joined.kubeconfig.display()
        );
        if no_start {
            return Ok(());
        }
        let renewal = tokio::spawn(certificate::renew_forever(
            joined.client.clone(),
            joined.identity,
            node,
            joined.cert,
        ));
        let outcome = univrs_node_agent::agent::run(joined.client, cfg, shutdown_signal()).await;
        renewal.abort();
        outcome?;
        Ok(())
    })
}
