//! Fuzz targets for every parser that reads input from outside the
//! daemon: control-socket requests, the tasks' DNS queries, gossip
//! datagrams (sealed, and their chitchat payload once opened), the
//! `--publish`, `--mount`, `--secret` and `--constraint` syntaxes, and
//! compose files. Under `cargo test` each runs its corpus
//! (`tests/__fuzz__/fuzz_parsers__<target>/corpus`) and a bounded number
//! of random inputs; `cargo bolero test fuzz_parsers::<target>` on nightly
//! fuzzes one with libFuzzer for as long as asked. Each input must be
//! parsed or refused with an error, never panic; what parses must also
//! survive what the daemon does next with it.

use std::net::Ipv4Addr;

use chitchat::{ChitchatMessage, Deserializable as _};
use swarm_node::{
    api::{control::Request, mounts::FileReference, mounts::Mount, specs::Constraint},
    dataplane::PortConfig,
    dns::message::{self, Rcode, Transport},
    gossip::transport::{self, GossipKey, Keys},
};

/// Random inputs per target under `cargo test`: the whole file runs in a
/// few seconds.
const ITERATIONS: usize = 20_000;

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// Random bytes rarely get past a parser's first check, so each input is
/// also read as edits of a valid one: its first byte picks one of
/// `seeds`, each following pair overwrites a byte (position, value), and
/// an odd last byte cuts the result there.
fn mutated(seeds: &[&[u8]], bytes: &[u8]) -> Vec<u8> {
    let Some((&pick, edits)) = bytes.split_first() else {
        return Vec::new();
    };
    let mut out = seeds[usize::from(pick) % seeds.len()].to_vec();
    if out.is_empty() {
        return out;
    }
    for pair in edits.chunks(2) {
        match pair {
            [at, value] => {
                let at = usize::from(*at) * out.len() / 256;
                out[at] = *value;
            }
            [cut] => out.truncate(usize::from(*cut) * out.len() / 255),
            _ => {}
        }
    }
    out
}

/// Counts the inputs a target ran, to show the bounded run ran.
struct Ran(std::sync::atomic::AtomicUsize);

impl Ran {
    const fn new() -> Self {
        Self(std::sync::atomic::AtomicUsize::new(0))
    }

    fn one(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn at_least(&self, count: usize) {
        let ran = self.0.load(std::sync::atomic::Ordering::Relaxed);
        assert!(ran >= count, "only {ran} inputs ran");
    }
}

const REQUESTS: &[&[u8]] = &[
    br#""Info""#,
    br#"{"SwarmServiceScale":{"scales":[["web",3],["api",0]]}}"#,
    br#"{"EndpointDetach":{"id":"abc"}}"#,
    br#"{"RemoteRemove":{"vni":4097,"ip":"10.0.1.5"}}"#,
    br#"{"ImageRemove":{"images":["busybox:1","sha256:0a1b"]}}"#,
];

// dig's queries: A with EDNS, PTR, AAAA without EDNS.
const QUERIES: &[&[u8]] = &[
    b"\x12\x34\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01\x05tasks\x03web\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",
    b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x015\x011\x010\x0210\x07in-addr\x04arpa\x00\x00\x0c\x00\x01",
    b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x1c\x00\x01",
];

const FLAGS: &[&[u8]] = &[
    b"published=8080,target=80,protocol=udp,mode=host",
    b"8080:80/tcp",
    b"type=bind,source=/srv,target=/data,readonly,bind-propagation=rslave",
    b"type=tmpfs,target=/tmp,tmpfs-size=64m,tmpfs-mode=1770",
    b"source=db_password,target=/run/secrets/db,uid=0,gid=0,mode=0400",
    b"node.labels.zone==east",
    b"node.role!=manager",
];

const FILES: &[&[u8]] = &[
    b"services:\n  web:\n    image: nginx:${TAG:-latest}\n    ports:\n      - \"8080:80\"\n    deploy:\n      replicas: 2\n      placement:\n        constraints: [node.role==worker]\n    networks: [back]\n    secrets: [db]\nnetworks:\n  back:\n    driver: overlay\nsecrets:\n  db:\n    file: ./db.txt\n",
    b"version: \"3.8\"\nservices:\n  api:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    environment:\n      A: $$B\n    volumes:\n      - data:/data:ro\nvolumes:\n  data: {}\n",
];

/// The seeds are valid inputs: mutations start from what parses.
#[test]
fn the_seeds_are_valid_inputs() {
    for seed in REQUESTS {
        serde_json::from_slice::<Request>(seed)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(seed)));
    }
    for seed in QUERIES {
        message::parse_query(seed).unwrap();
    }
    for seed in FLAGS {
        let flag = text(seed).unwrap();
        assert!(
            flag.parse::<PortConfig>().is_ok()
                || Mount::parse(flag).is_ok()
                || FileReference::parse(flag).is_ok()
                || flag.parse::<Constraint>().is_ok(),
            "{flag}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    for seed in FILES {
        std::fs::write(&file, seed).unwrap();
        swarm_node::compose::load(std::slice::from_ref(&file), &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(seed)));
    }
}

#[test]
fn control_request() {
    static RAN: Ran = Ran::new();
    bolero::check!()
        .with_iterations(ITERATIONS)
        .for_each(|bytes: &[u8]| {
            RAN.one();
            for input in [bytes.to_vec(), mutated(REQUESTS, bytes)] {
                if let Some(line) = text(&input)
                    && let Ok(request) = serde_json::from_str::<Request>(line)
                {
                    // What parses goes back out the same way.
                    let again = serde_json::to_string(&request).expect("a request serializes");
                    serde_json::from_str::<Request>(&again).expect("and parses again");
                }
            }
        });
    RAN.at_least(ITERATIONS);
}

#[test]
fn dns_query() {
    let addresses: Vec<_> = (1..=60)
        .map(|last| message::a_record(Ipv4Addr::new(10, 0, 1, last)))
        .collect();
    static RAN: Ran = Ran::new();
    bolero::check!()
        .with_iterations(ITERATIONS)
        .for_each(|bytes: &[u8]| {
            RAN.one();
            for packet in [bytes.to_vec(), mutated(QUERIES, bytes)] {
                let _ = message::query_id(&packet);
                if let Ok(query) = message::parse_query(&packet) {
                    let _ = query.reverse_address();
                    let answer = query.answer(Rcode::NoError, &addresses, Transport::Udp);
                    assert!(answer.len() <= query.max_answer_len(Transport::Udp));
                    let _ = query.answer(Rcode::NxDomain, &[], Transport::Tcp);
                }
            }
        });
    RAN.at_least(ITERATIONS);
}

#[test]
fn gossip_datagram() {
    let key = GossipKey::from_hex(&"11".repeat(32)).expect("a key");
    let keys = Keys {
        current: key.clone(),
        previous: None,
    };
    static RAN: Ran = Ran::new();
    bolero::check!()
        .with_iterations(ITERATIONS)
        .for_each(|bytes: &[u8]| {
            RAN.one();
            // As it comes off the wire: almost always refused unopened.
            let _ = transport::open(&keys, bytes);
            // As a peer with the key could send it: opened, then decoded.
            let opened = transport::open(&keys, &transport::seal(&key, bytes))
                .expect("a datagram sealed with the key opens");
            assert_eq!(opened, bytes);
            let _ = ChitchatMessage::deserialize(&mut opened.as_slice());
        });
    RAN.at_least(ITERATIONS);
}

#[test]
fn flag_syntaxes() {
    static RAN: Ran = Ran::new();
    bolero::check!()
        .with_iterations(ITERATIONS)
        .for_each(|bytes: &[u8]| {
            RAN.one();
            for input in [bytes.to_vec(), mutated(FLAGS, bytes)] {
                let Some(flag) = text(&input) else {
                    continue;
                };
                let _ = flag.parse::<PortConfig>();
                let _ = Mount::parse(flag);
                let _ = FileReference::parse(flag);
                let _ = flag.parse::<Constraint>();
            }
        });
    RAN.at_least(ITERATIONS);
}

#[test]
fn compose_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("compose.yaml");
    let environment = std::collections::BTreeMap::from([("TAG".to_owned(), "1".to_owned())]);
    static RAN: Ran = Ran::new();
    bolero::check!()
        .with_iterations(ITERATIONS / 4)
        .for_each(|bytes: &[u8]| {
            RAN.one();
            for input in [bytes.to_vec(), mutated(FILES, bytes)] {
                std::fs::write(&file, &input).expect("writing the file");
                let _ = swarm_node::compose::load(std::slice::from_ref(&file), &environment);
            }
        });
    RAN.at_least(ITERATIONS / 4);
}
