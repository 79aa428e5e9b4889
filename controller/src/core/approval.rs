//! Whether a node's certificate request is approved: the join's decision (kube-controller-
//! manager signs only approved requests, and the API server then knows the holder as
//! `univrs:node:<name>`). The certificate names the node, its group and the PeerId of the very
//! key it certifies, so a Node can be bound to its key by the admission policies: a request is
//! approved only when its key is that PeerId's, the name is free or already this key's, and
//! the requester is a bootstrap token (a first join) or the node itself (a renewal).

use univrs_api::bootstrap::{NODE_SIGNER, NODE_USAGES};
use univrs_api::identity::PublicIdentity;
use univrs_api::system::{BOOTSTRAPPERS_GROUP, NODE_USER_PREFIX, NODES_GROUP, PEER_GROUP_PREFIX};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

/// What the API server says of a CertificateSigningRequest.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `spec.signerName`.
    pub signer: &'a str,
    /// `spec.usages`.
    pub usages: &'a [String],
    /// `spec.username`: who created it (set by the API server, not the requester).
    pub requester: &'a str,
    /// `spec.groups` of the requester.
    pub requester_groups: &'a [String],
    /// `spec.request`: the PEM-encoded PKCS#10 request.
    pub pem: &'a [u8],
}

/// What the approver decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a node certificate request: another approver's business.
    NotOurs,
    /// Approve, and bind the node `name` (whose key has `peer_id`) to the node role.
    Approve {
        /// The node's name.
        node: String,
        /// The PeerId of the certified key.
        peer_id: String,
    },
    /// Deny, for this reason (written to the request's Denied condition).
    Deny(String),
}

/// Decides on `req`. `bound_peer` is the PeerId the node name is already bound to, if any (an
/// existing Node's `spec.peerId` or the node's ClusterRoleBinding annotation).
pub fn decide(req: &Request<'_>, bound_peer: Option<&str>) -> Verdict {
    if req.signer != NODE_SIGNER {
        return Verdict::NotOurs;
    }
    let subject = match parse(req.pem) {
        Ok(s) => s,
        // Someone else's client certificate (not a node's): leave it to whoever approves those.
        Err(Unparsed::NotANode) => return Verdict::NotOurs,
        Err(Unparsed::Invalid(why)) => return Verdict::Deny(why),
    };
    let node = subject.node;
    let mut usages: Vec<&str> = req.usages.iter().map(String::as_str).collect();
    usages.sort_unstable();
    let mut wanted = NODE_USAGES.to_vec();
    wanted.sort_unstable();
    if usages != wanted {
        return Verdict::Deny(format!(
            "a node certificate has exactly the usages {NODE_USAGES:?}, not {:?}",
            req.usages
        ));
    }
    let renewal = req.requester == format!("{NODE_USER_PREFIX}{node}");
    let bootstrap = req
        .requester_groups
        .iter()
        .any(|g| g == BOOTSTRAPPERS_GROUP);
    if !renewal && !bootstrap {
        return Verdict::Deny(format!(
            "{} may not ask for node {node}'s certificate: only a bootstrap token (univrs token create) or the node itself",
            req.requester
        ));
    }
    match bound_peer {
        Some(p) if p != subject.peer_id => Verdict::Deny(format!(
            "node name {node} belongs to peer {p}; this key is {} (pick another --node-name, or `univrs node remove {node}` first)",
            subject.peer_id
        )),
        None if renewal => Verdict::Deny(format!(
            "node {node} is not bound to any key (removed?): join again with a token"
        )),
        _ => Verdict::Approve {
            node,
            peer_id: subject.peer_id,
        },
    }
}

/// The node name a node certificate request asks for, if it is one (to look up what that name
/// is bound to before deciding).
pub fn requested_node(pem: &[u8]) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents).ok()?;
    let cn = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?;
    cn.strip_prefix(NODE_USER_PREFIX).map(str::to_string)
}

/// The node a request names, with the PeerId of its key.
#[derive(Debug)]
struct Subject {
    node: String,
    peer_id: String,
}

enum Unparsed {
    NotANode,
    Invalid(String),
}

fn parse(pem: &[u8]) -> Result<Subject, Unparsed> {
    let invalid = |why: &str| Unparsed::Invalid(why.to_string());
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| invalid("spec.request is not a PEM certificate request"))?;
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|_| invalid("spec.request is not a PKCS#10 certificate request"))?;
    let info = &csr.certification_request_info;
    let names: Vec<&str> = info
        .subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let node = match names.as_slice() {
        [cn] => match cn.strip_prefix(NODE_USER_PREFIX) {
            Some(n) => n.to_string(),
            None => return Err(Unparsed::NotANode),
        },
        _ => return Err(Unparsed::NotANode),
    };
    if !is_node_name(&node) {
        return Err(Unparsed::Invalid(format!(
            "{node:?} is not a node name (lowercase letters, digits, '-' and '.', at most 253)"
        )));
    }
    csr.verify_signature()
        .map_err(|_| invalid("the request's signature does not verify with its own key"))?;
    let spki = &info.subject_pki;
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ED25519 {
        return Err(invalid(
            "a node certificate certifies the node's Ed25519 identity key",
        ));
    }
    let key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| invalid("an Ed25519 key is 32 bytes"))?;
    let peer_id = PublicIdentity::from_bytes(&key)
        .map_err(|e| Unparsed::Invalid(format!("the request's key: {e}")))?
        .peer_id();
    let mut orgs: Vec<String> = info
        .subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    orgs.sort();
    let mut want = vec![
        NODES_GROUP.to_string(),
        format!("{PEER_GROUP_PREFIX}{peer_id}"),
    ];
    want.sort();
    if orgs != want {
        return Err(Unparsed::Invalid(format!(
            "a node certificate's organizations are exactly {want:?} (the key's own PeerId), not {orgs:?}"
        )));
    }
    Ok(Subject { node, peer_id })
}

/// A DNS subdomain name, as Kubernetes object names are.
fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use univrs_api::identity::NodeIdentity;
    use univrs_io::node_cert::request_pem;

    fn usages() -> Vec<String> {
        NODE_USAGES.iter().map(|s| s.to_string()).collect()
    }

    fn bootstrapper() -> Vec<String> {
        vec![
            BOOTSTRAPPERS_GROUP.to_string(),
            "system:authenticated".to_string(),
        ]
    }

    fn ask(pem: &str, requester: &str, groups: &[String], bound: Option<&str>) -> Verdict {
        let usages = usages();
        decide(
            &Request {
                signer: NODE_SIGNER,
                usages: &usages,
                requester,
                requester_groups: groups,
                pem: pem.as_bytes(),
            },
            bound,
        )
    }

    #[test]
    fn a_bootstrap_token_joins_a_free_name_and_the_node_renews_its_own() {
        let id = NodeIdentity::generate();
        let peer = id.public().peer_id();
        let pem = request_pem(&id, "library").unwrap();
        assert_eq!(requested_node(pem.as_bytes()).as_deref(), Some("library"));
        let approved = Verdict::Approve {
            node: "library".into(),
            peer_id: peer.clone(),
        };
        assert_eq!(
            ask(&pem, "system:bootstrap:abcdef", &bootstrapper(), None),
            approved
        );
        assert_eq!(ask(&pem, "univrs:node:library", &[], Some(&peer)), approved);
        // The same key joining again under its own name (a reinstall) is fine too.
        assert_eq!(
            ask(
                &pem,
                "system:bootstrap:abcdef",
                &bootstrapper(),
                Some(&peer)
            ),
            approved
        );
    }

    #[test]
    fn a_name_bound_to_another_key_is_refused() {
        let pem = request_pem(&NodeIdentity::generate(), "library").unwrap();
        let other = NodeIdentity::generate().public().peer_id();
        let Verdict::Deny(why) = ask(
            &pem,
            "system:bootstrap:abcdef",
            &bootstrapper(),
            Some(&other),
        ) else {
            panic!("approved a second key for library");
        };
        assert!(why.contains("belongs to peer"), "{why}");
    }

    #[test]
    fn only_bootstrappers_or_the_node_itself_may_ask() {
        let id = NodeIdentity::generate();
        let peer = id.public().peer_id();
        let pem = request_pem(&id, "library").unwrap();
        // Another node asking for library's certificate.
        assert!(matches!(
            ask(
                &pem,
                "univrs:node:school",
                &[NODES_GROUP.into()],
                Some(&peer)
            ),
            Verdict::Deny(_)
        ));
        // A renewal for a node whose binding is gone (removed).
        assert!(matches!(
            ask(&pem, "univrs:node:library", &[], None),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn other_signers_usages_and_subjects_are_not_approved() {
        let id = NodeIdentity::generate();
        let pem = request_pem(&id, "library").unwrap();
        let groups = bootstrapper();
        let usages = usages();
        let mut req = Request {
            signer: "kubernetes.io/kubelet-serving",
            usages: &usages,
            requester: "system:bootstrap:abcdef",
            requester_groups: &groups,
            pem: pem.as_bytes(),
        };
        assert_eq!(decide(&req, None), Verdict::NotOurs);
        req.signer = NODE_SIGNER;
        let server = vec!["digital signature".to_string(), "server auth".to_string()];
        req.usages = &server;
        assert!(matches!(decide(&req, None), Verdict::Deny(_)));

        // An ECDSA key (not the node's identity) under a node's name.
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "univrs:node:library");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, NODES_GROUP);
        let ecdsa = rcgen::KeyPair::generate().unwrap();
        let pem = params.serialize_request(&ecdsa).unwrap().pem().unwrap();
        assert!(matches!(
            ask(&pem, "system:bootstrap:abcdef", &groups, None),
            Verdict::Deny(_)
        ));

        // Someone else's client certificate is left to others.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let pem = params.serialize_request(&ecdsa).unwrap().pem().unwrap();
        assert_eq!(ask(&pem, "alice", &[], None), Verdict::NotOurs);
        assert!(matches!(
            ask("garbage", "system:bootstrap:abcdef", &groups, None),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn a_claimed_peer_group_must_be_the_keys_own() {
        let id = NodeIdentity::generate();
        let other = NodeIdentity::generate().public().peer_id();
        let key = rcgen::KeyPair::from_pem(&id.to_pkcs8_pem()).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "univrs:node:library");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, NODES_GROUP);
        params.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![2, 5, 4, 10]),
            format!("{PEER_GROUP_PREFIX}{other}"),
        );
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let Verdict::Deny(why) = ask(&pem, "system:bootstrap:abcdef", &bootstrapper(), None) else {
            panic!("approved a foreign peer group");
        };
        assert!(why.contains("organizations"), "{why}");
    }
}
