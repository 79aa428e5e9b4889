//! Names inside containers: a container reaches another Workload of its namespace as
//! `NAME.NAMESPACE` (or `NAME` alone: its resolv.conf searches its namespace), wherever that
//! Workload's ready instances run.
//!
//! - Each container's `/etc/resolv.conf` (a read-only bind mount) names its gateway, the
//!   agent's bridge address, as its name server. The agent's nat rules redirect the gateway's
//!   port 53 to this service; it answers `NAME.NAMESPACE` with a virtual address of the
//!   Workload, only to a container of NAMESPACE, and passes every other question to the
//!   host's name servers (a container of another namespace learns nothing of the name).
//! - A virtual address is this node's own (from [`RANGE`], kept while the agent runs): a
//!   connection to it is redirected to this service's proxy, which reads where it was going
//!   (`SO_ORIGINAL_DST`), checks that the container is of the Workload's namespace and carries
//!   it to a ready instance on the same port, here or through the mesh (see
//!   [`super::expose`]). Without a ready instance the connection is closed at once.
//!
//! Both listen on the gateway address before the bridge exists (`IP_FREEBIND`), on ports the
//! kernel picks; the network policy lets containers reach those two ports of the host alone.

use super::expose::{Named, Routes, Target};
use crate::network::{Cni, Ipv4Cidr, NamePorts};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
use kube::runtime::reflector::Store;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use univrs_api::Workload;

/// The virtual addresses (RFC 2544's benchmarking range: on no real network).
pub const RANGE: &str = "198.18.0.0/15";
/// How long a container may cache an answer.
const TTL: u32 = 5;
/// How long the host's name servers may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest DNS message over TCP accepted.
const MAX_TCP_MESSAGE: usize = 4096;
/// Questions answered at once (over UDP and TCP together): beyond, UDP questions are dropped
/// and TCP ones wait, so a container flooding its name server costs the agent a bounded
/// number of tasks and upstream queries.
const MAX_QUESTIONS: usize = 256;

/// The Workloads' virtual addresses on this node.
#[derive(Debug, Default)]
pub struct Table {
    by_name: BTreeMap<(String, String), Ipv4Addr>,
    by_addr: BTreeMap<Ipv4Addr, (String, String)>,
}

impl Table {
    /// Keeps an address for each of `names` ((namespace, name)): the one it has, else one
    /// derived from its hash (probing onward past taken ones); names gone free theirs.
    pub fn update(&mut self, range: Ipv4Cidr, names: impl IntoIterator<Item = (String, String)>) {
        let want: std::collections::BTreeSet<(String, String)> = names.into_iter().collect();
        self.by_name.retain(|k, _| want.contains(k));
        self.by_addr.retain(|_, k| want.contains(k));
        let size = 1u64 << (32 - range.prefix());
        let base = u32::from(range.addr());
        for key in want {
            if self.by_name.contains_key(&key) {
                continue;
            }
            use sha2::Digest;
            let h = sha2::Sha256::digest(format!("{}/{}", key.0, key.1).as_bytes());
            let start = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
            // Skip the range's first and last addresses.
            let Some(addr) = (0..size - 2)
                .map(|i| Ipv4Addr::from(base + 1 + ((start + i) % (size - 2)) as u32))
                .find(|a| !self.by_addr.contains_key(a))
            else {
                tracing::warn!("no virtual address left for {}/{}", key.0, key.1);
                continue;
            };
            self.by_addr.insert(addr, key.clone());
            self.by_name.insert(key, addr);
        }
    }

    /// The address of `name` in `namespace`.
    pub fn address(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.by_name
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    /// The (namespace, name) at `addr`.
    pub fn name(&self, addr: Ipv4Addr) -> Option<&(String, String)> {
        self.by_addr.get(&addr)
    }
}

/// What a question gets.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// This answer.
    Answer(Vec<u8>),
    /// The host's name servers' answer.
    Forward,
    /// Nothing (not even a header to answer).
    Drop,
}

/// The reply to DNS message `query` from a container of `asker` (None: not a container of
/// this node), given the virtual addresses in `table`.
pub fn reply(query: &[u8], asker: Option<&str>, table: &Table) -> Reply {
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) if query.len() >= 2 => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            return encode(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr));
        }
        Err(_) => return Reply::Drop,
    };
    if msg.metadata.message_type != MessageType::Query {
        return Reply::Drop;
    }
    let Some(asker) = asker else {
        return encode(Message::error_msg(
            msg.metadata.id,
            msg.metadata.op_code,
            ResponseCode::Refused,
        ));
    };
    let Some(q) = msg.queries.first() else {
        return encode(Message::error_msg(
            msg.metadata.id,
            msg.metadata.op_code,
            ResponseCode::FormErr,
        ));
    };
    let qname = q.name().to_ascii().to_ascii_lowercase();
    let labels: Vec<&str> = qname.trim_end_matches('.').split('.').collect();
    // Names of the asker's own namespace are ours; everything else is the host's to answer.
    let [name, namespace] = labels[..] else {
        return Reply::Forward;
    };
    if msg.metadata.op_code != OpCode::Query || namespace != asker {
        return Reply::Forward;
    }
    let mut out = Message::new(msg.metadata.id, MessageType::Response, OpCode::Query);
    out.metadata.recursion_desired = msg.metadata.recursion_desired;
    out.metadata.recursion_available = true;
    out.metadata.authoritative = true;
    out.add_query(q.clone());
    match table.address(namespace, name) {
        None => {
            out.metadata.response_code = ResponseCode::NXDomain;
        }
        Some(addr) => {
            if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
                out.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(addr))));
            }
            // Other types of a name that exists: no data, no error.
        }
    }
    encode(out)
}

fn encode(m: Message) -> Reply {
    m.to_vec().map(Reply::Answer).unwrap_or(Reply::Drop)
}

/// The host's name servers, from `/etc/resolv.conf`-style text.
pub fn upstream_servers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(3)
        .collect()
}

/// A container's `/etc/resolv.conf`: the gateway as name server, its namespace searched.
pub fn resolv_conf(gateway: Ipv4Addr, namespace: &str) -> String {
    format!("nameserver {gateway}\nsearch {namespace}\noptions ndots:1\n")
}

/// A socket on `addr` that may be bound before the address exists (`IP_FREEBIND`).
fn freebind(addr: SocketAddrV4, stream: bool) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket, sockopt,
    };
    let ty = if stream {
        SockType::Stream
    } else {
        SockType::Datagram
    };
    let fd = socket(
        AddressFamily::Inet,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    if stream {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )?;
    if stream {
        listen(&fd, nix::sys::socket::Backlog::new(1024)?)?;
    }
    Ok(fd)
}

fn local_port(fd: &OwnedFd) -> std::io::Result<u16> {
    let a: nix::sys::socket::SockaddrIn =
        nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(fd))?;
    Ok(a.port())
}

/// The name service of one node, bound and not yet serving.
pub struct NameService {
    gateway: Ipv4Addr,
    range: Ipv4Cidr,
    udp: OwnedFd,
    dns_tcp: OwnedFd,
    proxy: OwnedFd,
}

impl NameService {
    /// Binds DNS (UDP and TCP, one port) and the proxy on `gateway`.
    pub fn bind(gateway: Ipv4Addr) -> std::io::Result<Self> {
        let range: Ipv4Cidr = RANGE.parse().expect("a valid range");
        // The kernel picks the UDP port; the TCP one must match, so retry on a clash.
        let mut last = None;
        for _ in 0..16 {
            let udp = freebind(SocketAddrV4::new(gateway, 0), false)?;
            let port = local_port(&udp)?;
            match freebind(SocketAddrV4::new(gateway, port), true) {
                Ok(dns_tcp) => {
                    let proxy = freebind(SocketAddrV4::new(gateway, 0), true)?;
                    return Ok(Self {
                        gateway,
                        range,
                        udp,
                        dns_tcp,
                        proxy,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
    }

    /// Where the nat rules send containers' questions and connections.
    pub fn ports(&self) -> std::io::Result<NamePorts> {
        Ok(NamePorts {
            dns: local_port(&self.udp)?,
            proxy: local_port(&self.proxy)?,
            range: self.range,
        })
    }

    /// Serves until dropped (the tasks end with the runtime), keeping the virtual
    /// addresses in line with the Workloads in `routes`' cache on every `wake`.
    pub async fn run(
        self,
        routes: Arc<Routes>,
        workloads: Store<Workload>,
        cni: Cni,
        mut wake: watch::Receiver<u64>,
    ) {
        let upstream =
            upstream_servers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        if upstream.is_empty() {
            tracing::warn!(
                "the host names no name server in /etc/resolv.conf: containers resolve only Workload names"
            );
        }
        let shared = Arc::new(Shared {
            table: RwLock::new(Table::default()),
            askers: RwLock::new(BTreeMap::new()),
            cni,
            upstream,
            range: self.range,
            questions: Arc::new(tokio::sync::Semaphore::new(MAX_QUESTIONS)),
        });
        let udp = std::net::UdpSocket::from(self.udp);
        let dns_tcp = std::net::TcpListener::from(self.dns_tcp);
        let proxy = std::net::TcpListener::from(self.proxy);
        let (Ok(udp), Ok(dns_tcp), Ok(proxy)) = (
            UdpSocket::from_std(udp),
            TcpListener::from_std(dns_tcp),
            TcpListener::from_std(proxy),
        ) else {
            tracing::error!("the name service's sockets cannot join the runtime");
            return;
        };
        tracing::info!(gateway = %self.gateway, "serving Workload names to containers");
        let tasks = [
            tokio::spawn(serve_udp(shared.clone(), Arc::new(udp))),
            tokio::spawn(serve_dns_tcp(shared.clone(), dns_tcp)),
            tokio::spawn(serve_proxy(shared.clone(), routes, proxy)),
        ];
        loop {
            let names = workloads
                .state()
                .iter()
                .filter(|w| w.metadata.deletion_timestamp.is_none())
                .filter_map(|w| Some((w.metadata.namespace.clone()?, w.metadata.name.clone()?)))
                .collect::<Vec<_>>();
            shared
                .table
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .update(shared.range, names);
            if wake.changed().await.is_err() {
                break;
            }
        }
        for t in tasks {
            t.abort();
        }
    }
}

struct Shared {
    table: RwLock<Table>,
    /// Container addresses and their namespaces, as last read from the attachments.
    askers: RwLock<BTreeMap<Ipv4Addr, String>>,
    cni: Cni,
    upstream: Vec<SocketAddr>,
    range: Ipv4Cidr,
    questions: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// The namespace of the container at `ip` (the attachments read again when it is new).
    fn asker(&self, ip: Ipv4Addr) -> Option<String> {
        if let Some(ns) = self
            .askers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
        {
            return Some(ns.clone());
        }
        let members = self.cni.members().ok()?;
        let mut askers = self.askers.write().unwrap_or_else(|p| p.into_inner());
        *askers = members.into_iter().map(|m| (m.ip, m.group)).collect();
        askers.get(&ip).cloned()
    }

    /// The answer to `query` from `from`.
    async fn answer(&self, query: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        let asker = match from {
            SocketAddr::V4(a) => self.asker(*a.ip()),
            SocketAddr::V6(_) => None,
        };
        let r = reply(
            query,
            asker.as_deref(),
            &self.table.read().unwrap_or_else(|p| p.into_inner()),
        );
        match r {
            Reply::Answer(a) => Some(a),
            Reply::Drop => None,
            Reply::Forward => self.forward(query).await,
        }
    }

    /// Asks the host's name servers in turn; the first answer wins.
    async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        for server in &self.upstream {
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0".parse().ok()?
            } else {
                "[::]:0".parse().ok()?
            };
            let Ok(sock) = UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.connect(server).await.is_err() || sock.send(query).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            if let Ok(Ok(n)) = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf)).await {
                buf.truncate(n);
                return Some(buf);
            }
        }
        // Nobody answered: SERVFAIL, so the container does not wait out its own timeout.
        let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
        Message::error_msg(id, OpCode::Query, ResponseCode::ServFail)
            .to_vec()
            .ok()
    }
}

async fn serve_udp(shared: Arc<Shared>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(permit) = shared.questions.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (shared, sock) = (shared.clone(), sock.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(a) = shared.answer(&query, from).await {
                let _ = sock.send_to(&a, from).await;
            }
        });
    }
}

async fn serve_dns_tcp(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((mut conn, from)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            // Length-prefixed messages (RFC 1035 4.2.2), until the asker is done.
            loop {
                let read = async {
                    let n = conn.read_u16().await? as usize;
                    if n > MAX_TCP_MESSAGE {
                        return Err(std::io::Error::other("too long"));
                    }
                    let mut q = vec![0u8; n];
                    conn.read_exact(&mut q).await?;
                    Ok::<_, std::io::Error>(q)
                };
                let Ok(Ok(q)) = tokio::time::timeout(Duration::from_secs(10), read).await else {
                    return;
                };
                let Ok(_permit) = shared.questions.acquire().await else {
                    return;
                };
                let Some(a) = shared.answer(&q, from).await else {
                    return;
                };
                let Ok(len) = u16::try_from(a.len()) else {
                    return;
                };
                if conn.write_u16(len).await.is_err() || conn.write_all(&a).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn serve_proxy(shared: Arc<Shared>, routes: Arc<Routes>, listener: TcpListener) {
    loop {
        let Ok((conn, from)) = listener.accept().await else {
            continue;
        };
        let (shared, routes) = (shared.clone(), routes.clone());
        tokio::spawn(async move {
            match target_of(&shared, &conn, from) {
                Ok(target) => {
                    if let Err(e) = routes.route(target, conn).await {
                        tracing::debug!(%from, "name: {e}");
                    }
                }
                Err(e) => tracing::debug!(%from, "name: refused: {e}"),
            }
        });
    }
}

/// Where `conn` from `from` was going, if to a Workload of its own namespace.
fn target_of(shared: &Shared, conn: &TcpStream, from: SocketAddr) -> Result<Target, String> {
    let SocketAddr::V4(from) = from else {
        return Err("not IPv4".into());
    };
    let dst = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::OriginalDst)
        .map_err(|e| format!("reading the original destination: {e}"))?;
    let addr = Ipv4Addr::from(u32::from_be(dst.sin_addr.s_addr));
    let port = u16::from_be(dst.sin_port);
    let (namespace, name) = shared
        .table
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .name(addr)
        .cloned()
        .ok_or_else(|| format!("{addr} is no Workload's"))?;
    let asker = shared
        .asker(*from.ip())
        .ok_or_else(|| "not a container of this node".to_string())?;
    if asker != namespace {
        return Err(format!(
            "a container of {asker} may not reach {name}.{namespace}"
        ));
    }
    Ok(Target::Named(Named { namespace, name }, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn table() -> Table {
        let mut t = Table::default();
        t.update(
            RANGE.parse().unwrap(),
            [
                ("library".into(), "db".into()),
                ("school".into(), "db".into()),
            ],
        );
        t
    }

    fn ask(name: &str, ty: RecordType) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m.to_vec().unwrap()
    }

    fn answer(r: Reply) -> Message {
        match r {
            Reply::Answer(a) => Message::from_vec(&a).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn addresses_are_distinct_in_range_and_kept() {
        let mut t = table();
        let a = t.address("library", "db").unwrap();
        let b = t.address("school", "db").unwrap();
        assert_ne!(a, b);
        let range: Ipv4Cidr = RANGE.parse().unwrap();
        assert!(range.contains(a) && range.contains(b));
        t.update(
            range,
            [
                ("library".into(), "db".into()),
                ("library".into(), "web".into()),
            ],
        );
        assert_eq!(t.address("library", "db"), Some(a), "kept while it exists");
        assert_eq!(t.address("school", "db"), None);
        assert_eq!(t.name(b), None);
    }

    #[test]
    fn a_namespace_resolves_its_own_names_only() {
        let t = table();
        let m = answer(reply(
            &ask("db.library.", RecordType::A),
            Some("library"),
            &t,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.metadata.id, 7);
        let want = t.address("library", "db").unwrap();
        assert!(matches!(&m.answers[0].data, RData::A(A(a)) if *a == want));
        // Case does not matter, a trailing dot neither.
        let m = answer(reply(
            &ask("DB.Library", RecordType::A),
            Some("library"),
            &t,
        ));
        assert_eq!(m.answers.len(), 1);
        // No such Workload in the asker's namespace.
        let m = answer(reply(
            &ask("cache.library.", RecordType::A),
            Some("library"),
            &t,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // An existing name, another type: no data.
        let m = answer(reply(
            &ask("db.library.", RecordType::AAAA),
            Some("library"),
            &t,
        ));
        assert_eq!(
            (m.metadata.response_code, m.answers.len()),
            (ResponseCode::NoError, 0)
        );
        // Another namespace's name is not ours to answer: it goes where the internet's go.
        assert_eq!(
            reply(&ask("db.school.", RecordType::A), Some("library"), &t),
            Reply::Forward
        );
        assert_eq!(
            reply(&ask("example.org.", RecordType::A), Some("library"), &t),
            Reply::Forward
        );
        // Not a container: refused.
        let m = answer(reply(&ask("db.library.", RecordType::A), None, &t));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        // Garbage: a format error where there is an id to answer, else nothing.
        let m = answer(reply(&[0, 9, 1, 2, 3], Some("library"), &t));
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (9, ResponseCode::FormErr)
        );
        assert_eq!(reply(&[1], Some("library"), &t), Reply::Drop);
    }

    #[test]
    fn upstream_servers_come_from_resolv_conf() {
        let s = upstream_servers(
            "# x\nnameserver 127.0.0.53\nsearch lan\nnameserver ::1\nnameserver bogus\n",
        );
        assert_eq!(
            s,
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            resolv_conf("10.89.1.1".parse().unwrap(), "library"),
            "nameserver 10.89.1.1\nsearch library\noptions ndots:1\n"
        );
    }
}
