//! The dashboard's routes: the embedded page, its data (`/api/view`, `/api/stream`), a
//! resource's Events, and an instance's log through its node server (`crate::node_logs`, as
//! `univrs logs` reads it, with the dashboard's own credentials).

use super::state::Dashboard;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// How long changes are gathered before a view is pushed (a reconcile touches several
/// objects at once, and usage is paid every few seconds: one frame for them all), and so the
/// most frames a page gets: one a second.
const COALESCE: Duration = Duration::from_secs(1);
/// The most Events a detail page shows.
const MAX_EVENTS: usize = 50;

/// The page's scripts and styles come only from this server; nothing is framed or inlined.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The routes of `dashboard`.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    let api = Router::new()
        .route("/api/view", get(view))
        .route("/api/stream", get(stream))
        .route("/api/events", get(events))
        .route("/api/logs", get(logs))
        .layer(middleware::from_fn_with_state(
            dashboard.clone(),
            require_token,
        ));
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .merge(api)
        .layer(middleware::from_fn_with_state(
            dashboard.clone(),
            check_host,
        ))
        .layer(middleware::from_fn(security_headers))
        .with_state(dashboard)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A JSON error `{"error": …}` with `code`.
fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The token may be in the page's URL once: never pass it on.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// On loopback, only requests addressed to loopback names (DNS rebinding would send another
/// site's name).
async fn check_host(State(d): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    if let Some(allowed) = &d.allowed_hosts {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !allowed.iter().any(|a| a == host) {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                format!("this dashboard answers only to {}", allowed.join(", ")),
            );
        }
    }
    next.run(req).await
}

async fn require_token(State(d): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    match &d.token {
        Some(t) if !t.authorizes(req.headers()) => {
            tracing::info!(path = %req.uri().path(), "refused a request without the right token");
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "send the dashboard's token as Authorization: Bearer <token> (the page asks for it)",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"univrs-dashboard\""),
            );
            r
        }
        _ => next.run(req).await,
    }
}

async fn view(State(d): State<Arc<Dashboard>>) -> Response {
    axum::Json(d.view()).into_response()
}

/// The view at once, then again whenever it changes (but for its time).
async fn stream(
    State(d): State<Arc<Dashboard>>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let changes = d.changes.clone();
    let state = (d, changes, None::<serde_json::Value>);
    let frames = futures::stream::unfold(state, |(d, mut changes, last)| async move {
        loop {
            if last.is_some() {
                changes.changed().await.ok()?;
                tokio::time::sleep(COALESCE).await;
                changes.borrow_and_update();
            }
            let mut v = serde_json::to_value(d.view()).ok()?;
            let at = v["generatedAt"].take();
            if last.as_ref() == Some(&v) {
                continue;
            }
            let mut frame = v.clone();
            frame["generatedAt"] = at;
            let event = Event::default().event("view").data(frame.to_string());
            return Some((Ok(event), (d, changes, Some(v))));
        }
    });
    Sse::new(frames).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Which resource's Events.
#[derive(serde::Deserialize)]
struct EventsQuery {
    kind: String,
    namespace: Option<String>,
    name: String,
}

async fn events(State(d): State<Arc<Dashboard>>, Query(q): Query<EventsQuery>) -> Response {
    // The object's uid from the caches: Events of an earlier object of the same name are not
    // this one's.
    let ns = q.namespace.clone().unwrap_or_default();
    let uid = match q.kind.as_str() {
        "Workload" => d
            .workloads
            .get(&ObjectRef::new(&q.name).within(&ns))
            .and_then(|o| o.uid()),
        "Node" => d.nodes.get(&ObjectRef::new(&q.name)).and_then(|o| o.uid()),
        "CreditLine" => d.lines.get(&ObjectRef::new(&q.name)).and_then(|o| o.uid()),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "kind is one of Workload, Node, CreditLine",
            );
        }
    };
    let Some(uid) = uid else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no {} {} is known", q.kind, q.name),
        );
    };
    let namespace = (q.kind == "Workload").then_some(ns.as_str());
    let list = match crate::events::about(&d.client, namespace, &uid, MAX_EVENTS).await {
        Ok(l) => l,
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "the dashboard's credentials may not list Events: {}",
                    s.message
                ),
            );
        }
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("listing Events: {e}")),
    };
    let events: Vec<serde_json::Value> = list
        .iter()
        .map(|e| {
            let reporter = e
                .reporting_component
                .clone()
                .filter(|r| !r.is_empty())
                .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()));
            serde_json::json!({
                "type": e.type_,
                "reason": e.reason,
                "note": e.message,
                "count": crate::events::count(e).unwrap_or(1),
                "lastSeen": crate::events::last_seen(e).map(|t| t.to_string()),
                "reporter": reporter,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "events": events })).into_response()
}

/// Which log, as `univrs logs` takes it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogsQuery {
    namespace: String,
    workload: String,
    instance: Option<u32>,
    container: Option<String>,
    #[serde(default)]
    follow: bool,
    tail_lines: Option<usize>,
}

async fn logs(
    State(d): State<Arc<Dashboard>>,
    _headers: HeaderMap,
    Query(q): Query<LogsQuery>,
) -> Response {
    use crate::node_logs::LogError;
    let req = crate::node_logs::LogRequest {
        namespace: q.namespace,
        workload: q.workload,
        instance: q.instance,
        container: q.container,
        follow: q.follow,
        tail_lines: q.tail_lines,
    };
    let log = match crate::node_logs::open(&d.client, &d.credentials, &req).await {
        Ok(l) => l,
        Err(e) => {
            let code = match &e {
                LogError::NotFound(_) => StatusCode::NOT_FOUND,
                LogError::Forbidden(_) => StatusCode::FORBIDDEN,
                // Not the page's token that was refused: the dashboard's own credentials.
                LogError::Unauthenticated(_)
                | LogError::Credentials(_)
                | LogError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            };
            return error(code, e.to_string());
        }
    };
    let chunks = futures::stream::unfold(log, |mut log| async move {
        log.next()
            .await
            .map(|c| (c.map_err(|e| std::io::Error::other(e.to_string())), log))
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(chunks),
    )
        .into_response()
}
