//! The routing mesh's program run in the kernel with BPF_PROG_TEST_RUN: the
//! resets it answers with when a port has no backend, and the DNAT it does
//! when it has one, field by field and checksums included (on the veth test
//! bed nothing on the way verifies them; a physical NIC's peers would).

use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, Map, MapData};
use swarm_common::{
    map_names,
    overlay::{Endpoint, EndpointKey, Network, NodeConfig},
    program_names,
    service::{BackendKey, Frontend, IPPROTO_TCP, PublishedKey},
};
use swarm_node::{
    dataplane::{Dataplane, DataplaneConfig, test_run},
    identity::new_id,
};
use swarm_tests::packets::*;

const TC_ACT_REDIRECT: u32 = 7;
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

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

fn pinned(loaded: &Loaded, name: &str) -> MapData {
    MapData::from_pin(loaded.pin_dir.join(name)).expect("pinned map")
}

/// A TCP segment with `flags`, `seq`, `ack` and `payload`, from the client
/// to the node's published port (TCP checksum left zero).
fn segment(flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let mut l4 = tcp(40000, 8080, payload);
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&ack.to_be_bytes());
    l4[13] = flags;
    ethernet(
        DST_MAC,
        SRC_MAC,
        ETHERTYPE_IPV4,
        &ipv4(CLIENT, NODE, PROTO_TCP, &l4),
    )
}

fn tcp_checksum_ok(frame: &[u8]) -> bool {
    let ip = &frame[L3_OFFSET..L4_OFFSET];
    let tcp = &frame[L4_OFFSET..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, PROTO_TCP]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(tcp);
    internet_checksum(&pseudo) == 0
}

/// The data plane loaded (not attached) with this node at `NODE`, port
/// 8080/tcp published to port 80 of `backends` on network 4096.
fn loaded_with(backends: &[Ipv4Addr]) -> Loaded {
    swarm_tests::require_root();
    let config = DataplaneConfig::for_node(&format!("test-{}", new_id()), 4789);
    let loaded = Loaded {
        dataplane: Some(Dataplane::load(&config).expect("load the eBPF programs")),
        pin_dir: config.pin_dir.clone(),
    };
    let mut node_config: Array<MapData, NodeConfig> =
        Array::try_from(Map::Array(pinned(&loaded, map_names::NODE_CONFIG))).unwrap();
    let config_value = NodeConfig {
        node_ip: u32::from_ne_bytes(NODE.octets()),
        ..NodeConfig::default()
    };
    node_config.set(0, config_value, 0).unwrap();
    let mut slots: HashMap<MapData, BackendKey, u32> =
        HashMap::try_from(Map::HashMap(pinned(&loaded, map_names::BACKENDS))).unwrap();
    let mut endpoints: HashMap<MapData, EndpointKey, Endpoint> =
        HashMap::try_from(Map::HashMap(pinned(&loaded, map_names::ENDPOINTS))).unwrap();
    let mut networks: HashMap<MapData, u32, Network> =
        HashMap::try_from(Map::HashMap(pinned(&loaded, map_names::NETWORKS))).unwrap();
    networks
        .insert(
            4096,
            Network {
                gateway_mac: GATEWAY_MAC,
                ..Network::default()
            },
            0,
        )
        .unwrap();
    for (slot, ip) in backends.iter().enumerate() {
        let ip = u32::from_ne_bytes(ip.octets());
        slots
            .insert(
                BackendKey {
                    backend_set: 7,
                    slot: slot as u32,
                },
                ip,
                0,
            )
            .unwrap();
        let endpoint = Endpoint {
            mac: BACKEND_MAC,
            ifindex: 1,
            ..Endpoint::default()
        };
        endpoints
            .insert(EndpointKey { vni: 4096, ip }, endpoint, 0)
            .unwrap();
    }
    let mut published: HashMap<MapData, PublishedKey, Frontend> =
        HashMap::try_from(Map::HashMap(pinned(&loaded, map_names::PUBLISHED))).unwrap();
    let key = PublishedKey {
        port: 8080u16.to_be(),
        protocol: IPPROTO_TCP,
        _pad: 0,
    };
    let frontend = Frontend {
        backend_set: 7,
        backend_count: backends.len() as u32,
        vni: 4096,
        target_port: 80u16.to_be(),
        ..Frontend::default()
    };
    published.insert(key, frontend, 0).unwrap();
    loaded
}

const GATEWAY_MAC: [u8; 6] = [0x02, 0x73, 0x77, 0, 0x10, 0];
const BACKEND_MAC: [u8; 6] = [0x02, 0x42, 10, 0, 1, 11];

/// Fills in the TCP checksum of a frame built with a zero one.
fn with_tcp_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let len = frame.len() - L4_OFFSET;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&frame[L3_OFFSET + 12..L3_OFFSET + 20]);
    pseudo.extend_from_slice(&[0, PROTO_TCP]);
    pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    pseudo.extend_from_slice(&frame[L4_OFFSET..]);
    let check = internet_checksum(&pseudo);
    frame[L4_OFFSET + 16..L4_OFFSET + 18].copy_from_slice(&check.to_be_bytes());
    frame
}

#[test]
fn a_new_connection_to_a_published_port_is_dnated_with_valid_checksums_keeping_the_client() {
    let backend = Ipv4Addr::new(10, 0, 1, 11);
    let mut loaded = loaded_with(&[backend]);
    let dataplane = loaded.dataplane.as_mut().unwrap();
    let fd = dataplane
        .classifier(program_names::MESH_TC)
        .unwrap()
        .fd()
        .unwrap();
    let syn = with_tcp_checksum(segment(0x02, 1000, 0, b"hi"));
    assert!(tcp_checksum_ok(&syn), "the test's own frame");
    let out = test_run::run(fd, &syn).unwrap();
    assert_eq!(out.retval, TC_ACT_REDIRECT, "into the backend's namespace");
    let frame = &out.data;
    assert_eq!(frame.len(), syn.len());
    assert_eq!(&frame[0..6], &BACKEND_MAC);
    assert_eq!(&frame[6..12], &GATEWAY_MAC);
    assert_eq!(
        &frame[L3_OFFSET + 12..L3_OFFSET + 16],
        &CLIENT.octets(),
        "client kept"
    );
    assert_eq!(&frame[L3_OFFSET + 16..L3_OFFSET + 20], &backend.octets());
    assert_eq!(
        u16::from_be_bytes([frame[L4_OFFSET + 2], frame[L4_OFFSET + 3]]),
        80
    );
    assert_eq!(
        u16::from_be_bytes([frame[L4_OFFSET], frame[L4_OFFSET + 1]]),
        40000
    );
    assert_eq!(
        internet_checksum(&frame[L3_OFFSET..L4_OFFSET]),
        0,
        "IPv4 checksum"
    );
    assert!(tcp_checksum_ok(frame), "TCP checksum after DNAT");
}

#[test]
fn a_connection_to_a_port_without_backends_is_answered_with_an_exact_reset() {
    let mut loaded = loaded_with(&[]);
    let dataplane = loaded.dataplane.as_mut().unwrap();
    let program = dataplane.classifier(program_names::MESH_TC).unwrap();
    let fd = program.fd().unwrap();

    // A SYN: refused with RST|ACK acknowledging the SYN (seq + 1).
    let out = test_run::run(fd, &segment(0x02, 1000, 0, b"")).unwrap();
    assert_eq!(out.retval, TC_ACT_REDIRECT, "sent back out");
    let rst = &out.data;
    assert_eq!(
        rst.len(),
        54,
        "Ethernet + IPv4 + TCP, options and payload gone"
    );
    assert_eq!(&rst[0..6], &SRC_MAC, "to the client's MAC");
    assert_eq!(&rst[6..12], &DST_MAC, "from ours");
    assert_eq!(&rst[L3_OFFSET + 12..L3_OFFSET + 16], &NODE.octets());
    assert_eq!(&rst[L3_OFFSET + 16..L3_OFFSET + 20], &CLIENT.octets());
    assert_eq!(
        internet_checksum(&rst[L3_OFFSET..L4_OFFSET]),
        0,
        "IPv4 checksum"
    );
    let tcp = &rst[L4_OFFSET..];
    assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 8080);
    assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 40000);
    assert_eq!(u32::from_be_bytes(tcp[4..8].try_into().unwrap()), 0, "seq");
    assert_eq!(
        u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
        1001,
        "ack = seq + 1"
    );
    assert_eq!(tcp[13], 0x14, "RST|ACK");
    assert!(tcp_checksum_ok(rst), "TCP checksum");

    // A mid-connection segment with data: RST at the sequence it acknowledged.
    let out = test_run::run(fd, &segment(0x18, 5000, 777_000, b"hello")).unwrap();
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    let tcp = &out.data[L4_OFFSET..];
    assert_eq!(
        u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
        777_000,
        "seq = its ack"
    );
    assert_eq!(tcp[13], 0x04, "RST");
    assert!(tcp_checksum_ok(&out.data), "TCP checksum");

    // A reset is never answered with a reset.
    let out = test_run::run(fd, &segment(0x04, 5000, 0, b"")).unwrap();
    assert_ne!(out.retval, TC_ACT_REDIRECT);
}
