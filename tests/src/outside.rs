//! Places beyond a container for it to reach, or to fail to: network namespaces wired to this
//! host as the owner's LAN (with a cloud metadata address behind it) or as the internet, each
//! serving a one-line page on port [`PORT`]. Dropping one removes its namespace, its veth
//! pair and its routes.
//!
//! One LAN and one internet exist at a time in a test binary (each kind has fixed addresses
//! and routes); [`Outside::lan`] and [`Outside::internet`] wait for the previous one of their
//! kind to go.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The port every outside place serves its page on.
pub const PORT: u16 = 8080;

/// The cloud metadata address (AWS, GCP, Azure, OpenStack all answer there).
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The internet, as the tests see it: an address of TEST-NET-2 reached through a gateway.
pub const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

static ONE_LAN: Mutex<()> = Mutex::new(());
static ONE_INTERNET: Mutex<()> = Mutex::new(());

/// One place outside, serving [`PORT`] until dropped.
pub struct Outside {
    ns: String,
    host_if: String,
    /// The addresses it answers on.
    pub addrs: Vec<Ipv4Addr>,
    stop: Arc<AtomicBool>,
    _one: MutexGuard<'static, ()>,
}

fn ip(args: &[&str]) {
    crate::must(&[&["ip"][..], args].concat());
}

/// Removes what killed test binaries left: their namespaces, veths and routes.
fn sweep(own: &str) {
    let list = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in list(&["-o", "link", "show"]).lines() {
        let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else {
            continue;
        };
        if name.starts_with("uoh") && !name.starts_with(&format!("uoh{own}-")) {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
    crate::delete_stale_namespaces("univrs-out-", own);
}

fn names() -> (String, String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let own = (std::process::id() % 100_000).to_string();
    sweep(&own);
    let tag = format!("{own}-{n}");
    (
        format!("univrs-out-{tag}"),
        format!("uoh{tag}"),
        format!("uon{tag}"),
    )
}

/// A new namespace wired to the host by a veth pair whose host end has `host_addr` and is up:
/// (namespace, host interface, namespace interface).
fn wire(host_addr: &str) -> (String, String, String) {
    let (ns, host_if, ns_if) = names();
    ip(&["netns", "add", &ns]);
    ip(&[
        "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns,
    ]);
    ip(&["addr", "add", host_addr, "dev", &host_if]);
    ip(&["link", "set", &host_if, "up"]);
    (ns, host_if, ns_if)
}

/// `ip ARGS` inside namespace `ns`.
fn inside(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all);
}

impl Outside {
    /// The owner's LAN: a network this host is attached to, 192.168.213.0/24 (the host .1,
    /// the place .2), with [`METADATA`] routed to the place as well.
    pub fn lan() -> Self {
        let one = ONE_LAN.lock().unwrap_or_else(|p| p.into_inner());
        let (ns, host_if, ns_if) = wire("192.168.213.1/24");
        let place: Ipv4Addr = "192.168.213.2".parse().unwrap();
        let exec = |args: &[&str]| inside(&ns, args);
        exec(&["addr", "add", "192.168.213.2/24", "dev", &ns_if]);
        exec(&["addr", "add", "169.254.169.254/16", "dev", &ns_if]);
        exec(&["link", "set", &ns_if, "up"]);
        exec(&["link", "set", "lo", "up"]);
        exec(&["route", "add", "default", "via", "192.168.213.1"]);
        ip(&["route", "add", "169.254.169.254/32", "via", "192.168.213.2"]);
        Self::serve(ns, host_if, vec![place, METADATA], one)
    }

    /// The internet: [`INTERNET`], routed through a gateway (so not a network this host is
    /// attached to, and in no private range).
    pub fn internet() -> Self {
        let one = ONE_INTERNET.lock().unwrap_or_else(|p| p.into_inner());
        // A /32 on each side adds no connected route; the gateway route is the only way in.
        let (ns, host_if, ns_if) = wire("203.0.113.1/32");
        let exec = |args: &[&str]| inside(&ns, args);
        exec(&["addr", "add", "203.0.113.2/32", "dev", &ns_if]);
        exec(&["addr", "add", "198.51.100.2/32", "dev", "lo"]);
        exec(&["link", "set", &ns_if, "up"]);
        exec(&["link", "set", "lo", "up"]);
        exec(&["route", "add", "203.0.113.1/32", "dev", &ns_if]);
        exec(&["route", "add", "default", "via", "203.0.113.1"]);
        ip(&[
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "203.0.113.2",
            "dev",
            &host_if,
            "onlink",
        ]);
        Self::serve(ns, host_if, vec![INTERNET], one)
    }

    fn serve(
        ns: String,
        host_if: String,
        addrs: Vec<Ipv4Addr>,
        one: MutexGuard<'static, ()>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (path, flag, page) = (
            format!("/var/run/netns/{ns}"),
            stop.clone(),
            format!("reached {ns}\n"),
        );
        std::thread::spawn(move || {
            // Only this thread enters the namespace.
            let f = std::fs::File::open(&path).expect("opening the namespace");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let l = TcpListener::bind(("0.0.0.0", PORT)).expect("binding in the namespace");
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            while !flag.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 512];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(
                            format!(
                                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{page}",
                                page.len()
                            )
                            .as_bytes(),
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the outside place listens");
        Self {
            ns,
            host_if,
            addrs,
            stop,
            _one: one,
        }
    }

    /// What its page says (`reached <namespace>`).
    pub fn page(&self) -> String {
        format!("reached {}", self.ns)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Routes through the veth go with it.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
