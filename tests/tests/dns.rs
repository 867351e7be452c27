//! The embedded resolver at 127.0.0.11 inside tasks: every kind of name,
//! only on shared networks, answers that follow scaling and a dead node,
//! forwarding of other names, and malformed queries dropped and counted;
//! AAAA answered empty, reverse lookups of task addresses, EDNS, and an
//! answer too big for UDP truncated and whole over TCP.

use std::{collections::BTreeSet, net::Ipv4Addr};

use swarm_tests::{Swarm, Topology, TopologyOptions, wait_until};

/// What the fake upstream resolver answers for every name.
const UPSTREAM_ANSWER: Ipv4Addr = swarm_tests::servers::FAKE_DNS_ANSWER;
const WEB: &[&str] = swarm_tests::WEB_TASK;

/// The upstream the daemons forward other names to, in the client namespace.
fn fake_upstream(topology: &Topology) {
    swarm_tests::servers::fake_dns_upstream(topology.client.netns.name(), topology.client.addr);
}

/// `dig` from inside task `task`'s network namespace.
fn dig(task: &str, args: &[&str]) -> String {
    swarm_tests::dig_in_task(task, args).unwrap_or_else(|e| e.to_string())
}

/// The A records `dig +short` gives for `name`, sorted.
fn resolve(task: &str, name: &str) -> BTreeSet<String> {
    swarm_tests::resolve_in_task(task, name)
}

fn status_of(task: &str, args: &[&str]) -> String {
    let out = dig(task, args);
    out.lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|rest| rest.split(',').next().unwrap_or("").to_owned())
        .unwrap_or(out)
}

/// `swarm ARGS` (an inspect) on h1, as JSON.
fn inspect(topology: &Topology, args: &[&str]) -> serde_json::Value {
    topology.daemon(0).swarm_inspect(args).unwrap()
}

/// Running task IDs of `service` and their addresses on `network`.
fn running(topology: &Topology, service: &str, network: &str) -> Vec<(String, String)> {
    let net_id = inspect(topology, &["network", "inspect", network])[0]["Id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    topology
        .daemon(0)
        .swarm_json(&["service", "ps", service])
        .unwrap()
        .into_iter()
        .filter(swarm_tests::is_running_row)
        .map(|r| {
            let ip = r["Addresses"][&net_id].as_str().unwrap_or("").to_owned();
            (r["ID"].as_str().unwrap().to_owned(), ip)
        })
        .collect()
}

fn wait_for_tasks(topology: &Topology, service: &str, count: usize) -> Vec<(String, String)> {
    let mut found = Vec::new();
    wait_until(&format!("{count} tasks of {service} running"), || {
        found = running(topology, service, "back");
        (found.len() == count)
            .then_some(())
            .ok_or(format!("{found:?}"))
    });
    found
}

#[test]
fn tasks_resolve_services_task_lists_and_task_names_on_shared_networks() {
    let mut options = TopologyOptions::new("swd", 3);
    options.daemon_args = vec!["--dns-upstream".into(), "198.18.0.100".into()];
    let mut topology = Topology::new(&options).unwrap();
    assert_eq!(topology.client.addr, Ipv4Addr::new(198, 18, 0, 100));
    fake_upstream(&topology);
    topology.start_daemons().unwrap();
    Swarm::new().workers([1, 2]).form(&topology).unwrap();
    for network in ["back", "front"] {
        topology
            .daemon(0)
            .swarm_ok(&["network", "create", "-d", "overlay", network])
            .unwrap();
    }
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec!["service", "create", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(WEB);
        topology.daemon(0).swarm_ok(&args).unwrap();
    };
    create(
        "web",
        &[
            "--replicas",
            "2",
            "--network",
            "name=back,alias=www,alias=front-door",
        ],
    );
    create(
        "rr",
        &[
            "--replicas",
            "2",
            "--network",
            "back",
            "--endpoint-mode",
            "dnsrr",
        ],
    );
    create("client", &["--network", "back"]);
    create("elsewhere", &["--network", "front"]);

    let (client, _) = wait_for_tasks(&topology, "client", 1).remove(0);
    let web = wait_for_tasks(&topology, "web", 2);
    let rr = wait_for_tasks(&topology, "rr", 2);
    let service = inspect(&topology, &["service", "inspect", "web"]);
    let back_id = inspect(&topology, &["network", "inspect", "back"])[0]["Id"].clone();
    let vip = service[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["NetworkID"] == back_id)
        .unwrap()["Addr"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let ips = |tasks: &[(String, String)]| -> BTreeSet<String> {
        tasks.iter().map(|(_, ip)| ip.clone()).collect()
    };

    // A service is its VIP; tasks.<service> its running tasks; with dnsrr
    // the service itself is its tasks; a task's name is its address.
    assert_eq!(resolve(&client, "web"), BTreeSet::from([vip.clone()]));
    assert_eq!(resolve(&client, "WEB."), BTreeSet::from([vip.clone()]));
    // Its aliases on the network too.
    assert_eq!(resolve(&client, "www"), BTreeSet::from([vip.clone()]));
    assert_eq!(
        resolve(&client, "front-door"),
        BTreeSet::from([vip.clone()])
    );
    assert_eq!(resolve(&client, "tasks.web"), ips(&web));
    assert_eq!(resolve(&client, "rr"), ips(&rr));
    let (first_id, first_ip) = &web[0];
    let ps = topology
        .daemon(0)
        .swarm_json(&["service", "ps", "web"])
        .unwrap();
    let first_name = ps.iter().find(|r| r["ID"] == first_id.as_str()).unwrap()["Name"]
        .as_str()
        .unwrap()
        .to_owned();
    let task_name = format!("{first_name}.{first_id}");
    assert_eq!(
        resolve(&client, &task_name),
        BTreeSet::from([first_ip.clone()])
    );
    // Over TCP too; AAAA of a swarm name is NOERROR without records.
    assert_eq!(
        dig(&client, &["+tcp", "+short", "tasks.web"])
            .lines()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>(),
        ips(&web)
    );
    assert_eq!(status_of(&client, &["web", "AAAA"]), "NOERROR");
    // A service on a network the client is not on is not a swarm name for
    // it: forwarded, like any other name, to the upstream.
    assert_eq!(
        resolve(&client, "elsewhere"),
        BTreeSet::from([UPSTREAM_ANSWER.to_string()])
    );
    assert_eq!(
        resolve(&client, "example.org"),
        BTreeSet::from([UPSTREAM_ANSWER.to_string()])
    );

    // The task's own resolv.conf points at the resolver, so getent works.
    let pid = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/swarm/{client}/cgroup.procs"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/swarm/{client}/cgroup.procs")))
        .unwrap();
    let pid = pid.lines().next().unwrap().trim().to_owned();
    let hosts = swarm_tests::run(
        "nsenter",
        &["-t", &pid, "-m", "-n", "-u", "getent", "hosts", "web"],
    )
    .unwrap();
    assert!(hosts.starts_with(&format!("{vip} ")), "{hosts}");
    // Every kind of name, through the C library as a program would ask.
    let getent = |name: &str| -> BTreeSet<String> {
        swarm_tests::run(
            "nsenter",
            &["-t", &pid, "-m", "-n", "-u", "getent", "ahostsv4", name],
        )
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
    };
    let expected = [
        ("www", BTreeSet::from([vip.clone()])),
        ("tasks.web", ips(&web)),
        (task_name.as_str(), BTreeSet::from([first_ip.clone()])),
        ("rr", ips(&rr)),
    ];
    for (name, addresses) in expected {
        assert_eq!(getent(name), addresses, "getent ahostsv4 {name}");
    }

    // Answers follow scaling.
    topology
        .daemon(0)
        .swarm_ok(&["service", "scale", "web=4"])
        .unwrap();
    let web = wait_for_tasks(&topology, "web", 4);
    wait_until("tasks.web lists 4 tasks", || {
        let seen = resolve(&client, "tasks.web");
        (seen == ips(&web)).then_some(()).ok_or(format!("{seen:?}"))
    });
    topology
        .daemon(0)
        .swarm_ok(&["service", "scale", "web=1"])
        .unwrap();
    let web = wait_for_tasks(&topology, "web", 1);
    wait_until("tasks.web lists 1 task", || {
        let seen = resolve(&client, "tasks.web");
        (seen == ips(&web)).then_some(()).ok_or(format!("{seen:?}"))
    });

    // Garbage is dropped or refused, counted, and the resolver goes on.
    let client_node = topology
        .daemon(0)
        .swarm_json(&["service", "ps", "client"])
        .unwrap()[0]["Node"]
        .as_str()
        .unwrap()
        .to_owned();
    let host = topology
        .hosts
        .iter()
        .position(|h| h.name.ends_with(&client_node))
        .unwrap_or(0);
    let before = topology.daemon(host).swarm_json(&["info"]).unwrap()[0]["Dns"]["Malformed"]
        .as_u64()
        .unwrap();
    swarm_tests::run(
        "ip",
        &[
            "netns",
            "exec",
            &format!("swarm-{client}"),
            "bash",
            "-c",
            "printf 'xx' > /dev/udp/127.0.0.11/53; printf '\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\xc0\\x0c' > /dev/udp/127.0.0.11/53",
        ],
    )
    .unwrap();
    wait_until("malformed queries counted", || {
        let now = topology.daemon(host).swarm_json(&["info"]).unwrap()[0]["Dns"]["Malformed"]
            .as_u64()
            .unwrap();
        (now >= before + 2)
            .then_some(())
            .ok_or(format!("{before} -> {now}"))
    });
    assert_eq!(
        resolve(&client, "web"),
        BTreeSet::from([vip.clone()]),
        "{} / {}",
        dig(&client, &["web"]),
        topology
            .daemon(0)
            .swarm_ok(&["service", "inspect", "web"])
            .unwrap()
    );

    // A dead worker's tasks leave tasks.<service>.
    topology
        .daemon(0)
        .swarm_ok(&["service", "scale", "rr=4"])
        .unwrap();
    let rr = wait_for_tasks(&topology, "rr", 4);
    let victim = (1..3)
        .find(|&h| format!("h{}", h + 1) != client_node)
        .unwrap();
    let dead_node = format!("h{}", victim + 1);
    let ps = topology
        .daemon(0)
        .swarm_json(&["service", "ps", "rr"])
        .unwrap();
    let dead: BTreeSet<String> = rr
        .iter()
        .filter(|(id, _)| {
            ps.iter()
                .any(|r| r["ID"] == id.as_str() && r["Node"] == dead_node.as_str())
        })
        .map(|(_, ip)| ip.clone())
        .collect();
    assert!(!dead.is_empty(), "no rr task on {dead_node}: {ps:?}");
    topology.daemon_mut(victim).kill().unwrap();
    wait_until("the dead node's tasks leave tasks.rr", || {
        let seen = resolve(&client, "tasks.rr");
        let live = ips(&running(&topology, "rr", "back"));
        (seen.is_disjoint(&dead) && seen == live && live.len() == 4)
            .then_some(())
            .ok_or(format!("saw {seen:?}, live {live:?}, dead {dead:?}"))
    });
}

/// How many answers `dig` printed in its header line.
fn answer_count(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.split("ANSWER: ").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ANSWER count in {out}"))
}

/// Whether the answer `dig` printed had the TC bit.
fn truncated(out: &str) -> bool {
    out.lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no flags in {out}"))
        .split_whitespace()
        .any(|flag| flag == "tc")
}

/// A service with more tasks than a 512-byte UDP answer holds, and the
/// record types and transports Docker's resolver serves beyond A over UDP.
#[test]
fn aaaa_ptr_edns_and_truncation_to_tcp() {
    const MANY: usize = 40;
    let mut options = TopologyOptions::new("swdx", 1);
    options.daemon_args = vec!["--dns-upstream".into(), "none".into()];
    let mut topology = Topology::new(&options).unwrap();
    topology.start_daemons().unwrap();
    Swarm::new().form(&topology).unwrap();
    let h1 = topology.daemon(0);
    h1.swarm_ok(&["network", "create", "-d", "overlay", "back"])
        .unwrap();
    let replicas = MANY.to_string();
    for (name, replicas) in [("many", replicas.as_str()), ("client", "1")] {
        h1.swarm_ok(&[
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            replicas,
            "--network",
            "back",
            "host",
            "sleep",
            "600",
        ])
        .unwrap();
    }
    let (client, client_ip) = wait_for_tasks(&topology, "client", 1).remove(0);
    let many = wait_for_tasks(&topology, "many", MANY);
    let all: BTreeSet<String> = many.iter().map(|(_, ip)| ip.clone()).collect();
    wait_until("tasks.many lists every task", || {
        let seen = dig(&client, &["+tcp", "+short", "tasks.many"]);
        let seen: BTreeSet<String> = seen.lines().map(str::to_owned).collect();
        (seen == all).then_some(()).ok_or(format!("{seen:?}"))
    });

    // Without EDNS a UDP answer holds 512 bytes: cut, with TC set (`+ignore`
    // keeps dig from retrying over TCP).
    let cut = dig(&client, &["+noedns", "+ignore", "tasks.many"]);
    assert!(truncated(&cut), "{cut}");
    let kept = answer_count(&cut);
    assert!(kept > 0 && kept < MANY, "{kept} answers: {cut}");
    // dig retries a truncated answer over TCP, and gets it whole.
    let retried = dig(&client, &["+noedns", "tasks.many"]);
    assert!(
        retried.contains("Truncated, retrying in TCP mode"),
        "{retried}"
    );
    assert_eq!(answer_count(&retried), MANY, "{retried}");
    let tcp = dig(&client, &["+tcp", "tasks.many"]);
    assert!(!truncated(&tcp), "{tcp}");
    assert_eq!(answer_count(&tcp), MANY, "{tcp}");
    // With EDNS the client's size is honoured, and the OPT record echoed
    // with the resolver's own.
    let big = dig(&client, &["+bufsize=1232", "+ignore", "tasks.many"]);
    assert!(!truncated(&big), "{big}");
    assert_eq!(answer_count(&big), MANY, "{big}");
    assert!(
        big.contains("; EDNS: version: 0, flags:; udp: 4096"),
        "{big}"
    );
    let small = dig(&client, &["+bufsize=512", "+ignore", "tasks.many"]);
    assert!(truncated(&small), "{small}");

    // AAAA of a swarm name: it exists, with no IPv6 address.
    for name in ["many", "tasks.many"] {
        let out = dig(&client, &[name, "AAAA"]);
        assert_eq!(status_of(&client, &[name, "AAAA"]), "NOERROR", "{out}");
        assert_eq!(answer_count(&out), 0, "{out}");
    }
    assert_eq!(status_of(&client, &["nosuchname", "AAAA"]), "NXDOMAIN");

    // A task's address names the task on its network, as Docker's
    // `<service>.<slot>.<task id>.<network>`.
    let ps = h1.swarm_json(&["service", "ps", "many", "client"]).unwrap();
    let name_of = |id: &str| {
        let row = ps.iter().find(|r| r["ID"] == id).unwrap();
        format!("{}.{id}.back.", row["Name"].as_str().unwrap())
    };
    for (id, ip) in many.iter().take(3).chain([&(client.clone(), client_ip)]) {
        let out = dig(&client, &["+short", "-x", ip]);
        assert_eq!(out.trim(), name_of(id), "dig -x {ip}");
    }
    // An address no task has is not the swarm's: with no upstream, NXDOMAIN.
    assert_eq!(status_of(&client, &["-x", "198.18.99.99"]), "NXDOMAIN");
}
