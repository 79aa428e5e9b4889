//! The spare attachment: a network namespace already wired to the bridge, with its address
//! leased, made a moment after each set-up for the next container to take.
//!
//! Making a container's network is the longest step of its start: a helper process makes the
//! namespace (7 to 18 ms on a busy machine), then the bridge plugin and host-local run (12 ms
//! of CPU between them, 20 to 30 ms on a busy machine), beside the container's own creation.
//! A Kubernetes runtime makes a pod's sandbox before its containers; the agent goes one step
//! further and makes the next sandbox before its container is even placed. Taking it is two
//! mount calls and two small files, so a start no longer waits for the plugins.
//!
//! The spare is an attachment like any other, made by the same plugins with the same
//! configuration, under an id of its own (`spare-<ms>`: its `CNI_CONTAINERID`, by which
//! host-local keys its lease). Its record is `attachments/.spare.json`, its namespace
//! `netns/.spare`; no container id starts with a dot. The container that takes it keeps that
//! id for the plugins ([`Record::cni_id`]), so its teardown runs DEL exactly as ADD ran.
//! While it waits the spare is in no policy group: nothing runs in it.
//!
//! A spare survives an agent restart and is taken by the next agent; one whose namespace is
//! gone (a reboot) or that was left half-made (the agent killed meanwhile) is torn down, not
//! taken. Removing the network ([`Cni::remove_bridge`], `univrs reset`) tears it down and
//! makes no other until the next set-up.

use super::attachment::{NetworkState, Record};
use super::error::{NetworkError, io_err};
use super::{CONTAINER_IFNAME, Cni, PortMapping, lock, netns};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The name of the spare's record and namespace (no container id starts with a dot).
pub(super) const SPARE: &str = ".spare";

/// How long after a set-up the next spare is made: out of the way of the start that took the
/// last one (its shim is still busy then).
const SPARE_AFTER: Duration = Duration::from_millis(200);

/// The spare lock: held while the spare is taken, made or removed. Its value is true once
/// the network is being removed (no spare is made after that, until the next set-up). Taken
/// before the ports lock, never after it.
pub(super) type SpareGuard<'a> = MutexGuard<'a, bool>;

impl Cni {
    /// Where the spare's namespace is pinned.
    fn spare_netns(&self) -> PathBuf {
        self.netns_dir().join(SPARE)
    }

    /// The spare's record file.
    fn spare_record(&self) -> PathBuf {
        self.record_path(SPARE)
    }

    /// Takes the spare lock for a set-up: spares may be made again afterwards.
    pub(super) fn lock_spare_for_setup(&self) -> SpareGuard<'_> {
        let mut closing = lock(&self.inner.spare);
        *closing = false;
        closing
    }

    /// The address the spare has or is being given, if there is one (called with the ports
    /// lock held, so a spare being made has saved its record already).
    pub(super) fn spare_address(&self) -> Result<Option<std::net::Ipv4Addr>, NetworkError> {
        Ok(Record::load(&self.spare_record())?.and_then(|r| r.address))
    }

    /// Gives container `id` the spare attachment, if a finished one is there: its namespace is
    /// pinned at the container's path and its record becomes the container's (saved at
    /// `path`), keeping the spare's plugin id and address. With `ports`, portmap is still to
    /// run (the record is not complete yet). Called with the spare and ports locks held
    /// (`_spare`). A spare that cannot be taken is torn down and `None` returned.
    pub(super) fn take_spare(
        &self,
        _spare: &SpareGuard<'_>,
        id: &str,
        group: &str,
        ports: &[PortMapping],
        path: &Path,
    ) -> Result<Option<Record>, NetworkError> {
        let spare_path = self.spare_record();
        let Some(spare) = Record::load(&spare_path)? else {
            return Ok(None);
        };
        let result = spare
            .networks
            .first()
            .filter(|n| n.ifname == CONTAINER_IFNAME)
            .and_then(|n| n.result.clone());
        let netns = self.netns_path(id);
        let taken = match result {
            Some(result) if spare.complete && netns::is_mounted(&spare.netns) => {
                netns::repin(&spare.netns, &netns)
                    .map(|()| result)
                    .map_err(|e| e.to_string())
            }
            _ => Err("it was left unfinished, or its namespace is gone".to_string()),
        };
        let result = match taken {
            Ok(result) => result,
            Err(e) => {
                tracing::debug!("not taking the spare attachment: {e}");
                self.discard_spare(&spare, &spare_path);
                return Ok(None);
            }
        };
        let record = Record {
            container_id: id.to_string(),
            cni_id: Some(spare.cni_id().to_string()),
            group: group.to_string(),
            ports: ports.to_vec(),
            networks: vec![NetworkState {
                ifname: CONTAINER_IFNAME.into(),
                list: self.main_list(!ports.is_empty()),
                // The plugins name the namespace by its path: CHECK compares it.
                result: Some(moved(result, &spare.netns, &netns)),
            }],
            netns,
            address: spare.address,
            complete: ports.is_empty(),
            created_ms: crate::fsutil::now_ms(),
        };
        // Saved before the spare's record goes: a crash in between leaves the lease with
        // two records, and whichever is torn down first releases it (the other's DEL finds
        // nothing left to release).
        record.save(path)?;
        match std::fs::remove_file(&spare_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {}", spare_path.display()))(e)),
        }
        Ok(Some(record))
    }

    /// Tears a spare down (DEL, then its namespace and record); failures are logged, and the
    /// next attempt to make or take a spare tries again.
    fn discard_spare(&self, spare: &Record, path: &Path) {
        if let Err(e) = self.teardown_record(spare, path, None) {
            tracing::warn!(spare = %spare.container_id, "tearing down the spare attachment: {e}");
        }
    }

    /// Makes the next spare on a thread of its own, [`SPARE_AFTER`] from now, unless one is on
    /// its way; none once the network is being removed.
    pub(super) fn replenish_spare(&self) {
        if self.inner.making_spare.swap(true, Ordering::AcqRel) {
            return;
        }
        let cni = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cni-spare".into())
            .spawn(move || {
                std::thread::sleep(SPARE_AFTER);
                let t = std::time::Instant::now();
                match cni.make_spare() {
                    Ok(true) => tracing::debug!(
                        ms = t.elapsed().as_secs_f64() * 1e3,
                        "spare network attachment made"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::debug!("making a spare network attachment: {e}"),
                }
                cni.inner.making_spare.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.inner.making_spare.store(false, Ordering::Release);
        }
    }

    /// Makes the spare unless a finished one is there or the network is being removed;
    /// returns whether it made one. A spare left unfinished is torn down first.
    fn make_spare(&self) -> Result<bool, NetworkError> {
        let closing = lock(&self.inner.spare);
        if *closing {
            return Ok(false);
        }
        let path = self.spare_record();
        if let Some(old) = Record::load(&path)? {
            if old.complete && netns::is_mounted(&old.netns) {
                return Ok(false);
            }
            self.teardown_record(&old, &path, None)?;
        }
        // A namespace without a record: a bare spare of an older agent, or one pinned just
        // before a crash.
        netns::remove(&self.spare_netns())?;
        let mut record = {
            let _ports = lock(&self.inner.ports);
            let id = format!("spare-{}", crate::fsutil::now_ms());
            let record = self.new_record(&id, "", &[], self.spare_netns())?;
            record.save(&path)?;
            record
        };
        let mut started = 0;
        if let Err(e) = self.add(&mut record, &path, &mut started, || {}) {
            if let Err(cleanup) = self.teardown_record(&record, &path, Some(started)) {
                tracing::warn!("undoing a failed spare attachment: {cleanup}");
            }
            return Err(e);
        }
        drop(closing);
        Ok(true)
    }

    /// Tears the spare down, and makes no other until the next set-up.
    pub(super) fn remove_spare(&self) -> Result<(), NetworkError> {
        let mut closing = lock(&self.inner.spare);
        *closing = true;
        let path = self.spare_record();
        if let Some(spare) = Record::load(&path)? {
            self.teardown_record(&spare, &path, None)?;
        }
        netns::remove(&self.spare_netns())?;
        Ok(())
    }
}

/// `result` with the namespace path `from` (each interface's `sandbox`) replaced by `to`.
fn moved(mut result: Value, from: &Path, to: &Path) -> Value {
    let (from, to) = (from.to_string_lossy(), to.to_string_lossy());
    if let Some(interfaces) = result.get_mut("interfaces").and_then(Value::as_array_mut) {
        for sandbox in interfaces.iter_mut().filter_map(|i| i.get_mut("sandbox")) {
            if sandbox.as_str() == Some(from.as_ref()) {
                *sandbox = Value::String(to.to_string());
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_result_names_the_new_namespace_only_where_it_named_the_old() {
        let result = serde_json::json!({
            "interfaces": [
                {"name": "univrs-1a2b3c4d"},
                {"name": "veth1", "sandbox": ""},
                {"name": "eth0", "sandbox": "/run/x/netns/.spare"}
            ],
            "ips": [{"interface": 2, "address": "10.89.3.2/24"}]
        });
        let out = moved(
            result,
            Path::new("/run/x/netns/.spare"),
            Path::new("/run/x/netns/web-0"),
        );
        assert_eq!(out["interfaces"][2]["sandbox"], "/run/x/netns/web-0");
        assert_eq!(out["interfaces"][1]["sandbox"], "");
        assert!(out["interfaces"][0].get("sandbox").is_none());
        assert_eq!(out["ips"][0]["address"], "10.89.3.2/24");
    }
}
