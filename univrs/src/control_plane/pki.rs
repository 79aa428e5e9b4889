//! The control plane's certificates and keys, made with rcgen on first start and reused after.
//!
//! Two CAs: one for etcd (its server and its only client, the API server) and one for
//! Kubernetes (the API server's serving certificate and every client certificate), so a
//! Kubernetes client certificate can never talk to etcd directly. Every key file is mode 0600
//! in a 0700 directory.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A certificate and its key, as PEM files on disk.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
}

/// Every file of the control plane's PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The Kubernetes CA (signs the serving cert and client certs).
    pub ca: CertFiles,
    /// The etcd CA.
    pub etcd_ca: CertFiles,
    /// etcd's serving certificate.
    pub etcd_server: CertFiles,
    /// The API server's client certificate for etcd.
    pub etcd_client: CertFiles,
    /// The API server's serving certificate.
    pub apiserver: CertFiles,
    /// The admin client certificate (group system:masters).
    pub admin: CertFiles,
    /// kube-controller-manager's client certificate.
    pub controller_manager: CertFiles,
    /// kube-scheduler's client certificate (run with `--kubelets`).
    pub scheduler: CertFiles,
    /// The API server's client certificate for kubelets (logs, exec, port-forward).
    pub kubelet_client: CertFiles,
    /// The service-account token signing key (private, PKCS#8).
    pub sa_key: PathBuf,
    /// The service-account token verification key (public).
    pub sa_pub: PathBuf,
}

/// The cluster CA's common name.
const KUBERNETES_CA: &str = "univrs-kubernetes-ca";

/// Whom a leaf certificate is for.
struct Leaf<'a> {
    name: &'a str,
    common_name: &'a str,
    organization: Option<&'a str>,
    sans: Vec<SanType>,
    server: bool,
    client: bool,
}

impl Pki {
    /// Loads the PKI under `dir`, creating whatever is missing. `hosts` and `addresses` are
    /// extra names and addresses the API server's certificate must carry (the host name, the
    /// advertised address); a certificate made for other names is made again.
    pub fn ensure(dir: &Path, hosts: &[String], addresses: &[std::net::IpAddr]) -> Result<Self> {
        create_private_dir(dir)?;
        let ca = ensure_ca(dir, "ca", KUBERNETES_CA)?;
        let etcd_ca = ensure_ca(dir, "etcd-ca", "univrs-etcd-ca")?;
        let loopback = || {
            vec![
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
                dns("localhost"),
            ]
        };
        let etcd_server = ensure_leaf(
            dir,
            &etcd_ca,
            Leaf {
                name: "etcd-server",
                common_name: "etcd",
                organization: None,
                sans: loopback(),
                server: true,
                client: true,
            },
        )?;
        let etcd_client = ensure_leaf(
            dir,
            &etcd_ca,
            Leaf {
                name: "apiserver-etcd-client",
                common_name: "kube-apiserver-etcd-client",
                organization: None,
                sans: vec![],
                server: false,
                client: true,
            },
        )?;
        let mut api_sans = loopback();
        // The first address of the service range, which in-cluster clients use.
        api_sans.push(SanType::IpAddress([10, 0, 0, 1].into()));
        for name in [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            api_sans.push(dns(name));
        }
        api_sans.extend(hosts.iter().filter(|h| !h.is_empty()).map(|h| dns(h)));
        api_sans.extend(addresses.iter().map(|a| SanType::IpAddress(*a)));
        let apiserver = ensure_leaf(
            dir,
            &ca,
            Leaf {
                name: "apiserver",
                common_name: "kube-apiserver",
                organization: None,
                sans: api_sans,
                server: true,
                client: false,
            },
        )?;
        let admin = ensure_leaf(
            dir,
            &ca,
            Leaf {
                name: "admin",
                common_name: "univrs-admin",
                organization: Some("system:masters"),
                sans: vec![],
                server: false,
                client: true,
            },
        )?;
        let controller_manager = ensure_leaf(
            dir,
            &ca,
            Leaf {
                name: "controller-manager",
                common_name: "system:kube-controller-manager",
                organization: None,
                sans: vec![],
                server: false,
                client: true,
            },
        )?;
        let client = |name, common_name, organization| {
            ensure_leaf(
                dir,
                &ca,
                Leaf {
                    name,
                    common_name,
                    organization,
                    sans: vec![],
                    server: false,
                    client: true,
                },
            )
        };
        let scheduler = client("scheduler", "system:kube-scheduler", None)?;
        // kubeadm's choice of name; the group lets the API server do anything a kubelet serves.
        let kubelet_client = client(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
        )?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        if !sa_key.exists() || !sa_pub.exists() {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            write_private(&sa_key, &key.serialize_pem())?;
            write_public(&sa_pub, &key.public_key_pem())?;
        }
        Ok(Self {
            ca: ca.files,
            etcd_ca: etcd_ca.files,
            etcd_server,
            etcd_client,
            apiserver,
            admin,
            controller_manager,
            scheduler,
            kubelet_client,
            sa_key,
            sa_pub,
        })
    }
}

/// A client certificate for `user` (in `group`) signed by the cluster CA under `dir`, made once
/// per user and group (`univrs control-plane kubeconfig`).
pub fn client_certificate(dir: &Path, user: &str, group: Option<&str>) -> Result<CertFiles> {
    let ca = Ca {
        files: files(dir, "ca"),
        common_name: KUBERNETES_CA,
    };
    if !ca.files.key.exists() {
        anyhow::bail!(
            "{} is missing: start the control plane once with this --data-dir first",
            ca.files.key.display()
        );
    }
    let slug: String = format!("{user}-{}", group.unwrap_or(""))
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    ensure_leaf(
        dir,
        &ca,
        Leaf {
            name: &format!("client-{slug}"),
            common_name: user,
            organization: group,
            sans: vec![],
            server: false,
            client: true,
        },
    )
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.to_string().try_into().expect("a valid DNS name"))
}

/// Creates `dir` (and parents) with mode 0700, or tightens an existing one.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode 0700 on {}", dir.display()))
}

/// Writes a secret file with mode 0600, replacing it atomically.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    write_mode(path, contents, 0o600)
}

fn write_public(path: &Path, contents: &str) -> Result<()> {
    write_mode(path, contents, 0o644)
}

fn write_mode(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn files(dir: &Path, name: &str) -> CertFiles {
    CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    }
}

/// A CA's files and the name it issues under.
struct Ca {
    files: CertFiles,
    common_name: &'static str,
}

fn ensure_ca(dir: &Path, name: &str, common_name: &'static str) -> Result<Ca> {
    let f = files(dir, name);
    if f.cert.exists() && f.key.exists() {
        return Ok(Ca {
            files: f,
            common_name,
        });
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = ca_params(common_name);
    let (not_before, not_after) = validity(3650);
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.self_signed(&key)?;
    write_private(&f.key, &key.serialize_pem())?;
    write_public(&f.cert, &cert.pem())?;
    Ok(Ca {
        files: f,
        common_name,
    })
}

/// The parameters that identify a CA as an issuer: its name and key usages. The issuer of a
/// leaf is rebuilt from these and the CA key, so the CA certificate never needs parsing.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name, None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn ensure_leaf(dir: &Path, ca: &Ca, leaf: Leaf<'_>) -> Result<CertFiles> {
    let f = files(dir, leaf.name);
    // What the certificate was made for, beside it: a change of names (a new advertised
    // address) makes it again under the same CA, so clients that trust the CA notice nothing.
    let made_for = dir.join(format!("{}.sans", leaf.name));
    let sans = format!("{:?}\n", leaf.sans);
    let same_names = fs::read_to_string(&made_for).is_ok_and(|s| s == sans);
    if f.cert.exists() && f.key.exists() && same_names {
        return Ok(f);
    }
    let ca_key = KeyPair::from_pem(&fs::read_to_string(&ca.files.key)?)
        .with_context(|| format!("reading {}", ca.files.key.display()))?;
    let issuer = Issuer::new(ca_params(ca.common_name), ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(leaf.common_name, leaf.organization);
    params.subject_alt_names = leaf.sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if leaf.server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if leaf.client {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.use_authority_key_identifier_extension = true;
    let (not_before, not_after) = validity(825);
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer)?;
    write_private(&f.key, &key.serialize_pem())?;
    write_public(&f.cert, &cert.pem())?;
    write_public(&made_for, &sans)?;
    Ok(f)
}

fn distinguished_name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// From an hour ago (clock skew) to `days` from now.
fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(days),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_files_once_and_reuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let pki = Pki::ensure(&pki_dir, &["myhost".into()], &[]).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pki_dir), 0o700);
        for key in [
            &pki.ca.key,
            &pki.etcd_ca.key,
            &pki.apiserver.key,
            &pki.admin.key,
            &pki.sa_key,
        ] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        let first = fs::read(&pki.apiserver.cert).unwrap();
        let again = Pki::ensure(&pki_dir, &["myhost".into()], &[]).unwrap();
        assert_eq!(fs::read(&again.apiserver.cert).unwrap(), first);
        // A new advertised address: the serving certificate is made again, the CA stays.
        let ca = fs::read(&pki.ca.cert).unwrap();
        let moved = Pki::ensure(
            &pki_dir,
            &["myhost".into()],
            &["192.0.2.7".parse().unwrap()],
        )
        .unwrap();
        assert_ne!(fs::read(&moved.apiserver.cert).unwrap(), first);
        assert_eq!(fs::read(&moved.ca.cert).unwrap(), ca);
    }
}
