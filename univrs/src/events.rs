//! Reading the Events about one object, newest first: for the MCP tool `workload_get` and the
//! dashboard's detail pages.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};

/// When an Event was last seen: its series' last observation, else its last timestamp, else
/// its event time (events.k8s.io Events carry the first; core ones the second).
pub fn last_seen(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
}

/// How many times an Event happened.
pub fn count(e: &Event) -> Option<i32> {
    e.series.as_ref().and_then(|s| s.count).or(e.count)
}

/// The Events about the object `uid` (in `namespace`, or in every namespace for a
/// cluster-scoped one), newest first, at most `limit`.
pub async fn about(
    client: &kube::Client,
    namespace: Option<&str>,
    uid: &str,
    limit: usize,
) -> Result<Vec<Event>, kube::Error> {
    let api: Api<Event> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut events = api
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await?
        .items;
    events.sort_by_key(|e| std::cmp::Reverse(last_seen(e)));
    events.truncate(limit);
    Ok(events)
}
