//! Small TCP and UDP servers run inside task namespaces for the load
//! balancer's tests: every request is answered with the server's name and
//! the address the request came from, so a test sees which backend it
//! reached and whether the client's real address survived the trip.

use std::{
    io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;

use crate::{in_netns, spawn_in_netns};

const POLL: Duration = Duration::from_millis(50);

/// A TCP and a UDP server on `port` in one namespace, stopped when dropped.
pub struct WhoAmI {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<anyhow::Result<()>>>,
}

impl WhoAmI {
    /// Serves `name` on TCP and UDP `port` inside `netns`, once both listen.
    pub fn start(netns: &str, name: &str, port: u16) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let tcp = {
            let (stop, name, ready) = (stop.clone(), name.to_owned(), ready_tx.clone());
            spawn_in_netns(netns, move || serve_tcp(port, &name, &stop, ready))
        };
        let udp = {
            let (stop, name) = (stop.clone(), name.to_owned());
            spawn_in_netns(netns, move || serve_udp(port, &name, &stop, ready_tx))
        };
        let server = Self {
            stop,
            threads: vec![tcp, udp],
        };
        for _ in 0..2 {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .context("server did not start listening")?;
        }
        Ok(server)
    }
}

impl Drop for WhoAmI {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve_tcp(
    port: u16,
    name: &str,
    stop: &Arc<AtomicBool>,
    ready: mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
    listener.set_nonblocking(true)?;
    ready.send(())?;
    let mut connections = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, peer)) => {
                let (stop, name) = (stop.clone(), name.to_owned());
                connections.push(thread::spawn(move || {
                    answer_lines(conn, peer, &name, &stop)
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(e) => return Err(e.into()),
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
    Ok(())
}

/// Answers every line with `<name> <peer>` until the peer closes or `stop`;
/// an HTTP GET gets the same as a 200 response (its request lines pile up in
/// `line` until the blank line that ends them).
fn answer_lines(conn: TcpStream, peer: SocketAddr, name: &str, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(POLL));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.starts_with("GET ") && line.ends_with('\n') => {
                // An HTTP client (curl, a browser): answer once, then close.
                if line.ends_with("\r\n\r\n") || line.ends_with("\n\n") {
                    let body = format!("{name} {peer}\n");
                    let _ = write!(
                        writer,
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
            }
            Ok(_) if line.ends_with('\n') => {
                if writeln!(writer, "{name} {peer}").is_err() {
                    return;
                }
                line.clear();
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

fn serve_udp(
    port: u16,
    name: &str,
    stop: &AtomicBool,
    ready: mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
    socket.set_read_timeout(Some(POLL))?;
    ready.send(())?;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => {
                socket.send_to(format!("{name} {peer}").as_bytes(), peer)?;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Who answered a request, and the client address it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub server: String,
    pub peer: SocketAddr,
}

fn parse_answer(text: &str) -> anyhow::Result<Answer> {
    let (server, peer) = text
        .trim()
        .split_once(' ')
        .with_context(|| format!("unexpected answer {text:?}"))?;
    Ok(Answer {
        server: server.to_owned(),
        peer: peer.parse()?,
    })
}

/// A TCP connection from inside a namespace, kept open across requests.
pub struct Conversation {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub local: SocketAddr,
}

impl Conversation {
    /// Connects from `netns` to `target` (a 2 s timeout).
    pub fn open(netns: &str, target: SocketAddr) -> std::io::Result<Self> {
        let conn = in_netns(netns, move || {
            Ok(TcpStream::connect_timeout(&target, Duration::from_secs(2))?)
        })
        .map_err(|e| match e.downcast::<std::io::Error>() {
            Ok(io) => io,
            Err(other) => std::io::Error::other(other.to_string()),
        })?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        let local = conn.local_addr()?;
        Ok(Self {
            writer: conn.try_clone()?,
            reader: BufReader::new(conn),
            local,
        })
    }

    /// One request, one answer.
    pub fn ask(&mut self) -> std::io::Result<Answer> {
        self.writer.write_all(b"who\n")?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        parse_answer(&line).map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Reads until the connection ends; the error says how it ended.
    pub fn wait_end(&mut self) -> std::io::Error {
        let mut buf = [0u8; 64];
        loop {
            match self.reader.get_mut().read(&mut buf) {
                Ok(0) => return ErrorKind::UnexpectedEof.into(),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    }
}

/// What [`fake_dns_upstream`] answers for every name.
pub const FAKE_DNS_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// A resolver on `addr`:53 in `netns` that answers every A query with
/// [`FAKE_DNS_ANSWER`]: an upstream for the tasks' resolver to forward to.
/// It runs until the test process ends; its namespace goes with the topology.
pub fn fake_dns_upstream(netns: &str, addr: Ipv4Addr) {
    let ready = Arc::new(std::sync::Barrier::new(2));
    let bound = ready.clone();
    drop(spawn_in_netns::<()>(netns, move || {
        let socket = UdpSocket::bind((addr, 53))?;
        bound.wait();
        let mut buffer = [0u8; 512];
        loop {
            let (len, from) = socket.recv_from(&mut buffer)?;
            if len < 12 {
                continue;
            }
            // The header and the question, without dig's EDNS record.
            let mut end = 12;
            while end < len && buffer[end] != 0 {
                end += usize::from(buffer[end]) + 1;
            }
            let mut answer = buffer[..(end + 5).min(len)].to_vec();
            answer[2] |= 0x80;
            answer[3] = 0x80;
            answer[7] = 1;
            answer[11] = 0;
            answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            answer.extend_from_slice(&FAKE_DNS_ANSWER.octets());
            socket.send_to(&answer, from)?;
        }
    }));
    ready.wait();
}

/// An HTTP/1.0 GET of `/` from `netns` to `target`: the status line and body.
pub fn http_get(netns: &str, target: SocketAddr) -> anyhow::Result<String> {
    in_netns(netns, move || {
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        write!(conn, "GET / HTTP/1.0\r\nHost: {target}\r\n\r\n")?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        let status = response.lines().next().unwrap_or_default().to_owned();
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_owned();
        Ok(format!("{status} | {body}"))
    })
}

/// One TCP request on a fresh connection from `netns` to `target`.
pub fn tcp_ask(netns: &str, target: SocketAddr) -> std::io::Result<Answer> {
    Conversation::open(netns, target)?.ask()
}

/// One UDP datagram from a fresh socket in `netns` to `target`, and its answer.
pub fn udp_ask(netns: &str, target: SocketAddr) -> anyhow::Result<Answer> {
    let text = in_netns(netns, move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.send_to(b"who", target)?;
        let mut buf = [0u8; 256];
        let (len, from) = socket.recv_from(&mut buf)?;
        anyhow::ensure!(
            from == target,
            "answer came from {from}, not the address dialled {target}"
        );
        Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
    })?;
    parse_answer(&text)
}
