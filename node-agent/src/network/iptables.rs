//! The last step of a teardown: removing iptables rules the plugins could not.
//!
//! The bridge plugin finds the masquerade rules to delete from the addresses on the
//! container's interface, so when that interface is already gone (someone deleted the veth,
//! or the namespace was unmounted) its DEL succeeds and leaves the rules behind. Every rule
//! the plugins make for a container carries the comment `name: "<network>" id: "<id>"`
//! (`dnat name: …` for portmap), so after DEL the agent removes what still carries it: the
//! rule jumping to a per-container chain, then that chain. The shared chains
//! (`CNI-HOSTPORT-*`) are never touched.

use super::NetworkError;
use std::io::Write;
use std::process::{Command, Stdio};

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

fn run(cmd: &mut Command, input: Option<&str>) -> Result<String, NetworkError> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .env_clear()
        .env("PATH", crate::runtime::spec::DEFAULT_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(super::io_err(format!("running {what}")))?;
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(super::io_err(format!("waiting for {what}")))?;
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
    let save = run(Command::new("iptables-save").args(["-t", "nat"]), None)?;
    let Some(script) = leftover_script(&save, network, id) else {
        return Ok(false);
    };
    tracing::info!(id, network, "removing iptables rules the CNI plugins left");
    run(
        Command::new("iptables-restore").arg("--noflush"),
        Some(&script),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
