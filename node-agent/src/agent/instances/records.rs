//! What the agent remembers about each instance it runs, on disk, so a restarted agent
//! re-adopts its containers, keeps their restart counts and never loses metered usage.
//!
//! `<data>/instances/<instance id>.json`, written atomically after every change that matters.

use super::desired::{DesiredInstance, Placement};
use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One instance placement on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    /// Which placement it is (its id names the record's file).
    #[serde(flatten)]
    pub placement: Placement,
    /// Per container name.
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerRecord>,
    /// Memory integrated over time so far, in MiB-seconds (fractional, summed per sample).
    #[serde(default)]
    pub memory_mib_seconds: f64,
    /// GPUs held over time so far, in GPU-seconds.
    #[serde(default)]
    pub gpu_seconds: f64,
    /// The instance's address on the node's container network, once set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl From<&DesiredInstance> for InstanceRecord {
    /// The record of an instance about to start: its placement, nothing run or metered yet.
    fn from(d: &DesiredInstance) -> Self {
        Self {
            placement: d.placement.clone(),
            containers: BTreeMap::new(),
            memory_mib_seconds: 0.0,
            gpu_seconds: 0.0,
            ip: None,
        }
    }
}

/// One container of an instance.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// The runtime's container id.
    pub id: String,
    /// The digest of the container spec it was started from.
    pub hash: String,
    /// How often it was restarted.
    pub restarts: i32,
    /// CPU time of its earlier runs (their cgroups are gone), in microseconds.
    pub cpu_usec_done: u64,
    /// CPU time of the current run as last sampled, in microseconds.
    pub cpu_usec_run: u64,
    /// When the current run started, in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// The exit code of a run that is not restarted (restart policy Never or OnFailure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<i32>,
}

/// The records directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// Records under `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Saves `rec` atomically.
    pub fn save(&self, rec: &InstanceRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let body = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        write_atomic(&self.path(&rec.placement.id), &body)
    }

    /// Forgets instance `id` (no error if it was not there).
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record on disk; unreadable ones are reported and skipped (their containers are
    /// then orphans, which the agent deletes).
    pub fn load_all(&self) -> Vec<InstanceRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match read(&path) {
                Ok(r) => out.push(r),
                Err(err) => {
                    tracing::warn!(path = %path.display(), "skipping an unreadable instance record: {err}")
                }
            }
        }
        out.sort_by(|a, b| a.placement.id.cmp(&b.placement.id));
        out
    }
}

fn read(path: &Path) -> Result<InstanceRecord, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::new(dir.path().join("instances"));
        assert!(records.load_all().is_empty());
        let mut rec = InstanceRecord {
            placement: Placement {
                id: "web-0-abc".into(),
                namespace: "shop".into(),
                workload: "web".into(),
                uid: "u".into(),
                instance: "web-0".into(),
                placed_at: Time(Timestamp::from_second(1_800_000_000).unwrap()),
            },
            containers: BTreeMap::new(),
            memory_mib_seconds: 1.5,
            gpu_seconds: 0.0,
            ip: None,
        };
        rec.containers.insert(
            "app".into(),
            ContainerRecord {
                id: "web-0-abc.app".into(),
                restarts: 2,
                ..Default::default()
            },
        );
        records.save(&rec).unwrap();
        std::fs::write(dir.path().join("instances/broken.json"), b"{").unwrap();
        assert_eq!(records.load_all(), vec![rec.clone()]);
        records.remove(&rec.placement.id).unwrap();
        records.remove(&rec.placement.id).unwrap();
        assert!(records.load_all().is_empty());
    }

    #[test]
    fn records_keep_their_on_disk_form() {
        // A record as agents have always written it: the placement's fields at the top level.
        let text = r#"{
  "id": "web-0-abc",
  "namespace": "shop",
  "workload": "web",
  "uid": "u",
  "instance": "web-0",
  "placedAt": "2027-01-15T08:00:00Z",
  "containers": {
    "app": {
      "id": "web-0-abc.app",
      "hash": "h",
      "restarts": 1,
      "cpuUsecDone": 5,
      "cpuUsecRun": 7,
      "startedAtMs": 9
    }
  },
  "memoryMibSeconds": 1.5,
  "gpuSeconds": 0.0,
  "ip": "10.1.0.5"
}"#;
        let rec: InstanceRecord = serde_json::from_str(text).unwrap();
        assert_eq!(rec.placement.id, "web-0-abc");
        assert_eq!(rec.placement.instance, "web-0");
        assert_eq!(rec.containers["app"].restarts, 1);
        assert_eq!(rec.ip.as_deref(), Some("10.1.0.5"));
        let back: serde_json::Value = serde_json::to_value(&rec).unwrap();
        let want: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, want);
    }
}
