//! Caches of cluster objects: every object of one kind, watched into a reflector store, with a
//! counter that ticks on each change: the agent's Workload cache, and the Node and Vouch caches
//! behind the peers' cluster view.

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Watches every object of `api` into a store, counting the changes (a receiver wakes on
/// each); the task runs until aborted.
pub fn watch_all<K>(
    api: Api<K>,
    what: &'static str,
) -> (Store<K>, watch::Receiver<u64>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let (changes, rx) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::warn!("watching {what}: {e}");
            }
            changes.send_modify(|n| *n += 1);
        }
    });
    (store, rx, task)
}
