//! Conditions in the `metav1.Condition` shape, and the rule for updating them without churn.
//!
//! A condition's `lastTransitionTime` changes only when its status flips; a write whose only
//! change would be a timestamp is no change at all, so writers can compare before writing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition status `True`.
pub const TRUE: &str = "True";
/// Condition status `False`.
pub const FALSE: &str = "False";
/// Condition status `Unknown`.
pub const UNKNOWN: &str = "Unknown";

/// A condition as a writer wants it, before the transition time is worked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// The condition type, such as `Ready`.
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// A CamelCase reason a program can match on.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
    /// The generation of the object this condition was derived from.
    pub observed_generation: Option<i64>,
}

impl DesiredCondition {
    /// A desired condition from its parts.
    pub fn new(
        type_: impl Into<String>,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status: if status { TRUE } else { FALSE },
            reason: reason.into(),
            message: message.into(),
            observed_generation: None,
        }
    }

    /// The same condition with status `Unknown`.
    pub fn unknown(mut self) -> Self {
        self.status = UNKNOWN;
        self
    }

    /// The same condition, stamped with the generation it was derived from.
    pub fn at_generation(mut self, generation: Option<i64>) -> Self {
        self.observed_generation = generation;
        self
    }
}

/// Sets `desired` in `conditions`, keeping `lastTransitionTime` unless the status flips.
/// Returns whether anything other than a timestamp changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: DesiredCondition,
    now: Time,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            let flipped = existing.status != desired.status;
            let changed = flipped
                || existing.reason != desired.reason
                || existing.message != desired.message
                || existing.observed_generation != desired.observed_generation;
            if flipped {
                existing.last_transition_time = now;
            }
            existing.status = desired.status.to_string();
            existing.reason = desired.reason;
            existing.message = desired.message;
            existing.observed_generation = desired.observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: desired.type_,
                status: desired.status.to_string(),
                reason: desired.reason,
                message: desired.message,
                observed_generation: desired.observed_generation,
                last_transition_time: now,
            });
            true
        }
    }
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut cs = Vec::new();
        assert!(set_condition(
            &mut cs,
            DesiredCondition::new("Ready", true, "Up", "ok"),
            at(10)
        ));
        assert!(!set_condition(
            &mut cs,
            DesiredCondition::new("Ready", true, "Up", "ok"),
            at(20)
        ));
        assert_eq!(cs[0].last_transition_time, at(10));
        assert!(set_condition(
            &mut cs,
            DesiredCondition::new("Ready", true, "Up", "fine"),
            at(30)
        ));
        assert_eq!(cs[0].last_transition_time, at(10));
        assert!(set_condition(
            &mut cs,
            DesiredCondition::new("Ready", false, "Down", "x"),
            at(40)
        ));
        assert_eq!(cs[0].last_transition_time, at(40));
        assert!(!is_true(&cs, "Ready") && find(&cs, "Ready").is_some());
    }
}
