//! Network policy by default: what a container may reach from its agent's bridge, enforced in
//! the host's `filter` table (the bridge's traffic passes it: `br_netfilter`).
//!
//! A container reaches the internet and the containers of its own group (its Workload's
//! namespace, its organization) on the same bridge. It does not reach the host (any of its
//! addresses; only a ping of its gateway is answered), the owner's LAN (the networks the host
//! is attached to, and the private ranges), link-local addresses (cloud metadata at
//! 169.254.169.254 among them), or another group's containers. Replies to connections made
//! to the container (a host port, a probe) pass. The owner may allow more destinations
//! (`--allow-egress CIDR`).
//!
//! Chains, per network `univrs-<h>`:
//! - `UNIVRS-IN-<h>`, from `INPUT -i <bridge>`: replies, a ping of the gateway, else REJECT;
//! - `UNIVRS-OUT-<h>`, from `FORWARD -i <bridge>`: replies; traffic to the bridge itself goes
//!   to `UNIVRS-PEER-<h>`; allowed destinations ACCEPT; the LAN, private and link-local
//!   ranges REJECT; the rest (the internet) ACCEPT;
//! - `UNIVRS-PEER-<h>`: each container's address jumps to its group's chain `UNIVRS-G-<h>-<n>`,
//!   which ACCEPTs its members' addresses and REJECTs the rest.
//!
//! The peer and group chains are rebuilt from the attachments whenever one comes or goes, in
//! one `iptables-restore` transaction: a half-written policy is never in force.

use super::error::NetworkError;
use super::iptables::{NamePorts, run};
use super::subnet::Ipv4Cidr;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;

/// Destinations no container reaches unless the owner allows them: the private ranges
/// (RFC 1918), shared address space (RFC 6598, carrier-grade NAT), link-local (RFC 3927,
/// cloud metadata), "this network", multicast and reserved.
pub const DENIED_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// What containers of one network may reach besides the internet and their group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// Destinations the owner allows although they are denied by default.
    pub allow: Vec<Ipv4Cidr>,
    /// The agent's name service on the gateway, which containers reach (see
    /// `agent::names`).
    pub names: Option<NamePorts>,
}

/// One attached container, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
    /// Its group (the Workload's namespace).
    pub group: String,
}

fn suffix(network: &str) -> String {
    let h = network.strip_prefix("univrs-").unwrap_or(network);
    h[..h.len().min(8)].to_uppercase()
}

fn chain(kind: &str, network: &str) -> String {
    format!("UNIVRS-{kind}-{}", suffix(network))
}

fn group_chain(network: &str, n: usize) -> String {
    format!("UNIVRS-G-{}-{n}", suffix(network))
}

/// The `iptables-restore --noflush` script (filter table) making the whole policy of
/// `network` (bridge `bridge`, gateway `gateway`) for `members`, given the host's routed
/// networks `lan` and what `save` (`iptables-save -t filter`) shows: every chain (re)filled,
/// group chains no longer needed deleted, the INPUT and FORWARD jumps made first in their
/// chains unless present.
#[allow(clippy::too_many_arguments)]
pub fn policy_script(
    save: &str,
    network: &str,
    bridge: &str,
    gateway: Ipv4Addr,
    lan: &[Ipv4Cidr],
    isolation: &Isolation,
    members: &[Member],
) -> String {
    let (input, output, peer) = (
        chain("IN", network),
        chain("OUT", network),
        chain("PEER", network),
    );
    let reject = "-j REJECT --reject-with icmp-port-unreachable";
    let replies = "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT";
    let mut groups: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
    for m in members {
        groups.entry(m.group.as_str()).or_default().push(m.ip);
    }
    let mut s = String::from("*filter\n");
    for c in [&input, &output, &peer] {
        s.push_str(&format!(":{c} - [0:0]\n"));
    }
    for n in 0..groups.len() {
        s.push_str(&format!(":{} - [0:0]\n", group_chain(network, n)));
    }
    s.push_str(&format!("-A {input} {replies}\n"));
    s.push_str(&format!(
        "-A {input} -d {gateway}/32 -p icmp --icmp-type echo-request -j ACCEPT\n"
    ));
    if let Some(n) = &isolation.names {
        for (proto, port) in [("udp", n.dns), ("tcp", n.dns), ("tcp", n.proxy)] {
            s.push_str(&format!(
                "-A {input} -d {gateway}/32 -p {proto} -m {proto} --dport {port} -j ACCEPT\n"
            ));
        }
    }
    s.push_str(&format!("-A {input} {reject}\n"));
    s.push_str(&format!("-A {output} {replies}\n"));
    s.push_str(&format!("-A {output} -o {bridge} -j {peer}\n"));
    for a in &isolation.allow {
        s.push_str(&format!("-A {output} -d {a} -j ACCEPT\n"));
    }
    let mut denied: Vec<String> = DENIED_RANGES.iter().map(|r| r.to_string()).collect();
    for l in lan {
        let l = l.to_string();
        if !denied.contains(&l) {
            denied.push(l);
        }
    }
    for d in denied {
        s.push_str(&format!("-A {output} -d {d} {reject}\n"));
    }
    s.push_str(&format!("-A {output} -j ACCEPT\n"));
    for (n, (_, ips)) in groups.iter().enumerate() {
        let g = group_chain(network, n);
        for ip in ips {
            s.push_str(&format!("-A {peer} -d {ip}/32 -j {g}\n"));
            s.push_str(&format!("-A {g} -s {ip}/32 -j ACCEPT\n"));
        }
        s.push_str(&format!("-A {g} {reject}\n"));
    }
    s.push_str(&format!("-A {peer} {reject}\n"));
    // Group chains of groups that left (now unreferenced: PEER was refilled above).
    let prefix = format!(":UNIVRS-G-{}-", suffix(network));
    for line in save.lines() {
        if let Some(rest) = line.strip_prefix(&prefix)
            && let Some(n) = rest.split(' ').next().and_then(|n| n.parse::<usize>().ok())
            && n >= groups.len()
        {
            let c = group_chain(network, n);
            s.push_str(&format!("-F {c}\n-X {c}\n"));
        }
    }
    for (parent, target) in [("INPUT", &input), ("FORWARD", &output)] {
        let jump = format!("-A {parent} -i {bridge} -j {target}");
        if !save.lines().any(|l| l == jump) {
            s.push_str(&format!("-I {parent} 1 -i {bridge} -j {target}\n"));
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// The input removing `network`'s policy (its jumps, then its chains); `None` if none is left.
pub fn unpolicy_script(save: &str, network: &str) -> Option<String> {
    let marker = format!("-{}", suffix(network));
    let ours = |c: &str| c.starts_with("UNIVRS-") && c.contains(&marker);
    let chains: Vec<&str> = save
        .lines()
        .filter_map(|l| l.strip_prefix(':')?.split(' ').next())
        .filter(|c| ours(c))
        .collect();
    let jumps: Vec<&str> = save
        .lines()
        .filter(|l| {
            (l.starts_with("-A INPUT ") || l.starts_with("-A FORWARD "))
                && l.rsplit_once(" -j ").is_some_and(|(_, t)| ours(t))
        })
        .collect();
    if chains.is_empty() && jumps.is_empty() {
        return None;
    }
    let mut s = String::from("*filter\n");
    for j in jumps {
        s.push_str(&format!("-D {}\n", &j[3..]));
    }
    for c in &chains {
        s.push_str(&format!("-F {c}\n"));
    }
    for c in &chains {
        s.push_str(&format!("-X {c}\n"));
    }
    s.push_str("COMMIT\n");
    Some(s)
}

/// Makes sure bridged traffic passes the host's iptables (`br_netfilter`), without which
/// containers on one bridge would reach each other whatever their group.
pub fn ensure_bridge_filtering() -> Result<(), NetworkError> {
    let knob = std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if !knob.exists() {
        // Loading the module is all it takes where it is not built in.
        let _ = Command::new("modprobe")
            .arg("br_netfilter")
            .env_clear()
            .env("PATH", crate::runtime::spec::DEFAULT_PATH)
            .output();
    }
    match std::fs::read_to_string(knob) {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(_) => std::fs::write(knob, "1").map_err(|e| {
            NetworkError::Invalid(format!(
                "turning on {} (bridged traffic through iptables, for the network policy): {e}",
                knob.display()
            ))
        }),
        Err(e) => Err(NetworkError::Invalid(format!(
            "the network policy needs br_netfilter ({}: {e}); load it with `modprobe br_netfilter`",
            knob.display()
        ))),
    }
}

/// The filter table as `iptables-save` prints it.
pub fn save_filter() -> Result<String, NetworkError> {
    run(Command::new("iptables-save").args(["-t", "filter"]), None)
}

/// Applies a `--noflush` script atomically (waiting for the xtables lock).
pub fn restore(script: &str) -> Result<(), NetworkError> {
    run(
        Command::new("iptables-restore").args(["-w", "--noflush"]),
        Some(script),
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<Member> {
        vec![
            Member {
                ip: "10.89.1.2".parse().unwrap(),
                group: "school".into(),
            },
            Member {
                ip: "10.89.1.3".parse().unwrap(),
                group: "library".into(),
            },
            Member {
                ip: "10.89.1.4".parse().unwrap(),
                group: "school".into(),
            },
        ]
    }

    #[test]
    fn groups_see_only_themselves_and_the_lan_is_denied() {
        let lan = vec!["192.0.2.0/24".parse().unwrap()];
        let iso = Isolation {
            allow: vec!["192.168.5.0/24".parse().unwrap()],
            names: Some(NamePorts {
                dns: 40053,
                proxy: 40080,
                range: "198.18.0.0/15".parse().unwrap(),
            }),
        };
        let gw = "10.89.1.1".parse().unwrap();
        let s = policy_script(
            "",
            "univrs-ab12cd34",
            "univrs-ab12cd34",
            gw,
            &lan,
            &iso,
            &members(),
        );
        // library is group 0, school group 1 (sorted).
        assert!(s.contains("-A UNIVRS-PEER-AB12CD34 -d 10.89.1.3/32 -j UNIVRS-G-AB12CD34-0\n"));
        assert!(s.contains("-A UNIVRS-PEER-AB12CD34 -d 10.89.1.2/32 -j UNIVRS-G-AB12CD34-1\n"));
        assert!(s.contains("-A UNIVRS-G-AB12CD34-1 -s 10.89.1.4/32 -j ACCEPT\n"));
        assert!(!s.contains("-A UNIVRS-G-AB12CD34-0 -s 10.89.1.2/32"));
        assert!(s.contains("-A UNIVRS-OUT-AB12CD34 -d 192.0.2.0/24 -j REJECT"));
        // The name service, and nothing else of the host's.
        let names = "-A UNIVRS-IN-AB12CD34 -d 10.89.1.1/32 -p tcp -m tcp --dport 40080 -j ACCEPT\n";
        assert!(s.find(names).unwrap() < s.find("-A UNIVRS-IN-AB12CD34 -j REJECT").unwrap());
        assert!(s.contains(
            "-A UNIVRS-IN-AB12CD34 -d 10.89.1.1/32 -p udp -m udp --dport 40053 -j ACCEPT\n"
        ));
        assert!(s.contains("-A UNIVRS-OUT-AB12CD34 -d 169.254.0.0/16 -j REJECT"));
        // The owner's allowance comes before the denial of its range.
        let allow = s.find("-d 192.168.5.0/24 -j ACCEPT").unwrap();
        assert!(allow < s.find("-d 192.168.0.0/16 -j REJECT").unwrap());
        assert!(s.contains("-I FORWARD 1 -i univrs-ab12cd34 -j UNIVRS-OUT-AB12CD34\n"));
        assert!(s.contains("-I INPUT 1 -i univrs-ab12cd34 -j UNIVRS-IN-AB12CD34\n"));
        // Present jumps are not added twice; chains of groups that left are deleted.
        let save =
            ":UNIVRS-G-AB12CD34-2 - [0:0]\n-A INPUT -i univrs-ab12cd34 -j UNIVRS-IN-AB12CD34\n";
        let s = policy_script(
            save,
            "univrs-ab12cd34",
            "univrs-ab12cd34",
            gw,
            &lan,
            &iso,
            &members(),
        );
        assert!(!s.contains("-I INPUT"));
        assert!(s.contains("-X UNIVRS-G-AB12CD34-2\n"));
        assert!(!s.contains("-X UNIVRS-G-AB12CD34-1\n"));
    }

    #[test]
    fn removal_takes_jumps_then_chains_of_this_network_only() {
        let save = "\
:UNIVRS-IN-AB12CD34 - [0:0]
:UNIVRS-G-AB12CD34-0 - [0:0]
:UNIVRS-IN-FFFFFFFF - [0:0]
-A INPUT -i univrs-ab12cd34 -j UNIVRS-IN-AB12CD34
-A INPUT -i univrs-ffffffff -j UNIVRS-IN-FFFFFFFF
";
        let s = unpolicy_script(save, "univrs-ab12cd34").unwrap();
        assert!(s.contains("-D INPUT -i univrs-ab12cd34 -j UNIVRS-IN-AB12CD34\n"));
        assert!(s.contains("-X UNIVRS-G-AB12CD34-0\n"));
        assert!(!s.contains("FFFFFFFF"));
        assert!(s.find("-D INPUT").unwrap() < s.find("-F ").unwrap());
        assert_eq!(unpolicy_script("", "univrs-ab12cd34"), None);
    }
}
