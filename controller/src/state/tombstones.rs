//! Remembered deletions: the version at which an object was deleted, so the answer to a write
//! that crossed the deletion cannot bring the object back into the node index. Each is
//! forgotten after [`TOMBSTONE_TTL`]; old ones are swept as the set grows.

use std::collections::HashMap;
use std::hash::Hash;

/// How long a deletion is remembered: far longer than any write can be in flight.
pub const TOMBSTONE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// The versions at which objects were deleted, so that the answer to a write that crossed the
/// deletion cannot bring an object back; each is forgotten after [`TOMBSTONE_TTL`].
pub struct Tombstones<K> {
    at: HashMap<K, (Option<u64>, std::time::Instant)>,
    /// The size at which old ones are next swept.
    sweep_at: usize,
}

impl<K> Default for Tombstones<K> {
    fn default() -> Self {
        Self {
            at: HashMap::new(),
            sweep_at: 1024,
        }
    }
}

impl<K: Hash + Eq> Tombstones<K> {
    /// Records that `key` was deleted at version `deleted_at`.
    pub fn bury(&mut self, key: K, deleted_at: Option<u64>) {
        if self.at.len() >= self.sweep_at {
            self.at.retain(|_, (_, t)| t.elapsed() < TOMBSTONE_TTL);
            self.sweep_at = (self.at.len() * 2).max(1024);
        }
        self.at.insert(key, (deleted_at, std::time::Instant::now()));
    }

    /// Whether `v` of `key` predates its deletion (unknown versions are taken to).
    pub fn buries(&self, key: &K, v: Option<u64>) -> bool {
        match (self.at.get(key), v) {
            (Some((Some(deleted), _)), Some(v)) => v <= *deleted,
            (Some(_), _) => true,
            (None, _) => false,
        }
    }

    /// A newer object of the same name exists: the deletion no longer matters.
    pub fn exhume(&mut self, key: &K) {
        self.at.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_versions_stay_buried_until_a_newer_object_comes() {
        let mut t = Tombstones::default();
        t.bury("a", Some(7));
        assert!(t.buries(&"a", Some(7)) && t.buries(&"a", Some(3)));
        assert!(
            t.buries(&"a", None),
            "an unknown version is taken to predate it"
        );
        assert!(!t.buries(&"a", Some(8)) && !t.buries(&"b", Some(1)));
        t.exhume(&"a");
        assert!(!t.buries(&"a", Some(3)));
    }
}
