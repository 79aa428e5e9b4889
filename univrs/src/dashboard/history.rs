//! Each account's balance over time, as this dashboard has seen it: a point whenever the
//! balance changes (and one when first seen), at most one per [`MIN_SPACING_MS`] (a newer
//! balance within it replaces the last point: usage is paid every few seconds, in small
//! amounts), the latest [`MAX_POINTS`] per account. It lives in memory, so it starts anew with
//! the dashboard; the ledger itself keeps only balances.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// The most points kept per account.
pub const MAX_POINTS: usize = 500;

/// The least time between two points of one account.
pub const MIN_SPACING_MS: i64 = 5_000;

/// Balances over time: (Unix ms, milli-credits) per account.
#[derive(Default)]
pub struct History {
    points: Mutex<BTreeMap<String, VecDeque<(i64, i64)>>>,
}

impl History {
    /// Records `balances` at `now_ms` where they changed.
    pub fn record(&self, balances: &BTreeMap<String, i64>, now_ms: i64) {
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        for (account, balance) in balances {
            let series = points.entry(account.clone()).or_default();
            if series.back().is_some_and(|(_, b)| b == balance) {
                continue;
            }
            // The first point stays where it is: it is where the history starts.
            let recent = series.len() > 1
                && series
                    .back()
                    .is_some_and(|(t, _)| now_ms - t < MIN_SPACING_MS);
            if recent {
                series.pop_back();
            }
            series.push_back((now_ms, *balance));
            if series.len() > MAX_POINTS {
                series.pop_front();
            }
        }
    }

    /// The points of `account`, oldest first.
    pub fn of(&self, account: &str) -> Vec<(i64, i64)> {
        let points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        points
            .get(account)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_only_when_the_balance_moves_and_no_more_than_the_cap() {
        let h = History::default();
        let at = |b: i64| BTreeMap::from([("node/a".to_string(), b)]);
        h.record(&at(0), 1);
        h.record(&at(0), 2);
        h.record(&at(5), 3);
        assert_eq!(h.of("node/a"), vec![(1, 0), (3, 5)]);
        // Within the spacing, the newer balance replaces the last point.
        h.record(&at(7), 4);
        assert_eq!(h.of("node/a"), vec![(1, 0), (4, 7)]);
        h.record(&at(9), 4 + MIN_SPACING_MS);
        assert_eq!(h.of("node/a").len(), 3);
        for i in 0..(MAX_POINTS as i64 + 10) {
            h.record(&at(i + 100), 10_000 + i * MIN_SPACING_MS);
        }
        assert_eq!(h.of("node/a").len(), MAX_POINTS);
        assert!(h.of("nobody").is_empty());
    }
}
