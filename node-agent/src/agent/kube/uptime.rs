//! How much of the last day this agent was up, kept on disk across restarts: the minutes it
//! was seen running, within a sliding 24-hour window. A node younger than a day is judged on
//! the time since it first started, so joining is not a penalty.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;

const WINDOW_MINUTES: u64 = 24 * 60;

/// The uptime record of one agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Uptime {
    /// The minute (since the epoch) the agent first ran.
    first_minute: Option<u64>,
    /// The minutes within the window the agent was up.
    minutes: BTreeSet<u64>,
}

impl Uptime {
    /// Loads the record from `path` (a fresh one if missing or unreadable).
    pub fn load(path: &std::path::Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Marks `minute` as up and drops minutes that left the window.
    pub fn mark(&mut self, minute: u64) {
        self.first_minute.get_or_insert(minute);
        self.minutes.insert(minute);
        let oldest = minute.saturating_sub(WINDOW_MINUTES - 1);
        self.minutes = self.minutes.split_off(&oldest);
    }

    /// The fraction of the window (or of the time since the first start, if shorter) the agent
    /// was up, at `minute`; 0 to 1.
    pub fn fraction(&self, minute: u64) -> f64 {
        let Some(first) = self.first_minute else {
            return 0.0;
        };
        let span = (minute.saturating_sub(first) + 1).min(WINDOW_MINUTES);
        let oldest = minute.saturating_sub(span - 1);
        let up = self.minutes.range(oldest..=minute).count() as u64;
        (up as f64 / span as f64).clamp(0.0, 1.0)
    }
}

/// The current minute since the epoch.
pub fn now_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// Marks the agent up every minute and saves the record.
pub struct UptimeTracker {
    path: PathBuf,
    /// The record.
    pub uptime: Uptime,
}

impl UptimeTracker {
    /// Loads the record kept at `path`.
    pub fn open(path: PathBuf) -> Self {
        let uptime = Uptime::load(&path);
        Self { path, uptime }
    }

    /// Marks this minute up, saves, and returns the fraction.
    pub fn tick(&mut self) -> f64 {
        let m = now_minute();
        self.uptime.mark(m);
        if let Ok(body) = serde_json::to_vec(&self.uptime)
            && let Err(e) = crate::fsutil::write_atomic(&self.path, &body)
        {
            tracing::debug!("saving uptime: {e}");
        }
        self.uptime.fraction(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn young_nodes_are_judged_on_their_age_and_gaps_count() {
        let mut u = Uptime::default();
        assert_eq!(u.fraction(100), 0.0);
        for m in 100..110 {
            u.mark(m);
        }
        assert_eq!(u.fraction(109), 1.0);
        // Down for 10 minutes, then up again.
        for m in 120..130 {
            u.mark(m);
        }
        assert!((u.fraction(129) - 20.0 / 30.0).abs() < 1e-9);
    }

    #[test]
    fn the_window_slides() {
        let mut u = Uptime::default();
        for m in 0..WINDOW_MINUTES {
            u.mark(m);
        }
        assert_eq!(u.fraction(WINDOW_MINUTES - 1), 1.0);
        // Half a day down, then one minute up: the old half has left the window.
        let later = WINDOW_MINUTES + WINDOW_MINUTES / 2;
        u.mark(later);
        let f = u.fraction(later);
        assert!(
            (f - (WINDOW_MINUTES / 2) as f64 / WINDOW_MINUTES as f64).abs() < 0.01,
            "{f}"
        );
        assert!(u.minutes.len() as u64 <= WINDOW_MINUTES);
    }

    #[test]
    fn persists() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("uptime.json");
        let mut t = UptimeTracker::open(p.clone());
        let f = t.tick();
        assert_eq!(f, 1.0);
        assert_eq!(UptimeTracker::open(p).uptime, t.uptime);
    }
}
