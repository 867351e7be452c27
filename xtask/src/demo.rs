//! `cargo xtask demo`: the main job, end to end, on this machine: three
//! hosts, their daemons, the overlay, and a service served through the
//! routing mesh. Grows with every feature until it shows the whole mission.

use anyhow::Context as _;
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use swarm_tests::{
    Host, Registry, Swarm, TestImage, TestLayer, Topology, TopologyOptions, in_netns, packets::*,
    send_raw_frames, servers::http_get,
};

/// The registry the demo starts in the client's namespace.
const REGISTRY: &str = "198.18.0.100:5000";

/// Where each daemon serves Prometheus metrics (`--metrics-addr`).
const METRICS_PORT: u16 = 9323;

/// A few lines of h1's `/metrics`, as Prometheus scrapes them.
fn metrics_demo(topology: &Topology) -> anyhow::Result<()> {
    let host = &topology.hosts[0];
    let target = std::net::SocketAddr::from((host.addr, METRICS_PORT));
    println!(
        "\n== a few of h1's Prometheus metrics (`swarm daemon --metrics-addr`): GET http://{target}/metrics"
    );
    let body = in_netns(host.netns.name(), move || {
        use std::io::{Read as _, Write as _};
        let mut conn =
            std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(2))?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(conn, "GET /metrics HTTP/1.0\r\nHost: {target}\r\n\r\n")?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        Ok(response)
    })?;
    let shown = [
        "swarm_nodes{",
        "swarm_tasks{state=\"Running\"}",
        "swarm_raft_term ",
        "swarm_raft_is_leader ",
        "swarm_resolver_queries_total ",
        "swarm_dataplane_packets_total{counter=\"mesh-new-flow\"}",
        "swarm_dataplane_packets_total{counter=\"overlay-encap\"}",
        "swarm_gossip_members ",
    ];
    for line in body.lines() {
        if shown.iter().any(|prefix| line.starts_with(prefix)) {
            println!("  {line}");
        }
    }
    Ok(())
}

/// Runs the demo with the `swarm` binary `SWARM_BIN` names.
pub fn run() -> anyhow::Result<()> {
    let mut options = TopologyOptions::new("swdemo", 3);
    // Each daemon in its host's namespace: the same port on each.
    options.daemon_args = vec![
        "--insecure-registry".into(),
        REGISTRY.into(),
        "--metrics-addr".into(),
        format!("0.0.0.0:{METRICS_PORT}"),
    ];
    let mut topology = Topology::new(&options)?;
    let namespaces = topology.netns_names();
    println!(
        "\n== 3 hosts (network namespaces) on underlay 198.18.0.0/24, a client at {}",
        topology.client.addr
    );
    topology.start_daemons()?;

    println!("\n== one swarm daemon per host (`swarm info` on each)");
    println!(
        "{:<6} {:<27} {:<12} {:<10} {:<12} PID",
        "HOST", "NODE ID", "ADDRESS", "UNDERLAY", "HOOK"
    );
    for i in 0..topology.hosts.len() {
        let info = &topology.daemon(i).swarm_json(&["info"])?[0];
        println!(
            "{:<6} {:<27} {:<12} {:<10} {:<12} {}",
            info["Hostname"].as_str().unwrap_or("?"),
            info["NodeID"].as_str().unwrap_or("?"),
            info["AdvertiseAddr"].as_str().unwrap_or("?"),
            info["UnderlayInterface"].as_str().unwrap_or("?"),
            info["UnderlayHook"].as_str().unwrap_or("?"),
            info["Pid"]
        );
    }

    println!(
        "\n== a swarm: `swarm init` on h1; h2 joins as a manager (Raft), h3 as a worker (TLS, CA pinned by the token)"
    );
    // Formed once every node reports Ready.
    let formed = Swarm::new().managers([1]).workers([2]).form(&topology)?;
    print!("{}", formed.init);
    for (host, out) in &formed.joins {
        print!("h{}: {out}", host + 1);
    }
    println!("\n== `swarm node ls` on h2 (a follower: it asks the leader)");
    print!("{}", topology.daemon(1).swarm_ok(&["node", "ls"])?);

    println!(
        "\n== the client sends traffic: ping, UDP and TCP to each host, and some malformed frames to h1"
    );
    for host in &topology.hosts {
        topology.client.netns.exec(
            "ping",
            &["-c", "3", "-i", "0.2", "-q", &host.addr.to_string()],
        )?;
    }
    let targets: Vec<_> = topology.hosts.iter().map(|h| h.addr).collect();
    in_netns(topology.client.netns.name(), move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        for (i, addr) in targets.iter().enumerate() {
            for _ in 0..10 * (i + 1) {
                socket.send_to(b"hello swarm", (*addr, 9999))?;
            }
            // Refused (nothing listens there), but the SYN is counted on arrival.
            let _ = std::net::TcpStream::connect_timeout(
                &(*addr, 80).into(),
                Duration::from_millis(500),
            );
        }
        Ok(())
    })?;
    let h1_mac = topology.hosts[0].mac()?;
    let mut bad_ihl = ipv4_frame(PROTO_UDP, &udp(1, 9999, b"x"));
    bad_ihl[..6].copy_from_slice(&h1_mac);
    bad_ihl[L3_OFFSET] = 0x43;
    let truncated_tcp = {
        let mut frame = ipv4_frame(PROTO_TCP, &tcp(1, 80, b""))[..L4_OFFSET + 6].to_vec();
        frame[..6].copy_from_slice(&h1_mac);
        frame[L3_OFFSET + 2..L3_OFFSET + 4].copy_from_slice(&26u16.to_be_bytes());
        fix_ipv4_checksum(&mut frame, L3_OFFSET);
        frame
    };
    let frames = vec![bad_ihl.clone(), bad_ihl, truncated_tcp];
    in_netns(topology.client.netns.name(), move || {
        send_raw_frames(Host::UNDERLAY_IFACE, &frames)?;
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(200));

    println!("\n== what each node's XDP program counted (`swarm dataplane stats --format json`)");
    let columns = [
        "received", "arp", "ipv4", "ipv6", "tcp", "udp", "icmp", "passed", "dropped",
    ];
    print!("{:<6}", "HOST");
    for column in columns {
        print!(" {:>9}", column.to_uppercase());
    }
    println!("   DROP REASONS");
    for i in 0..topology.hosts.len() {
        let daemon = topology.daemon(i);
        let rows = daemon.swarm_json(&["dataplane", "stats"])?;
        print!("{:<6}", daemon.host);
        for column in columns {
            let value = rows
                .iter()
                .find(|r| r["Kind"] == "packet" && r["Counter"] == column)
                .and_then(|r| r["Packets"].as_u64())
                .unwrap_or(0);
            print!(" {value:>9}");
        }
        let reasons: Vec<String> = rows
            .iter()
            .filter(|r| r["Kind"] == "drop" && r["Packets"].as_u64() != Some(0))
            .map(|r| format!("{}={}", r["Counter"].as_str().unwrap_or("?"), r["Packets"]))
            .collect();
        println!(
            "   {}",
            if reasons.is_empty() {
                "-".into()
            } else {
                reasons.join(" ")
            }
        );
    }

    println!("\n== `swarm dataplane stats` on h1, as a user sees it");
    print!("{}", topology.daemon(0).swarm_ok(&["dataplane", "stats"])?);

    println!(
        "\n== the overlay by hand (`swarm dataplane`): network 4200 (10.0.200.0/24) on every node, one namespace per node"
    );
    let tasks = topology.overlay(
        4200,
        "10.0.200.0/24",
        &[
            (0, "task1", Ipv4Addr::new(10, 0, 200, 11)),
            (1, "task2", Ipv4Addr::new(10, 0, 200, 12)),
            (2, "task3", Ipv4Addr::new(10, 0, 200, 13)),
        ],
    )?;
    for to in &tasks[1..] {
        let out = swarm_tests::run(
            "ip",
            &[
                "netns",
                "exec",
                &tasks[0].netns,
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-q",
                &to.ip.to_string(),
            ],
        )?;
        let summary = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("");
        println!(
            "task1 (h1, {}) -> task{} (h{}, {}): {summary}",
            tasks[0].ip,
            to.host + 1,
            to.host + 1,
            to.ip
        );
    }
    println!("\n== `swarm dataplane endpoints` on h1");
    print!(
        "{}",
        topology.daemon(0).swarm_ok(&["dataplane", "endpoints"])?
    );
    println!("\n== overlay counters");
    for i in 0..topology.hosts.len() {
        let daemon = topology.daemon(i);
        let rows = daemon.swarm_json(&["dataplane", "stats"])?;
        let get = |name: &str| {
            rows.iter()
                .find(|r| r["Counter"] == name)
                .and_then(|r| r["Packets"].as_u64())
                .unwrap_or(0)
        };
        println!(
            "{}: encapsulated {}, delivered from the tunnel {}, ARP answered {}, dropped {}",
            daemon.host,
            get("overlay-encap"),
            get("overlay-decap"),
            get("overlay-arp-replied"),
            get("overlay-dropped"),
        );
    }

    println!(
        "\n== a registry (Debian's docker-registry) in the client's namespace at {REGISTRY}, and an image pushed to it"
    );
    let registry = Registry::start(topology.client.netns.name(), REGISTRY.parse()?)?;
    let digest = registry.push("web", "1", &web_image())?;
    println!("pushed {REGISTRY}/web:1 ({digest}): busybox, its Cmd serving the task's hostname");
    let image = format!("{REGISTRY}/web:1");
    println!(
        "\n== a real service: `swarm service create --name web --replicas 3 -p 8080:80 {image}`"
    );
    println!(
        "   (native runtime: each node pulls the image once, each task a process on an overlayfs of its layers, in its own namespaces and cgroup)"
    );
    let id = topology.daemon(0).swarm_ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "-p",
        "8080:80",
        &image,
    ])?;
    println!("service ID {}", id.trim());
    println!("\n== `swarm service inspect web`: the tag pinned to its digest");
    let inspect: serde_json::Value = serde_json::from_str(
        &topology
            .daemon(0)
            .swarm_ok(&["service", "inspect", "web"])?,
    )?;
    println!(
        "  {}",
        inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            .as_str()
            .unwrap_or_default()
    );
    println!("\n== `swarm service ls` and `swarm service ps web`");
    print!("{}", topology.daemon(0).swarm_ok(&["service", "ls"])?);
    print!(
        "{}",
        topology.daemon(0).swarm_ok(&["service", "ps", "web"])?
    );
    println!(
        "\n== client {} -> each node's port 8080 through the routing mesh (each task answers with its hostname):",
        topology.client.addr
    );
    for host in &topology.hosts {
        for _ in 0..3 {
            let reply = http_get(
                topology.client.netns.name(),
                SocketAddr::from((host.addr, 8080)),
            )?;
            println!("  GET http://{}:8080/ -> {reply}", host.addr);
        }
    }
    println!("\n== `swarm image ls` on h1");
    print!("{}", topology.daemon(0).swarm_ok(&["image", "ls"])?);
    println!("\n== `swarm service scale web=5`, then through h3 again");
    topology
        .daemon(1)
        .swarm_ok(&["service", "scale", "web=5"])?;
    for _ in 0..5 {
        let reply = http_get(
            topology.client.netns.name(),
            SocketAddr::from((topology.hosts[2].addr, 8080)),
        )?;
        println!("  GET http://{}:8080/ -> {reply}", topology.hosts[2].addr);
    }
    let docker = swarm_tests::docker_cli::DockerCli::new(
        swarm_tests::docker_cli::DOCKER_28,
        topology.daemon(0),
    )?;
    println!(
        "\n== the docker CLI, through h1's Engine API socket: DOCKER_HOST=unix://{} docker node ls; docker service ls",
        topology.daemon(0).docker_socket.display()
    );
    print!("{}", docker.ok(&["node", "ls"])?);
    print!("{}", docker.ok(&["service", "ls"])?);
    println!("\n== `swarm service logs web` (each task's output, fetched from its node)");
    print!(
        "{}",
        topology.daemon(0).swarm_ok(&["service", "logs", "web"])?
    );
    metrics_demo(&topology)?;
    println!("\n== `swarm dataplane services` on h1 (what the agent programmed from the store)");
    print!(
        "{}",
        topology.daemon(0).swarm_ok(&["dataplane", "services"])?
    );
    topology.daemon(0).swarm_ok(&["service", "rm", "web"])?;

    secret_demo(&topology, &image)?;
    stack_demo(&topology, &image)?;

    println!(
        "\n== service discovery: `api` (2 replicas) and `client` on overlay network `back`; names resolve inside the client task"
    );
    topology
        .daemon(0)
        .swarm_ok(&["network", "create", "-d", "overlay", "back"])?;
    for (name, replicas) in [("api", "2"), ("client", "1")] {
        topology.daemon(0).swarm_ok(&[
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            replicas,
            "--network",
            "back",
            "host",
            "sh",
            "-c",
            "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec busybox httpd -f -p 80 -h /tmp/www",
        ])?;
    }
    let client_task = topology
        .daemon(0)
        .swarm_ok(&["service", "ps", "-q", "--no-trunc", "client"])?
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    for name in ["api", "tasks.api"] {
        let answer = swarm_tests::dig_in_task(&client_task, &["+short", name])?;
        println!(
            "  dig {name} (in the client task) -> {}",
            answer.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    let pid = ["pids/", ""]
        .iter()
        .find_map(|hierarchy| {
            std::fs::read_to_string(format!(
                "/sys/fs/cgroup/{hierarchy}swarm/{client_task}/cgroup.procs"
            ))
            .ok()
        })
        .and_then(|procs| procs.lines().next().map(str::to_owned))
        .context("the client task's process")?;
    for _ in 0..2 {
        let reply = swarm_tests::run(
            "nsenter",
            &[
                "-t",
                &pid,
                "-m",
                "-n",
                "-u",
                "busybox",
                "wget",
                "-q",
                "-O-",
                "http://api/",
            ],
        )?;
        println!(
            "  wget http://api/ (in the client task) -> {}",
            reply.trim()
        );
    }
    for name in ["client", "api"] {
        topology.daemon(0).swarm_ok(&["service", "rm", name])?;
    }

    let pin_dirs: Vec<_> = (0..topology.hosts.len())
        .map(|i| topology.daemon(i).pin_dir())
        .collect::<anyhow::Result<_>>()?;
    drop(topology);
    let listed = swarm_tests::run("ip", &["netns", "list"])?;
    let leaked_ns: Vec<_> = namespaces
        .iter()
        .filter(|n| {
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str()))
        })
        .collect();
    let leaked_pins: Vec<_> = pin_dirs.iter().filter(|d| d.exists()).collect();
    anyhow::ensure!(
        leaked_ns.is_empty() && leaked_pins.is_empty(),
        "left behind: namespaces {leaked_ns:?}, pins {leaked_pins:?}"
    );
    println!("\n== cleaned up: daemons stopped (SIGTERM), namespaces, veths and pins removed");
    Ok(())
}

/// busybox whose Cmd serves the task's hostname over HTTP on port 80.
/// A secret created, read by a task (from its tmpfs at /run/secrets),
/// refused removal while in use, then removed.
fn secret_demo(topology: &swarm_tests::Topology, image: &str) -> anyhow::Result<()> {
    println!("\n== a secret: `swarm secret create db-password FILE`, read inside a task");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("db-password");
    std::fs::write(&file, "correct horse battery staple")?;
    let manager = topology.daemon(0);
    let id = manager.swarm_ok(&[
        "secret",
        "create",
        "db-password",
        &file.display().to_string(),
    ])?;
    drop(dir);
    println!("secret ID {}", id.trim());
    print!("{}", manager.swarm_ok(&["secret", "ls"])?);
    let script = "echo \"read $(wc -c < /run/secrets/db-password) bytes from /run/secrets/db-password ($(stat -f -c %T /run/secrets/db-password), mode $(stat -c %a /run/secrets/db-password)): $(cat /run/secrets/db-password)\" > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www";
    manager.swarm_ok(&[
        "service",
        "create",
        "--name",
        "vault",
        "-p",
        "8081:80",
        "--secret",
        "db-password",
        "--mount",
        "type=tmpfs,target=/www",
        image,
        "/bin/sh",
        "-c",
        script,
    ])?;
    let reply = http_get(
        topology.client.netns.name(),
        SocketAddr::from((topology.hosts[1].addr, 8081)),
    )?;
    println!("  GET http://{}:8081/ -> {reply}", topology.hosts[1].addr);
    let refused = manager.swarm(&["secret", "rm", "db-password"])?;
    println!(
        "  `swarm secret rm db-password` while vault runs: {}",
        String::from_utf8_lossy(&refused.stderr).trim()
    );
    manager.swarm_ok(&["service", "rm", "vault"])?;
    manager.swarm_ok(&["secret", "rm", "db-password"])?;
    println!("  removed with the service: `swarm secret ls` is empty again");
    Ok(())
}

/// A compose file deployed as a stack, answering through the mesh, then
/// removed with everything it made.
fn stack_demo(topology: &swarm_tests::Topology, image: &str) -> anyhow::Result<()> {
    println!(
        "\n== a stack: `swarm stack deploy -c compose.yml shop` (web and api on a network of their own, api reading a secret)"
    );
    let dir = tempfile::tempdir()?;
    let compose = format!(
        r#"version: "3.8"
services:
  web:
    image: {image}
    ports: ["8082:80"]
    deploy:
      replicas: ${{WEB_REPLICAS:-2}}
  api:
    image: {image}
    command: ["/bin/sh", "-c", "mkdir -p /www && cat /run/secrets/token > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www"]
    secrets: [token]
    volumes: [{{type: tmpfs, target: /www}}]
secrets:
  token:
    file: ./token.txt
"#
    );
    std::fs::write(dir.path().join("compose.yml"), &compose)?;
    std::fs::write(dir.path().join("token.txt"), "api says hello")?;
    println!("{compose}");
    let manager = topology.daemon(0);
    let file = dir.path().join("compose.yml").display().to_string();
    print!(
        "{}",
        manager.swarm_ok(&["stack", "deploy", "-c", &file, "shop"])?
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let services = manager.swarm_json(&["stack", "services", "shop"])?;
        let ready = services.iter().all(|s| {
            let replicas = s["Replicas"].as_str().unwrap_or("0/1");
            replicas.split_once('/').is_some_and(|(a, b)| a == b)
        });
        if ready && services.len() == 2 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the stack did not converge: {services:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    println!("`swarm stack services shop`:");
    print!("{}", manager.swarm_ok(&["stack", "services", "shop"])?);
    let reply = http_get(
        topology.client.netns.name(),
        SocketAddr::from((topology.hosts[2].addr, 8082)),
    )?;
    println!(
        "  GET http://{}:8082/ (web) -> {reply}",
        topology.hosts[2].addr
    );
    println!("`swarm stack rm shop`:");
    print!("{}", manager.swarm_ok(&["stack", "rm", "shop"])?);
    Ok(())
}

fn web_image() -> TestImage {
    TestImage {
        layers: vec![TestLayer::busybox()],
        config: serde_json::json!({
            "Env": ["PATH=/bin"],
            "Cmd": [
                "/bin/sh", "-c",
                "echo serving as $HOSTNAME && echo $HOSTNAME > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www"
            ],
        }),
    }
}
