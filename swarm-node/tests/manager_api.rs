//! Who may call the managers' API on 2377: a worker's certificate reaches
//! the agent's calls but not Raft or the leader's work queue, and a
//! certificate from another swarm's CA does not get past TLS at all.

use std::time::Duration;

use swarm_node::{
    api::proto::{
        ForwardRequest, HeartbeatRequest, RaftMessage, dispatcher_client::DispatcherClient,
        manager_client::ManagerClient, raft_client::RaftClient,
    },
    ca::client::{Credentials, channel},
};
use swarm_tests::{Topology, TopologyOptions, in_netns};
use tonic::Code;

const MANAGER: &str = "198.18.0.1:2377";

/// A node's credentials, as its daemon keeps them.
fn credentials_of(topology: &Topology, host: usize) -> Credentials {
    let dir = topology.daemon(host).data_dir.join("cluster");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    Credentials {
        cert_pem: read("node.pem"),
        key_pem: read("node-key.pem"),
        ca_pem: read("ca.pem"),
    }
}

type Outcome = Result<(), (Code, String)>;

fn outcome<T>(result: Result<T, tonic::Status>) -> Outcome {
    result
        .map(|_| ())
        .map_err(|status| (status.code(), status.message().to_owned()))
}

/// What each API answers `credentials`, called from inside host `host`:
/// heartbeat, Raft vote, forward.
fn call_all(topology: &Topology, host: usize, credentials: Credentials) -> [Outcome; 3] {
    in_netns(topology.hosts[host].netns.name(), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(async move {
            let connect = || channel(MANAGER, &credentials).unwrap();
            let timeout = Duration::from_secs(5);
            let heartbeat = tokio::time::timeout(
                timeout,
                DispatcherClient::new(connect()).heartbeat(HeartbeatRequest::default()),
            )
            .await
            .expect("heartbeat answered");
            let vote = tokio::time::timeout(
                timeout,
                RaftClient::new(connect()).vote(RaftMessage {
                    json: b"{}".to_vec(),
                }),
            )
            .await
            .expect("vote answered");
            let forward = tokio::time::timeout(
                timeout,
                ManagerClient::new(connect()).forward(ForwardRequest {
                    request_json: br#"{"Request":{"request":{"NodeList":{}},"origin":"x"}}"#
                        .to_vec(),
                    hops: 0,
                }),
            )
            .await
            .expect("forward answered");
            [outcome(heartbeat), outcome(vote), outcome(forward)]
        }))
    })
    .unwrap()
}

#[test]
fn worker_and_foreign_certificates_are_refused_by_manager_only_apis() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 3)).unwrap();
    topology.start_daemons().unwrap();
    topology.daemon(0).swarm_ok(&["init"]).unwrap();
    topology.join(1, "worker", 0).unwrap();
    // h3 makes a swarm of its own: its certificates come from another CA.
    topology.daemon(2).swarm_ok(&["init"]).unwrap();

    // The manager's own certificate may call everything (the positive
    // control: the calls below are refused for who makes them, not how).
    let [heartbeat, vote, forward] = call_all(&topology, 0, credentials_of(&topology, 0));
    assert_eq!(heartbeat, Ok(()));
    assert_eq!(vote.map_err(|(code, _)| code), Err(Code::InvalidArgument));
    assert_eq!(forward, Ok(()));

    // A worker reports, but may not take part in Raft or hand the leader work.
    let [heartbeat, vote, forward] = call_all(&topology, 1, credentials_of(&topology, 1));
    assert_eq!(heartbeat, Ok(()));
    for refused in [vote, forward] {
        let (code, message) = refused.unwrap_err();
        assert_eq!(code, Code::PermissionDenied, "{message}");
        assert!(message.contains("worker certificate"), "{message}");
    }

    // Another swarm's manager certificate, presented with this swarm's CA
    // as the server's root: the manager's TLS refuses the client.
    let mut foreign = credentials_of(&topology, 2);
    foreign.ca_pem = credentials_of(&topology, 0).ca_pem;
    // The connection fails (with TLS 1.3 the client learns it on its first
    // request); no handler sees the call, so none answers PermissionDenied.
    for refused in call_all(&topology, 2, foreign) {
        assert_refused_by_tls(refused);
    }
    // The same with its own CA as the root: this client refuses the manager.
    for refused in call_all(&topology, 2, credentials_of(&topology, 2)) {
        assert_refused_by_tls(refused);
    }
}

fn assert_refused_by_tls(outcome: Outcome) {
    let (code, message) = outcome.unwrap_err();
    assert!(
        matches!(code, Code::Unavailable | Code::Cancelled | Code::Unknown),
        "{code:?}: {message}"
    );
}
