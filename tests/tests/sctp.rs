//! SCTP ports (`-p 9000:7000/sctp`): the routing mesh and a service's VIP
//! carry SCTP as they carry TCP and UDP, keeping the client's address, and
//! the mesh's port change keeps SCTP's CRC32c right both ways.
//!
//! This kernel has no SCTP stack (`CONFIG_IP_SCTP` is off), so both ends
//! speak SCTP's common header themselves over raw IP sockets (protocol
//! 132): the client in its namespace, the server inside the task's. What
//! is tested is what the data plane does to the packets, which is the same
//! whatever stack made them.

use std::{
    io, mem,
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use swarm_tests::{Swarm, Topology, TopologyOptions, spawn_in_netns, wait_until};

const IPPROTO_SCTP: i32 = 132;
const PUBLISHED: u16 = 9000;
const TARGET: u16 = 7000;

/// CRC32c as RFC 9260 defines SCTP's checksum, bit by bit.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet: the common header and one DATA-like chunk holding
/// `payload`, its checksum filled in.
fn sctp_packet(source: u16, dest: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    packet.extend_from_slice(&source.to_be_bytes());
    packet.extend_from_slice(&dest.to_be_bytes());
    packet.extend_from_slice(&0x5eed_u32.to_be_bytes());
    packet.extend_from_slice(&[0; 4]);
    let chunk_len = 4 + payload.len();
    packet.extend_from_slice(&[0, 3]);
    packet.extend_from_slice(&(chunk_len as u16).to_be_bytes());
    packet.extend_from_slice(payload);
    while packet.len() % 4 != 0 {
        packet.push(0);
    }
    let crc = crc32c(&packet);
    packet[8..12].copy_from_slice(&crc.to_le_bytes());
    packet
}

/// What arrived: who sent it, its ports, whether its checksum holds, and
/// the chunk's payload.
#[derive(Clone, Debug)]
struct Received {
    from: Ipv4Addr,
    source: u16,
    dest: u16,
    checksum_ok: bool,
    payload: Vec<u8>,
}

fn parse(datagram: &[u8]) -> Option<Received> {
    // A raw IPv4 socket hands over the IP header too.
    let header_len = usize::from(datagram.first()? & 0x0f) * 4;
    let sctp = datagram.get(header_len..)?;
    if sctp.len() < 16 {
        return None;
    }
    let from = Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]);
    let mut zeroed = sctp.to_vec();
    zeroed[8..12].fill(0);
    let stored = u32::from_le_bytes(sctp[8..12].try_into().ok()?);
    let chunk_len = usize::from(u16::from_be_bytes([sctp[14], sctp[15]]));
    Some(Received {
        from,
        source: u16::from_be_bytes([sctp[0], sctp[1]]),
        dest: u16::from_be_bytes([sctp[2], sctp[3]]),
        checksum_ok: crc32c(&zeroed) == stored,
        payload: sctp.get(16..12 + chunk_len)?.to_vec(),
    })
}

/// A raw IPv4 socket for protocol 132 in the calling thread's namespace.
struct RawSctp(i32);

impl RawSctp {
    fn open() -> io::Result<Self> {
        // SAFETY: plain libc calls; results checked.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, IPPROTO_SCTP);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as u32,
            );
            Ok(Self(fd))
        }
    }

    fn send(&self, to: Ipv4Addr, packet: &[u8]) -> io::Result<()> {
        // SAFETY: the address is zeroed and filled; lengths match the buffers.
        unsafe {
            let mut addr: libc::sockaddr_in = mem::zeroed();
            addr.sin_family = libc::AF_INET as u16;
            addr.sin_addr.s_addr = u32::from(to).to_be();
            let sent = libc::sendto(
                self.0,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                mem::size_of::<libc::sockaddr_in>() as u32,
            );
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The next SCTP packet within the socket's timeout.
    fn receive(&self) -> Option<Received> {
        let mut buffer = [0u8; 2048];
        // SAFETY: the buffer outlives the call and its length is given.
        let n = unsafe { libc::recv(self.0, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        (n > 0).then(|| parse(&buffer[..n as usize])).flatten()
    }
}

impl Drop for RawSctp {
    fn drop(&mut self) {
        // SAFETY: the descriptor is this value's own.
        unsafe { libc::close(self.0) };
    }
}

/// The server inside a task: answers every packet to port TARGET with
/// "pong:" and its payload, from TARGET to the sender's port, until
/// stopped; returns what it received.
fn serve(netns: &str, stop: Arc<AtomicBool>) -> thread::JoinHandle<anyhow::Result<Vec<Received>>> {
    spawn_in_netns(netns, move || {
        let socket = RawSctp::open()?;
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let Some(packet) = socket.receive() else {
                continue;
            };
            if packet.dest != TARGET {
                continue;
            }
            let mut answer = b"pong:".to_vec();
            answer.extend_from_slice(&packet.payload);
            socket.send(packet.from, &sctp_packet(TARGET, packet.source, &answer))?;
            seen.push(packet);
        }
        Ok(seen)
    })
}

/// From namespace `netns`, sends "ping:N" from port `source` to `to:port`
/// until an answer for that port arrives (or 10 s pass); the answer.
fn ask(netns: &str, to: Ipv4Addr, port: u16, source: u16) -> anyhow::Result<Received> {
    swarm_tests::in_netns(netns, move || {
        let socket = RawSctp::open()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let ping = format!("ping:{source}").into_bytes();
        while Instant::now() < deadline {
            socket.send(to, &sctp_packet(source, port, &ping))?;
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                if let Some(answer) = socket.receive().filter(|p| p.dest == source) {
                    return Ok(answer);
                }
            }
        }
        anyhow::bail!("no SCTP answer from {to}:{port} to port {source}")
    })
}

fn running_task(topology: &Topology, service: &str) -> serde_json::Value {
    let mut task = serde_json::Value::Null;
    wait_until(&format!("a task of {service} running"), || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", service])
            .map_err(|e| e.to_string())?;
        task = rows
            .into_iter()
            .find(swarm_tests::is_running_row)
            .ok_or("none yet")?;
        Ok(())
    });
    task
}

#[test]
fn sctp_through_the_mesh_and_a_vip_keeps_addresses_and_checksums() {
    let topology = Swarm::new()
        .workers([1])
        .start(&TopologyOptions::new("sctp", 2))
        .unwrap();
    let h1 = topology.daemon(0);
    h1.swarm_ok(&["network", "create", "-d", "overlay", "front"])
        .unwrap();
    let published = format!("{PUBLISHED}:{TARGET}/sctp");
    for (name, node, publish) in [("echo", "h2", true), ("caller", "h1", false)] {
        let constraint = format!("node.hostname=={node}");
        let mut args = vec![
            "service",
            "create",
            "--name",
            name,
            "--network",
            "front",
            "--constraint",
            &constraint,
        ];
        if publish {
            args.extend(["-p", &published]);
        }
        args.extend(["host", "sleep", "600"]);
        h1.swarm_ok(&args).unwrap();
    }
    let echo = running_task(&topology, "echo");
    let caller = running_task(&topology, "caller");
    let caller_netns = format!("swarm-{}", caller["ID"].as_str().unwrap());

    // Docker's words for the published port.
    let inspect = h1.swarm_inspect(&["service", "inspect", "echo"]).unwrap();
    let port = &inspect[0]["Endpoint"]["Ports"][0];
    assert_eq!(
        (
            &port["Protocol"],
            &port["PublishedPort"],
            &port["TargetPort"]
        ),
        (&"sctp".into(), &PUBLISHED.into(), &TARGET.into()),
        "{port}"
    );
    let front_id = h1.swarm_inspect(&["network", "inspect", "front"]).unwrap()[0]["Id"].clone();
    let vip: Ipv4Addr = inspect[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["NetworkID"] == front_id)
        .unwrap()["Addr"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let caller_ip: Ipv4Addr = caller["Addresses"][front_id.as_str().unwrap()]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(
        &format!("swarm-{}", echo["ID"].as_str().unwrap()),
        stop.clone(),
    );
    let client = topology.client.netns.name().to_owned();
    let client_ip = topology.client.addr;
    // Through the node without the task (port changed on the way in and
    // out), through the node with it, and to the VIP from another task.
    let cases = [
        (
            client.as_str(),
            topology.hosts[0].addr,
            PUBLISHED,
            40_001,
            client_ip,
        ),
        (
            client.as_str(),
            topology.hosts[1].addr,
            PUBLISHED,
            40_002,
            client_ip,
        ),
        (caller_netns.as_str(), vip, TARGET, 40_003, caller_ip),
    ];
    let mut answers = Vec::new();
    for (netns, to, port, source, _) in cases {
        answers.push(ask(netns, to, port, source));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = server.join().unwrap().unwrap();

    for ((_, to, port, source, expected_from), answer) in cases.iter().zip(answers) {
        let answer = answer.unwrap_or_else(|e| {
            topology.dump_logs();
            panic!("{e}; the server saw {seen:?}")
        });
        // The answer comes from the address and port the client called,
        // its checksum right after the NAT.
        assert_eq!((answer.from, answer.source), (*to, *port), "{answer:?}");
        assert!(answer.checksum_ok, "{answer:?}");
        assert_eq!(answer.payload, format!("pong:ping:{source}").into_bytes());
        // The server saw the client's own address, the target port, and
        // a checksum that holds.
        let request = seen
            .iter()
            .find(|p| p.source == *source)
            .unwrap_or_else(|| panic!("the server never saw port {source}: {seen:?}"));
        assert_eq!(request.from, *expected_from, "{request:?}");
        assert_eq!(request.dest, TARGET);
        assert!(request.checksum_ok, "{request:?}");
    }
    let mesh = h1.counter("packet", "mesh-new-flow").unwrap();
    assert!(mesh >= 1, "mesh-new-flow {mesh}");
}
