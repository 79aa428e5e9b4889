//! The agent's own nat rules: one masquerade chain per network, and the last step of a
//! teardown, removing rules the plugins could not.
//!
//! **Masquerading** is the agent's, once per network, not the bridge plugin's per container
//! (`ipMasq`): the plugin's way costs a chain and several iptables calls on every ADD and DEL
//! (about 20 ms and 35 ms here, most of a container's network setup). The chain
//! `UNIVRS-MASQ-<h>` accepts traffic to the subnet itself and to multicast and masquerades the
//! rest; one POSTROUTING rule sends the subnet's traffic there. Attachments recorded with the
//! plugin's masquerading (before this) keep their configuration, so their DEL still removes
//! their chains.
//!
//! The bridge plugin finds the masquerade rules to delete from the addresses on the
//! container's interface, so when that interface is already gone (someone deleted the veth,
//! or the namespace was unmounted) its DEL succeeds and leaves the rules behind. Every rule
//! the plugins make for a container carries the comment `name: "<network>" id: "<id>"`
//! (`dnat name: …` for portmap), so after DEL the agent removes what still carries it: the
//! rule jumping to a per-container chain, then that chain. The shared chains
//! (`CNI-HOSTPORT-*`) are never touched.

use super::error::NetworkError;
use std::io::Write;
use std::process::{Command, Stdio};

/// `network`'s (`univrs-<h>`) nat chain of `kind`: at most 28 characters, as iptables wants.
fn nat_chain(kind: &str, network: &str) -> String {
    let h = network.strip_prefix("univrs-").unwrap_or(network);
    format!("UNIVRS-{kind}-{}", &h[..h.len().min(16)]).to_uppercase()
}

/// The masquerade chain of `network`.
fn masquerade_chain(network: &str) -> String {
    nat_chain("MASQ", network)
}

/// The POSTROUTING rule sending `subnet`'s traffic to the masquerade chain, as `iptables-save`
/// prints it.
fn masquerade_jump(network: &str, subnet: &str) -> String {
    format!(
        "-A POSTROUTING -s {subnet} -m comment --comment \"univrs masquerade {network}\" -j {}",
        masquerade_chain(network)
    )
}

/// The name-service chain of `network`: redirects containers' DNS queries to the gateway and
/// their connections to names' virtual addresses to the agent (see `agent::names`).
fn names_chain(network: &str) -> String {
    nat_chain("NAME", network)
}

/// The PREROUTING rule sending what enters from `bridge` to the name-service chain.
fn names_jump(network: &str, bridge: &str) -> String {
    format!(
        "-A PREROUTING -i {bridge} -m comment --comment \"univrs names {network}\" -j {}",
        names_chain(network)
    )
}

/// The rules in `save` (`iptables-save -t nat`) of `parent` jumping to `chain`, whatever
/// their match: an agent restarted with another subnet or bridge leaves the old one behind.
fn jumps<'a>(save: &'a str, parent: &str, chain: &str) -> Vec<&'a str> {
    let target = format!(" -j {chain}");
    let parent = format!("-A {parent} ");
    save.lines()
        .filter(|l| l.starts_with(&parent) && l.ends_with(&target))
        .collect()
}

/// Appends to `script` what makes `chain` hold `rules` and be reached by `want` alone (stale
/// jumps of `parent` to it deleted).
fn chain_script(
    script: &mut String,
    save: &str,
    parent: &str,
    chain: &str,
    rules: &[String],
    want: &str,
) {
    // A chain declared in a --noflush script is flushed first.
    script.push_str(&format!(":{chain} - [0:0]\n"));
    for r in rules {
        script.push_str(&format!("-A {chain} {r}\n"));
    }
    let present = jumps(save, parent, chain);
    for stale in present.iter().filter(|j| **j != want) {
        script.push_str(&format!("-D {}\n", &stale[3..]));
    }
    if !present.contains(&want) {
        script.push_str(want);
        script.push('\n');
    }
}

/// The `iptables-restore --noflush` input making `network`'s masquerading for `subnet`, and
/// its name-service redirects when `names` says where they go, exactly, given what `save`
/// shows: the chains (re)filled, jumps for other subnets or bridges deleted, the jumps for
/// these added unless they are there.
fn masquerade_script(save: &str, network: &str, subnet: &str, names: Option<&Names>) -> String {
    let mut script = String::from("*nat\n");
    let rules = [
        format!("-d {subnet} -j ACCEPT"),
        "-d 224.0.0.0/4 -j ACCEPT".to_string(),
        "-j MASQUERADE".to_string(),
    ];
    let want = masquerade_jump(network, subnet);
    chain_script(
        &mut script,
        save,
        "POSTROUTING",
        &masquerade_chain(network),
        &rules,
        &want,
    );
    if let Some(n) = names {
        let (gw, p) = (n.gateway, n.ports);
        let rules = [
            format!(
                "-d {gw}/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports {}",
                p.dns
            ),
            format!(
                "-d {gw}/32 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports {}",
                p.dns
            ),
            format!("-d {} -p tcp -j REDIRECT --to-ports {}", p.range, p.proxy),
        ];
        let want = names_jump(network, &n.bridge);
        chain_script(
            &mut script,
            save,
            "PREROUTING",
            &names_chain(network),
            &rules,
            &want,
        );
    }
    script.push_str("COMMIT\n");
    script
}

/// The input removing `network`'s masquerading and name-service redirects (every jump, then
/// the chains); `None` if there is none.
fn unmasquerade_script(save: &str, network: &str) -> Option<String> {
    let mut script = String::from("*nat\n");
    let mut any = false;
    for (parent, chain) in [
        ("POSTROUTING", masquerade_chain(network)),
        ("PREROUTING", names_chain(network)),
    ] {
        for j in jumps(save, parent, &chain) {
            script.push_str(&format!("-D {}\n", &j[3..]));
            any = true;
        }
        if save.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
            script.push_str(&format!("-F {chain}\n-X {chain}\n"));
            any = true;
        }
    }
    script.push_str("COMMIT\n");
    any.then_some(script)
}

/// Where the agent's name service listens on the gateway: the ports its nat rules redirect
/// to (containers ask the gateway's port 53 and connect to names' virtual addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamePorts {
    /// DNS, over UDP and TCP.
    pub dns: u16,
    /// The connections to names' virtual addresses.
    pub proxy: u16,
    /// The virtual addresses.
    pub range: super::subnet::Ipv4Cidr,
}

/// Where a network's name-service redirects go.
#[derive(Debug, Clone)]
pub struct Names {
    /// The bridge the containers' traffic enters from.
    pub bridge: String,
    /// The bridge's address, the containers' name server.
    pub gateway: std::net::Ipv4Addr,
    /// The agent's ports and the virtual addresses.
    pub ports: NamePorts,
}

/// The nat table as `iptables-save` prints it.
fn save_nat() -> Result<String, NetworkError> {
    run(Command::new("iptables-save").args(["-t", "nat"]), None)
}

/// Applies an `iptables-restore --noflush` script (atomically, waiting for the xtables lock).
fn restore_nat(script: &str) -> Result<(), NetworkError> {
    run(
        Command::new("iptables-restore").args(["-w", "--noflush"]),
        Some(script),
    )
    .map(drop)
}

/// Makes `network`'s masquerading for `subnet` and its name-service redirects (idempotent;
/// replaces a jump for another subnet or bridge).
pub fn ensure_masquerade(
    network: &str,
    subnet: &str,
    names: Option<&Names>,
) -> Result<(), NetworkError> {
    restore_nat(&masquerade_script(&save_nat()?, network, subnet, names))
}

/// Removes `network`'s masquerading and name-service redirects, whatever subnet it was made
/// for (none is fine).
pub fn remove_masquerade(network: &str) -> Result<(), NetworkError> {
    match unmasquerade_script(&save_nat()?, network) {
        Some(script) => restore_nat(&script),
        None => Ok(()),
    }
}

/// How `iptables-save` prints the end of the comment on container `id`'s rules.
fn comment_tail(network: &str, id: &str) -> String {
    format!(r#"name: \"{network}\" id: \"{id}\"""#)
}

/// The `iptables-restore --noflush` input deleting what is left of container `id` in the
/// nat table as `iptables-save -t nat` printed it; `None` if nothing is left.
fn leftover_script(save: &str, network: &str, id: &str) -> Option<String> {
    let tail = comment_tail(network, id);
    let tagged: Vec<(&str, &str, &str)> = save
        .lines()
        .filter(|l| l.contains(&tail))
        .filter_map(|l| {
            let rest = l.strip_prefix("-A ")?;
            let (chain, rule) = rest.split_once(' ')?;
            let target = l.rsplit_once(" -j ")?.1.split_whitespace().next()?;
            Some((chain, rule, target))
        })
        .collect();
    // Chains made for this container: the targets of its tagged rules.
    let mut chains: Vec<&str> = tagged
        .iter()
        .map(|(_, _, target)| *target)
        .filter(|t| t.starts_with("CNI-") && !t.starts_with("CNI-HOSTPORT-"))
        .collect();
    chains.sort();
    chains.dedup();
    // Rules inside those chains go with them.
    let entry_rules: Vec<String> = tagged
        .iter()
        .filter(|(chain, _, _)| !chains.contains(chain))
        .map(|(chain, rule, _)| format!("-D {chain} {rule}"))
        .collect();
    if entry_rules.is_empty() && chains.is_empty() {
        return None;
    }
    let mut script = String::from("*nat\n");
    for r in entry_rules {
        script.push_str(&r);
        script.push('\n');
    }
    for c in &chains {
        script.push_str(&format!("-F {c}\n-X {c}\n"));
    }
    script.push_str("COMMIT\n");
    Some(script)
}

/// Runs an iptables command with `input` on its stdin; its stdout.
pub(super) fn run(cmd: &mut Command, input: Option<&str>) -> Result<String, NetworkError> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .env_clear()
        .env("PATH", crate::runtime::spec::DEFAULT_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(super::error::io_err(format!("running {what}")))?;
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(super::error::io_err(format!("waiting for {what}")))?;
    if !out.status.success() {
        return Err(NetworkError::Invalid(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the nat rules and chains still tagged for container `id` of `network`; returns
/// whether there were any (usually not: the plugins removed them).
pub fn remove_leftovers(network: &str, id: &str) -> Result<bool, NetworkError> {
    let Some(script) = leftover_script(&save_nat()?, network, id) else {
        return Ok(false);
    };
    tracing::info!(id, network, "removing iptables rules the CNI plugins left");
    restore_nat(&script)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerading_is_made_exactly_once_and_removed_whatever_the_subnet() {
        let net = "univrs-1a2b3c4d";
        let fresh = masquerade_script("*nat\nCOMMIT\n", net, "10.89.1.0/24", None);
        let jump = r#"-A POSTROUTING -s 10.89.1.0/24 -m comment --comment "univrs masquerade univrs-1a2b3c4d" -j UNIVRS-MASQ-1A2B3C4D"#;
        assert!(fresh.contains(":UNIVRS-MASQ-1A2B3C4D - [0:0]"), "{fresh}");
        assert!(
            fresh.contains("-A UNIVRS-MASQ-1A2B3C4D -j MASQUERADE"),
            "{fresh}"
        );
        assert!(fresh.contains(jump), "{fresh}");
        // Made already: the chain is refilled, the jump not added twice.
        let made = format!(":UNIVRS-MASQ-1A2B3C4D - [0:0]\n{jump}\n");
        let again = masquerade_script(&made, net, "10.89.1.0/24", None);
        assert!(!again.contains("-A POSTROUTING"), "{again}");
        // Another subnet now: the old jump goes, the new one comes.
        let moved = masquerade_script(&made, net, "10.89.2.0/24", None);
        assert!(moved.contains(&format!("-D {}", &jump[3..])), "{moved}");
        assert!(moved.contains("-A POSTROUTING -s 10.89.2.0/24"), "{moved}");
        // Removal takes every jump and the chain; another network's are not touched.
        let other = r#"-A POSTROUTING -s 10.89.9.0/24 -m comment --comment "univrs masquerade univrs-99999999" -j UNIVRS-MASQ-99999999"#;
        let save = format!("{made}{other}\n");
        let gone = unmasquerade_script(&save, net).unwrap();
        assert!(gone.contains(&format!("-D {}", &jump[3..])), "{gone}");
        assert!(gone.contains("-X UNIVRS-MASQ-1A2B3C4D"), "{gone}");
        assert!(!gone.contains("99999999"), "{gone}");
        assert_eq!(unmasquerade_script(other, net), None);
    }

    #[test]
    fn name_service_redirects_go_with_the_masquerading() {
        let net = "univrs-1a2b3c4d";
        let names = Names {
            bridge: "univrs-1a2b3c4d".into(),
            gateway: "10.89.1.1".parse().unwrap(),
            ports: NamePorts {
                dns: 40053,
                proxy: 40080,
                range: "198.18.0.0/15".parse().unwrap(),
            },
        };
        let made = masquerade_script("", net, "10.89.1.0/24", Some(&names));
        let jump = r#"-A PREROUTING -i univrs-1a2b3c4d -m comment --comment "univrs names univrs-1a2b3c4d" -j UNIVRS-NAME-1A2B3C4D"#;
        assert!(made.contains(jump), "{made}");
        assert!(made.contains("-A UNIVRS-NAME-1A2B3C4D -d 10.89.1.1/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 40053\n"), "{made}");
        assert!(
            made.contains(
                "-A UNIVRS-NAME-1A2B3C4D -d 198.18.0.0/15 -p tcp -j REDIRECT --to-ports 40080\n"
            ),
            "{made}"
        );
        let save = format!(":UNIVRS-NAME-1A2B3C4D - [0:0]\n{jump}\n");
        let again = masquerade_script(&save, net, "10.89.1.0/24", Some(&names));
        assert!(!again.contains("-A PREROUTING"), "{again}");
        let gone = unmasquerade_script(&save, net).unwrap();
        assert!(gone.contains(&format!("-D {}", &jump[3..])), "{gone}");
        assert!(gone.contains("-X UNIVRS-NAME-1A2B3C4D"), "{gone}");
    }

    #[test]
    fn masquerade_chains_fit_iptables_and_differ_per_network() {
        let a = masquerade_chain("univrs-1a2b3c4d");
        assert_eq!(a, "UNIVRS-MASQ-1A2B3C4D");
        assert_ne!(a, masquerade_chain("univrs-1a2b3c4e"));
        assert!(masquerade_chain("a-very-long-custom-network-name-indeed").len() <= 28);
    }

    #[test]
    fn deletes_the_entry_rules_and_the_chains_of_one_container() {
        let save = r#"*nat
:POSTROUTING ACCEPT [0:0]
:CNI-4a452b70fc9680d9eab310e3 - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -s 10.1.2.3/32 -m comment --comment "name: \"univrs-x\" id: \"web\"" -j CNI-4a452b70fc9680d9eab310e3
-A POSTROUTING -s 10.1.2.4/32 -m comment --comment "name: \"univrs-x\" id: \"web-1\"" -j CNI-99
-A CNI-4a452b70fc9680d9eab310e3 -d 10.1.2.0/24 -m comment --comment "name: \"univrs-x\" id: \"web\"" -j ACCEPT
-A CNI-4a452b70fc9680d9eab310e3 ! -d 224.0.0.0/4 -m comment --comment "name: \"univrs-x\" id: \"web\"" -j MASQUERADE
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"univrs-x\" id: \"web\"" -m multiport --dports 80 -j CNI-DN-4a452b70fc9680d9eab31
COMMIT
"#;
        let script = leftover_script(save, "univrs-x", "web").unwrap();
        assert_eq!(
            script,
            r#"*nat
-D POSTROUTING -s 10.1.2.3/32 -m comment --comment "name: \"univrs-x\" id: \"web\"" -j CNI-4a452b70fc9680d9eab310e3
-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"univrs-x\" id: \"web\"" -m multiport --dports 80 -j CNI-DN-4a452b70fc9680d9eab31
-F CNI-4a452b70fc9680d9eab310e3
-X CNI-4a452b70fc9680d9eab310e3
-F CNI-DN-4a452b70fc9680d9eab31
-X CNI-DN-4a452b70fc9680d9eab31
COMMIT
"#
        );
        assert!(leftover_script(save, "univrs-y", "web").is_none());
        assert!(leftover_script(save, "univrs-x", "we").is_none());
    }
}
