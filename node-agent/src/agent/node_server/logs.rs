//! An instance's log for an authorized caller: its last lines, then (with `follow`) what the
//! container writes next, across log rotations, until the container leaves the node or the
//! caller hangs up.

use super::super::instances::reports::InstanceReport;
use crate::runtime::{RuntimeClient, RuntimeError};
use axum::body::{Body, Bytes};
use std::time::Duration;
use univrs_api::resources::workload::instance_name;

/// How often a followed log is read for more.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
/// The most one read of a followed log sends at once.
const CHUNK: usize = 64 * 1024;
/// The most lines a tail returns.
pub const MAX_TAIL: usize = 10_000;

/// Which log: the instance (its index, or the first placed here) and the container (its
/// name, or the first).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// The instance's index (the N of `<workload>-N`).
    pub instance: Option<u32>,
    /// The container's name.
    pub container: Option<String>,
    /// Keep sending what the container writes.
    #[serde(default)]
    pub follow: bool,
    /// How many of the last lines to send first [default and most: 10000].
    pub tail_lines: Option<usize>,
}

/// The runtime id of the container `q` names among this node's instances of `namespace/name`.
pub fn find_container(
    reports: &std::collections::BTreeMap<String, InstanceReport>,
    namespace: &str,
    name: &str,
    q: &LogQuery,
) -> Result<String, String> {
    let wanted = q.instance.map(|i| instance_name(name, i));
    let mut mine: Vec<&InstanceReport> = reports
        .values()
        .filter(|r| r.namespace == namespace && r.workload == name)
        .filter(|r| wanted.as_ref().is_none_or(|w| &r.instance == w))
        .collect();
    mine.sort_by(|a, b| a.instance.cmp(&b.instance));
    let Some(report) = mine.first() else {
        return Err(match wanted {
            Some(w) => format!("instance {w} of {namespace}/{name} does not run on this node"),
            None => format!("no instance of {namespace}/{name} runs on this node"),
        });
    };
    match &q.container {
        None => report
            .containers
            .first()
            .cloned()
            .ok_or_else(|| format!("instance {} has no container yet", report.instance)),
        Some(c) => report
            .containers
            .iter()
            // Container ids are `<instance id>.<container name, sanitized>`.
            .find(|id| id.rsplit_once('.').is_some_and(|(_, n)| n == c))
            .cloned()
            .ok_or_else(|| format!("instance {} has no container {c:?}", report.instance)),
    }
}

/// The log of container `id` as a streamed body: the tail, then (following) what comes next.
pub async fn body(runtime: RuntimeClient, id: String, q: &LogQuery) -> Result<Body, RuntimeError> {
    let n = q.tail_lines.unwrap_or(MAX_TAIL).min(MAX_TAIL);
    let (rt, cid) = (runtime.clone(), id.clone());
    let follow = q.follow;
    // The follower starts where the tail ends, so the lines between are neither lost nor
    // repeated (but for a write between the two reads, a few microseconds apart).
    let (tail, follower) = tokio::task::spawn_blocking(move || {
        let tail = rt.logs_tail(&cid, n)?;
        let follower = if follow {
            Some(rt.follow_logs(&cid)?)
        } else {
            None
        };
        Ok::<_, RuntimeError>((tail, follower))
    })
    .await
    .map_err(|e| RuntimeError::Invalid(e.to_string()))??;
    let text: String = tail.into_iter().map(|l| l + "\n").collect();
    let Some(follower) = follower else {
        return Ok(Body::from(text));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(text))).await.is_err() {
            return;
        }
        let mut follower = follower;
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            let (rt, cid) = (runtime.clone(), id.clone());
            // The follower goes to the blocking read and comes back with what it read.
            let read = tokio::task::spawn_blocking(move || {
                let gone = !rt.exists(&cid);
                let bytes = follower.poll(CHUNK);
                (follower, bytes, gone)
            })
            .await;
            let Ok((back, bytes, gone)) = read else {
                return;
            };
            follower = back;
            match bytes {
                Ok(b) if !b.is_empty() => {
                    if tx.send(Ok(Bytes::from(b))).await.is_err() {
                        return; // the caller hung up
                    }
                }
                Ok(_) if gone => return, // the container left the node: the log ends
                Ok(_) => {
                    if tx.is_closed() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn report(ns: &str, wl: &str, instance: &str, containers: &[&str]) -> InstanceReport {
        InstanceReport {
            namespace: ns.into(),
            workload: wl.into(),
            instance: instance.into(),
            phase: univrs_api::resources::workload::InstancePhase::Running,
            ready: true,
            restarts: 0,
            started_at: None,
            message: None,
            usage: univrs_api::resources::workload::InstanceUsage {
                node: "n".into(),
                placed_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                cpu_millicore_seconds: 0,
                memory_mib_seconds: 0,
                gpu_seconds: 0,
            },
            containers: containers.iter().map(|c| c.to_string()).collect(),
            ip: None,
        }
    }

    #[test]
    fn finds_the_named_instance_and_container_of_this_workload_only() {
        let reports = BTreeMap::from([
            (
                "a".to_string(),
                report("shop", "web", "web-1", &["web-1-aa.web", "web-1-aa.side"]),
            ),
            (
                "b".to_string(),
                report("shop", "web", "web-0", &["web-0-bb.web"]),
            ),
            (
                "c".to_string(),
                report("school", "web", "web-2", &["web-2-cc.web"]),
            ),
        ]);
        let q = |instance, container: Option<&str>| LogQuery {
            instance,
            container: container.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(
            find_container(&reports, "shop", "web", &q(None, None)).unwrap(),
            "web-0-bb.web"
        );
        assert_eq!(
            find_container(&reports, "shop", "web", &q(Some(1), Some("side"))).unwrap(),
            "web-1-aa.side"
        );
        let e = find_container(&reports, "shop", "web", &q(Some(2), None)).unwrap_err();
        assert!(
            e.contains("web-2 of shop/web does not run on this node"),
            "{e}"
        );
        let e = find_container(&reports, "shop", "web", &q(Some(1), Some("db"))).unwrap_err();
        assert!(e.contains("no container \"db\""), "{e}");
        assert!(find_container(&reports, "other", "web", &q(None, None)).is_err());
    }
}
