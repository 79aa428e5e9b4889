//! What this node accepts from gossip, and how it signs what it publishes.
//!
//! Every inbound gossipsub message gets one [`Verdict`]:
//! - **Reject** (the sender's peer score drops; see [`InvalidReason`]) for what an honest node
//!   never sends: bytes that are not our envelope, a bad or misplaced signature, an envelope
//!   signed by someone other than the gossipsub author, a body on the wrong topic, a date
//!   beyond the allowed clock skew, a transfer of a non-positive amount or to oneself, a vouch
//!   for oneself or with an impossible weight. A [`ClaimCheck`](super::ClaimCheck) given to the
//!   mesh adds the checks against the cluster (a voucher, subject or payer no Node has) after
//!   these, asynchronously; its impossible claims are rejected the same way.
//! - **Ignore** (dropped, no penalty; see [`IgnoreReason`]) for what an honest node may relay
//!   late: a message older than the replay window, a vouch that has expired. Exact duplicates
//!   never get here: gossipsub drops them by message id (the SHA-256 of the data), and its
//!   duplicate cache outlives the replay window plus the clock skew, so a replay is either a
//!   duplicate or too old.
//! - **Accept**: delivered to subscribers and forwarded.

use super::error::MeshError;
use super::keys::identity_of;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use libp2p::PeerId;
use serde::Serialize;
use std::time::Duration;
use univrs_api::envelope::{DOMAIN_GOSSIP, EnvelopeError, SignedEnvelope};
use univrs_api::gossip::{GossipBody, GossipMessage, Topic, TransferClaimError};
use univrs_api::identity::{NodeIdentity, PublicIdentity};
use univrs_api::resources::vouch::VouchError;

/// Why a message was rejected (and its sender penalized).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum InvalidReason {
    /// Larger than the message cap.
    Oversize,
    /// Not a JSON envelope holding a JSON gossip message, or a field in the wrong form.
    Malformed,
    /// An envelope signed for another purpose than gossip.
    WrongDomain,
    /// A signature (envelope, transfer or vouch) that does not verify.
    BadSignature,
    /// An envelope signed by someone other than the gossipsub author.
    SignerMismatch,
    /// A body published on another topic than its own.
    WrongTopic,
    /// Dated further in the future than the allowed clock skew.
    FutureTimestamp,
    /// A credit transfer of zero or a negative amount.
    NonPositiveAmount,
    /// A credit transfer from an account to itself.
    SelfTransfer,
    /// A vouch whose voucher is its subject.
    SelfVouch,
    /// A vouch whose weight is outside [0, 1].
    VouchWeightOutOfRange,
    /// A vouch whose voucher is no Node's identity (checked against the cluster).
    UnknownVoucher,
    /// A vouch whose subject is no Node's identity (checked against the cluster).
    UnknownSubject,
    /// A transfer whose payer is not the identity of the Node named by its `from` account
    /// (checked against the cluster).
    PayerNotOwner,
}

/// Why a message was dropped without penalty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IgnoreReason {
    /// Older than the replay window.
    Stale,
    /// A vouch past its expiry.
    ExpiredVouch,
    /// Its claim could not be checked against the cluster in time (the API server is slow or
    /// unreachable): not the sender's fault.
    ClaimUnchecked,
    /// Too many claim checks were already waiting; dropped to bound the work a flood causes.
    ClaimBacklog,
    /// Its author's Node is isolated by its septal gate: neither delivered nor forwarded until
    /// the gate lets it back (not the fault of the peer that passed it on).
    SenderIsolated,
}

/// A message that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    /// Who signed it (the gossipsub author).
    pub signer: PublicIdentity,
    /// Its topic.
    pub topic: Topic,
    /// What it says.
    pub message: GossipMessage,
}

/// What to do with one inbound message.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Deliver and forward.
    Accept(Box<Accepted>),
    /// Drop without penalty.
    Ignore(IgnoreReason),
    /// Drop and penalize the sender.
    Reject(InvalidReason),
}

/// The limits a message is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, in bytes.
    pub max_message_bytes: usize,
    /// How far in the future a message may be dated.
    pub max_clock_skew: Duration,
    /// How far in the past a message may be dated.
    pub replay_window: Duration,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Checks one gossipsub message: `author` is its (libp2p-verified) source, `topic` the topic
/// string it came on, `now_ms` this node's clock in milliseconds since the Unix epoch.
pub fn check(
    limits: &Limits,
    author: Option<&PeerId>,
    topic: &str,
    data: &[u8],
    now_ms: i64,
) -> Verdict {
    match check_inner(limits, author, topic, data, now_ms) {
        Ok(accepted) => Verdict::Accept(Box::new(accepted)),
        Err(Drop::Ignore(r)) => Verdict::Ignore(r),
        Err(Drop::Reject(r)) => Verdict::Reject(r),
    }
}

enum Drop {
    Ignore(IgnoreReason),
    Reject(InvalidReason),
}

impl From<InvalidReason> for Drop {
    fn from(r: InvalidReason) -> Self {
        Drop::Reject(r)
    }
}

fn check_inner(
    limits: &Limits,
    author: Option<&PeerId>,
    topic: &str,
    data: &[u8],
    now_ms: i64,
) -> Result<Accepted, Drop> {
    if data.len() > limits.max_message_bytes {
        return Err(InvalidReason::Oversize.into());
    }
    // Strict validation mode means gossipsub has verified a source; without one the sender
    // broke the protocol.
    let author = author
        .and_then(identity_of)
        .ok_or(InvalidReason::SignerMismatch)?;
    let topic: Topic = topic.parse().map_err(|_| InvalidReason::WrongTopic)?;
    let envelope: SignedEnvelope =
        serde_json::from_slice(data).map_err(|_| InvalidReason::Malformed)?;
    let (signer, payload) = envelope.open(DOMAIN_GOSSIP).map_err(|e| match e {
        EnvelopeError::WrongDomain { .. } => InvalidReason::WrongDomain,
        EnvelopeError::Signer(_) => InvalidReason::Malformed,
        EnvelopeError::BadSignature => InvalidReason::BadSignature,
    })?;
    if signer != author {
        return Err(InvalidReason::SignerMismatch.into());
    }
    let message: GossipMessage =
        serde_json::from_slice(payload).map_err(|_| InvalidReason::Malformed)?;
    if message.body.topic() != topic {
        return Err(InvalidReason::WrongTopic.into());
    }
    if message.sent_at_ms > now_ms.saturating_add(millis(limits.max_clock_skew)) {
        return Err(InvalidReason::FutureTimestamp.into());
    }
    if message.sent_at_ms < now_ms.saturating_sub(millis(limits.replay_window)) {
        return Err(Drop::Ignore(IgnoreReason::Stale));
    }
    check_body(&message.body, now_ms)?;
    Ok(Accepted {
        signer,
        topic,
        message,
    })
}

/// The checks of what a body claims, beyond the envelope.
fn check_body(body: &GossipBody, now_ms: i64) -> Result<(), Drop> {
    match body {
        GossipBody::ClusterEvent(_) | GossipBody::WorkloadStatus(_) => Ok(()),
        GossipBody::CreditTransaction(t) => t.verify().map(|_| ()).map_err(|e| {
            match e {
                TransferClaimError::NonPositive { .. } => InvalidReason::NonPositiveAmount,
                TransferClaimError::SelfTransfer(_) => InvalidReason::SelfTransfer,
                TransferClaimError::BadPayer(_) | TransferClaimError::MalformedSignature => {
                    InvalidReason::Malformed
                }
                TransferClaimError::BadSignature => InvalidReason::BadSignature,
            }
            .into()
        }),
        GossipBody::VouchAttestation(v) => {
            if v.voucher == v.subject {
                return Err(InvalidReason::SelfVouch.into());
            }
            let now = Timestamp::from_millisecond(now_ms)
                .map(Time)
                .map_err(|_| InvalidReason::Malformed)?;
            v.verify(&now).map(|_| ()).map_err(|e| match e {
                VouchError::BadVoucher(_) | VouchError::MalformedSignature => {
                    InvalidReason::Malformed.into()
                }
                VouchError::BadSignature => InvalidReason::BadSignature.into(),
                VouchError::BadWeight => InvalidReason::VouchWeightOutOfRange.into(),
                VouchError::Expired(_) => Drop::Ignore(IgnoreReason::ExpiredVouch),
            })
        }
    }
}

/// Signs `body` as this node's gossip message sent at `now_ms`: the bytes to publish on
/// `body.topic()`.
pub fn seal(
    identity: &NodeIdentity,
    body: GossipBody,
    now_ms: i64,
    max_message_bytes: usize,
) -> Result<Vec<u8>, MeshError> {
    let topic = body.topic();
    let message = GossipMessage {
        sent_at_ms: now_ms,
        body,
    };
    let payload = serde_json::to_vec(&message).map_err(|e| MeshError::Publish {
        topic,
        reason: format!("encoding the message: {e}"),
    })?;
    let envelope = SignedEnvelope::seal(identity, DOMAIN_GOSSIP, payload);
    let data = serde_json::to_vec(&envelope).map_err(|e| MeshError::Publish {
        topic,
        reason: format!("encoding the envelope: {e}"),
    })?;
    if data.len() > max_message_bytes {
        return Err(MeshError::TooLarge {
            topic,
            size: data.len(),
            max: max_message_bytes,
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::keys::peer_id_of;
    use univrs_api::account::Account;
    use univrs_api::gossip::{ClusterEvent, SignedTransfer};
    use univrs_api::ledger::Transfer;
    use univrs_api::resources::vouch::VouchSpec;

    const NOW: i64 = 1_800_000_000_000;
    const LIMITS: Limits = Limits {
        max_message_bytes: 64 * 1024,
        max_clock_skew: Duration::from_secs(300),
        replay_window: Duration::from_secs(600),
    };

    fn id(n: u8) -> NodeIdentity {
        NodeIdentity::from_secret_bytes([n; 32])
    }

    fn event() -> GossipBody {
        ClusterEvent {
            node: "n1".into(),
            reason: "NodeJoined".into(),
            message: "hello".into(),
        }
        .into()
    }

    fn verdict_of(author: &NodeIdentity, data: &[u8], topic: Topic) -> Verdict {
        check(
            &LIMITS,
            Some(&peer_id_of(&author.public())),
            topic.as_str(),
            data,
            NOW,
        )
    }

    fn sealed(author: &NodeIdentity, body: GossipBody, at: i64) -> Vec<u8> {
        seal(author, body, at, LIMITS.max_message_bytes).unwrap()
    }

    fn rejected(r: InvalidReason) -> Verdict {
        Verdict::Reject(r)
    }

    #[test]
    fn an_honest_message_is_accepted_with_its_signer() {
        let a = id(1);
        let Verdict::Accept(acc) = verdict_of(&a, &sealed(&a, event(), NOW), Topic::ClusterEvents)
        else {
            panic!("not accepted")
        };
        assert_eq!(acc.signer, a.public());
        assert_eq!(acc.message.body, event());
        assert_eq!(acc.message.sent_at_ms, NOW);
    }

    #[test]
    fn forgeries_are_rejected_by_reason() {
        let (a, b) = (id(1), id(2));
        let data = sealed(&a, event(), NOW);
        // b publishes a's envelope as its own: the signer is not the author.
        assert_eq!(
            verdict_of(&b, &data, Topic::ClusterEvents),
            rejected(InvalidReason::SignerMismatch)
        );
        // A tampered payload.
        let mut env: SignedEnvelope = serde_json::from_slice(&data).unwrap();
        let pos = env.payload.iter().position(|&c| c == b'h').unwrap();
        env.payload[pos] = b'j';
        let tampered = serde_json::to_vec(&env).unwrap();
        assert_eq!(
            verdict_of(&a, &tampered, Topic::ClusterEvents),
            rejected(InvalidReason::BadSignature)
        );
        // A signature made for a vouch, replayed as gossip.
        let other =
            SignedEnvelope::seal(&a, univrs_api::envelope::DOMAIN_VOUCH, env.payload.clone());
        assert_eq!(
            verdict_of(
                &a,
                &serde_json::to_vec(&other).unwrap(),
                Topic::ClusterEvents
            ),
            rejected(InvalidReason::WrongDomain)
        );
        // An honest body moved to another topic.
        assert_eq!(
            verdict_of(&a, &data, Topic::WorkloadStatus),
            rejected(InvalidReason::WrongTopic)
        );
        assert_eq!(
            check(&LIMITS, None, Topic::ClusterEvents.as_str(), &data, NOW),
            rejected(InvalidReason::SignerMismatch)
        );
    }

    #[test]
    fn garbage_and_oversize_are_rejected() {
        let a = id(1);
        for junk in [
            &b"not json"[..],
            b"{}",
            b"{\"domain\":1}",
            &[0xff, 0xfe][..],
        ] {
            assert_eq!(
                verdict_of(&a, junk, Topic::ClusterEvents),
                rejected(InvalidReason::Malformed),
                "{junk:?}"
            );
        }
        // A valid envelope around a payload that is not a gossip message.
        let env = SignedEnvelope::seal(&a, DOMAIN_GOSSIP, b"[1,2]".to_vec());
        assert_eq!(
            verdict_of(&a, &serde_json::to_vec(&env).unwrap(), Topic::ClusterEvents),
            rejected(InvalidReason::Malformed)
        );
        let big = vec![b' '; LIMITS.max_message_bytes + 1];
        assert_eq!(
            verdict_of(&a, &big, Topic::ClusterEvents),
            rejected(InvalidReason::Oversize)
        );
        let huge = ClusterEvent {
            node: "n".into(),
            reason: "R".into(),
            message: "x".repeat(LIMITS.max_message_bytes),
        };
        assert!(matches!(
            seal(&a, huge.into(), NOW, LIMITS.max_message_bytes),
            Err(MeshError::TooLarge { .. })
        ));
    }

    #[test]
    fn dates_beyond_the_skew_are_rejected_and_old_ones_ignored() {
        let a = id(1);
        let skew = millis(LIMITS.max_clock_skew);
        let window = millis(LIMITS.replay_window);
        let at = |t| verdict_of(&a, &sealed(&a, event(), t), Topic::ClusterEvents);
        assert!(matches!(at(NOW + skew), Verdict::Accept(_)));
        assert_eq!(at(NOW + skew + 1), rejected(InvalidReason::FutureTimestamp));
        assert!(matches!(at(NOW - window), Verdict::Accept(_)));
        assert_eq!(at(NOW - window - 1), Verdict::Ignore(IgnoreReason::Stale));
    }

    fn transfer(amount: i64, to: &str) -> Transfer {
        Transfer {
            id: "t1".into(),
            from: Account::node("a"),
            to: Account::node(to),
            amount,
        }
    }

    #[test]
    fn credit_transactions_are_checked_for_what_they_claim() {
        let (a, payer) = (id(1), id(3));
        let on = |t: SignedTransfer| {
            verdict_of(&a, &sealed(&a, t.into(), NOW), Topic::CreditTransaction)
        };
        assert!(matches!(
            on(SignedTransfer::sign(&payer, transfer(5, "b"))),
            Verdict::Accept(_)
        ));
        assert_eq!(
            on(SignedTransfer::sign(&payer, transfer(0, "b"))),
            rejected(InvalidReason::NonPositiveAmount)
        );
        assert_eq!(
            on(SignedTransfer::sign(&payer, transfer(-3, "b"))),
            rejected(InvalidReason::NonPositiveAmount)
        );
        assert_eq!(
            on(SignedTransfer::sign(&payer, transfer(3, "a"))),
            rejected(InvalidReason::SelfTransfer)
        );
        let mut forged = SignedTransfer::sign(&payer, transfer(5, "b"));
        forged.transfer.amount = 5000;
        assert_eq!(on(forged), rejected(InvalidReason::BadSignature));
    }

    #[test]
    fn vouches_are_checked_for_what_they_claim() {
        let (a, voucher, subject) = (id(1), id(4), id(5));
        let until = |ms| Time(Timestamp::from_millisecond(ms).unwrap());
        let on = |v: VouchSpec| verdict_of(&a, &sealed(&a, v.into(), NOW), Topic::VouchAttestation);
        let good =
            VouchSpec::signed(&voucher, &subject.public(), 0.5, "ok", until(NOW + 1000)).unwrap();
        assert!(matches!(on(good.clone()), Verdict::Accept(_)));
        let own =
            VouchSpec::signed(&voucher, &voucher.public(), 0.5, "me", until(NOW + 1000)).unwrap();
        assert_eq!(on(own), rejected(InvalidReason::SelfVouch));
        let mut w = good.clone();
        w.weight = 0.9;
        assert_eq!(on(w), rejected(InvalidReason::BadSignature));
        let mut w = good.clone();
        w.weight = 7.0;
        assert_eq!(on(w), rejected(InvalidReason::VouchWeightOutOfRange));
        let old =
            VouchSpec::signed(&voucher, &subject.public(), 0.5, "ok", until(NOW - 1000)).unwrap();
        assert_eq!(on(old), Verdict::Ignore(IgnoreReason::ExpiredVouch));
    }
}
