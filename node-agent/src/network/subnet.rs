//! IPv4 subnets: the agent's container subnet, and the host's routes it must not overlap.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network in CIDR notation (`10.89.3.0/24`), host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network `addr/prefix`; the host bits of `addr` must be zero.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if prefix > 32 {
            return Err(format!("prefix length /{prefix} is longer than 32"));
        }
        let cidr = Self { addr, prefix };
        if cidr.network() != addr {
            return Err(format!(
                "{addr}/{prefix} has host bits set; the network is {}/{prefix}",
                cidr.network()
            ));
        }
        Ok(cidr)
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Its host addresses, in order: neither the network's address nor its broadcast.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let first = u32::from(self.network());
        let size = 1u64 << (32 - u32::from(self.prefix));
        let last = (u64::from(first) + size).saturating_sub(1);
        (u64::from(first) + 1..last).map(|a| Ipv4Addr::from(a as u32))
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The first host address: the bridge's address and the containers' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (e.g. 10.89.3.0/24)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} in {s:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{prefix:?} in {s:?} is not a prefix length"))?;
        Self::new(addr, prefix)
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(c: Ipv4Cidr) -> String {
        c.to_string()
    }
}

/// The host's IPv4 routes other than default routes, as `(interface, network)`, from
/// `/proc/net/route` (no `ip` command needed).
pub fn host_routes() -> std::io::Result<Vec<(String, Ipv4Cidr)>> {
    let text = std::fs::read_to_string("/proc/net/route")?;
    Ok(parse_routes(&text)
        .into_iter()
        .map(|r| (r.iface, r.network))
        .collect())
}

/// The networks the host is attached to directly (routes without a gateway, other than
/// default routes): its own subnets, its LAN.
pub fn connected_networks() -> std::io::Result<Vec<(String, Ipv4Cidr)>> {
    let text = std::fs::read_to_string("/proc/net/route")?;
    Ok(parse_routes(&text)
        .into_iter()
        .filter(|r| r.gateway.is_unspecified())
        .map(|r| (r.iface, r.network))
        .collect())
}

/// One line of `/proc/net/route`.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    iface: String,
    network: Ipv4Cidr,
    gateway: Ipv4Addr,
}

fn parse_routes(text: &str) -> Vec<Route> {
    // Addresses are the kernel's network-order bytes printed as a native-endian u32.
    let addr = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, gateway, mask) = (
                f.first()?,
                addr(f.get(1)?)?,
                addr(f.get(2)?)?,
                addr(f.get(7)?)?,
            );
            let prefix = u32::from(mask).leading_ones() as u8;
            if prefix == 0 {
                return None;
            }
            Some(Route {
                iface: iface.to_string(),
                network: Ipv4Cidr::new(dest, prefix).ok()?,
                gateway,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let c: Ipv4Cidr = "10.89.3.0/24".parse().unwrap();
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 89, 3, 1));
        assert!(c.contains(Ipv4Addr::new(10, 89, 3, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 89, 4, 1)));
        assert!(c.overlaps(&"10.0.0.0/8".parse().unwrap()));
        assert!(!c.overlaps(&"10.89.4.0/24".parse().unwrap()));
        let hosts: Vec<_> = c.hosts().collect();
        assert_eq!(hosts.len(), 254);
        assert_eq!(hosts[0], Ipv4Addr::new(10, 89, 3, 1));
        assert_eq!(hosts[253], Ipv4Addr::new(10, 89, 3, 254));
        assert!("10.89.3.1/24".parse::<Ipv4Cidr>().is_err());
        assert!("10.89.3.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.89.3.0/33".parse::<Ipv4Cidr>().is_err());
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            "\"10.89.3.0/24\"",
            "serialized as a string"
        );
    }

    #[test]
    fn reads_the_kernel_route_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t006433C6\t630200C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_routes(table);
        if cfg!(target_endian = "little") {
            assert_eq!(
                routes,
                vec![
                    Route {
                        iface: "eth0".into(),
                        network: "192.0.2.0/24".parse().unwrap(),
                        gateway: Ipv4Addr::UNSPECIFIED,
                    },
                    Route {
                        iface: "eth0".into(),
                        network: "198.51.100.0/24".parse().unwrap(),
                        gateway: Ipv4Addr::new(192, 0, 2, 99),
                    },
                ]
            );
        }
    }
}
