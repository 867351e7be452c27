//! How a service sets up its tasks' processes, as Docker's ContainerSpec:
//! DNS, /etc/hosts, capabilities, sysctls, ulimits, groups, a read-only
//! root, a pids limit, the stop signal, env files and hostname templates;
//! what each task sees from inside, on two nodes running a busybox image
//! from a real registry; their -add/-rm forms on update; the refusals;
//! and the --rollback-* flags a rollback follows.

use std::net::{Ipv4Addr, SocketAddr};

use swarm_tests::{
    Registry, Swarm, TestImage, TestLayer, Topology, TopologyOptions,
    servers::{FAKE_DNS_ANSWER, fake_dns_upstream, http_get},
    wait_until,
};

const REGISTRY: &str = "198.18.0.100:5000";

/// Docker's default capability set (CapEff of a root container).
const DOCKER_DEFAULT_CAPS: u64 = 0xa804_25fb;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;

/// What a probe task writes as its page: one `key=value` a line.
const PROBE: &str = r#"mkdir -p /tmp/www && {
echo "hostname=$(hostname)";
echo "greeting=$GREETING";
echo "color=$COLOR";
echo "resolv=$(grep -v '^#' /etc/resolv.conf | tr '\n' ';')";
echo "hosts=$(grep -v localhost /etc/hosts | tr '\t\n' ' ;')";
echo "capeff=$(grep CapEff /proc/self/status | cut -f2)";
echo "capbnd=$(grep CapBnd /proc/self/status | cut -f2)";
echo "somaxconn=$(cat /proc/sys/net/core/somaxconn)";
echo "nofile=$(ulimit -n):$(ulimit -Hn)";
echo "groups=$(id -G)";
touch /probe 2>/dev/null && echo "root=writable" || echo "root=read-only";
touch /tmp/probe && echo "tmp=writable";
} > /tmp/www/index.html 2>&1; exec /bin/busybox httpd -f -p 80 -h /tmp/www"#;

fn swarm_with_registry(tag: &str) -> (Topology, Registry, String) {
    let mut options = TopologyOptions::new(tag, 2);
    options.daemon_args = vec![
        "--insecure-registry".into(),
        REGISTRY.into(),
        // Names that are not the swarm's are NXDOMAIN unless a service
        // names its own --dns servers.
        "--dns-upstream".into(),
        "none".into(),
    ];
    let topology = Swarm::new().workers([1]).start(&options).unwrap();
    let registry =
        Registry::start(topology.client.netns.name(), REGISTRY.parse().unwrap()).unwrap();
    let image = TestImage {
        layers: vec![TestLayer::busybox()],
        config: serde_json::json!({"Env": ["PATH=/bin"]}),
    };
    registry.push("tools", "1", &image).unwrap();
    (topology, registry, format!("{REGISTRY}/tools:1"))
}

/// The probe's page through the mesh, as key=value pairs.
fn probe_page(topology: &Topology) -> Option<std::collections::BTreeMap<String, String>> {
    let target = SocketAddr::from((Ipv4Addr::new(198, 18, 0, 1), 8080));
    let answer = http_get(topology.client.netns.name(), target).ok()?;
    let (_, body) = answer.split_once(" | ")?;
    let pairs: std::collections::BTreeMap<String, String> = body
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect();
    pairs.contains_key("tmp").then_some(pairs)
}

/// Waits for a page that `check` accepts.
fn wait_probe(
    topology: &Topology,
    what: &str,
    check: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) -> std::collections::BTreeMap<String, String> {
    let mut seen = Default::default();
    wait_until(what, || {
        seen = probe_page(topology).unwrap_or_default();
        check(&seen).then_some(()).ok_or(format!("{seen:?}"))
    });
    seen
}

fn hex(value: &str) -> u64 {
    u64::from_str_radix(value, 16).unwrap_or(u64::MAX)
}

/// The running task of `service`: (ID, node hostname).
fn running_task(topology: &Topology, service: &str) -> (String, String) {
    let mut task = None;
    wait_until(&format!("a running task of {service}"), || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", service])
            .map_err(|e| e.to_string())?;
        task = rows
            .iter()
            .find(|r| swarm_tests::is_running_row(r))
            .map(|r| {
                (
                    r["ID"].as_str().unwrap_or_default().to_owned(),
                    r["Node"].as_str().unwrap_or_default().to_owned(),
                )
            });
        task.as_ref().map(drop).ok_or(format!("{rows:?}"))
    });
    task.unwrap()
}

#[test]
fn container_settings_reach_the_task_and_update_with_add_and_rm() {
    let (topology, _registry, image) = swarm_with_registry("tasks");
    let h1 = topology.daemon(0);
    fake_dns_upstream(topology.client.netns.name(), topology.client.addr);
    let env_file = topology.workdir.path().join("web.env");
    std::fs::write(
        &env_file,
        "# settings\nGREETING=hello from a file\nCOLOR=red\n",
    )
    .unwrap();
    let dns = topology.client.addr.to_string();
    h1.swarm_ok(&[
        "service",
        "create",
        "--name",
        "probe",
        "--publish",
        "8080:80",
        "--hostname",
        "{{.Service.Name}}-{{.Task.Slot}}-{{.Node.Hostname}}",
        "--env-file",
        env_file.to_str().unwrap(),
        "--env",
        "COLOR=blue",
        "--dns",
        &dns,
        "--dns-search",
        "example.test",
        "--dns-option",
        "timeout:2",
        "--host",
        "db:198.18.0.7",
        "--cap-add",
        "net_admin",
        "--cap-drop",
        "NET_RAW",
        "--sysctl",
        "net.core.somaxconn=1234",
        "--ulimit",
        "nofile=512:1024",
        "--group",
        "4321",
        "--read-only",
        "--limit-pids",
        "50",
        "--container-label",
        "team=web",
        &image,
        "/bin/sh",
        "-c",
        PROBE,
    ])
    .unwrap();
    let (task, node) = running_task(&topology, "probe");
    let page = wait_probe(&topology, "the probe's page", |_| true);
    assert_eq!(page["hostname"], format!("probe-1-{node}"), "{page:?}");
    assert_eq!(page["greeting"], "hello from a file");
    assert_eq!(page["color"], "blue", "--env wins over --env-file");
    assert!(
        page["resolv"].contains("nameserver 127.0.0.11;")
            && page["resolv"].contains("search example.test;")
            && page["resolv"].contains("options ndots:0 timeout:2;"),
        "{page:?}"
    );
    assert!(page["hosts"].contains("198.18.0.7 db;"), "{page:?}");
    let caps = DOCKER_DEFAULT_CAPS & !CAP_NET_RAW | CAP_NET_ADMIN;
    assert_eq!(hex(&page["capeff"]), caps, "{page:?}");
    assert_eq!(hex(&page["capbnd"]), caps, "{page:?}");
    assert_eq!(page["somaxconn"], "1234");
    assert_eq!(page["nofile"], "512:1024");
    assert!(page["groups"].split(' ').any(|g| g == "4321"), "{page:?}");
    assert_eq!(page["root"], "read-only");
    assert_eq!(page["tmp"], "writable");
    // The unified tree (cgroup v2), or the pids hierarchy of v1.
    let pids_max = ["/sys/fs/cgroup/swarm", "/sys/fs/cgroup/pids/swarm"]
        .iter()
        .find_map(|dir| std::fs::read_to_string(format!("{dir}/{task}/pids.max")).ok())
        .unwrap_or_default();
    assert_eq!(pids_max.trim(), "50");
    // --dns: the task's resolver forwards other names there.
    let answer = swarm_tests::resolve_in_task(&task, "anything.example");
    assert_eq!(
        answer,
        std::collections::BTreeSet::from([FAKE_DNS_ANSWER.to_string()])
    );

    let spec = &h1.swarm_inspect(&["service", "inspect", "probe"]).unwrap()[0]["Spec"];
    let container = &spec["TaskTemplate"]["ContainerSpec"];
    assert_eq!(
        container["CapabilityAdd"],
        serde_json::json!(["CAP_NET_ADMIN"])
    );
    assert_eq!(
        container["CapabilityDrop"],
        serde_json::json!(["CAP_NET_RAW"])
    );
    assert_eq!(container["Hosts"], serde_json::json!(["198.18.0.7 db"]));
    assert_eq!(
        container["DNSConfig"]["Nameservers"],
        serde_json::json!([dns])
    );
    assert_eq!(container["Sysctls"]["net.core.somaxconn"], "1234");
    assert_eq!(container["Ulimits"][0]["Soft"], 512);
    assert_eq!(container["ReadOnly"], true);
    assert_eq!(container["Groups"], serde_json::json!(["4321"]));
    assert_eq!(container["Labels"]["team"], "web");
    assert_eq!(spec["TaskTemplate"]["Resources"]["Limits"]["Pids"], 50);

    h1.swarm_ok(&[
        "service",
        "update",
        "--host-add",
        "cache:198.18.0.8",
        "--host-rm",
        "db",
        "--sysctl-rm",
        "net.core.somaxconn",
        "--cap-drop",
        "NET_ADMIN",
        "--ulimit-rm",
        "nofile",
        "--read-only=false",
        "probe",
    ])
    .unwrap();
    let page = wait_probe(&topology, "the updated probe's page", |page| {
        page.get("hosts").is_some_and(|h| h.contains("cache"))
    });
    assert!(!page["hosts"].contains(" db;"), "{page:?}");
    assert_ne!(page["somaxconn"], "1234");
    assert_eq!(hex(&page["capeff"]), DOCKER_DEFAULT_CAPS & !CAP_NET_RAW);
    assert_ne!(page["nofile"], "512:1024");
    assert_eq!(page["root"], "writable");
}

#[test]
fn the_stop_signal_reaches_the_program_and_bad_settings_are_refused() {
    let (topology, _registry, image) = swarm_with_registry("stopsig");
    let h1 = topology.daemon(0);
    let out = topology.workdir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mount = format!("type=bind,source={},target=/out", out.display());
    // The shell dies of SIGTERM; only SIGUSR1 runs its trap.
    h1.swarm_ok(&[
        "service",
        "create",
        "--name",
        "stopper",
        "--stop-signal",
        "SIGUSR1",
        "--mount",
        &mount,
        &image,
        "/bin/sh",
        "-c",
        "trap 'echo usr1 > /out/got; exit 0' USR1; echo up > /out/ready; while :; do sleep 1; done",
    ])
    .unwrap();
    wait_until("the stopper's trap set", || {
        out.join("ready")
            .exists()
            .then_some(())
            .ok_or_else(|| "no /out/ready yet".to_owned())
    });
    h1.swarm_ok(&["service", "rm", "stopper"]).unwrap();
    wait_until("the program got SIGUSR1", || {
        let got = std::fs::read_to_string(out.join("got")).unwrap_or_default();
        (got.trim() == "usr1").then_some(()).ok_or(got)
    });

    let refused = |args: &[&str], words: &str| {
        let mut all = vec!["service", "create", "--name", "bad"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[image.as_str(), "true"]);
        let output = h1.swarm(&all).unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(words),
            "{args:?}: {stderr}"
        );
    };
    refused(&["--isolation", "hyperv"], "Windows");
    refused(&["--sysctl", "kernel.shmmax=1"], "net.*");
    refused(&["--cap-add", "BOGUS"], "unknown capability");
    refused(&["--ulimit", "nofile=10:5"], "above the hard limit");
    refused(&["--ulimit", "files=1"], "unknown limit");
    refused(&["--stop-signal", "SIGNOPE"], "not a signal");
    refused(&["--host", "db"], "HOST:IP");
    refused(&["--hostname", "{{.Service.Name"], "template");
    let services = h1.swarm_json(&["service", "ls"]).unwrap();
    assert!(services.is_empty(), "{services:?}");
}

/// The IDs of `service`'s running tasks.
fn running_ids(topology: &Topology, service: &str) -> std::collections::BTreeSet<String> {
    topology
        .daemon(0)
        .swarm_json(&["service", "ps", service])
        .unwrap_or_default()
        .iter()
        .filter(|r| swarm_tests::is_running_row(r))
        .filter_map(|r| r["ID"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_rollback_follows_its_own_parallelism_delay_and_monitor() {
    let (topology, _registry, image) = swarm_with_registry("rollback");
    let h1 = topology.daemon(0);
    h1.swarm_ok(&[
        "service",
        "create",
        "--name",
        "rolling",
        "--replicas",
        "2",
        "--update-parallelism",
        "0",
        "--update-monitor",
        "1s",
        "--rollback-parallelism",
        "1",
        "--rollback-delay",
        "1h",
        "--rollback-monitor",
        "1s",
        "--rollback-order",
        "start-first",
        &image,
        "/bin/busybox",
        "sleep",
        "3600",
    ])
    .unwrap();
    let config = &h1
        .swarm_inspect(&["service", "inspect", "rolling"])
        .unwrap()[0]["Spec"]["RollbackConfig"];
    assert_eq!(config["Parallelism"], 1, "{config}");
    assert_eq!(config["Delay"], 3_600_000_000_000u64, "{config}");
    assert_eq!(config["Monitor"], 1_000_000_000u64, "{config}");
    assert_eq!(config["Order"], "start-first", "{config}");
    h1.swarm_ok(&["service", "update", "--env-add", "V=2", "rolling"])
        .unwrap();
    let updated = running_ids(&topology, "rolling");
    assert_eq!(updated.len(), 2, "{updated:?}");
    h1.swarm_ok(&["service", "rollback", "--detach", "rolling"])
        .unwrap();
    // One task goes back at a time, and the next batch waits an hour.
    let mut seen = Default::default();
    wait_until("one task rolled back", || {
        seen = running_ids(&topology, "rolling");
        let rolled = seen.difference(&updated).count();
        let kept = seen.intersection(&updated).count();
        (rolled == 1 && kept == 1)
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
    // Well past the rollback monitor: with Docker's default delay (0s)
    // the second task would have gone back by now.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let now = running_ids(&topology, "rolling");
    assert_eq!(now, seen, "the second batch waits for --rollback-delay");
    let refused = h1
        .swarm(&[
            "service",
            "update",
            "--rollback-failure-action",
            "rollback",
            "rolling",
        ])
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("pause or continue"),
        "{stderr}"
    );
}
