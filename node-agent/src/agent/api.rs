//! The agent's local HTTP API: health, metrics, its instances, credit, reputation, container
//! logs, a WebSocket stream of instance changes, and one endpoint that acts: publishing a
//! signed credit transfer from this node over the mesh.
//!
//! Logs and credit are nobody else's business: by default the API listens on loopback only.
//! On any other address it requires TLS and a bearer token (`--api-tls-cert/--api-tls-key`,
//! `--api-token-file`); with a token file, every `/api/…` request needs the token wherever it
//! listens. `/healthz` and `/metrics` stay open. An endpoint that changes state (signs with
//! the node's key) is served only when the agent has both TLS and a token, even on loopback:
//! any local process can reach loopback.

use super::instances::reports::{InstanceReport, Reports};
use super::peers::cluster_view::ClusterView;
use super::peers::heard::Heard;
use crate::runtime::RuntimeClient;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use univrs_api::account::Account;
use univrs_api::gossip::{GossipBody, SignedTransfer};
use univrs_api::identity::NodeIdentity;
use univrs_api::ledger::Transfer;
use univrs_api::resources::creditline::CreditLine;
use univrs_api::resources::node::Node;
use univrs_api::resources::node::{PeerConnection, Reachability};
use univrs_api::resources::vouch::Vouch;
use univrs_io::metrics::Sampled;
use univrs_io::token::Token;

/// What the API serves from.
pub struct ApiState {
    /// This node's name.
    pub node: String,
    /// Its PeerId.
    pub peer_id: String,
    /// Its DID.
    pub did: String,
    /// The Kubernetes client (credit, reputation).
    pub client: kube::Client,
    /// The container runtime (logs).
    pub runtime: RuntimeClient,
    /// The instances' reports.
    pub reports: Reports,
    /// The bearer token, if one is required.
    pub token: Option<Token>,
    /// When the agent started.
    pub started: Instant,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: AtomicU64,
    /// The mesh (peers, gossip).
    pub mesh: crate::mesh::MeshHandle,
    /// The node's key, which signs the transfers it publishes.
    pub identity: NodeIdentity,
    /// Whether the API is served over TLS.
    pub tls: bool,
    /// Vouches and transfers heard over gossip.
    pub heard: Heard,
    /// The cached Nodes and Vouches.
    pub cluster: ClusterView,
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/peers", get(peers))
        .route("/api/credits", get(credits))
        .route("/api/credits/lines", get(credit_lines))
        .route("/api/credits/transfers", post(post_transfer))
        .route("/api/reputation", get(reputation))
        .route("/api/containers/{id}/logs", get(logs))
        .route("/api/events", get(events))
        .with_state(state)
}

/// An API error: a status and a message saying what to do.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({"error": self.1}))).into_response()
    }
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    // Compared by digest in constant time: neither the token nor its length leaks.
    if token.authorizes(headers) {
        Ok(())
    } else {
        state.unauthorized.fetch_add(1, Ordering::Relaxed);
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "send the agent's API token as `Authorization: Bearer <token>` (see --api-token-file)"
                .into(),
        ))
    }
}

fn report_json(id: &str, r: &InstanceReport) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "namespace": r.namespace,
        "workload": r.workload,
        "instance": r.instance,
        "phase": r.phase,
        "ready": r.ready,
        "restarts": r.restarts,
        "startedAt": r.started_at,
        "message": r.message,
        "usage": r.usage,
        "containers": r.containers,
        "ip": r.ip,
    })
}

async fn status(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&s, &headers)?;
    let instances: Vec<_> = s
        .reports
        .snapshot()
        .iter()
        .map(|(id, r)| report_json(id, r))
        .collect();
    Ok(Json(serde_json::json!({
        "node": s.node,
        "peerId": s.peer_id,
        "did": s.did,
        "uptimeSeconds": s.started.elapsed().as_secs(),
        "instances": instances,
    })))
}

async fn peers(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&s, &headers)?;
    let unavailable =
        |e: crate::mesh::MeshError| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let peers = s.mesh.peers().await.map_err(unavailable)?;
    let stats = s.mesh.stats().await.map_err(unavailable)?;
    let peers: Vec<_> = peers
        .iter()
        .map(|p| {
            serde_json::json!({
                "peerId": p.peer_id.to_string(),
                "addresses": p.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "latencyMs": p.latency.map(|l| l.as_secs_f64() * 1000.0),
                "score": p.score,
            })
        })
        .collect();
    let invalid: serde_json::Map<String, serde_json::Value> = stats
        .invalid
        .iter()
        .map(|(k, v)| (format!("{k:?}"), (*v).into()))
        .collect();
    Ok(Json(serde_json::json!({
        "peerId": stats.peer_id.to_string(),
        "listen": stats.listen_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "connected": stats.connected_peers,
        "medianLatencyMs": stats.median_latency.map(|l| l.as_secs_f64() * 1000.0),
        "received": stats.received,
        "published": stats.published,
        "invalid": invalid,
        "peers": peers,
    })))
}

async fn get_node(s: &ApiState) -> Result<Node, ApiError> {
    Api::<Node>::all(s.client.clone())
        .get(&s.node)
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_GATEWAY,
                format!("reading Node {}: {e}", s.node),
            )
        })
}

async fn credits(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&s, &headers)?;
    let node = get_node(&s).await?;
    let heard: Vec<_> = s
        .heard
        .transfers()
        .iter()
        .map(|h| {
            let t = &h.transfer.transfer;
            serde_json::json!({
                "id": t.id,
                "from": t.from,
                "to": t.to,
                "amount": t.amount,
                "payer": h.transfer.payer,
                "source": h.source,
                "heardAt": h.heard_at.to_string(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "account": String::from(Account::node(&s.node)),
        // The controller's ledger (CreditLine status): the truth.
        "balance": node.status.and_then(|st| st.credit_balance).unwrap_or(0),
        // Signed by their payers and checked against the cluster, but applied to no line.
        "transfersHeard": heard,
    })))
}

/// The body of `POST /api/credits/transfers`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    /// The account paid: `node/<name>` or `namespace/<name>`.
    to: String,
    /// Milli-credits, > 0.
    amount: i64,
    /// The transfer id [default: made from the node name and the time].
    #[serde(default)]
    id: Option<String>,
}

/// The longest transfer id accepted.
const MAX_TRANSFER_ID: usize = 253;

/// Signs a transfer from this node's account with its key and publishes it on
/// credit/transaction. Served only over TLS with a token.
async fn post_transfer(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if !(s.tls && s.token.is_some()) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "POST /api/credits/transfers signs with the node's key, so it is served only over TLS with a token: start the agent with --api-tls-cert, --api-tls-key and --api-token-file".into(),
        ));
    }
    authorize(&s, &headers)?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let req: TransferRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body must be JSON {{\"to\": \"node/<name>\", \"amount\": <milli-credits>, \"id\": optional}}: {e}"
        ))
    })?;
    let to: Account = req.to.parse().map_err(|e| bad(format!("to: {e}")))?;
    let from = Account::node(&s.node);
    if req.amount <= 0 {
        return Err(bad(format!(
            "amount: must be a positive number of milli-credits, got {}",
            req.amount
        )));
    }
    if to == from {
        return Err(bad(format!("to: {to} is this node's own account")));
    }
    let id = match req.id {
        Some(id) if id.is_empty() || id.len() > MAX_TRANSFER_ID => {
            return Err(bad(format!(
                "id: must be 1 to {MAX_TRANSFER_ID} characters, got {}",
                id.len()
            )));
        }
        Some(id) => id,
        None => format!("{}-{}", s.node, Timestamp::now().as_nanosecond()),
    };
    let signed = SignedTransfer::sign(
        &s.identity,
        Transfer {
            id,
            from,
            to,
            amount: req.amount,
        },
    );
    let body = GossipBody::CreditTransaction(signed.clone());
    // Peers check the payer against the Node the account names; if our own cache does not
    // show that yet, they would reject it and penalize this node.
    if let Err(reason) = s.cluster.check_now(&body) {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the cluster does not show Node {} with this agent's DID yet ({reason:?}); try again shortly",
                s.node
            ),
        ));
    }
    s.mesh.publish(body).await.map_err(|e| match e {
        crate::mesh::MeshError::NoPeers { .. } => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{e}; try again once /api/peers shows connected peers"),
        ),
        e => ApiError(StatusCode::BAD_GATEWAY, e.to_string()),
    })?;
    let t = &signed.transfer;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "id": t.id,
            "from": t.from,
            "to": t.to,
            "amount": t.amount,
            "payer": signed.payer,
            "signature": signed.signature,
            "published": univrs_api::gossip::Topic::CreditTransaction.as_str(),
            "note": "published to peers over gossip; balances change only through the CreditLines' ledger",
        })),
    ))
}

async fn credit_lines(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&s, &headers)?;
    let me = Account::node(&s.node);
    let lines = Api::<CreditLine>::all(s.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("listing CreditLines: {e}")))?;
    let mine: Vec<_> = lines
        .items
        .iter()
        .filter(|l| l.spec.creditor == me || l.spec.debtor == me)
        .map(|l| {
            serde_json::json!({
                "name": l.metadata.name,
                "creditor": l.spec.creditor,
                "debtor": l.spec.debtor,
                "limit": l.spec.limit,
                "balance": l.status.as_ref().map_or(0, |st| st.balance),
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({"account": String::from(me), "lines": mine}),
    ))
}

async fn reputation(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&s, &headers)?;
    let node = get_node(&s).await?;
    let vouches = Api::<Vouch>::all(s.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("listing Vouches: {e}")))?;
    let about_me: Vec<_> = vouches
        .items
        .iter()
        .filter(|v| {
            v.spec.subject == s.node || v.spec.subject == s.peer_id || v.spec.subject == s.did
        })
        .map(|v| {
            serde_json::json!({
                "name": v.metadata.name,
                "voucher": v.spec.voucher,
                "weight": v.spec.weight,
                "reason": v.spec.reason,
                "status": v.status,
            })
        })
        .collect();
    let st = node.status.unwrap_or_default();
    Ok(Json(serde_json::json!({
        "node": s.node,
        "reputation": st.reputation,
        "serviceRecord": st.service_record,
        "septal": st.septal,
        "vouches": about_me,
        "heard": heard_vouches(&s),
    })))
}

/// The vouches heard over gossip, grouped by subject, each with the Vouch object that holds
/// the same signed spec, if the API has one.
fn heard_vouches(s: &ApiState) -> Vec<serde_json::Value> {
    let mut by_subject: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        Default::default();
    for h in s.heard.vouches(Timestamp::now()) {
        let object = s.cluster.vouch_object(&h.spec);
        by_subject
            .entry(h.spec.subject.clone())
            .or_default()
            .push(serde_json::json!({
                "voucher": h.spec.voucher,
                "voucherNode": s.cluster.node_with_did(&h.spec.voucher),
                "weight": h.spec.weight,
                "reason": h.spec.reason,
                "expiresAt": h.spec.expires_at,
                "source": h.source,
                "firstHeard": h.first_heard.to_string(),
                "lastHeard": h.last_heard.to_string(),
                "times": h.times,
                "inApi": object.is_some(),
                "vouchObject": object,
            }));
    }
    by_subject
        .into_iter()
        .map(|(subject, vouches)| {
            serde_json::json!({
                "subject": s.cluster.node_with_did(&subject),
                "subjectDid": subject,
                "vouches": vouches,
            })
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct TailQuery {
    tail: Option<usize>,
}

async fn logs(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TailQuery>,
) -> Result<String, ApiError> {
    authorize(&s, &headers)?;
    let n = q.tail.unwrap_or(100).min(10_000);
    let rt = s.runtime.clone();
    let lookup = id.clone();
    let result = tokio::task::spawn_blocking(move || rt.logs_tail(&lookup, n))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match result {
        Ok(lines) => Ok(lines.into_iter().map(|l| l + "\n").collect()),
        Err(crate::runtime::RuntimeError::NotFound(_)) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no container {id} on this node; /api/status lists its containers"),
        )),
        Err(e) => Err(ApiError(StatusCode::BAD_REQUEST, e.to_string())),
    }
}

/// Streams every instance report that changes, as JSON text messages.
async fn events(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    Ok(ws.on_upgrade(move |socket| stream_reports(s, socket)))
}

async fn stream_reports(s: Arc<ApiState>, mut socket: WebSocket) {
    let mut rx = s.reports.subscribe();
    let mut gossip = s.mesh.subscribe();
    // First the current state, then changes.
    for (id, r) in s.reports.snapshot() {
        let msg = serde_json::json!({"type": "instance", "instance": report_json(&id, &r)});
        if socket
            .send(Message::Text(msg.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        let next = tokio::select! {
            r = rx.recv() => r,
            g = gossip.recv() => {
                let Ok(m) = g else { continue };
                let msg = serde_json::json!({
                    "type": "gossip",
                    "from": m.source.to_string(),
                    "topic": m.topic.to_string(),
                    "body": m.body,
                    "sentAtMs": m.sent_at_ms,
                });
                if socket.send(Message::Text(msg.to_string().into())).await.is_err() {
                    return;
                }
                continue;
            }
        };
        match next {
            Ok((id, report)) => {
                let msg = match report {
                    Some(r) => {
                        serde_json::json!({"type": "instance", "instance": report_json(&id, &r)})
                    }
                    None => serde_json::json!({"type": "removed", "id": id}),
                };
                if socket
                    .send(Message::Text(msg.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                let msg = serde_json::json!({"type": "lagged", "missed": n});
                if socket
                    .send(Message::Text(msg.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// `/metrics`: figures read at scrape time from where they are kept (the reports, the mesh,
/// what was heard), so nothing is counted twice. Counters are named without `_total`, which
/// the encoder appends: scrapers see `univrs_agent_api_unauthorized_total` and so on.
async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    let reports = s.reports.snapshot();
    let mut by_phase = std::collections::BTreeMap::<String, i64>::new();
    let mut restarts = 0i64;
    let mut ready = 0i64;
    for r in reports.values() {
        *by_phase.entry(format!("{:?}", r.phase)).or_default() += 1;
        restarts += i64::from(r.restarts);
        ready += i64::from(r.ready);
    }
    let mut m = Sampled::default();
    const INSTANCES: &str = "Instances on this node by phase.";
    for (phase, n) in by_phase {
        m.gauge(
            "univrs_agent_instances",
            INSTANCES,
            vec![("phase".into(), phase)],
            n,
        );
    }
    m.gauge(
        "univrs_agent_instances_ready",
        "Instances whose containers all run and pass readiness.",
        vec![],
        ready,
    )
    .gauge(
        "univrs_agent_container_restarts",
        "Container restarts of the instances on this node.",
        vec![],
        restarts,
    )
    .counter(
        "univrs_agent_api_unauthorized",
        "API requests refused for a missing or wrong token.",
        vec![],
        s.unauthorized.load(Ordering::Relaxed),
    );
    if let Ok(st) = s.mesh.stats().await {
        m.gauge(
            "univrs_mesh_peers",
            "Connected mesh peers.",
            vec![],
            st.connected_peers as i64,
        );
        const INVALID: &str = "Gossip messages rejected, by reason (their senders were penalized).";
        m.counter_family("univrs_mesh_invalid_messages", INVALID);
        for (reason, n) in &st.invalid {
            let labels = vec![("reason".into(), format!("{reason:?}"))];
            m.counter("univrs_mesh_invalid_messages", INVALID, labels, *n);
        }
        const IGNORED: &str = "Gossip messages dropped without penalty, by reason.";
        m.counter_family("univrs_mesh_ignored_messages", IGNORED);
        for (reason, n) in &st.ignored {
            let labels = vec![("reason".into(), format!("{reason:?}"))];
            m.counter("univrs_mesh_ignored_messages", IGNORED, labels, *n);
        }
        m.counter(
            "univrs_mesh_messages_received",
            "Gossip messages accepted.",
            vec![],
            st.received,
        );
        const BY_CONNECTION: &str = "Connected mesh peers by how (the best of their connections): Direct, HolePunched or Relayed.";
        for kind in [
            PeerConnection::Direct,
            PeerConnection::HolePunched,
            PeerConnection::Relayed,
        ] {
            let n = st.connected.values().filter(|k| **k == kind).count();
            let labels = vec![("connection".into(), format!("{kind:?}"))];
            m.gauge(
                "univrs_mesh_peers_by_connection",
                BY_CONNECTION,
                labels,
                n as i64,
            );
        }
        const PUNCHES: &str = "Direct connections punched through NAT (DCUtR), by result.";
        for (result, n) in [
            ("succeeded", st.hole_punches),
            ("failed", st.hole_punch_failures),
        ] {
            let labels = vec![("result".into(), result.into())];
            m.counter("univrs_mesh_hole_punches", PUNCHES, labels, n);
        }
        const REACHABLE: &str =
            "Whether peers can dial this node (AutoNAT): 1 for the current state.";
        for state in [
            Reachability::Public,
            Reachability::Private,
            Reachability::Unknown,
        ] {
            let labels = vec![("state".into(), format!("{state:?}"))];
            let on = i64::from(st.reachability == state);
            m.gauge("univrs_mesh_reachability", REACHABLE, labels, on);
        }
        m.gauge(
            "univrs_mesh_relay_reservations",
            "Relays holding a reservation for this node (it is reached through them).",
            vec![],
            st.relays.len() as i64,
        );
    }
    m.gauge(
        "univrs_agent_vouches_heard",
        "Unexpired vouches heard over gossip (a bounded peer-side view).",
        vec![],
        s.heard.vouches(Timestamp::now()).len() as i64,
    )
    .gauge(
        "univrs_agent_transfers_heard",
        "Credit transfers heard over gossip (a bounded peer-side view).",
        vec![],
        s.heard.transfers().len() as i64,
    )
    .gauge(
        "univrs_agent_uptime_seconds",
        "Seconds since the agent started.",
        vec![],
        s.started.elapsed().as_secs() as i64,
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            univrs_io::metrics::CONTENT_TYPE_TEXT,
        )],
        m.encode(),
    )
        .into_response()
}
