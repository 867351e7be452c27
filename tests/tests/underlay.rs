//! Three hosts, three daemons: each attaches to its underlay interface and
//! counts what an outside client sends it, and drops what is malformed.

use std::net::UdpSocket;

use swarm_tests::{Host, Topology, TopologyOptions, in_netns, packets::*, send_raw_frames};

/// Datagrams the client sends to host i: different per host, so a counter
/// that mixed hosts up would show.
fn datagrams_for(i: usize) -> u64 {
    5 + i as u64 * 3
}

#[test]
fn three_daemons_attach_and_count_client_traffic_per_host() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 3)).unwrap();
    topology.start_daemons().unwrap();

    for (i, host) in topology.hosts.iter().enumerate() {
        let link = host
            .netns
            .ip(&["link", "show", Host::UNDERLAY_IFACE])
            .unwrap();
        assert!(
            link.contains(" xdp"),
            "no XDP program on {}: {link}",
            host.name
        );
        let info = &topology.daemon(i).swarm_json(&["info"]).unwrap()[0];
        assert_eq!(info["Hostname"], host.name.as_str());
        assert_eq!(info["UnderlayInterface"], Host::UNDERLAY_IFACE);
        assert_eq!(info["AdvertiseAddr"], host.addr.to_string());
    }

    for host in &topology.hosts {
        topology
            .client
            .netns
            .exec(
                "ping",
                &["-c", "3", "-i", "0.2", "-W", "2", &host.addr.to_string()],
            )
            .unwrap();
    }
    let targets: Vec<_> = topology.hosts.iter().map(|h| h.addr).collect();
    in_netns(topology.client.netns.name(), move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        for (i, addr) in targets.iter().enumerate() {
            for _ in 0..datagrams_for(i) {
                socket.send_to(b"hello swarm", (*addr, 9999))?;
            }
        }
        Ok(())
    })
    .unwrap();

    for i in 0..topology.hosts.len() {
        let daemon = topology.daemon(i);
        daemon.wait_for_counters(&[("packet", "icmp", 3), ("packet", "udp", datagrams_for(i))]);
        let icmp = daemon.counter("packet", "icmp").unwrap();
        let udp = daemon.counter("packet", "udp").unwrap();
        let received = daemon.counter("packet", "received").unwrap();
        assert!(icmp >= 3, "{}: icmp {icmp}", daemon.host);
        assert_eq!(
            udp,
            datagrams_for(i),
            "{}: udp datagrams counted",
            daemon.host
        );
        assert!(
            received >= icmp + udp,
            "{}: received {received}",
            daemon.host
        );
        assert_eq!(
            daemon.counter("packet", "dropped").unwrap(),
            0,
            "{}",
            daemon.host
        );
    }
}

#[test]
fn malformed_frames_from_the_wire_are_dropped_counted_and_good_traffic_flows() {
    malformed_frames_are_dropped(&[]);
}

#[test]
fn the_underlay_program_on_tc_drops_and_counts_alike() {
    malformed_frames_are_dropped(&["--underlay-hook", "tc"]);
}

fn malformed_frames_are_dropped(daemon_args: &[&str]) {
    let mut options = TopologyOptions::new("swt", 3);
    options.daemon_args = daemon_args.iter().map(|a| a.to_string()).collect();
    let mut topology = Topology::new(&options).unwrap();
    topology.start_daemons().unwrap();
    let expected_hook = if daemon_args.is_empty() {
        "xdp-generic"
    } else {
        "tc"
    };
    for i in 0..3 {
        let info = &topology.daemon(i).swarm_json(&["info"]).unwrap()[0];
        assert_eq!(info["UnderlayHook"], expected_hook, "veth underlay");
    }
    let client_mac = topology.client.mac().unwrap();

    for (i, host) in topology.hosts.iter().enumerate() {
        let host_mac = host.mac().unwrap();
        let addressed = |mut frame: Vec<u8>| {
            frame[..6].copy_from_slice(&host_mac);
            frame[6..12].copy_from_slice(&client_mac);
            frame
        };
        let good = addressed(ipv4_frame(PROTO_UDP, &udp(1000, 9999, b"good")));
        let mut bad_ihl = good.clone();
        bad_ihl[L3_OFFSET] = 0x42;
        let mut bad_total = good.clone();
        bad_total[L3_OFFSET + 2..L3_OFFSET + 4].copy_from_slice(&1000u16.to_be_bytes());
        fix_ipv4_checksum(&mut bad_total, L3_OFFSET);
        let truncated = good[..L3_OFFSET + 8].to_vec();

        let frames: Vec<Vec<u8>> = std::iter::repeat_n(bad_ihl, 4)
            .chain(std::iter::repeat_n(bad_total, 3))
            .chain(std::iter::repeat_n(truncated, 2))
            .collect();
        send_raw_frames_from(&topology, frames);

        let daemon = topology.daemon(i);
        daemon.wait_for_counters(&[
            ("drop", "ipv4-bad-header-length", 4),
            ("drop", "ipv4-bad-total-length", 3),
            ("drop", "ipv4-truncated", 2),
            ("packet", "dropped", 9),
        ]);
        assert_eq!(daemon.counter("drop", "ipv4-bad-header-length").unwrap(), 4);
        assert_eq!(daemon.counter("drop", "ipv4-bad-total-length").unwrap(), 3);
        assert_eq!(daemon.counter("drop", "ipv4-truncated").unwrap(), 2);
        assert_eq!(daemon.counter("packet", "dropped").unwrap(), 9);

        // Well-formed traffic still reaches the host's stack.
        topology
            .client
            .netns
            .exec("ping", &["-c", "1", "-W", "2", &host.addr.to_string()])
            .unwrap_or_else(|e| panic!("{} unreachable after drops: {e}", host.name));
    }
}

fn send_raw_frames_from(topology: &Topology, frames: Vec<Vec<u8>>) {
    in_netns(topology.client.netns.name(), move || {
        send_raw_frames(Host::UNDERLAY_IFACE, &frames)?;
        Ok(())
    })
    .unwrap();
}
