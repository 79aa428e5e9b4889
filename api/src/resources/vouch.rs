//! `Vouch` (cluster-scoped): one identity's signed statement that it trusts another.
//!
//! ## Canonical encoding (what the signature covers)
//! The voucher signs, with its Ed25519 key, the envelope signing input (see `crate::envelope`)
//! of domain `univrs.io/vouch/v1` and these fields, in order, each as UTF-8 or big-endian bytes:
//! 1. `voucher`: the voucher's DID string;
//! 2. `subject`: the subject's DID string;
//! 3. weight in thousandths: `round(weight × 1000)` as a 2-byte big-endian unsigned integer
//!    (so 0.6 is `0x0258`), which makes the signed value independent of float formatting;
//! 4. `expiresAt` as a signed 8-byte big-endian count of seconds since the Unix epoch;
//! 5. `reason` as UTF-8.
//!
//! The signature is stored as standard base64 (88 characters). The spec is immutable: to change
//! a vouch, create a new one.
//!
//! Writer of status: the controller (`univrs-controller`).

use crate::envelope::{self, DOMAIN_VOUCH};
use crate::identity::{NodeIdentity, PublicIdentity};
use base64::Engine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Condition type: the vouch's signature and expiry check out.
pub const CONDITION_VERIFIED: &str = "Verified";

/// A signed statement by `voucher` that it trusts `subject`, with a weight from 0 to 1.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "univrs.io",
    version = "v1alpha1",
    kind = "Vouch",
    plural = "vouches",
    status = "VouchStatus",
    derive = "PartialEq",
    shortname = "uvouch",
    category = "univrs",
    doc = "A Vouch is an Ed25519-signed statement by one identity that it trusts another; verified vouches feed reputation.",
    printcolumn(
        name = "Voucher",
        type_ = "string",
        json_path = ".status.voucherNode",
        description = "The voucher's node, when known"
    ),
    printcolumn(
        name = "Subject",
        type_ = "string",
        json_path = ".status.subjectNode",
        description = "The subject's node, when known"
    ),
    printcolumn(name = "Weight", type_ = "number", json_path = ".spec.weight"),
    printcolumn(
        name = "Verified",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Verified\")].status"
    ),
    printcolumn(
        name = "Effective",
        type_ = "number",
        json_path = ".status.effectiveWeight",
        description = "Weight after the voucher's reputation"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Verified\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Expires",
        type_ = "date",
        json_path = ".spec.expiresAt",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("a vouch is signed and immutable; create a new one instead"))]
#[x_kube(validation = kube::core::Rule::new("self.voucher != self.subject").message("an identity cannot vouch for itself").field_path(".subject"))]
#[serde(rename_all = "camelCase")]
pub struct VouchSpec {
    /// The DID (`did:key:z6Mk…`) of the identity that vouches and signs.
    #[schemars(regex(pattern = r"^did:key:z6Mk[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub voucher: String,
    /// The DID of the identity vouched for.
    #[schemars(regex(pattern = r"^did:key:z6Mk[1-9A-HJ-NP-Za-km-z]{44}$"))]
    pub subject: String,
    /// How strongly the voucher trusts the subject, 0 to 1 (signed to three decimals).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub weight: f64,
    /// Why, for people.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub reason: String,
    /// After this time the vouch has no effect.
    pub expires_at: Time,
    /// Ed25519 signature over the canonical encoding (see the module docs), standard base64.
    #[schemars(regex(pattern = r"^[A-Za-z0-9+/]{86}==$"))]
    pub signature: String,
}

/// What the controller concluded about a vouch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VouchStatus {
    /// The metadata.generation this status was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Whether the signature verifies against the voucher's key and the vouch has not expired.
    #[serde(default)]
    pub verified: bool,
    /// Why it is or is not verified: Verified, BadSignature, Expired, UnknownVoucher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// weight scaled by the voucher's reputation; 0 when unverified.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub effective_weight: f64,
    /// The nodes.univrs.io object whose DID is the voucher, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voucher_node: Option<String>,
    /// The nodes.univrs.io object whose DID is the subject, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_node: Option<String>,
    /// Verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Why a vouch does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VouchError {
    /// The voucher field is not an Ed25519 did:key.
    #[error("spec.voucher is not an Ed25519 did:key: {0}")]
    BadVoucher(String),
    /// The signature is not 64 bytes of base64.
    #[error("spec.signature is not a base64 Ed25519 signature")]
    MalformedSignature,
    /// The signature does not match the voucher's key and the signed fields.
    #[error("spec.signature does not verify against spec.voucher's key")]
    BadSignature,
    /// The vouch expired.
    #[error("the vouch expired at {0}")]
    Expired(String),
    /// The weight is not a number in [0, 1].
    #[error("spec.weight must be between 0 and 1")]
    BadWeight,
}

impl VouchError {
    /// The CamelCase reason used in conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadVoucher(_) => "BadVoucher",
            Self::MalformedSignature => "MalformedSignature",
            Self::BadSignature => "BadSignature",
            Self::Expired(_) => "Expired",
            Self::BadWeight => "BadWeight",
        }
    }
}

/// The weight as signed: thousandths, rounded to nearest.
pub fn weight_milli(weight: f64) -> Result<u16, VouchError> {
    if !(0.0..=1.0).contains(&weight) {
        return Err(VouchError::BadWeight);
    }
    // In [0, 1000] by the check above, so the cast is exact.
    Ok((weight * 1000.0).round() as u16)
}

impl VouchSpec {
    /// The signed fields of the canonical encoding, in order.
    fn signed_fields(&self) -> Result<[Vec<u8>; 5], VouchError> {
        Ok([
            self.voucher.as_bytes().to_vec(),
            self.subject.as_bytes().to_vec(),
            weight_milli(self.weight)?.to_be_bytes().to_vec(),
            self.expires_at.0.as_second().to_be_bytes().to_vec(),
            self.reason.as_bytes().to_vec(),
        ])
    }

    /// A signed vouch by `voucher` for `subject`.
    pub fn signed(
        voucher: &NodeIdentity,
        subject: &PublicIdentity,
        weight: f64,
        reason: impl Into<String>,
        expires_at: Time,
    ) -> Result<Self, VouchError> {
        let mut spec = Self {
            voucher: voucher.public().did(),
            subject: subject.did(),
            weight,
            reason: reason.into(),
            expires_at,
            signature: String::new(),
        };
        let fields = spec.signed_fields()?;
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        let sig = envelope::sign_fields(voucher, DOMAIN_VOUCH, &refs);
        spec.signature = base64::engine::general_purpose::STANDARD.encode(sig);
        Ok(spec)
    }

    /// Checks the signature against the voucher's key and the expiry against `now`.
    pub fn verify(&self, now: &Time) -> Result<PublicIdentity, VouchError> {
        let voucher = PublicIdentity::from_did(&self.voucher)
            .map_err(|e| VouchError::BadVoucher(e.to_string()))?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .ok()
            .filter(|s| s.len() == 64)
            .ok_or(VouchError::MalformedSignature)?;
        let fields = self.signed_fields()?;
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        envelope::verify_fields(&voucher, DOMAIN_VOUCH, &refs, &sig)
            .map_err(|_| VouchError::BadSignature)?;
        if self.expires_at.0 <= now.0 {
            return Err(VouchError::Expired(self.expires_at.0.to_string()));
        }
        Ok(voucher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn pair() -> (NodeIdentity, NodeIdentity) {
        (
            NodeIdentity::from_secret_bytes([7; 32]),
            NodeIdentity::from_secret_bytes([9; 32]),
        )
    }

    #[test]
    fn a_signed_vouch_verifies_until_it_expires() {
        let (a, b) = pair();
        let v = VouchSpec::signed(&a, &b.public(), 0.6, "ran my jobs", at(2_000)).unwrap();
        assert_eq!(v.verify(&at(1_000)).unwrap(), a.public());
        assert_eq!(
            v.verify(&at(2_000)),
            Err(VouchError::Expired(at(2_000).0.to_string()))
        );
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let (a, b) = pair();
        let v = VouchSpec::signed(&a, &b.public(), 0.6, "ok", at(2_000)).unwrap();
        let mut w = v.clone();
        w.weight = 0.7;
        assert_eq!(w.verify(&at(0)), Err(VouchError::BadSignature));
        let mut w = v.clone();
        w.reason = "ok!".into();
        assert_eq!(w.verify(&at(0)), Err(VouchError::BadSignature));
        let mut w = v.clone();
        w.expires_at = at(3_000);
        assert_eq!(w.verify(&at(0)), Err(VouchError::BadSignature));
        let mut w = v.clone();
        w.subject = a.public().did();
        assert_eq!(w.verify(&at(0)), Err(VouchError::BadSignature));
        // Signed by b but claiming to be from a: a forgery.
        let forged = VouchSpec::signed(&b, &b.public(), 0.6, "ok", at(2_000)).unwrap();
        let mut w = v.clone();
        w.signature = forged.signature;
        assert_eq!(w.verify(&at(0)), Err(VouchError::BadSignature));
        let mut w = v;
        w.signature = "AAAA".into();
        assert_eq!(w.verify(&at(0)), Err(VouchError::MalformedSignature));
    }

    #[test]
    fn weight_is_signed_in_thousandths() {
        assert_eq!(weight_milli(0.6), Ok(600));
        assert_eq!(weight_milli(1.0), Ok(1000));
        assert_eq!(weight_milli(0.0004), Ok(0));
        assert_eq!(weight_milli(1.5), Err(VouchError::BadWeight));
        assert_eq!(weight_milli(f64::NAN), Err(VouchError::BadWeight));
    }
}
