//! The agent's CNI network configuration lists, and the configuration each plugin of a list
//! receives on stdin (the list's `name` and `cniVersion`, the `runtimeConfig` of the
//! capabilities it declares, and `prevResult`), as the CNI specification (v1.0.0) says a
//! runtime builds them.

use super::attachment::PortMapping;
use super::subnet::Ipv4Cidr;
use serde_json::{Value, json};
use std::path::Path;

/// The CNI specification version the agent speaks (Debian's plugins 1.1 support it).
pub const CNI_VERSION: &str = "1.0.0";

/// The container's network: a veth pair on the agent's bridge (the bridge is the gateway;
/// hairpin mode lets a container reach its own host ports; the agent masquerades the whole
/// subnet itself, see `iptables`), an address from host-local IPAM (its leases in `ipam_dir`,
/// so agents never share one), then, when there are host ports (`with_ports`), portmap: run
/// without mappings it does nothing but cost a process.
pub fn main_list(
    network: &str,
    bridge: &str,
    subnet: &Ipv4Cidr,
    ipam_dir: &Path,
    with_ports: bool,
) -> Value {
    let mut plugins = vec![json!({
        "type": "bridge",
        // The agent chooses the address (see `Cni::begin_setup`); host-local leases it.
        "capabilities": {"ips": true},
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet.to_string(), "gateway": subnet.gateway().to_string()}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": ipam_dir,
        }
    })];
    if with_ports {
        plugins.push(json!({
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "snat": true,
        }));
    }
    json!({
        "cniVersion": CNI_VERSION,
        "name": network,
        "plugins": plugins,
    })
}

/// The plugins of a list (empty if the list has none).
pub fn plugins(list: &Value) -> &[Value] {
    list.get("plugins")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// What the runtime hands the plugins that declare a capability for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeConfig<'a> {
    /// Host ports (`portMappings`).
    pub ports: &'a [PortMapping],
    /// The address the container gets, with its prefix (`ips`).
    pub address: Option<&'a str>,
}

/// What plugin `plugin` of `list` gets on stdin.
pub fn plugin_config(
    list: &Value,
    plugin: &Value,
    runtime: RuntimeConfig<'_>,
    prev_result: Option<&Value>,
) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("cniVersion".into(), list["cniVersion"].clone());
    conf.insert("name".into(), list["name"].clone());
    let wants = |capability: &str| {
        plugin
            .pointer(&format!("/capabilities/{capability}"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut rc = serde_json::Map::new();
    if wants("portMappings") && !runtime.ports.is_empty() {
        rc.insert("portMappings".into(), json!(runtime.ports));
    }
    if wants("ips")
        && let Some(address) = runtime.address
    {
        rc.insert("ips".into(), json!([address]));
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    Value::Object(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_configs_get_name_version_ports_and_prev_result() {
        let list = main_list(
            "univrs-x",
            "univrs-x",
            &"10.89.3.0/24".parse().unwrap(),
            Path::new("/s/ipam"),
            true,
        );
        let ports = [PortMapping::tcp(8080, 80)];
        let rc = RuntimeConfig {
            ports: &ports,
            address: Some("10.89.3.7/24"),
        };
        let bridge = plugin_config(&list, &plugins(&list)[0], rc, None);
        assert_eq!(bridge["name"], "univrs-x");
        assert_eq!(bridge["cniVersion"], CNI_VERSION);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["gateway"], "10.89.3.1");
        assert_eq!(
            bridge["runtimeConfig"],
            json!({"ips": ["10.89.3.7/24"]}),
            "bridge (its IPAM) gets the address only"
        );
        assert!(bridge.get("prevResult").is_none());
        let prev = json!({"cniVersion": CNI_VERSION, "ips": []});
        let portmap = plugin_config(&list, &plugins(&list)[1], rc, Some(&prev));
        assert!(portmap["runtimeConfig"].get("ips").is_none());
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        assert_eq!(portmap["prevResult"], prev);
    }
}
