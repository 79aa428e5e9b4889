//! One key, three names, cross-checked against libp2p's own derivation and the did:key
//! specification's published Ed25519 test vectors.

use proptest::prelude::*;
use univrs_api::identity::{NodeIdentity, PublicIdentity};

/// (seed, DID, publicKeyBase58) from the did:key specification's test-vectors/ed25519-x25519.json.
const DID_KEY_VECTORS: [(&str, &str, &str); 5] = [
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
        "6ASf5EcmmEHTgDJ4X4ZT5vT6iHVJBXPg5AN5YoTCpGWt",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000002",
        "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf",
        "8pM1DN3RiT8vbom5u1sNryaNT1nyL8CTTW3b5PwWXRBH",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000003",
        "did:key:z6MkvqoYXQfDDJRv8L4wKzxYeuKyVZBfi9Qo6Ro8MiLH3kDQ",
        "HPYVwAQmskwT1qEEeRzhoomyfyupJGASQQtCXSNG8XS2",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000004",
        "did:key:z6MkwW6aqMnjgrhJXFUko3NnZPGzVpkNzhYK7yEhnsibmLwL",
        "J3qYF7YJMKCqQke47UQwiHizgFUXapHxRxKmxbkar89x",
    ),
];

#[test]
fn did_key_specification_vectors() {
    for (seed, did, key_b58) in DID_KEY_VECTORS {
        let seed: [u8; 32] = hex::decode(seed).unwrap().try_into().unwrap();
        let public = NodeIdentity::from_secret_bytes(seed).public();
        assert_eq!(public.did(), did, "seed → DID");
        let key: [u8; 32] = bs58::decode(key_b58)
            .into_vec()
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(public.to_bytes(), key, "seed → publicKeyBase58");
        assert_eq!(PublicIdentity::from_did(did).unwrap(), public, "DID → key");
    }
}

/// libp2p's own PeerId for a raw Ed25519 public key.
fn libp2p_peer_id(key: &[u8; 32]) -> String {
    let pk = libp2p_identity::ed25519::PublicKey::try_from_bytes(key).unwrap();
    libp2p_identity::PublicKey::from(pk)
        .to_peer_id()
        .to_string()
}

#[test]
fn rfc8032_key_agrees_with_libp2p() {
    let seed =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let public = NodeIdentity::from_secret_bytes(seed.try_into().unwrap()).public();
    assert_eq!(public.peer_id(), libp2p_peer_id(&public.to_bytes()));
    // libp2p derives the same public key from the same secret.
    let mut secret =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let kp = libp2p_identity::Keypair::ed25519_from_bytes(&mut secret).unwrap();
    assert_eq!(kp.public().to_peer_id().to_string(), public.peer_id());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn names_agree_with_libp2p_and_round_trip(seed in any::<[u8; 32]>()) {
        let public = NodeIdentity::from_secret_bytes(seed).public();
        prop_assert_eq!(public.peer_id(), libp2p_peer_id(&public.to_bytes()));
        let mut secret = seed.to_vec();
        let kp = libp2p_identity::Keypair::ed25519_from_bytes(&mut secret).unwrap();
        prop_assert_eq!(kp.public().to_peer_id().to_string(), public.peer_id());
        for name in [public.node_id(), public.peer_id(), public.did()] {
            prop_assert_eq!(name.parse::<PublicIdentity>().unwrap(), public);
        }
        prop_assert_eq!(PublicIdentity::from_node_id(&public.node_id()).unwrap(), public);
        prop_assert_eq!(PublicIdentity::from_peer_id(&public.peer_id()).unwrap(), public);
        prop_assert_eq!(PublicIdentity::from_did(&public.did()).unwrap(), public);
    }

    #[test]
    fn a_changed_byte_or_a_wrong_key_fails_verification(
        seed in any::<[u8; 32]>(),
        other in any::<[u8; 32]>(),
        msg in proptest::collection::vec(any::<u8>(), 1..256),
        flip in any::<usize>(),
    ) {
        prop_assume!(seed != other);
        let id = NodeIdentity::from_secret_bytes(seed);
        let fields: [&[u8]; 2] = [b"a", &msg];
        let sig = univrs_api::envelope::sign_fields(&id, univrs_api::envelope::DOMAIN_GOSSIP, &fields);
        let verify = |pk: &PublicIdentity, domain: &str, m: &[u8], s: &[u8]| {
            univrs_api::envelope::verify_fields(pk, domain, &[b"a", m], s).is_ok()
        };
        prop_assert!(verify(&id.public(), univrs_api::envelope::DOMAIN_GOSSIP, &msg, &sig));
        let mut changed = msg.clone();
        changed[flip % msg.len()] ^= 0x01;
        prop_assert!(!verify(&id.public(), univrs_api::envelope::DOMAIN_GOSSIP, &changed, &sig));
        let mut bad_sig = sig;
        bad_sig[flip % 64] ^= 0x01;
        prop_assert!(!verify(&id.public(), univrs_api::envelope::DOMAIN_GOSSIP, &msg, &bad_sig));
        let wrong = NodeIdentity::from_secret_bytes(other).public();
        prop_assert!(!verify(&wrong, univrs_api::envelope::DOMAIN_GOSSIP, &msg, &sig));
        prop_assert!(!verify(&id.public(), univrs_api::envelope::DOMAIN_VOUCH, &msg, &sig));
    }
}
