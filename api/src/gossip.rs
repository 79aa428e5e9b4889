//! What nodes tell each other over the mesh: the gossip topics and their messages.
//!
//! ## Wire format (what another implementation must produce)
//! The data of every gossipsub message is the UTF-8 JSON of a [`SignedEnvelope`] of domain
//! [`DOMAIN_GOSSIP`] whose payload is the UTF-8 JSON of a [`GossipMessage`]:
//! ```text
//! {"domain":"univrs.io/gossip/v1","signer":"did:key:z6Mk…","payload":"<base64 JSON>","signature":"<base64>"}
//! payload = {"sentAtMs":1767225600000,"body":{"clusterEvent":{"node":"n1","reason":"NodeJoined","message":"…"}}}
//! ```
//! - The envelope signer must be the libp2p author of the gossipsub message (gossipsub signs
//!   with the same node key), so a node can neither speak for another nor replay another's
//!   message as its own.
//! - The body's variant names its topic ([`GossipBody::topic`]); a body published on another
//!   topic is refused, so a signed message cannot be moved between topics.
//! - Credit transactions and vouch attestations are statements of their own signer (payer,
//!   voucher), signed under [`DOMAIN_CREDIT_TRANSFER`] and [`DOMAIN_VOUCH`]; any node may
//!   relay them, and receivers verify both signatures.

use crate::envelope::{self, DOMAIN_CREDIT_TRANSFER};
use crate::identity::{NodeIdentity, PublicIdentity};
use crate::ledger::Transfer;
use crate::resources::vouch::VouchSpec;
use crate::resources::workload::InstancePhase;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub use crate::envelope::DOMAIN_GOSSIP;

/// A gossip topic. The names are versioned: a change of message format is a new topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Topic {
    /// `univrs/cluster/events/1`: nodes joining, leaving, changing.
    ClusterEvents,
    /// `univrs/workload/status/1`: instance lifecycle as the running node sees it.
    WorkloadStatus,
    /// `univrs/credit/transaction/1`: mutual-credit transfers signed by their payer.
    CreditTransaction,
    /// `univrs/vouch/attestation/1`: vouches signed by their voucher.
    VouchAttestation,
}

impl Topic {
    /// Every topic, in a fixed order.
    pub const ALL: [Topic; 4] = [
        Topic::ClusterEvents,
        Topic::WorkloadStatus,
        Topic::CreditTransaction,
        Topic::VouchAttestation,
    ];

    /// The topic string on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Topic::ClusterEvents => "univrs/cluster/events/1",
            Topic::WorkloadStatus => "univrs/workload/status/1",
            Topic::CreditTransaction => "univrs/credit/transaction/1",
            Topic::VouchAttestation => "univrs/vouch/attestation/1",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Topic> for &'static str {
    fn from(t: Topic) -> Self {
        t.as_str()
    }
}

/// A topic string that is not one of [`Topic::ALL`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown gossip topic {0:?}: expected one of univrs/cluster/events/1, univrs/workload/status/1, univrs/credit/transaction/1, univrs/vouch/attestation/1"
)]
pub struct UnknownTopic(pub String);

impl FromStr for Topic {
    type Err = UnknownTopic;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTopic(s.to_string()))
    }
}

impl TryFrom<String> for Topic {
    type Error = UnknownTopic;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The signed content of one gossip message (the payload of its [`SignedEnvelope`]).
///
/// [`SignedEnvelope`]: crate::envelope::SignedEnvelope
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GossipMessage {
    /// When the author sent it, in milliseconds since the Unix epoch (receivers refuse times
    /// in the future beyond the allowed clock skew and ignore times older than their replay
    /// window).
    pub sent_at_ms: i64,
    /// What is said; its variant names the topic.
    pub body: GossipBody,
}

/// What a gossip message says, one variant per topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GossipBody {
    /// On [`Topic::ClusterEvents`].
    ClusterEvent(ClusterEvent),
    /// On [`Topic::WorkloadStatus`].
    WorkloadStatus(WorkloadStatusReport),
    /// On [`Topic::CreditTransaction`].
    CreditTransaction(SignedTransfer),
    /// On [`Topic::VouchAttestation`].
    VouchAttestation(VouchSpec),
}

impl GossipBody {
    /// The topic this body is published on.
    pub fn topic(&self) -> Topic {
        match self {
            GossipBody::ClusterEvent(_) => Topic::ClusterEvents,
            GossipBody::WorkloadStatus(_) => Topic::WorkloadStatus,
            GossipBody::CreditTransaction(_) => Topic::CreditTransaction,
            GossipBody::VouchAttestation(_) => Topic::VouchAttestation,
        }
    }
}

impl From<ClusterEvent> for GossipBody {
    fn from(e: ClusterEvent) -> Self {
        GossipBody::ClusterEvent(e)
    }
}

impl From<WorkloadStatusReport> for GossipBody {
    fn from(r: WorkloadStatusReport) -> Self {
        GossipBody::WorkloadStatus(r)
    }
}

impl From<SignedTransfer> for GossipBody {
    fn from(t: SignedTransfer) -> Self {
        GossipBody::CreditTransaction(t)
    }
}

impl From<VouchSpec> for GossipBody {
    fn from(v: VouchSpec) -> Self {
        GossipBody::VouchAttestation(v)
    }
}

/// Something that happened to a node, in the shape of a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterEvent {
    /// The nodes.univrs.io object it is about.
    pub node: String,
    /// What happened, CamelCase: `NodeJoined`, `NodeLeaving`, `NodeUpdated`, ….
    pub reason: String,
    /// For people.
    #[serde(default)]
    pub message: String,
}

/// An instance's lifecycle as the node running it sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadStatusReport {
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's name.
    pub workload: String,
    /// The instance (`<workload>-<ordinal>`).
    pub instance: String,
    /// The nodes.univrs.io object running it.
    pub node: String,
    /// Its phase.
    pub phase: InstancePhase,
    /// Whether every container passes its readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Why it is in its phase, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A credit transfer signed by the key that pays.
///
/// ## Canonical encoding (what the signature covers)
/// The envelope signing input (see [`crate::envelope`]) of domain
/// `univrs.io/credit-transfer/v1` and these fields, in order: the payer's DID, the transfer id,
/// `from` and `to` as account strings (`node/<name>`), and the amount as a signed 8-byte
/// big-endian integer. The signature is standard base64.
///
/// The signature proves who authorised the transfer; whether that key may spend for `from`
/// (the account's Node has this DID) is for the ledger's owner to check against the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedTransfer {
    /// The transfer.
    pub transfer: Transfer,
    /// The DID of the key that authorised it.
    pub payer: String,
    /// Ed25519 signature over the canonical encoding, standard base64.
    pub signature: String,
}

/// Why a signed transfer is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransferClaimError {
    /// The amount is zero or negative: no transfer can move that.
    #[error("transfer {id}: amount must be positive, got {amount}")]
    NonPositive {
        /// The transfer id.
        id: String,
        /// The amount claimed.
        amount: i64,
    },
    /// From and to are the same account.
    #[error("transfer {0}: from and to are the same account")]
    SelfTransfer(String),
    /// The payer is not an Ed25519 did:key.
    #[error("payer is not an Ed25519 did:key: {0}")]
    BadPayer(String),
    /// The signature is not 64 bytes of base64.
    #[error("signature is not a base64 Ed25519 signature")]
    MalformedSignature,
    /// The signature does not verify against the payer's key.
    #[error("signature does not verify against the payer's key")]
    BadSignature,
}

fn transfer_fields(payer: &str, t: &Transfer) -> [Vec<u8>; 5] {
    [
        payer.as_bytes().to_vec(),
        t.id.as_bytes().to_vec(),
        t.from.to_string().into_bytes(),
        t.to.to_string().into_bytes(),
        t.amount.to_be_bytes().to_vec(),
    ]
}

impl SignedTransfer {
    /// `transfer`, signed by `payer`.
    pub fn sign(payer: &NodeIdentity, transfer: Transfer) -> Self {
        let did = payer.public().did();
        let fields = transfer_fields(&did, &transfer);
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        let sig = envelope::sign_fields(payer, DOMAIN_CREDIT_TRANSFER, &refs);
        Self {
            transfer,
            payer: did,
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
        }
    }

    /// Checks that the claim is possible (positive amount, two accounts) and the signature;
    /// returns the payer.
    pub fn verify(&self) -> Result<PublicIdentity, TransferClaimError> {
        let t = &self.transfer;
        if t.amount <= 0 {
            return Err(TransferClaimError::NonPositive {
                id: t.id.clone(),
                amount: t.amount,
            });
        }
        if t.from == t.to {
            return Err(TransferClaimError::SelfTransfer(t.id.clone()));
        }
        let payer = PublicIdentity::from_did(&self.payer)
            .map_err(|e| TransferClaimError::BadPayer(e.to_string()))?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .ok()
            .filter(|s| s.len() == 64)
            .ok_or(TransferClaimError::MalformedSignature)?;
        let fields = transfer_fields(&self.payer, t);
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        envelope::verify_fields(&payer, DOMAIN_CREDIT_TRANSFER, &refs, &sig)
            .map_err(|_| TransferClaimError::BadSignature)?;
        Ok(payer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Account;

    fn transfer(amount: i64) -> Transfer {
        Transfer {
            id: "t-1".into(),
            from: Account::node("a"),
            to: Account::node("b"),
            amount,
        }
    }

    #[test]
    fn topics_round_trip_and_unknown_ones_are_named() {
        for t in Topic::ALL {
            assert_eq!(t.as_str().parse::<Topic>(), Ok(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<Topic>(&json).unwrap(), t);
        }
        let err = "univrs/chat/1".parse::<Topic>().unwrap_err().to_string();
        assert!(
            err.contains("univrs/chat/1") && err.contains("expected"),
            "{err}"
        );
    }

    #[test]
    fn a_message_has_the_documented_shape() {
        let msg = GossipMessage {
            sent_at_ms: 5,
            body: ClusterEvent {
                node: "n1".into(),
                reason: "NodeJoined".into(),
                message: String::new(),
            }
            .into(),
        };
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"sentAtMs": 5, "body": {"clusterEvent": {"node": "n1", "reason": "NodeJoined", "message": ""}}})
        );
        assert_eq!(msg.body.topic(), Topic::ClusterEvents);
        let extra = r#"{"sentAtMs":5,"body":{"clusterEvent":{"node":"n1","reason":"x"}},"x":1}"#;
        assert!(serde_json::from_str::<GossipMessage>(extra).is_err());
    }

    #[test]
    fn a_signed_transfer_verifies_only_intact() {
        let a = NodeIdentity::from_secret_bytes([3; 32]);
        let b = NodeIdentity::from_secret_bytes([4; 32]);
        let t = SignedTransfer::sign(&a, transfer(250));
        assert_eq!(t.verify(), Ok(a.public()));

        let mut w = t.clone();
        w.transfer.amount = 251;
        assert_eq!(w.verify(), Err(TransferClaimError::BadSignature));
        let mut w = t.clone();
        w.transfer.to = Account::node("c");
        assert_eq!(w.verify(), Err(TransferClaimError::BadSignature));
        let mut w = t.clone();
        w.payer = b.public().did();
        assert_eq!(w.verify(), Err(TransferClaimError::BadSignature));
        let mut w = t.clone();
        w.signature = "AAAA".into();
        assert_eq!(w.verify(), Err(TransferClaimError::MalformedSignature));
        let mut w = t;
        w.payer = "did:web:x".into();
        assert!(matches!(w.verify(), Err(TransferClaimError::BadPayer(_))));
    }

    #[test]
    fn impossible_transfers_are_refused_even_when_signed() {
        let a = NodeIdentity::from_secret_bytes([3; 32]);
        for amount in [0, -5] {
            assert_eq!(
                SignedTransfer::sign(&a, transfer(amount)).verify(),
                Err(TransferClaimError::NonPositive {
                    id: "t-1".into(),
                    amount
                })
            );
        }
        let mut t = transfer(5);
        t.to = t.from.clone();
        assert_eq!(
            SignedTransfer::sign(&a, t).verify(),
            Err(TransferClaimError::SelfTransfer("t-1".into()))
        );
    }
}
