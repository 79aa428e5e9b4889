//! Machines on different networks, as network namespaces: a "center" with a public address on
//! a shared WAN, and "homes", each behind its own router namespace that masquerades it (as a
//! home router does) and drops what nobody inside asked for. A router's NAT is either
//! port-preserving (hole punching gets through) or symmetric (a random port per destination:
//! it defeats hole punching). Dropping the [`Internet`] removes every namespace it made.
//!
//! Code runs "on" a machine with [`Internet::run_on`]: a thread that entered the machine's
//! network namespace, so every socket it opens is there.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// How a home router translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// Keeps the source port when it can (endpoint-independent mapping): what most home
    /// routers do, and what hole punching needs.
    PortPreserving,
    /// A random source port for every connection (`MASQUERADE --random-fully`).
    Symmetric,
}

/// The WAN prefix; the center is `.10`, router `i` (from 1) is `.10 + i`.
pub const WAN: &str = "203.0.113";

/// The namespaces of one small internet.
pub struct Internet {
    prefix: String,
    namespaces: Vec<String>,
    homes: usize,
    /// Set when dropped: the forwarders ([`Internet::forward`]) stop and close their sockets.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Runs `args` in namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    crate::must(&all);
}

impl Internet {
    /// A center and one home per entry of `homes`, behind a router with that NAT.
    pub fn build(homes: &[Nat]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let own = (std::process::id() % 100_000).to_string();
        crate::delete_stale_namespaces("unat", &own);
        let prefix = format!("unat{own}-{}", N.fetch_add(1, Ordering::SeqCst));
        let mut net = Self {
            prefix,
            namespaces: Vec::new(),
            homes: homes.len(),
            stop: Default::default(),
        };
        let wan = net.add_ns("wan");
        in_ns(&wan, &["ip", "link", "add", "br0", "type", "bridge"]);
        in_ns(&wan, &["ip", "link", "set", "br0", "up"]);
        let center = net.add_ns("center");
        net.wire(&center, "eth0", &wan, "center");
        in_ns(
            &center,
            &["ip", "addr", "add", &format!("{WAN}.10/24"), "dev", "eth0"],
        );
        for (i, nat) in homes.iter().enumerate() {
            let n = i + 1;
            let router = net.add_ns(&format!("router{n}"));
            let home = net.add_ns(&format!("home{n}"));
            net.wire(&router, "wan", &wan, &format!("r{n}"));
            in_ns(
                &router,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{WAN}.{}/24", 10 + n),
                    "dev",
                    "wan",
                ],
            );
            net.link(&router, "lan", &home, "eth0");
            in_ns(
                &router,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("192.168.{n}.1/24"),
                    "dev",
                    "lan",
                ],
            );
            in_ns(
                &home,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("192.168.{n}.2/24"),
                    "dev",
                    "eth0",
                ],
            );
            in_ns(
                &home,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("192.168.{n}.1"),
                ],
            );
            in_ns(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let mut masq = vec![
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "wan",
                "-j",
                "MASQUERADE",
            ];
            if *nat == Nat::Symmetric {
                masq.push("--random-fully");
            }
            in_ns(&router, &masq);
            // What nobody inside asked for is dropped (not refused: a refusal would reset the
            // other side's half of a simultaneous open).
            for chain in ["INPUT", "FORWARD"] {
                in_ns(
                    &router,
                    &[
                        "iptables",
                        "-A",
                        chain,
                        "-i",
                        "wan",
                        "-m",
                        "conntrack",
                        "--ctstate",
                        "ESTABLISHED,RELATED",
                        "-j",
                        "ACCEPT",
                    ],
                );
                in_ns(
                    &router,
                    &["iptables", "-A", chain, "-i", "wan", "-j", "DROP"],
                );
            }
        }
        net
    }

    fn add_ns(&mut self, what: &str) -> String {
        let name = format!("{}-{what}", self.prefix);
        crate::must(&["ip", "netns", "add", &name]);
        in_ns(&name, &["ip", "link", "set", "lo", "up"]);
        self.namespaces.push(name.clone());
        name
    }

    /// A veth pair between two namespaces, named `a_if` in `a` and `b_if` in `b`, both up.
    fn link(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let (ta, tb) = (format!("unta{n}"), format!("untb{n}"));
        crate::must(&[
            "ip", "link", "add", &ta, "type", "veth", "peer", "name", &tb,
        ]);
        crate::must(&["ip", "link", "set", &ta, "netns", a]);
        crate::must(&["ip", "link", "set", &tb, "netns", b]);
        in_ns(a, &["ip", "link", "set", &ta, "name", a_if]);
        in_ns(b, &["ip", "link", "set", &tb, "name", b_if]);
        in_ns(a, &["ip", "link", "set", a_if, "up"]);
        in_ns(b, &["ip", "link", "set", b_if, "up"]);
    }

    /// A machine's interface on the WAN bridge.
    fn wire(&self, machine: &str, machine_if: &str, wan: &str, port: &str) {
        self.link(machine, machine_if, wan, port);
        in_ns(wan, &["ip", "link", "set", port, "master", "br0"]);
    }

    /// Another machine with a public address, `WAN.<host>` (e.g. a visitor who can reach
    /// only the center: the homes are behind their routers).
    pub fn add_public(&mut self, machine: &str, host: u8) {
        let wan = self.ns("wan");
        let ns = self.add_ns(machine);
        self.wire(&ns, "eth0", &wan, machine);
        in_ns(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{WAN}.{host}/24"),
                "dev",
                "eth0",
            ],
        );
    }

    /// The path of `machine`'s network namespace (for `nsenter --net=`).
    pub fn netns_path(&self, machine: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/run/netns/{}", self.ns(machine)))
    }

    /// Forwards connections to `127.0.0.1:port` on `machine` to `to` in this process's own
    /// namespace (e.g. the API server, so that a machine reaches it at the address its
    /// certificate names, as if it were on the internet), until the internet is dropped.
    pub fn forward(&self, machine: &str, port: u16, to: std::net::SocketAddr) {
        let listener = self
            .run_on(machine, move || {
                let l = std::net::TcpListener::bind(("127.0.0.1", port))
                    .unwrap_or_else(|e| panic!("binding 127.0.0.1:{port}: {e}"));
                l.set_nonblocking(true).expect("a non-blocking listener");
                l
            })
            .join()
            .expect("binding the forwarder");
        let stop = self.stop.clone();
        // Spawned from this thread: its connections to `to` are made in this namespace.
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        let Ok(outbound) = std::net::TcpStream::connect(to) else {
                            continue;
                        };
                        let _ = inbound.set_nonblocking(false);
                        for (mut a, mut b) in [
                            (inbound.try_clone(), outbound.try_clone()),
                            (outbound.try_clone(), inbound.try_clone()),
                        ]
                        .into_iter()
                        .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                        {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut a, &mut b);
                                let _ = b.shutdown(std::net::Shutdown::Write);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
    }

    /// The namespace of `machine` (`center`, `home1`, …).
    pub fn ns(&self, machine: &str) -> String {
        let name = format!("{}-{machine}", self.prefix);
        assert!(self.namespaces.contains(&name), "no machine {machine}");
        name
    }

    /// The homes' names, `home1` … `homeN`.
    pub fn homes(&self) -> Vec<String> {
        (1..=self.homes).map(|n| format!("home{n}")).collect()
    }

    /// Runs `f` on a thread inside `machine`'s network namespace (sockets it opens are there).
    pub fn run_on<T: Send + 'static>(
        &self,
        machine: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.ns(machine));
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {path}: {e}"));
            f()
        })
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Deleting a namespace deletes its veths (and their peers in the others).
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
