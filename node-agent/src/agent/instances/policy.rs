//! What the node's owner lends and on what terms: the defaults every container gets whatever
//! its Workload says, set with agent flags (and the chart's values). The owner lends capacity,
//! not the machine.

use crate::network::Ipv4Cidr;
use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use univrs_api::resources::node::HostPortRange;

/// Host ports Workloads may publish by default: Kubernetes' NodePort range, away from the
/// ports a machine's own services use.
pub const DEFAULT_HOST_PORTS: RangeInclusive<u16> = 30000..=32767;

/// The image size cap by default: 4 GiB compressed, more than most application images.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 4 << 30;

/// The owner's terms for containers on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerPolicy {
    /// The most processes and threads one container may have (a fork storm stops there).
    pub pids_per_container: u64,
    /// Host ports Workloads may publish (`hostPort`).
    pub host_ports: RangeInclusive<u16>,
    /// Destinations containers may reach although the network policy denies them by default
    /// (the owner's LAN, private and link-local ranges; see [`crate::network::policy`]).
    pub allow_egress: Vec<Ipv4Cidr>,
    /// The most an image may weigh (its compressed config and layers).
    pub max_image_bytes: u64,
    /// The most one container's log keeps (bytes, with its one rotated file).
    pub log_max_bytes: u64,
    /// Directories whose OCI layouts Workloads may name as `oci:DIR:TAG`.
    pub oci_layout_dirs: Vec<std::path::PathBuf>,
}

impl Default for OwnerPolicy {
    fn default() -> Self {
        Self {
            pids_per_container: 1024,
            host_ports: DEFAULT_HOST_PORTS,
            allow_egress: Vec::new(),
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            log_max_bytes: 10 << 20,
            oci_layout_dirs: Vec::new(),
        }
    }
}

impl OwnerPolicy {
    /// The host port range as the Node's `spec.hostPorts` says it.
    pub fn host_port_range(&self) -> HostPortRange {
        HostPortRange {
            min: i32::from(*self.host_ports.start()),
            max: i32::from(*self.host_ports.end()),
        }
    }

    /// Whether `port` may be published on this host: in the owner's range, not `reserved`
    /// (the agent's API, the API server's) and not a port something on the host listens on.
    /// `Err` says why not, for the instance's message.
    pub fn check_host_port(
        &self,
        port: u16,
        udp: bool,
        reserved: &[u16],
        listening: &BTreeSet<(u16, bool)>,
    ) -> Result<(), String> {
        let proto = if udp { "UDP" } else { "TCP" };
        if !self.host_ports.contains(&port) {
            return Err(format!(
                "hostPort {port}/{proto} is outside the host ports this node's owner allows ({}-{})",
                self.host_ports.start(),
                self.host_ports.end()
            ));
        }
        if reserved.contains(&port) {
            return Err(format!(
                "hostPort {port}/{proto} is the agent's or the API server's own port"
            ));
        }
        if listening.contains(&(port, udp)) {
            return Err(format!(
                "hostPort {port}/{proto} is taken by a service of the host itself"
            ));
        }
        Ok(())
    }
}

/// The ports something on this host listens on (TCP) or is bound to (UDP), over IPv4 and
/// IPv6, as (port, udp), from `/proc/net` of the caller's network namespace.
pub fn listening_ports() -> BTreeSet<(u16, bool)> {
    let mut out = BTreeSet::new();
    for (file, udp) in [
        ("/proc/net/tcp", false),
        ("/proc/net/tcp6", false),
        ("/proc/net/udp", true),
        ("/proc/net/udp6", true),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        out.extend(parse_proc_net(&text, udp).into_iter().map(|p| (p, udp)));
    }
    out
}

/// Local ports of the listening (TCP state 0A) or bound (UDP state 07) sockets in a
/// `/proc/net/{tcp,udp}[6]` table.
fn parse_proc_net(text: &str, udp: bool) -> Vec<u16> {
    let state = if udp { "07" } else { "0A" };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let st = f.nth(1)?;
            (st == state).then_some(())?;
            let port = local.rsplit_once(':')?.1;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

/// Parses `LOW-HIGH` (a range of host ports, both ends included).
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a port range like 30000-32767"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} in {s:?} is not a port from 1 to 65535"))
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo > hi {
        return Err(format!("{s:?} ends before it starts"));
    }
    Ok(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_are_checked_against_the_range_reserved_and_listening_ports() {
        let policy = OwnerPolicy::default();
        let none = BTreeSet::new();
        let err = policy.check_host_port(22, false, &[], &none).unwrap_err();
        assert!(
            err.contains("outside") && err.contains("30000-32767"),
            "{err}"
        );
        policy.check_host_port(30080, false, &[], &none).unwrap();
        let err = policy
            .check_host_port(30080, false, &[30080], &none)
            .unwrap_err();
        assert!(err.contains("agent's or the API server's"), "{err}");
        let busy = BTreeSet::from([(30080, false)]);
        assert!(policy.check_host_port(30080, false, &[], &busy).is_err());
        // The same number over UDP is another port.
        policy.check_host_port(30080, true, &[], &busy).unwrap();
    }

    #[test]
    fn listening_sockets_are_read_from_proc_net() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(parse_proc_net(table, false), vec![22]);
        // A real listener of this process shows up.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening_ports().contains(&(port, false)));
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("30000-32767").unwrap(), DEFAULT_HOST_PORTS);
        assert_eq!(parse_port_range("8080-8080").unwrap(), 8080..=8080);
        for bad in ["", "80", "0-10", "10-5", "1-70000", "a-b"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
    }
}
