//! The node identity as libp2p sees it: the swarm's keypair and the PeerId of an identity, and
//! back.

use libp2p::PeerId;
use univrs_api::identity::{NodeIdentity, PublicIdentity};

/// The libp2p PeerId of an identity (the same key; never fails for an Ed25519 identity).
pub fn peer_id_of(identity: &PublicIdentity) -> PeerId {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&identity.to_bytes())
        .expect("a PublicIdentity is always a valid Ed25519 key");
    PeerId::from_public_key(&key.into())
}

/// The identity behind a PeerId, if it is an Ed25519 PeerId.
pub fn identity_of(peer: &PeerId) -> Option<PublicIdentity> {
    PublicIdentity::from_peer_id(&peer.to_base58()).ok()
}

/// The swarm keypair of a node identity.
pub(super) fn keypair_of(identity: &NodeIdentity) -> libp2p::identity::Keypair {
    let mut seed = identity.secret_bytes();
    // ed25519_from_bytes zeroizes the seed it is given; `seed` zeroizes itself on drop too.
    libp2p::identity::Keypair::ed25519_from_bytes(&mut *seed)
        .expect("32 bytes are always a valid Ed25519 seed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swarm_key_is_the_node_key_under_all_its_names() {
        let id = NodeIdentity::from_secret_bytes([7; 32]);
        let swarm_peer = keypair_of(&id).public().to_peer_id();
        assert_eq!(swarm_peer.to_base58(), id.public().peer_id());
        assert_eq!(peer_id_of(&id.public()), swarm_peer);
        assert_eq!(identity_of(&swarm_peer), Some(id.public()));
        // A PeerId that is not an Ed25519 identity has no NodeIdentity behind it.
        let sha_peer =
            PeerId::from_multihash(libp2p::multihash::Multihash::wrap(0x12, &[0; 32]).unwrap())
                .unwrap();
        assert_eq!(identity_of(&sha_peer), None);
    }
}
