//! The Vouch plan: checks the signature against the voucher's key and the expiry, resolves
//! voucher and subject to nodes, and weighs the vouch by the voucher's standing: its own service
//! record, or a perfect one for a trust anchor (`--trust-anchor`, the community's founding
//! machines), without which nobody could ever vouch first.
//!
//! A forged, malformed or expired vouch is marked unverified with the reason, gets an effective
//! weight of 0 and a Warning Event; it never affects reputation.

use crate::core::notice::Notice;
use crate::core::plan::node::service_base;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeSet;
use std::time::Duration;
use univrs_api::Vouch;
use univrs_api::conditions::{DesiredCondition, set_condition};
use univrs_api::enr::reputation;
use univrs_api::resources::vouch::CONDITION_VERIFIED;

/// What the controller concludes about a vouch.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    /// Whether it verifies and has a known voucher.
    pub verified: bool,
    /// Verified, BadSignature, MalformedSignature, Expired, BadVoucher, BadWeight or UnknownVoucher.
    pub reason: String,
    /// For people.
    pub message: String,
    /// weight × the voucher's standing (0 when unverified).
    pub effective_weight: f64,
    /// The voucher's node, if any.
    pub voucher_node: Option<String>,
    /// The subject's node, if any.
    pub subject_node: Option<String>,
}

/// Judges a vouch given the nodes (name, DID, standing as a voucher) and the time. Pure.
pub fn judge(vouch: &Vouch, nodes: &[(String, String, f64)], now: &Time) -> Verdict {
    let find = |did: &str| nodes.iter().find(|(_, d, _)| d == did);
    let voucher = find(&vouch.spec.voucher);
    let subject = find(&vouch.spec.subject);
    let voucher_node = voucher.map(|(n, _, _)| n.clone());
    let subject_node = subject.map(|(n, _, _)| n.clone());
    match vouch.spec.verify(now) {
        Err(e) => Verdict {
            verified: false,
            reason: e.reason().into(),
            message: e.to_string(),
            effective_weight: 0.0,
            voucher_node,
            subject_node,
        },
        Ok(_) => match voucher {
            None => Verdict {
                verified: false,
                reason: "UnknownVoucher".into(),
                message: format!(
                    "the signature is valid, but no nodes.univrs.io has did {}",
                    vouch.spec.voucher
                ),
                effective_weight: 0.0,
                voucher_node,
                subject_node,
            },
            Some((_, _, rep)) => {
                let cfg = reputation::Config::default();
                let effective = reputation::vouch_contribution(vouch.spec.weight, *rep, &cfg);
                Verdict {
                    verified: true,
                    reason: "Verified".into(),
                    message: format!(
                        "signed by the voucher's key; counts {effective:.3} (the voucher's standing is {rep:.2}: its service record, or 1 for a trust anchor; vouchers count once it exceeds {:.2})",
                        cfg.voucher_threshold
                    ),
                    effective_weight: effective,
                    voucher_node,
                    subject_node,
                }
            }
        },
    }
}

/// A node's standing as a voucher: 1 for a trust anchor, else its service record (never its
/// boosted score: vouches do not chain).
pub fn standing(node: &univrs_api::Node, anchors: &BTreeSet<String>) -> f64 {
    if anchors.contains(&node.spec.did) {
        1.0
    } else {
        service_base(node)
    }
}

/// The controller's part of the vouch's status after `v`, or None when nothing changes.
pub fn status(vouch: &Vouch, v: &Verdict, now: &Time) -> Option<serde_json::Value> {
    let current = vouch.status.clone().unwrap_or_default();
    let mut conditions = current.conditions.clone();
    let generation = vouch.metadata.generation;
    let changed_condition = set_condition(
        &mut conditions,
        DesiredCondition::new(
            CONDITION_VERIFIED,
            v.verified,
            v.reason.clone(),
            v.message.clone(),
        )
        .at_generation(generation),
        now.clone(),
    );
    let changed = changed_condition
        || current.verified != v.verified
        || current.reason.as_deref() != Some(v.reason.as_str())
        || (current.effective_weight - v.effective_weight).abs() > 1e-9
        || current.voucher_node != v.voucher_node
        || current.subject_node != v.subject_node
        || current.observed_generation != generation;
    changed.then(|| {
        serde_json::json!({
            "observedGeneration": generation,
            "verified": v.verified,
            "reason": v.reason,
            "effectiveWeight": v.effective_weight,
            "voucherNode": v.voucher_node,
            "subjectNode": v.subject_node,
            "conditions": conditions,
        })
    })
}

/// What to announce once a changed verdict is written.
pub fn notice(v: &Verdict) -> Notice {
    if v.verified {
        Notice::normal("VouchVerified", v.message.clone())
    } else {
        Notice::warning("VouchRejected", v.message.clone())
    }
}

/// When to look again: when it expires, at the latest after `resync`.
pub fn requeue(vouch: &Vouch, now: &Time, resync: Duration) -> Duration {
    let until_expiry = vouch.spec.expires_at.0.duration_since(now.0);
    if until_expiry.is_positive() {
        until_expiry.unsigned_abs().min(resync) + Duration::from_secs(1)
    } else {
        resync
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use univrs_api::identity::NodeIdentity;
    use univrs_api::resources::vouch::VouchSpec;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn forged_expired_unknown_and_good_vouches() {
        let (a, b, mallory) = (
            NodeIdentity::generate(),
            NodeIdentity::generate(),
            NodeIdentity::generate(),
        );
        let nodes = vec![
            ("a".to_string(), a.public().did(), 0.9),
            ("b".to_string(), b.public().did(), 0.5),
        ];
        let good = Vouch::new(
            "v",
            VouchSpec::signed(&a, &b.public(), 1.0, "ok", at(1000)).unwrap(),
        );
        let v = judge(&good, &nodes, &at(10));
        assert!(v.verified && v.reason == "Verified");
        assert_eq!(
            (v.voucher_node.as_deref(), v.subject_node.as_deref()),
            (Some("a"), Some("b"))
        );
        assert!(v.effective_weight > 0.0);

        // Mallory signs but claims to be a.
        let mut forged = VouchSpec::signed(&mallory, &b.public(), 1.0, "ok", at(1000)).unwrap();
        forged.voucher = a.public().did();
        let v = judge(&Vouch::new("f", forged), &nodes, &at(10));
        assert_eq!(
            (v.verified, v.reason.as_str(), v.effective_weight),
            (false, "BadSignature", 0.0)
        );

        let v = judge(&good, &nodes, &at(2000));
        assert_eq!((v.verified, v.reason.as_str()), (false, "Expired"));

        let stranger = Vouch::new(
            "s",
            VouchSpec::signed(&mallory, &b.public(), 1.0, "ok", at(1000)).unwrap(),
        );
        assert_eq!(judge(&stranger, &nodes, &at(10)).reason, "UnknownVoucher");

        // A fresh voucher (at the prior) verifies but counts for nothing.
        let fresh = Vouch::new(
            "n",
            VouchSpec::signed(&b, &a.public(), 1.0, "ok", at(1000)).unwrap(),
        );
        let v = judge(&fresh, &nodes, &at(10));
        assert!(v.verified && v.effective_weight == 0.0);
    }

    #[test]
    fn a_trust_anchor_vouches_with_full_standing() {
        let (anchor, newcomer) = (NodeIdentity::generate(), NodeIdentity::generate());
        let node = |name: &str, id: &NodeIdentity| -> univrs_api::Node {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "univrs.io/v1alpha1", "kind": "Node", "metadata": {"name": name},
                "spec": {"peerId": id.public().peer_id(), "did": id.public().did(),
                    "capacity": {"cpu": "1", "memory": "1Gi"}}
            }))
            .unwrap()
        };
        let (a, n) = (node("center", &anchor), node("school", &newcomer));
        let anchors: BTreeSet<String> = [anchor.public().did()].into();
        // Both are fresh (no service record: the prior); only the anchor stands at 1.
        assert_eq!(standing(&a, &anchors), 1.0);
        assert_eq!(standing(&n, &anchors), 0.5);
        assert_eq!(standing(&a, &BTreeSet::new()), 0.5);
        let nodes = vec![
            (
                "center".to_string(),
                anchor.public().did(),
                standing(&a, &anchors),
            ),
            (
                "school".to_string(),
                newcomer.public().did(),
                standing(&n, &anchors),
            ),
        ];
        let by_anchor = Vouch::new(
            "a",
            VouchSpec::signed(&anchor, &newcomer.public(), 0.8, "ok", at(1000)).unwrap(),
        );
        let v = judge(&by_anchor, &nodes, &at(10));
        assert!(v.verified);
        assert!((v.effective_weight - 0.8).abs() < 1e-9, "{v:?}");
        assert!(v.message.contains("standing is 1.00"), "{}", v.message);
        let by_newcomer = Vouch::new(
            "n",
            VouchSpec::signed(&newcomer, &anchor.public(), 0.8, "ok", at(1000)).unwrap(),
        );
        assert_eq!(judge(&by_newcomer, &nodes, &at(10)).effective_weight, 0.0);
    }
}
