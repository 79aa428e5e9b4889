//! The certificate request a node makes for its own API credentials (at `univrs join` and at
//! each renewal): its Ed25519 identity key, named `univrs:node:<name>` in the groups
//! `univrs:nodes` and `univrs:peer:<PeerId>`. The controller's approver checks exactly this
//! shape (`univrs_controller::core::approval`).

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use univrs_api::identity::NodeIdentity;
use univrs_api::system::{NODES_GROUP, node_user, peer_group};

/// id-at-organizationName (2.5.4.10).
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

/// The PEM-encoded PKCS#10 request of node `name` for a certificate of `identity`'s key.
pub fn request_pem(identity: &NodeIdentity, name: &str) -> Result<String, rcgen::Error> {
    let key = KeyPair::from_pem(&identity.to_pkcs8_pem())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_user(name));
    dn.push(DnType::OrganizationName, NODES_GROUP);
    // rcgen keeps one value per attribute type, and a certificate's groups are its O=
    // attributes: the second O goes in under its OID as a custom type.
    dn.push(
        DnType::CustomDnType(ORGANIZATION_OID.to_vec()),
        peer_group(&identity.public().peer_id()),
    );
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.serialize_request(&key)?.pem()
}
