//! The embedded resolver: in every task's network namespace, 127.0.0.11:53
//! (UDP and TCP) answers the swarm's names for the networks the asking task
//! is on, and forwards other names to the host's upstream resolvers. The
//! sockets are bound inside each task's namespace; one task of this
//! daemon's runtime serves them all.

pub mod message;
pub mod records;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};

use hickory_proto::rr::RecordType;

use self::message::{Rcode, Transport};
use crate::api::{assignments::DnsRecord, control::DnsStats};
use crate::lock::{Locked as _, ReadWriteLocked as _};

/// Where tasks find the resolver, as in Docker.
pub const RESOLVER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const RESOLVER_PORT: u16 = 53;
/// How long an upstream resolver has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle TCP client is dropped after this.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    answered: AtomicU64,
    forwarded: AtomicU64,
    nxdomain: AtomicU64,
    servfail: AtomicU64,
    malformed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Names by (lower-case) name, each with its addresses per network; and
/// task addresses with the name a reverse lookup answers, per network.
#[derive(Default)]
struct NameTable {
    names: HashMap<String, Vec<(u32, Vec<Ipv4Addr>)>>,
    reverse: HashMap<Ipv4Addr, Vec<(u32, String)>>,
}

impl NameTable {
    fn new(records: &[DnsRecord]) -> Self {
        let mut table = Self::default();
        for record in records {
            table
                .names
                .entry(record.name.clone())
                .or_default()
                .push((record.vni, record.addresses.clone()));
            if let Some(reverse) = &record.reverse {
                for address in &record.addresses {
                    table
                        .reverse
                        .entry(*address)
                        .or_default()
                        .push((record.vni, reverse.clone()));
                }
            }
        }
        table
    }

    /// The addresses of `name` on the networks in `vnis`; `None` when it is
    /// not a name there.
    fn lookup(&self, name: &str, vnis: &[u32]) -> Option<Vec<Ipv4Addr>> {
        let mut shared = self
            .names
            .get(name)?
            .iter()
            .filter(|(vni, _)| vnis.contains(vni))
            .peekable();
        shared.peek()?;
        Some(
            shared
                .flat_map(|(_, addresses)| addresses.iter().copied())
                .collect(),
        )
    }

    /// The names of the task at `address` on the networks in `vnis`;
    /// `None` when no task there has it.
    fn lookup_reverse(&self, address: Ipv4Addr, vnis: &[u32]) -> Option<Vec<String>> {
        let names: Vec<String> = self
            .reverse
            .get(&address)?
            .iter()
            .filter(|(vni, _)| vnis.contains(vni))
            .map(|(_, name)| name.clone())
            .collect();
        (!names.is_empty()).then_some(names)
    }
}

struct Shared {
    table: RwLock<NameTable>,
    upstreams: Vec<SocketAddr>,
    counters: Counters,
}

/// Who a served task is, to the resolver: the networks whose names it
/// sees, and where its other names go.
#[derive(Clone, Debug, Default)]
pub struct TaskClient {
    pub vnis: Vec<u32>,
    /// `--dns`: these instead of the daemon's upstreams.
    pub upstreams: Option<Vec<SocketAddr>>,
}

impl TaskClient {
    /// `--dns` servers on port 53.
    pub fn new(vnis: Vec<u32>, dns_servers: &[std::net::IpAddr]) -> Self {
        Self {
            vnis,
            upstreams: (!dns_servers.is_empty()).then(|| {
                dns_servers
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, 53))
                    .collect()
            }),
        }
    }
}

pub struct Resolver {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    /// Each served task's listeners.
    servers: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
    /// The records the table was built from.
    records: Mutex<Vec<DnsRecord>>,
}

impl Resolver {
    /// `upstreams`: where names that are not the swarm's go; none, and
    /// they are NXDOMAIN.
    pub fn new(runtime: tokio::runtime::Handle, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            shared: Arc::new(Shared {
                table: RwLock::new(NameTable::default()),
                upstreams,
                counters: Counters::default(),
            }),
            runtime,
            servers: Mutex::new(HashMap::new()),
            records: Mutex::new(Vec::new()),
        }
    }

    /// The names to answer from now on.
    pub fn set_records(&self, records: &[DnsRecord]) {
        // The executor calls this every few hundred milliseconds; the
        // table is rebuilt only when something changed.
        let mut current = self.records.locked();
        if current.as_slice() == records {
            return;
        }
        *current = records.to_vec();
        let table = NameTable::new(records);
        *self.shared.table.write_locked() = table;
    }

    /// Serves 127.0.0.11:53 in the namespace at `netns` for a task on the
    /// networks `vnis`. Serving one already served is a no-op.
    pub fn serve(&self, task_id: &str, netns: &Path, client: TaskClient) -> std::io::Result<()> {
        let mut servers = self.servers.locked();
        if servers.contains_key(task_id) {
            return Ok(());
        }
        let (udp, tcp) = bind_in(netns)?;
        let _entered = self.runtime.enter();
        let udp = UdpSocket::from_std(udp)?;
        let tcp = TcpListener::from_std(tcp)?;
        let client = Arc::new(client);
        let handles = vec![
            self.runtime
                .spawn(serve_udp(udp, self.shared.clone(), client.clone())),
            self.runtime
                .spawn(serve_tcp(tcp, self.shared.clone(), client)),
        ];
        servers.insert(task_id.to_owned(), handles);
        Ok(())
    }

    /// Stops serving a task (its sockets close with the tasks).
    pub fn stop(&self, task_id: &str) {
        let handles = self.servers.locked().remove(task_id);
        for handle in handles.into_iter().flatten() {
            handle.abort();
        }
    }

    pub fn stats(&self) -> DnsStats {
        let c = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DnsStats {
            queries: load(&c.queries),
            answered: load(&c.answered),
            forwarded: load(&c.forwarded),
            nxdomain: load(&c.nxdomain),
            servfail: load(&c.servfail),
            malformed: load(&c.malformed),
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        for handle in self
            .servers
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .flat_map(|(_, handles)| handles)
        {
            handle.abort();
        }
    }
}

/// Binds the resolver's UDP and TCP sockets inside the namespace at
/// `netns`, from a thread of their own: no daemon thread changes namespace.
fn bind_in(netns: &Path) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let namespace = std::fs::File::open(netns)?;
    std::thread::Builder::new()
        .name("dns-bind".into())
        .spawn(move || {
            nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let addr = SocketAddr::from((RESOLVER_ADDR, RESOLVER_PORT));
            let udp = std::net::UdpSocket::bind(addr)?;
            let tcp = std::net::TcpListener::bind(addr)?;
            udp.set_nonblocking(true)?;
            tcp.set_nonblocking(true)?;
            Ok((udp, tcp))
        })?
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the binding thread panicked")))
}

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>, client: Arc<TaskClient>) {
    let socket = Arc::new(socket);
    let mut buffer = vec![0u8; usize::from(message::MAX_UDP)];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        let packet = buffer[..len].to_vec();
        let (socket, shared, client) = (socket.clone(), shared.clone(), client.clone());
        // Forwarding waits on upstreams: one task per query.
        tokio::spawn(async move {
            if let Some(answer) = timed_answer(&shared, &client, &packet, Transport::Udp).await {
                let _ = socket.send_to(&answer, from).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, client: Arc<TaskClient>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_client(stream, shared.clone(), client.clone()));
    }
}

/// Queries framed by a two-byte length, answered in turn, until the client
/// closes or idles.
async fn serve_tcp_client(mut stream: TcpStream, shared: Arc<Shared>, client: Arc<TaskClient>) {
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let mut packet = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut packet).await.is_err() {
            return;
        }
        let Some(answer) = timed_answer(&shared, &client, &packet, Transport::Tcp).await else {
            return;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        if stream.write_u16(len).await.is_err() || stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// [`answer`], its time recorded for the metrics.
async fn timed_answer(
    shared: &Shared,
    client: &TaskClient,
    packet: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    let started = std::time::Instant::now();
    let answer = answer(shared, client, packet, transport).await;
    crate::metrics::instruments()
        .resolver_seconds
        .observe(started.elapsed().as_secs_f64());
    answer
}

/// The answer to `packet` from `client` over `transport`; `None` when it
/// is to be dropped (not even a header).
async fn answer(
    shared: &Shared,
    client: &TaskClient,
    packet: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    let counters = &shared.counters;
    bump(&counters.queries);
    let query = match message::parse_query(packet) {
        Ok(query) => query,
        Err(reason) => {
            bump(&counters.malformed);
            tracing::debug!(%reason, "malformed DNS query");
            return message::query_id(packet).map(|id| message::error_answer(id, Rcode::FormErr));
        }
    };
    if let Some(records) = local_answer(shared, client, &query) {
        bump(&counters.answered);
        return Some(query.answer(Rcode::NoError, &records, transport));
    }
    let upstreams = client.upstreams.as_ref().unwrap_or(&shared.upstreams);
    if upstreams.is_empty() {
        bump(&counters.nxdomain);
        return Some(query.answer(Rcode::NxDomain, &[], transport));
    }
    bump(&counters.forwarded);
    match forward(upstreams, packet).await {
        Some(answer) => Some(answer),
        None => {
            bump(&counters.servfail);
            Some(query.answer(Rcode::ServFail, &[], transport))
        }
    }
}

/// The records that answer `query` when it asks about a swarm name or a
/// task's address on the client's networks; `None` when it does not.
fn local_answer(
    shared: &Shared,
    client: &TaskClient,
    query: &message::Query,
) -> Option<Vec<hickory_proto::rr::RData>> {
    let table = shared.table.read_locked();
    if let Some(address) = query.reverse_address() {
        let names = table.lookup_reverse(address, &client.vnis)?;
        return Some(
            names
                .iter()
                .filter_map(|name| message::ptr_record(name))
                .collect(),
        );
    }
    let addresses = table.lookup(&query.name, &client.vnis)?;
    // A swarm name has A records only: AAAA and other types are answered
    // with none (NOERROR, not NXDOMAIN: the name exists), as Docker does.
    Some(if query.qtype == RecordType::A {
        addresses.into_iter().map(message::a_record).collect()
    } else {
        Vec::new()
    })
}

/// Asks each upstream in turn; the first answer with the query's ID wins.
async fn forward(upstreams: &[SocketAddr], packet: &[u8]) -> Option<Vec<u8>> {
    let id = message::query_id(packet)?;
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = UdpSocket::bind(bind).await else {
            continue;
        };
        if socket.send_to(packet, upstream).await.is_err() {
            continue;
        }
        let mut buffer = vec![0u8; usize::from(message::MAX_UDP)];
        let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
        while let Ok(Ok((len, from))) =
            tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await
        {
            if from == *upstream && message::query_id(&buffer[..len]) == Some(id) {
                return Some(buffer[..len].to_vec());
            }
        }
    }
    None
}

/// The host's resolvers, from /etc/resolv.conf.
pub fn host_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_answer_only_on_the_networks_the_asker_shares() {
        let record = |vni, name: &str, last: u8| DnsRecord {
            vni,
            name: name.into(),
            addresses: vec![Ipv4Addr::new(10, 0, 1, last)],
            reverse: name.starts_with("web.").then(|| format!("{name}.net{vni}")),
        };
        let table = NameTable::new(&[
            record(4097, "web", 2),
            record(4098, "web", 9),
            record(4097, "tasks.web", 3),
            record(4097, "web.1.abc", 3),
        ]);
        assert_eq!(
            table.lookup("web", &[4097]),
            Some(vec![Ipv4Addr::new(10, 0, 1, 2)])
        );
        assert_eq!(table.lookup("web", &[4099]), None);
        assert_eq!(table.lookup("web", &[4097, 4098]).unwrap().len(), 2);
        assert_eq!(table.lookup("api", &[4097]), None);
        // A task's address names the task, on its own network only.
        assert_eq!(
            table.lookup_reverse(Ipv4Addr::new(10, 0, 1, 3), &[4097]),
            Some(vec!["web.1.abc.net4097".to_owned()])
        );
        assert_eq!(
            table.lookup_reverse(Ipv4Addr::new(10, 0, 1, 3), &[4098]),
            None
        );
        assert_eq!(
            table.lookup_reverse(Ipv4Addr::new(10, 0, 1, 2), &[4097]),
            None
        );
    }
}
