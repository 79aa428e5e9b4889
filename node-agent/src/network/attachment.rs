//! A container's attachment: what was asked (ports), what was run (the network
//! configurations, kept so DEL runs exactly what ADD ran), and what the plugins returned
//! (cached for DEL and CHECK, as the CNI specification requires). One JSON file per
//! container, written atomically.

use super::error::NetworkError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A host port forwarded to a container port (CNI's `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the host.
    pub host_port: u16,
    /// The port inside the container.
    pub container_port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// Only traffic to this host address is forwarded [default: every host address,
    /// 127.0.0.1 included].
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

impl PortMapping {
    /// A TCP mapping of `host_port` on every host address to `container_port`.
    pub fn tcp(host_port: u16, container_port: u16) -> Self {
        Self {
            host_port,
            container_port,
            protocol: Protocol::Tcp,
            host_ip: None,
        }
    }

    /// Whether the two mappings would take the same host port.
    pub(crate) fn collides(&self, other: &PortMapping) -> bool {
        self.host_port == other.host_port
            && self.protocol == other.protocol
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

/// Checks port mappings: ports from 1, no host port twice.
pub(crate) fn validate_ports(ports: &[PortMapping]) -> Result<(), NetworkError> {
    for (i, p) in ports.iter().enumerate() {
        if p.host_port == 0 || p.container_port == 0 {
            return Err(NetworkError::Invalid(format!(
                "port mapping {i} ({}:{}/{}): ports must be 1 to 65535",
                p.host_port, p.container_port, p.protocol
            )));
        }
        if let Some(q) = ports[..i].iter().find(|q| q.collides(p)) {
            return Err(NetworkError::Invalid(format!(
                "port mapping {i} maps host port {}/{} again (to {} and {})",
                p.host_port, p.protocol, q.container_port, p.container_port
            )));
        }
    }
    Ok(())
}

/// An address the container got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAssignment {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The gateway (the bridge).
    pub gateway: Option<IpAddr>,
}

/// A container's network attachment, as [`super::Cni::setup`] made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The container id.
    pub container_id: String,
    /// The id the plugins know the attachment by (`CNI_CONTAINERID`: host-local's lease and
    /// the plugins' iptables comments name it): the container id, or the id of the spare
    /// attachment the container took.
    pub cni_id: String,
    /// The network namespace to give the container (`ContainerConfig::netns`).
    pub netns: PathBuf,
    /// The interface inside the namespace (`eth0`).
    pub interface: String,
    /// Its MAC address.
    pub mac: Option<String>,
    /// The host end of the veth pair, on the agent's bridge.
    pub host_veth: Option<String>,
    /// The container's addresses.
    pub ips: Vec<IpAssignment>,
    /// The forwarded host ports.
    pub ports: Vec<PortMapping>,
    /// False while setup runs, or if the agent stopped during it: then only
    /// [`super::Cni::teardown`] applies.
    pub complete: bool,
}

impl Attachment {
    /// The container's first IPv4 address.
    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.ips.iter().find_map(|ip| match ip.address {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }
}

/// One network (configuration list) of an attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NetworkState {
    /// `CNI_IFNAME` for this network.
    pub ifname: String,
    /// The configuration list, exactly as ADD ran it.
    pub list: Value,
    /// The ADD result of the whole list, once it succeeded.
    pub result: Option<Value>,
}

/// The attachment file of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub container_id: String,
    /// The id the plugins know the attachment by (`CNI_CONTAINERID`: host-local's lease, the
    /// plugins' iptables comments), when it is not `container_id`: an attachment made ahead
    /// of time under its own id and then given to the container (see `spare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_id: Option<String>,
    /// The policy group (the Workload's namespace): containers reach those of their group.
    #[serde(default)]
    pub group: String,
    pub netns: PathBuf,
    pub ports: Vec<PortMapping>,
    /// In ADD order (DEL runs them backwards).
    pub networks: Vec<NetworkState>,
    /// The address chosen for the container before its networks were added (host-local
    /// leases it): the policy knows it before the plugins run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    pub complete: bool,
    pub created_ms: u64,
}

impl Record {
    /// The id the plugins know the attachment by.
    pub fn cni_id(&self) -> &str {
        self.cni_id.as_deref().unwrap_or(&self.container_id)
    }

    /// Reads the record at `path`; `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<Record>, NetworkError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(super::error::io_err(format!("reading {}", path.display()))(
                    e,
                ));
            }
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            NetworkError::Invalid(format!(
                "the attachment file {} is not valid: {e}; remove it after cleaning up by hand",
                path.display()
            ))
        })
    }

    /// Writes the record to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), NetworkError> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| NetworkError::Invalid(format!("encoding the attachment: {e}")))?;
        crate::fsutil::write_atomic(path, &bytes)
            .map_err(super::error::io_err(format!("writing {}", path.display())))
    }

    /// Removes the record file at `path`; a missing one is fine.
    pub fn remove(path: &Path) -> Result<(), NetworkError> {
        crate::fsutil::remove_any(path)
            .map_err(super::error::io_err(format!("removing {}", path.display())))
    }

    /// The public view: addresses and interfaces from the result of the network whose
    /// interface is `ifname`.
    pub fn attachment(&self, ifname: &str) -> Attachment {
        let mut out = Attachment {
            container_id: self.container_id.clone(),
            cni_id: self.cni_id().to_string(),
            netns: self.netns.clone(),
            interface: ifname.to_string(),
            mac: None,
            host_veth: None,
            ips: Vec::new(),
            ports: self.ports.clone(),
            complete: self.complete,
        };
        let Some(result) = self
            .networks
            .iter()
            .find(|n| n.ifname == ifname)
            .and_then(|n| n.result.as_ref())
        else {
            return out;
        };
        let parsed: CniResult = serde_json::from_value(result.clone()).unwrap_or_default();
        let sandbox = parsed
            .interfaces
            .iter()
            .position(|i| i.name == ifname && !i.sandbox.is_empty());
        if let Some(i) = sandbox {
            out.mac = Some(parsed.interfaces[i].mac.clone()).filter(|m| !m.is_empty());
        }
        // The host end: on the host (no sandbox), and not the bridge (the first interface).
        out.host_veth = parsed
            .interfaces
            .iter()
            .skip(1)
            .find(|i| i.sandbox.is_empty())
            .map(|i| i.name.clone());
        out.ips = parsed
            .ips
            .iter()
            .filter(|ip| sandbox.is_none() || ip.interface.is_none() || ip.interface == sandbox)
            .filter_map(|ip| {
                let (addr, prefix) = ip.address.split_once('/')?;
                Some(IpAssignment {
                    address: addr.parse().ok()?,
                    prefix_len: prefix.parse().ok()?,
                    gateway: ip.gateway,
                })
            })
            .collect();
        out
    }
}

/// The parts of a CNI result (specification v1.0.0) the agent reads.
#[derive(Debug, Default, Deserialize)]
struct CniResult {
    #[serde(default)]
    interfaces: Vec<CniInterface>,
    #[serde(default)]
    ips: Vec<CniIp>,
}

#[derive(Debug, Default, Deserialize)]
struct CniInterface {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    sandbox: String,
}

#[derive(Debug, Deserialize)]
struct CniIp {
    address: String,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

/// `result` with the namespace path `from` (each interface's `sandbox`) replaced by `to`.
pub(crate) fn moved(mut result: Value, from: &Path, to: &Path) -> Value {
    let (from, to) = (from.to_string_lossy(), to.to_string_lossy());
    if let Some(interfaces) = result.get_mut("interfaces").and_then(Value::as_array_mut) {
        for sandbox in interfaces.iter_mut().filter_map(|i| i.get_mut("sandbox")) {
            if sandbox.as_str() == Some(from.as_ref()) {
                *sandbox = Value::String(to.to_string());
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_bridge_result() {
        let result = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "univrs-1a2b3c4d", "mac": "e6:75:a5:18:54:69"},
                {"name": "vetha65a35fc", "mac": "82:01:52:34:9d:a6"},
                {"name": "eth0", "mac": "ce:22:19:46:aa:33", "sandbox": "/x/netns/c1"}
            ],
            "ips": [{"interface": 2, "address": "10.89.3.2/24", "gateway": "10.89.3.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let record = Record {
            container_id: "c1".into(),
            cni_id: None,
            group: "school".into(),
            netns: "/x/netns/c1".into(),
            ports: vec![PortMapping::tcp(8080, 80)],
            networks: vec![NetworkState {
                ifname: "eth0".into(),
                list: Value::Null,
                result: Some(result),
            }],
            address: Some("10.89.3.2".parse().unwrap()),
            complete: true,
            created_ms: 0,
        };
        let a = record.attachment("eth0");
        assert_eq!(a.mac.as_deref(), Some("ce:22:19:46:aa:33"));
        assert_eq!(a.host_veth.as_deref(), Some("vetha65a35fc"));
        assert_eq!(a.ipv4(), Some("10.89.3.2".parse().unwrap()));
        assert_eq!(a.ips[0].prefix_len, 24);
        assert_eq!(a.ips[0].gateway, Some("10.89.3.1".parse().unwrap()));
    }

    #[test]
    fn port_mappings() {
        let json = serde_json::to_value(PortMapping {
            host_ip: Some("127.0.0.1".parse().unwrap()),
            ..PortMapping::tcp(8080, 80)
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"})
        );
        assert!(validate_ports(&[PortMapping::tcp(1, 1), PortMapping::tcp(2, 1)]).is_ok());
        assert!(validate_ports(&[PortMapping::tcp(0, 1)]).is_err());
        assert!(validate_ports(&[PortMapping::tcp(5, 1), PortMapping::tcp(5, 2)]).is_err());
        let udp = PortMapping {
            protocol: Protocol::Udp,
            ..PortMapping::tcp(5, 1)
        };
        assert!(validate_ports(&[PortMapping::tcp(5, 1), udp]).is_ok());
    }

    #[test]
    fn a_moved_result_names_the_new_namespace_only_where_it_named_the_old() {
        let result = serde_json::json!({
            "interfaces": [
                {"name": "univrs-1a2b3c4d"},
                {"name": "veth1", "sandbox": ""},
                {"name": "eth0", "sandbox": "/run/x/netns/.spare"}
            ],
            "ips": [{"interface": 2, "address": "10.89.3.2/24"}]
        });
        let out = moved(
            result,
            Path::new("/run/x/netns/.spare"),
            Path::new("/run/x/netns/web-0"),
        );
        assert_eq!(out["interfaces"][2]["sandbox"], "/run/x/netns/web-0");
        assert_eq!(out["interfaces"][1]["sandbox"], "");
        assert!(out["interfaces"][0].get("sandbox").is_none());
        assert_eq!(out["ips"][0]["address"], "10.89.3.2/24");
    }
}
