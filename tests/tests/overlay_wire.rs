//! The overlay on the wire: RFC 7348 VXLAN that a plain Linux VXLAN device
//! understands in both directions, and that tshark decodes with the right VNI.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use swarm_tests::{Topology, TopologyOptions, in_netns, ping, spawn_in_netns};

const VNI: &str = "4096";

/// Starts swarm on `host` with one task at `ip` on VNI 4096 (10.0.1.0/24).
/// Returns the task's namespace and its MAC.
fn swarm_side(topology: &mut Topology, host: usize, ip: Ipv4Addr, role: &str) -> (String, String) {
    topology.start_daemon(host).unwrap();
    let task = topology
        .overlay(4096, "10.0.1.0/24", &[(host, role, ip)])
        .unwrap()
        .remove(0);
    (task.netns, task.mac)
}

#[test]
fn a_kernel_vxlan_device_and_swarm_talk_both_ways() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 2)).unwrap();
    let (task, _) = swarm_side(&mut topology, 0, Ipv4Addr::new(10, 0, 1, 11), "t1");

    // Host 2: no swarm, just Linux's own VXLAN device on the same VNI and port.
    let h2 = &topology.hosts[1].netns;
    h2.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        VNI,
        "dstport",
        "4789",
        "local",
        "198.18.0.2",
        "remote",
        "198.18.0.1",
        "dev",
        "eth0",
    ])
    .unwrap();
    h2.ip(&["addr", "add", "10.0.1.50/24", "dev", "vx0"])
        .unwrap();
    h2.ip(&["link", "set", "vx0", "up"]).unwrap();
    let json = h2.ip(&["-j", "link", "show", "vx0"]).unwrap();
    let links: serde_json::Value = serde_json::from_str(&json).unwrap();
    let vx0_mac = links[0]["address"].as_str().unwrap().to_owned();
    topology
        .daemon(0)
        .swarm_ok(&[
            "dataplane",
            "endpoint",
            "add-remote",
            "--vni",
            VNI,
            "--ip",
            "10.0.1.50",
            "--mac",
            &vx0_mac,
            "--node",
            "198.18.0.2",
        ])
        .unwrap();

    // swarm -> kernel: the task resolves 10.0.1.50 through the ARP responder.
    ping(&task, "10.0.1.50", &[]).expect("swarm task -> kernel VXLAN");
    // kernel -> swarm: the kernel ARPs for the task over the tunnel; swarm answers.
    let h2_name = topology.hosts[1].netns.name().to_owned();
    ping(&h2_name, "10.0.1.11", &[]).expect("kernel VXLAN -> swarm task");

    // TCP from the kernel side to a server in the swarm task, and back.
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = spawn_in_netns(&task, move || {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 7000))?;
        ready_tx.send(())?;
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; 100_000];
        conn.read_exact(&mut buf)?;
        conn.write_all(&buf)?;
        Ok(())
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let echoed = in_netns(&h2_name, || {
        let target = SocketAddr::from((Ipv4Addr::new(10, 0, 1, 11), 7000));
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        conn.write_all(&sent)?;
        let mut back = vec![0u8; sent.len()];
        conn.read_exact(&mut back)?;
        Ok(back == sent)
    })
    .unwrap();
    server.join().unwrap().unwrap();
    assert!(echoed, "100 kB echoed intact through both encapsulations");
    assert!(
        topology
            .daemon(0)
            .counter("packet", "overlay-decap")
            .unwrap()
            > 0
    );
}

#[test]
fn tshark_decodes_the_underlay_as_vxlan_with_the_networks_vni() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 2)).unwrap();
    topology.start_daemons().unwrap();
    let tasks = topology
        .overlay(
            4096,
            "10.0.1.0/24",
            &[
                (0, "t1", Ipv4Addr::new(10, 0, 1, 11)),
                (1, "t2", Ipv4Addr::new(10, 0, 1, 12)),
            ],
        )
        .unwrap();
    let t1 = tasks[0].netns.clone();
    let capture = topology.hosts[1]
        .netns
        .command("tshark")
        .unwrap()
        .args([
            "-i",
            "eth0",
            "-f",
            "udp port 4789",
            "-c",
            "4",
            "-a",
            "duration:15",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "vxlan.vni",
            "-e",
            "udp.dstport",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "icmp.type",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark (installed by `cargo xtask setup`)");
    // tshark needs a moment before it captures.
    std::thread::sleep(Duration::from_secs(2));
    ping(&t1, "10.0.1.12", &[]).expect("cross-node ping");
    let output = capture.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let frames: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        frames.len() >= 4,
        "captured {frames:?}; tshark said {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for frame in frames {
        let fields: Vec<&str> = frame.split('|').collect();
        assert_eq!(fields[0], VNI, "VNI in {frame}");
        assert_eq!(fields[1], "4789", "UDP port in {frame}");
        // Outer then inner addresses.
        assert!(
            fields[2].starts_with("198.18.0.") && fields[2].contains("10.0.1.1"),
            "{frame}"
        );
        assert!(
            fields[3].contains("10.0.1.1"),
            "inner destination in {frame}"
        );
        assert!(!fields[4].is_empty(), "inner ICMP decoded in {frame}");
    }
}

#[test]
fn foreign_vnis_and_malformed_inner_frames_are_dropped_and_counted() {
    use swarm_tests::packets::*;

    let mut topology = Topology::new(&TopologyOptions::new("swt", 1)).unwrap();
    let (task, task_mac) = swarm_side(&mut topology, 0, Ipv4Addr::new(10, 0, 1, 11), "t1");
    let mac: Vec<u8> = task_mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();

    /// A VXLAN datagram payload: the 8-byte header (I flag, VNI) and the inner frame.
    fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut payload = vec![0x08, 0, 0, 0];
        payload.extend_from_slice(&(vni << 8).to_be_bytes());
        payload.extend_from_slice(inner);
        payload
    }
    // An echo reply: the task answers nothing, so it adds no drops of its own.
    let mut reply = icmp_echo(7, 1);
    reply[0] = 0;
    reply[2..4].copy_from_slice(&[0, 0]);
    let checksum = internet_checksum(&reply);
    reply[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut good = ipv4_frame(PROTO_ICMP, &reply);
    good[..6].copy_from_slice(&mac);
    good[L3_OFFSET + 16..L3_OFFSET + 20].copy_from_slice(&[10, 0, 1, 11]);
    fix_ipv4_checksum(&mut good, L3_OFFSET);
    let mut bad_ihl = good.clone();
    bad_ihl[L3_OFFSET] = 0x44;
    let mut to_stranger = good.clone();
    to_stranger[L3_OFFSET + 16..L3_OFFSET + 20].copy_from_slice(&[10, 0, 1, 99]);
    fix_ipv4_checksum(&mut to_stranger, L3_OFFSET);

    let datagrams = vec![
        vxlan(4096, &good),
        vxlan(9999, &good),
        vxlan(9999, &good),
        vxlan(4096, &bad_ihl),
        vxlan(4096, &to_stranger),
    ];
    let daemon = topology.daemon(0);
    let decap_before = daemon.counter("packet", "overlay-decap").unwrap();
    in_netns(topology.client.netns.name(), move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        for datagram in &datagrams {
            socket.send_to(datagram, "198.18.0.1:4789")?;
        }
        Ok(())
    })
    .unwrap();
    daemon.wait_for_counters(&[
        ("drop", "unknown-vni", 2),
        ("drop", "ipv4-bad-header-length", 1),
        ("drop", "unknown-destination", 1),
        ("packet", "overlay-decap", decap_before + 1),
        ("packet", "vxlan", 5),
    ]);

    assert_eq!(daemon.counter("drop", "unknown-vni").unwrap(), 2);
    assert_eq!(daemon.counter("drop", "ipv4-bad-header-length").unwrap(), 1);
    assert_eq!(daemon.counter("drop", "unknown-destination").unwrap(), 1);
    assert_eq!(
        daemon.counter("packet", "overlay-decap").unwrap(),
        decap_before + 1
    );
    assert!(
        daemon.counter("packet", "vxlan").unwrap() >= 5,
        "counted on the underlay too"
    );
    let _ = task;
}
