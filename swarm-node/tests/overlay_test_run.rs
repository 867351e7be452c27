//! The overlay's TC programs, `sw_from_task` and `sw_from_tunnel`, run in
//! the kernel with BPF_PROG_TEST_RUN on crafted frames: ARP answered,
//! same-node delivery, handing to the tunnel, VIP DNAT and reverse NAT,
//! isolation between networks, each drop reason these programs can reach
//! this way; then thousands of seeded random and mangled frames per
//! program, which must each get a valid verdict and leave another flow's
//! conntrack entries as they were.
//!
//! A test run's skb arrives on `lo` (ifindex 1), so the task's port is
//! keyed by 1; redirects are verdicts here, not deliveries, and the tunnel
//! key `sw_from_task` sets is not visible. A test run carries no tunnel
//! metadata: `sw_from_tunnel` stops at `no-tunnel-key`, and its delivery
//! paths are proven on the wire (`tests/tests/overlay*.rs`). The kernel
//! refuses to test-run frames shorter than an Ethernet or IP header, so
//! the `*-truncated` reasons of those headers are not reached here;
//! `conntrack-full`, `helper-failed`, `not-local`, `unknown-vni` and
//! `backend-unknown` need a full table, a failing helper, tunnel metadata
//! or the mesh program.

use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, Map, MapData};
use swarm_common::{
    map_names,
    overlay::{Endpoint, EndpointKey, Network, NodeConfig, Port},
    program_names,
    service::{BackendKey, CtEntry, CtKey, Frontend, VipKey},
    stats::{DropReason, PacketKind},
};
use swarm_node::{
    dataplane::{Dataplane, DataplaneConfig, DataplaneStats, test_run},
    identity::new_id,
};
use swarm_tests::packets::*;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
/// The port a test run's frames arrive on: `lo`.
const PORT_IFINDEX: u32 = 1;
const VNI: u32 = 4097;
const OTHER_VNI: u32 = 4098;
const VXLAN_IFINDEX: u32 = 99;
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const OTHER_NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
/// A VIP whose service has no task.
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
/// The sending task, on this node.
const TASK_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
/// Another task on this node: the VIP's backend.
const TASK_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 4);
/// A task on the other node.
const TASK_C: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
/// A task on this node, on another network.
const TASK_D: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 4);
const GATEWAY_MAC: [u8; 6] = [0x02, 0x73, 0x77, 0, 0x10, 1];
const MAC_A: [u8; 6] = [0x02, 0x42, 10, 0, 1, 3];
const MAC_B: [u8; 6] = [0x02, 0x42, 10, 0, 1, 4];
const MAC_C: [u8; 6] = [0x02, 0x42, 10, 0, 1, 5];
const MAC_D: [u8; 6] = [0x02, 0x42, 10, 0, 2, 4];
/// The source port of the flow the fuzzing must not disturb.
const PROTECTED_PORT: u16 = 50_000;

fn ne(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The data plane loaded (not attached) on its own pins, removed on drop.
struct Loaded {
    dataplane: Option<Dataplane>,
    pin_dir: std::path::PathBuf,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        drop(self.dataplane.take());
        let _ = swarm_node::dataplane::remove_pin_dir(&self.pin_dir);
    }
}

impl Loaded {
    fn map(&self, name: &str) -> MapData {
        MapData::from_pin(self.pin_dir.join(name)).expect("pinned map")
    }

    fn dataplane(&mut self) -> &mut Dataplane {
        self.dataplane.as_mut().unwrap()
    }

    fn run(&mut self, program: &'static str, frame: &[u8]) -> test_run::TestRunOutput {
        self.try_run(program, frame)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {program} on {frame:02x?}: {e}"))
    }

    fn try_run(
        &mut self,
        program: &'static str,
        frame: &[u8],
    ) -> std::io::Result<test_run::TestRunOutput> {
        let fd = self
            .dataplane()
            .classifier(program)
            .unwrap()
            .fd()
            .unwrap()
            .try_clone()
            .unwrap();
        test_run::run(&fd, frame)
    }

    fn stats(&mut self) -> DataplaneStats {
        self.dataplane().stats().expect("read counters")
    }

    /// Runs `frame` through `program` and checks it is dropped for `reason`.
    fn expect_drop(&mut self, program: &'static str, frame: &[u8], reason: DropReason) {
        let before = self.stats();
        let out = self.run(program, frame);
        let after = self.stats();
        assert_eq!(
            out.retval, TC_ACT_SHOT,
            "{program} on a frame for {reason:?}"
        );
        let counted: Vec<&str> = after
            .drops
            .iter()
            .zip(&before.drops)
            .filter(|(a, b)| a.packets != b.packets)
            .map(|(a, _)| a.name.as_str())
            .collect();
        assert_eq!(
            after.drop(reason),
            before.drop(reason) + 1,
            "{program}: {reason:?} not counted; counted {counted:?}"
        );
    }

    /// Runs `frame` and checks the verdict and that `kind` was counted.
    fn expect(
        &mut self,
        program: &'static str,
        frame: &[u8],
        verdict: u32,
        kind: PacketKind,
    ) -> Vec<u8> {
        let before = self.stats();
        let out = self.run(program, frame);
        let after = self.stats();
        assert_eq!(out.retval, verdict, "{program}: verdict for {kind:?}");
        assert_eq!(
            after.packet(kind),
            before.packet(kind) + 1,
            "{program}: {kind:?} not counted"
        );
        out.data
    }

    fn conntrack(&self) -> Vec<(CtKey, CtEntry)> {
        let map: HashMap<MapData, CtKey, CtEntry> =
            HashMap::try_from(Map::LruHashMap(self.map(map_names::CONNTRACK))).unwrap();
        map.iter().filter_map(Result::ok).collect()
    }
}

/// This node with the tasks above; `vxlan_ifindex` 0 means no tunnel
/// device; `port` false leaves `lo` an unknown port.
fn load(vxlan_ifindex: u32, port: bool) -> Loaded {
    swarm_tests::require_root();
    let config = DataplaneConfig::for_node(&format!("test-{}", new_id()), 4789);
    let loaded = Loaded {
        dataplane: Some(Dataplane::load(&config).expect("load the eBPF programs")),
        pin_dir: config.pin_dir.clone(),
    };
    let mut node: Array<MapData, NodeConfig> =
        Array::try_from(Map::Array(loaded.map(map_names::NODE_CONFIG))).unwrap();
    let node_config = NodeConfig {
        vxlan_ifindex,
        node_ip: ne(NODE),
        ..NodeConfig::default()
    };
    node.set(0, node_config, 0).unwrap();
    let mut networks: HashMap<MapData, u32, Network> =
        HashMap::try_from(Map::HashMap(loaded.map(map_names::NETWORKS))).unwrap();
    for vni in [VNI, OTHER_VNI] {
        let network = Network {
            gateway_ip: ne(GATEWAY),
            gateway_mac: GATEWAY_MAC,
            ..Network::default()
        };
        networks.insert(vni, network, 0).unwrap();
    }
    if port {
        let mut ports: HashMap<MapData, u32, Port> =
            HashMap::try_from(Map::HashMap(loaded.map(map_names::PORTS))).unwrap();
        let value = Port {
            vni: VNI,
            gateway_ip: ne(GATEWAY),
            gateway_mac: GATEWAY_MAC,
            ..Port::default()
        };
        ports.insert(PORT_IFINDEX, value, 0).unwrap();
    }
    let mut endpoints: HashMap<MapData, EndpointKey, Endpoint> =
        HashMap::try_from(Map::HashMap(loaded.map(map_names::ENDPOINTS))).unwrap();
    for (vni, ip, mac, ifindex, node_ip) in [
        (VNI, TASK_A, MAC_A, PORT_IFINDEX, NODE),
        (VNI, TASK_B, MAC_B, 42, NODE),
        (VNI, TASK_C, MAC_C, 0, OTHER_NODE),
        (OTHER_VNI, TASK_D, MAC_D, 43, NODE),
    ] {
        let endpoint = Endpoint {
            mac,
            ifindex,
            node_ip: ne(node_ip),
            ..Endpoint::default()
        };
        endpoints
            .insert(EndpointKey { vni, ip: ne(ip) }, endpoint, 0)
            .unwrap();
    }
    let mut vips: HashMap<MapData, VipKey, Frontend> =
        HashMap::try_from(Map::HashMap(loaded.map(map_names::VIPS))).unwrap();
    for (vip, set, count) in [(VIP, 3, 1), (EMPTY_VIP, 4, 0)] {
        let frontend = Frontend {
            backend_set: set,
            backend_count: count,
            vni: VNI,
            ..Frontend::default()
        };
        vips.insert(
            VipKey {
                vni: VNI,
                vip: ne(vip),
            },
            frontend,
            0,
        )
        .unwrap();
    }
    let mut backends: HashMap<MapData, BackendKey, u32> =
        HashMap::try_from(Map::HashMap(loaded.map(map_names::BACKENDS))).unwrap();
    backends
        .insert(
            BackendKey {
                backend_set: 3,
                slot: 0,
            },
            ne(TASK_B),
            0,
        )
        .unwrap();
    loaded
}

/// A frame task `src` sends to `dst` through the gateway.
fn from_task(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    ethernet(
        GATEWAY_MAC,
        MAC_A,
        ETHERTYPE_IPV4,
        &with_l4_checksum(ipv4(src, dst, protocol, l4)),
    )
}

/// A TCP segment with `flags`.
fn tcp_with(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut segment = tcp(sport, dport, b"hello");
    segment[13] = flags;
    segment
}

/// Fills in the TCP or UDP checksum of an IPv4 packet built with none.
fn with_l4_checksum(mut packet: Vec<u8>) -> Vec<u8> {
    let protocol = packet[9];
    let at = match protocol {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return packet,
    };
    packet[20 + at..20 + at + 2].copy_from_slice(&[0, 0]);
    let check = l4_sum(&packet);
    packet[20 + at..20 + at + 2].copy_from_slice(&check.to_be_bytes());
    packet
}

/// The one's-complement sum over the pseudo-header and L4 of an IPv4
/// packet: 0 when its checksum is right.
fn l4_sum(packet: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&packet[12..20]);
    pseudo.extend_from_slice(&[0, packet[9]]);
    pseudo.extend_from_slice(&((packet.len() - 20) as u16).to_be_bytes());
    pseudo.extend_from_slice(&packet[20..]);
    internet_checksum(&pseudo)
}

fn checksums_ok(frame: &[u8]) {
    let packet = &frame[L3_OFFSET..];
    assert_eq!(internet_checksum(&packet[..20]), 0, "IPv4 header checksum");
    assert_eq!(l4_sum(packet), 0, "L4 checksum");
}

fn ip_at(frame: &[u8], offset: usize) -> Ipv4Addr {
    let at = L3_OFFSET + offset;
    Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
}

fn arp_frame(target: Ipv4Addr) -> Vec<u8> {
    ethernet(
        [0xff; 6],
        MAC_A,
        ETHERTYPE_ARP,
        &arp_request(MAC_A, TASK_A, target),
    )
}

const TASK: &str = program_names::TASK_INGRESS;
const TUNNEL: &str = program_names::VXLAN_INGRESS;

#[test]
fn arp_is_answered_for_the_gateway_vips_and_known_endpoints() {
    let mut loaded = load(VXLAN_IFINDEX, true);
    for (target, mac) in [
        (GATEWAY, GATEWAY_MAC),
        (VIP, GATEWAY_MAC),
        (TASK_B, MAC_B),
        (TASK_C, MAC_C),
    ] {
        let reply = loaded.expect(
            TASK,
            &arp_frame(target),
            TC_ACT_REDIRECT,
            PacketKind::OverlayArpReplied,
        );
        let arp = &reply[ETH_HLEN..];
        assert_eq!(&reply[0..6], &MAC_A, "to the asker");
        assert_eq!(&reply[6..12], &mac, "from {target}");
        assert_eq!(&arp[6..8], &[0, 2], "a reply");
        assert_eq!(&arp[8..14], &mac, "{target} is at");
        assert_eq!(&arp[14..18], &target.octets());
        assert_eq!(&arp[18..24], &MAC_A);
        assert_eq!(&arp[24..28], &TASK_A.octets());
    }
    // Another network's task is not known here.
    loaded.expect_drop(TASK, &arp_frame(TASK_D), DropReason::ArpUnknownTarget);
    loaded.expect_drop(
        TASK,
        &arp_frame(Ipv4Addr::new(10, 0, 1, 99)),
        DropReason::ArpUnknownTarget,
    );
    let mut reply = arp_frame(GATEWAY);
    reply[ETH_HLEN + 7] = 2;
    loaded.expect_drop(TASK, &reply, DropReason::ArpNotRequest);
    let truncated = arp_frame(GATEWAY)[..ETH_HLEN + 20].to_vec();
    loaded.expect_drop(TASK, &truncated, DropReason::ArpTruncated);
}

#[test]
fn same_node_delivery_tunnel_handoff_and_isolation() {
    let mut loaded = load(VXLAN_IFINDEX, true);
    let udp_to = |dst| from_task(TASK_A, dst, PROTO_UDP, &udp(40000, 53, b"query"));
    // To a task on this node: into its namespace, addressed to its MAC,
    // the packet untouched.
    let frame = udp_to(TASK_B);
    let out = loaded.expect(TASK, &frame, TC_ACT_REDIRECT, PacketKind::OverlayLocal);
    assert_eq!(&out[0..6], &MAC_B);
    assert_eq!(&out[6..], &frame[6..]);
    // To a task on another node: handed to the VXLAN device, addressed to
    // its MAC (the tunnel key, set by helper, is not visible to a test run).
    let frame = udp_to(TASK_C);
    let out = loaded.expect(TASK, &frame, TC_ACT_REDIRECT, PacketKind::OverlayEncap);
    assert_eq!(&out[0..6], &MAC_C);
    assert_eq!(&out[6..], &frame[6..]);
    // A task on another network is not reachable from this one, whatever
    // its address; nor an address no task has.
    loaded.expect_drop(TASK, &udp_to(TASK_D), DropReason::UnknownDestination);
    loaded.expect_drop(
        TASK,
        &udp_to(Ipv4Addr::new(10, 0, 1, 77)),
        DropReason::UnknownDestination,
    );
    loaded.expect_drop(
        TASK,
        &udp_to(Ipv4Addr::new(8, 8, 8, 8)),
        DropReason::UnknownDestination,
    );

    // Without a tunnel device, a remote destination is dropped.
    let mut untunnelled = load(0, true);
    untunnelled.expect_drop(TASK, &udp_to(TASK_C), DropReason::NoTunnelDevice);
    // A frame from a veth the data plane does not know.
    let mut portless = load(VXLAN_IFINDEX, false);
    portless.expect_drop(TASK, &udp_to(TASK_B), DropReason::UnknownPort);
}

#[test]
fn a_vip_is_dnated_to_its_backend_and_replies_reverse_nated() {
    let mut loaded = load(VXLAN_IFINDEX, true);
    let syn = from_task(TASK_A, VIP, PROTO_TCP, &tcp_with(40000, 80, 0x02));
    let before = loaded.stats();
    let out = loaded.expect(TASK, &syn, TC_ACT_REDIRECT, PacketKind::ServiceDnat);
    let after = loaded.stats();
    assert_eq!(
        after.packet(PacketKind::ServiceNewFlow),
        before.packet(PacketKind::ServiceNewFlow) + 1
    );
    assert_eq!(&out[0..6], &MAC_B, "to the backend's MAC");
    assert_eq!(ip_at(&out, 12), TASK_A, "the client's address kept");
    assert_eq!(ip_at(&out, 16), TASK_B, "DNAT to the backend");
    checksums_ok(&out);
    // Both directions of the flow are tracked.
    let entries = loaded.conntrack();
    assert_eq!(entries.len(), 2, "{entries:?}");

    // The backend's answer comes back from the VIP.
    let mut reply = from_task(TASK_B, TASK_A, PROTO_TCP, &tcp_with(80, 40000, 0x12));
    reply[6..12].copy_from_slice(&MAC_B);
    let out = loaded.expect(TASK, &reply, TC_ACT_REDIRECT, PacketKind::ServiceReverseNat);
    assert_eq!(&out[0..6], &MAC_A);
    assert_eq!(ip_at(&out, 12), VIP, "reverse NAT to the VIP");
    assert_eq!(ip_at(&out, 16), TASK_A);
    checksums_ok(&out);

    // The same flow keeps its backend: the next segment is DNATed without
    // a new entry.
    let ack = from_task(TASK_A, VIP, PROTO_TCP, &tcp_with(40000, 80, 0x10));
    let out = loaded.expect(TASK, &ack, TC_ACT_REDIRECT, PacketKind::ServiceDnat);
    assert_eq!(ip_at(&out, 16), TASK_B);
    assert_eq!(loaded.conntrack().len(), 2);
}

#[test]
fn a_vip_refuses_what_it_cannot_serve_with_its_reason() {
    let mut loaded = load(VXLAN_IFINDEX, true);
    // UDP to a service without tasks: dropped.
    let udp_empty = from_task(TASK_A, EMPTY_VIP, PROTO_UDP, &udp(40000, 53, b"q"));
    loaded.expect_drop(TASK, &udp_empty, DropReason::NoBackend);
    // TCP to it: refused with a reset, back into the task.
    let syn_empty = from_task(TASK_A, EMPTY_VIP, PROTO_TCP, &tcp_with(40000, 80, 0x02));
    let before = loaded.stats();
    let out = loaded.expect(TASK, &syn_empty, TC_ACT_REDIRECT, PacketKind::ResetSent);
    assert_eq!(
        loaded.stats().drop(DropReason::NoBackend),
        before.drop(DropReason::NoBackend) + 1
    );
    assert_eq!(out[L4_OFFSET + 13] & 0x04, 0x04, "RST set");
    assert_eq!(ip_at(&out, 12), EMPTY_VIP);
    assert_eq!(ip_at(&out, 16), TASK_A);
    // A segment of a flow the VIP never saw open: lost, and reset.
    let stray = from_task(TASK_A, VIP, PROTO_TCP, &tcp_with(40001, 80, 0x10));
    let before = loaded.stats();
    loaded.expect(TASK, &stray, TC_ACT_REDIRECT, PacketKind::ResetSent);
    assert_eq!(
        loaded.stats().drop(DropReason::FlowLost),
        before.drop(DropReason::FlowLost) + 1
    );
    // Only TCP and UDP are balanced.
    let ping = from_task(TASK_A, VIP, PROTO_ICMP, &icmp_echo(1, 1));
    loaded.expect_drop(TASK, &ping, DropReason::ServiceProtocol);
    // A header with options (four NOPs) is not rewritten.
    let mut payload = vec![1u8; 4];
    payload.extend(udp(40000, 53, b"q"));
    let mut options = ipv4(TASK_A, VIP, PROTO_UDP, &payload);
    options[0] = 0x46;
    options[10..12].copy_from_slice(&[0, 0]);
    let check = internet_checksum(&options[..24]);
    options[10..12].copy_from_slice(&check.to_be_bytes());
    let options = ethernet(GATEWAY_MAC, MAC_A, ETHERTYPE_IPV4, &options);
    loaded.expect_drop(TASK, &options, DropReason::ServiceIpOptions);
    // A UDP header cut short.
    let mut short = ipv4(TASK_A, VIP, PROTO_UDP, &[0; 4]);
    fix_ipv4_checksum(&mut short, 0);
    let short = ethernet(GATEWAY_MAC, MAC_A, ETHERTYPE_IPV4, &short);
    loaded.expect_drop(TASK, &short, DropReason::UdpTruncated);
    assert!(loaded.conntrack().is_empty(), "{:?}", loaded.conntrack());
}

#[test]
fn malformed_and_foreign_frames_are_dropped_with_their_reason() {
    let mut loaded = load(VXLAN_IFINDEX, true);
    let ip6 = ethernet(
        GATEWAY_MAC,
        MAC_A,
        ETHERTYPE_IPV6,
        &ipv6(PROTO_UDP, &udp(1, 2, b"x")),
    );
    loaded.expect_drop(TASK, &ip6, DropReason::UnsupportedL3);
    let other = ethernet(GATEWAY_MAC, MAC_A, 0x88cc, &[0; 46]);
    loaded.expect_drop(TASK, &other, DropReason::UnsupportedL3);
    // (A frame shorter than its IPv4 header the kernel refuses to test-run.)
    let good = from_task(TASK_A, TASK_B, PROTO_UDP, &udp(1, 2, b"x"));
    let mut version = good.clone();
    version[L3_OFFSET] = 0x55;
    loaded.expect_drop(TASK, &version, DropReason::Ipv4BadVersion);
    let mut ihl = good.clone();
    ihl[L3_OFFSET] = 0x44;
    loaded.expect_drop(TASK, &ihl, DropReason::Ipv4BadHeaderLength);
    let mut total = good.clone();
    total[L3_OFFSET + 2..L3_OFFSET + 4].copy_from_slice(&9999u16.to_be_bytes());
    loaded.expect_drop(TASK, &total, DropReason::Ipv4BadTotalLength);
    let mut udp_len = good.clone();
    udp_len[L4_OFFSET + 4..L4_OFFSET + 6].copy_from_slice(&999u16.to_be_bytes());
    loaded.expect_drop(TASK, &udp_len, DropReason::UdpBadLength);
    let mut offset = from_task(TASK_A, TASK_B, PROTO_TCP, &tcp_with(1, 2, 0x02));
    offset[L4_OFFSET + 12] = 3 << 4;
    loaded.expect_drop(TASK, &offset, DropReason::TcpBadHeaderLength);
    let tagged = vlan_tagged(&good, 5);
    loaded.expect_drop(TASK, &tagged[..ETH_HLEN + 2], DropReason::VlanTruncated);

    // Without tunnel metadata, the tunnel's program drops everything.
    loaded.expect_drop(TUNNEL, &good, DropReason::NoTunnelKey);
    loaded.expect_drop(TUNNEL, &arp_frame(GATEWAY), DropReason::NoTunnelKey);
}

/// xorshift64*: the same frames on every run.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Frames from every path above, to mangle.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        arp_frame(GATEWAY),
        arp_frame(TASK_C),
        from_task(TASK_A, TASK_B, PROTO_UDP, &udp(40000, 53, b"query")),
        from_task(TASK_A, TASK_C, PROTO_UDP, &udp(40000, 53, b"query")),
        from_task(TASK_A, VIP, PROTO_TCP, &tcp_with(40000, 80, 0x02)),
        from_task(TASK_A, VIP, PROTO_TCP, &tcp_with(40000, 80, 0x10)),
        from_task(TASK_A, VIP, PROTO_UDP, &udp(40000, 53, b"q")),
        from_task(TASK_B, TASK_A, PROTO_TCP, &tcp_with(80, 40000, 0x12)),
        from_task(TASK_A, EMPTY_VIP, PROTO_TCP, &tcp_with(40000, 80, 0x02)),
        from_task(TASK_A, VIP, PROTO_ICMP, &icmp_echo(1, 1)),
        vlan_tagged(&from_task(TASK_A, TASK_B, PROTO_UDP, &udp(1, 2, b"x")), 7),
    ]
}

/// One fuzzed frame: random bytes, or a seed truncated, extended, with
/// bytes overwritten or bits flipped.
fn fuzzed(rng: &mut Seeded, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut frame = seeds[rng.below(seeds.len())].clone();
    match rng.below(5) {
        0 => {
            let len = ETH_HLEN + rng.below(200);
            return (0..len).map(|_| rng.next() as u8).collect();
        }
        1 => frame.truncate(ETH_HLEN + rng.below(frame.len() - ETH_HLEN + 1)),
        2 => frame.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        _ => {}
    }
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(frame.len());
        if rng.below(2) == 0 {
            frame[at] = rng.next() as u8;
        } else {
            frame[at] ^= 1 << rng.below(8);
        }
    }
    frame
}

#[test]
fn thousands_of_random_and_mangled_frames_get_a_verdict_and_spare_other_flows() {
    const FRAMES: usize = 5_000;
    let mut loaded = load(VXLAN_IFINDEX, true);
    // A flow whose state the fuzzing must leave alone: open, answered.
    let syn = from_task(TASK_A, VIP, PROTO_TCP, &tcp_with(PROTECTED_PORT, 80, 0x02));
    assert_eq!(loaded.run(TASK, &syn).retval, TC_ACT_REDIRECT);
    let mut syn_ack = from_task(
        TASK_B,
        TASK_A,
        PROTO_TCP,
        &tcp_with(80, PROTECTED_PORT, 0x12),
    );
    syn_ack[6..12].copy_from_slice(&MAC_B);
    assert_eq!(loaded.run(TASK, &syn_ack).retval, TC_ACT_REDIRECT);
    let protected = |entries: Vec<(CtKey, CtEntry)>| -> Vec<(CtKey, CtEntry)> {
        let port = PROTECTED_PORT.to_be();
        let mut mine: Vec<_> = entries
            .into_iter()
            .filter(|(key, _)| key.sport == port || key.dport == port)
            .collect();
        mine.sort_by_key(|(key, _)| (key.kind, key.saddr, key.daddr));
        mine
    };
    let before = protected(loaded.conntrack());
    assert_eq!(before.len(), 2, "{before:?}");

    let seeds = seeds();
    for program in [TASK, TUNNEL] {
        let mut rng = Seeded(0x5eed_0000_0000_0001 ^ program.len() as u64);
        let mut verdicts = [0usize; 3];
        let mut refused = 0;
        for i in 0..FRAMES {
            // None is the protected flow's own: its tuple is kept out of
            // the seeds, and a mutation would need two exact bytes.
            let frame = fuzzed(&mut rng, &seeds);
            let out = match loaded.try_run(program, &frame) {
                Ok(out) => out,
                // The kernel refuses to test-run an IP frame shorter than
                // its IP header: not the program's verdict.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    refused += 1;
                    continue;
                }
                Err(e) => panic!("{program}: frame {i}: {e}: {frame:02x?}"),
            };
            match out.retval {
                TC_ACT_OK => verdicts[0] += 1,
                TC_ACT_SHOT => verdicts[1] += 1,
                TC_ACT_REDIRECT => verdicts[2] += 1,
                other => panic!("{program}: frame {i} got verdict {other}: {frame:02x?}"),
            }
        }
        eprintln!(
            "{program}: {FRAMES} frames, verdicts ok/shot/redirect {verdicts:?}, {refused} refused by the kernel"
        );
        assert!(refused < FRAMES / 10, "{refused} of {FRAMES} not run");
        if program == TASK {
            assert!(
                verdicts[1] > 0 && verdicts[2] > 0,
                "the fuzzing reached both verdicts: {verdicts:?}"
            );
        }
    }
    let after = protected(loaded.conntrack());
    assert_eq!(
        before, after,
        "the protected flow's conntrack entries changed"
    );
    // And the flow still works.
    let ack = from_task(TASK_A, VIP, PROTO_TCP, &tcp_with(PROTECTED_PORT, 80, 0x10));
    let out = loaded.run(TASK, &ack);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(ip_at(&out.data, 16), TASK_B);
}
