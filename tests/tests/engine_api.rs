//! Docker's Engine API: the real docker CLIs (28.2, API 1.50, and Debian's
//! 20.10, API 1.41) drive a three-node swarm through a daemon's socket
//! alone: init, join, node and service commands (with the CLI's own image
//! pinning and convergence wait), networks, secrets, configs and a
//! compose stack; a plain HTTP client checks version negotiation, Docker's
//! error codes and the event stream.

use std::net::SocketAddr;

use swarm_tests::{
    Registry, TestImage, TestLayer, Topology, TopologyOptions,
    docker_cli::{DOCKER_20_10, DOCKER_28, DockerCli, HttpStream, has_line, http},
    htpasswd_file,
    servers::http_get,
    test_certificates, wait_until,
};

const REGISTRY: &str = "198.18.0.100:5000";

/// A task that serves its secret over HTTP and says when it started.
const WEB_COMMAND: &[&str] = &[
    "/bin/sh",
    "-c",
    "echo started-$TAG; mkdir -p /www && cat /run/secrets/db_pw > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www",
];

const STACK: &str = r#"
version: "3.8"
services:
  web:
    image: ${REGISTRY}/tools:1
    command: ["/bin/sh", "-c", "mkdir -p /www && cat /run/secrets/stack_pw > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www"]
    ports: ["8090:80"]
    secrets: [stack_pw]
    deploy:
      replicas: 2
secrets:
  stack_pw:
    file: ./pw.txt
"#;

/// Three daemons, in no swarm yet, and a registry with two tags of one
/// busybox image.
fn bed(tag: &str, hosts: usize) -> (Topology, Registry) {
    let mut options = TopologyOptions::new(tag, hosts);
    options.daemon_args = vec!["--insecure-registry".into(), REGISTRY.into()];
    let mut topology = Topology::new(&options).unwrap();
    topology.start_daemons().unwrap();
    let registry =
        Registry::start(topology.client.netns.name(), REGISTRY.parse().unwrap()).unwrap();
    for tag in ["1", "2"] {
        registry
            .push(
                "tools",
                tag,
                &TestImage {
                    layers: vec![TestLayer::busybox()],
                    config: serde_json::json!({"Env": ["PATH=/bin", format!("TAG={tag}")]}),
                },
            )
            .unwrap();
    }
    (topology, registry)
}

fn web_answers(topology: &Topology, port: u16, body: &str) {
    let target: SocketAddr = format!("{}:{port}", topology.hosts[1].addr)
        .parse()
        .unwrap();
    wait_until(&format!("{target} answering {body:?}"), || {
        match http_get(topology.client.netns.name(), target) {
            Ok(answer) if answer.contains(body) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

/// The image a service's spec names.
fn image_of(docker: &DockerCli, service: &str) -> String {
    docker
        .ok(&[
            "service",
            "inspect",
            service,
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        ])
        .unwrap()
}

/// `docker service create ARGS`, which must wait until the service
/// converged (the CLI's own progress display); its stderr.
fn create_converged(docker: &DockerCli, args: &[&str]) -> String {
    let created = docker.run(args).unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&created.stdout).into_owned(),
        String::from_utf8_lossy(&created.stderr).into_owned(),
    );
    assert!(created.status.success(), "{out}{err}");
    assert!(out.contains("converged"), "the CLI waited: {out}{err}");
    err
}

/// Everything a Swarm user does with the docker CLI, on `bin`.
fn drive_a_swarm(bin: &str, tag: &str) -> (Topology, Registry, DockerCli) {
    let (topology, registry) = bed(tag, 3);
    let docker = DockerCli::new(bin, topology.daemon(0)).unwrap();
    let hosts: Vec<String> = topology.hosts.iter().map(|h| h.name.clone()).collect();

    // Outside a swarm, Docker's 503 words.
    let outside = docker.fails(&["service", "ls"]).unwrap();
    assert!(
        outside.contains("This node is not a swarm manager. Use \"docker swarm init\""),
        "{outside}"
    );

    // init and join, as the docker CLI prints them.
    let addr = topology.hosts[0].addr.to_string();
    let init = docker
        .ok(&["swarm", "init", "--advertise-addr", &addr])
        .unwrap();
    assert!(init.contains("Swarm initialized: current node ("), "{init}");
    assert!(
        init.contains("docker swarm join --token SWMTKN-1-")
            && init.contains(&format!("{addr}:2377")),
        "{init}"
    );
    let token = docker
        .ok(&["swarm", "join-token", "-q", "worker"])
        .unwrap()
        .trim()
        .to_owned();
    let rotated = docker
        .ok(&["swarm", "join-token", "--rotate", "-q", "worker"])
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(token, rotated, "--rotate gives a new token");
    for i in [1, 2] {
        let worker = docker.at(topology.daemon(i)).unwrap();
        let joined = worker
            .ok(&[
                "swarm",
                "join",
                "--token",
                &rotated,
                &format!("{addr}:2377"),
            ])
            .unwrap();
        assert!(
            joined.contains("This node joined a swarm as a worker."),
            "{joined}"
        );
    }
    let stale = docker
        .at(topology.daemon(2))
        .unwrap()
        .fails(&["swarm", "join", "--token", &token, &format!("{addr}:2377")])
        .unwrap();
    assert!(stale.contains("already part of a swarm"), "{stale}");

    // Nodes.
    wait_until("three Ready nodes in docker node ls", || {
        let nodes = docker
            .ok(&[
                "node",
                "ls",
                "--format",
                "{{.Hostname}} {{.Status}} {{.ManagerStatus}}",
            ])
            .map_err(|e| e.to_string())?;
        let want = [
            format!("{} Ready Leader", hosts[0]),
            format!("{} Ready", hosts[1]),
            format!("{} Ready", hosts[2]),
        ];
        want.iter()
            .all(|line| has_line(&nodes, line))
            .then_some(())
            .ok_or(nodes)
    });
    let me = docker
        .ok(&[
            "node",
            "inspect",
            "self",
            "--format",
            "{{.Description.Hostname}}",
        ])
        .unwrap();
    assert_eq!(me.trim(), hosts[0]);
    docker
        .ok(&["node", "update", "--label-add", "zone=a", &hosts[1]])
        .unwrap();
    let zone = docker
        .ok(&[
            "node",
            "inspect",
            &hosts[1],
            "--format",
            "{{index .Spec.Labels \"zone\"}}",
        ])
        .unwrap();
    assert_eq!(zone.trim(), "a");
    let promoted = docker.ok(&["node", "promote", &hosts[1]]).unwrap();
    assert!(promoted.contains("promoted to a manager"), "{promoted}");
    wait_until("h2 a reachable manager", || {
        let status = docker
            .ok(&[
                "node",
                "inspect",
                &hosts[1],
                "--format",
                "{{.ManagerStatus.Reachability}}",
            ])
            .map_err(|e| e.to_string())?;
        (status.trim() == "reachable").then_some(()).ok_or(status)
    });
    let demoted = docker.ok(&["node", "demote", &hosts[1]]).unwrap();
    assert!(demoted.contains("demoted in the swarm"), "{demoted}");

    // A worker answers as dockerd on a worker does.
    let worker = docker.at(topology.daemon(2)).unwrap();
    let refused = worker.fails(&["service", "ls"]).unwrap();
    assert!(
        refused.contains("Worker nodes can't be used to view or modify cluster state"),
        "{refused}"
    );

    // Networks, secrets, configs.
    let network = docker
        .ok(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "appnet",
        ])
        .unwrap();
    assert!(!network.trim().is_empty());
    let mtu = docker
        .ok(&[
            "network",
            "inspect",
            "appnet",
            "--format",
            "{{index .Options \"com.docker.network.driver.mtu\"}}",
        ])
        .unwrap();
    assert_eq!(mtu.trim(), "1400");
    let networks = docker
        .ok(&[
            "network",
            "ls",
            "--filter",
            "driver=overlay",
            "--format",
            "{{.Name}} {{.Scope}}",
        ])
        .unwrap();
    assert!(has_line(&networks, "appnet swarm"), "{networks}");
    assert!(has_line(&networks, "ingress swarm"), "{networks}");
    let taken = docker
        .fails(&["network", "create", "-d", "overlay", "appnet"])
        .unwrap();
    assert!(taken.contains("already exists"), "{taken}");
    docker
        .ok_with_stdin(&["secret", "create", "db_pw", "-"], b"docker-secret\n")
        .unwrap();
    let secrets = docker
        .ok(&["secret", "ls", "--format", "{{.Name}}"])
        .unwrap();
    assert!(has_line(&secrets, "db_pw"), "{secrets}");
    docker
        .ok_with_stdin(&["config", "create", "app_conf", "-"], b"mode=docker\n")
        .unwrap();
    let configs = docker
        .ok(&["config", "ls", "--format", "{{.Name}}"])
        .unwrap();
    assert!(has_line(&configs, "app_conf"), "{configs}");

    // A service: the CLI pins the image through /distribution and waits
    // for the tasks with its own progress display.
    let image = format!("{REGISTRY}/tools:1");
    let mut create = vec![
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--network",
        "appnet",
        "--secret",
        "db_pw",
        "--config",
        "source=app_conf,target=/etc/app.conf",
        "--publish",
        "8080:80",
        &image,
    ];
    create.extend_from_slice(WEB_COMMAND);
    let err = create_converged(&docker, &create);
    assert!(
        !err.contains("could not be accessed on a registry"),
        "{err}"
    );
    let pinned = image_of(&docker, "web");
    assert!(pinned.contains("tools:1@sha256:"), "{pinned}");
    let listed = docker
        .ok(&[
            "service",
            "ls",
            "--format",
            "{{.Name}} {{.Mode}} {{.Replicas}} {{.Ports}}",
        ])
        .unwrap();
    assert!(
        has_line(&listed, "web replicated 2/2 *:8080->80/tcp"),
        "{listed}"
    );
    let tasks = docker
        .ok(&[
            "service",
            "ps",
            "web",
            "--format",
            "{{.Name}} {{.DesiredState}}",
        ])
        .unwrap();
    assert!(
        has_line(&tasks, "web.1 Running") && has_line(&tasks, "web.2 Running"),
        "{tasks}"
    );
    web_answers(&topology, 8080, "docker-secret");

    // scale, update, rollback: each waits until converged.
    let scaled = docker.ok(&["service", "scale", "web=3"]).unwrap();
    assert!(scaled.contains("web scaled to 3"), "{scaled}");
    let three = docker
        .ok(&[
            "service",
            "ls",
            "--filter",
            "name=web",
            "--format",
            "{{.Replicas}}",
        ])
        .unwrap();
    assert_eq!(three.trim(), "3/3");
    let newer = format!("{REGISTRY}/tools:2");
    docker
        .ok(&["service", "update", "--image", &newer, "web"])
        .unwrap();
    let updated = image_of(&docker, "web");
    assert!(updated.contains("tools:2@sha256:"), "{updated}");
    docker.ok(&["service", "rollback", "web"]).unwrap();
    let back = image_of(&docker, "web");
    assert!(back.contains("tools:1@sha256:"), "{back}");

    // Logs, with the CLI's own task prefix.
    wait_until("docker service logs showing the tasks' output", || {
        let logs = docker
            .run(&["service", "logs", "web"])
            .map_err(|e| e.to_string())?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
        text.lines()
            .any(|l| l.starts_with("web.") && l.contains('@') && l.contains("| started-1"))
            .then_some(())
            .ok_or(text)
    });

    // A compose stack, parsed by the docker CLI itself.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw.txt"), "stack-secret\n").unwrap();
    let compose = dir.path().join("compose.yml");
    std::fs::write(&compose, STACK.replace("${REGISTRY}", REGISTRY)).unwrap();
    let compose = compose.display().to_string();
    let deployed = docker
        .ok(&["stack", "deploy", "-c", &compose, "app"])
        .unwrap();
    for line in [
        "Creating network app_default",
        "Creating secret app_stack_pw",
        "Creating service app_web",
    ] {
        assert!(deployed.contains(line), "{line:?} in {deployed}");
    }
    wait_until("app_web 2/2 in docker stack services", || {
        let services = docker
            .ok(&[
                "stack",
                "services",
                "app",
                "--format",
                "{{.Name}} {{.Replicas}}",
            ])
            .map_err(|e| e.to_string())?;
        has_line(&services, "app_web 2/2")
            .then_some(())
            .ok_or(services)
    });
    let stack_tasks = docker
        .ok(&["stack", "ps", "app", "--format", "{{.Name}}"])
        .unwrap();
    assert!(has_line(&stack_tasks, "app_web.1"), "{stack_tasks}");
    web_answers(&topology, 8090, "stack-secret");
    // Deployed again: the services are updated in place, nothing restarts.
    let before = docker.ok(&["stack", "ps", "app", "-q"]).unwrap();
    let again = docker
        .ok(&["stack", "deploy", "-c", &compose, "app"])
        .unwrap();
    assert!(again.contains("Updating service app_web"), "{again}");
    let after = docker.ok(&["stack", "ps", "app", "-q"]).unwrap();
    assert_eq!(
        before, after,
        "a redeploy of the same file restarts nothing"
    );
    let removed = docker.ok(&["stack", "rm", "app"]).unwrap();
    for line in [
        "Removing service app_web",
        "Removing secret app_stack_pw",
        "Removing network app_default",
    ] {
        assert!(removed.contains(line), "{line:?} in {removed}");
    }

    // Removal.
    docker.ok(&["service", "rm", "web"]).unwrap();
    let none = docker.ok(&["service", "ls", "-q"]).unwrap();
    assert!(none.trim().is_empty(), "{none}");
    let missing = docker.fails(&["service", "inspect", "web"]).unwrap();
    assert!(missing.contains("no such service: web"), "{missing}");
    docker.ok(&["network", "rm", "appnet"]).unwrap();
    docker.ok(&["secret", "rm", "db_pw"]).unwrap();
    docker.ok(&["config", "rm", "app_conf"]).unwrap();
    let left = docker
        .at(topology.daemon(2))
        .unwrap()
        .ok(&["swarm", "leave"])
        .unwrap();
    assert!(left.contains("Node left the swarm."), "{left}");
    (topology, registry, docker)
}

#[test]
fn docker_28_drives_a_swarm_and_the_api_answers_as_dockerd() {
    let (topology, _registry, docker) = drive_a_swarm(DOCKER_28, "swdk28");
    let socket = &topology.daemon(0).docker_socket;

    // swarm update: the agents take the new heartbeat from their next
    // heartbeat's answer; certificates signed from now on last 48 h.
    let updated = docker
        .ok(&[
            "swarm",
            "update",
            "--dispatcher-heartbeat",
            "2s",
            "--cert-expiry",
            "48h",
        ])
        .unwrap();
    assert!(updated.contains("Swarm updated."), "{updated}");
    let state = topology
        .daemon(1)
        .data_dir
        .join("cluster")
        .join("state.json");
    wait_until("h2's agent taking the 2 s heartbeat", || {
        let text = std::fs::read_to_string(&state).map_err(|e| e.to_string())?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        (json["heartbeat_millis"] == 2000).then_some(()).ok_or(text)
    });
    let token = docker.ok(&["swarm", "join-token", "-q", "worker"]).unwrap();
    let addr = format!("{}:2377", topology.hosts[0].addr);
    docker
        .at(topology.daemon(2))
        .unwrap()
        .ok(&[
            "swarm",
            "join",
            "--availability",
            "drain",
            "--token",
            token.trim(),
            &addr,
        ])
        .unwrap();
    let h3 = &topology.hosts[2].name;
    let drained = docker
        .ok(&["node", "inspect", h3, "--format", "{{.Spec.Availability}}"])
        .unwrap();
    assert_eq!(drained.trim(), "drain", "joined drained");
    let cert = topology.daemon(2).data_dir.join("cluster").join("node.pem");
    let lasts_beyond = |hours: u64| {
        std::process::Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-checkend",
                &(hours * 3600).to_string(),
                "-in",
            ])
            .arg(&cert)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(lasts_beyond(47) && !lasts_beyond(49), "a 48 h certificate");
    docker
        .ok(&["swarm", "update", "--snapshot-interval", "5000"])
        .unwrap();
    let interval = docker
        .ok(&[
            "info",
            "--format",
            "{{.Swarm.Cluster.Spec.Raft.SnapshotInterval}}",
        ])
        .unwrap();
    assert_eq!(interval.trim(), "5000");
    // Autolock on through the Engine API prints the unlock key, as Docker.
    let locked = docker.ok(&["swarm", "update", "--autolock"]).unwrap();
    assert!(locked.contains("SWMKEY-1-"), "{locked}");
    let key = docker.ok(&["swarm", "unlock-key", "-q"]).unwrap();
    assert!(locked.contains(key.trim()), "{locked} {key}");
    docker.ok(&["swarm", "update", "--autolock=false"]).unwrap();
    let none = docker.fails(&["swarm", "unlock-key"]).unwrap();
    assert!(none.contains("no unlock key is set"), "{none}");

    // --task-history-limit 1: two forced updates leave one ended task.
    docker
        .ok(&["swarm", "update", "--task-history-limit", "1"])
        .unwrap();
    let image = format!("{REGISTRY}/tools:1");
    create_converged(
        &docker,
        &[
            "service",
            "create",
            "--name",
            "hist",
            &image,
            "/bin/busybox",
            "sleep",
            "100000",
        ],
    );
    for _ in 0..2 {
        docker
            .ok(&["service", "update", "--force", "hist"])
            .unwrap();
    }
    wait_until("one ended task kept for hist.1", || {
        let tasks = docker
            .ok(&["service", "ps", "hist", "--format", "{{.DesiredState}}"])
            .map_err(|e| e.to_string())?;
        let states: Vec<&str> = tasks.lines().collect();
        (states == ["Running", "Shutdown"])
            .then_some(())
            .ok_or(tasks)
    });
    docker.ok(&["service", "rm", "hist"]).unwrap();

    // A global service skips the node that joined drained.
    create_converged(
        &docker,
        &[
            "service",
            "create",
            "--name",
            "everywhere",
            "--mode",
            "global",
            &image,
            "/bin/busybox",
            "sleep",
            "100000",
        ],
    );
    let nodes = docker
        .ok(&["service", "ps", "everywhere", "--format", "{{.Node}}"])
        .unwrap();
    let mut nodes: Vec<&str> = nodes.lines().collect();
    nodes.sort_unstable();
    assert_eq!(
        nodes,
        [
            topology.hosts[0].name.as_str(),
            topology.hosts[1].name.as_str()
        ]
    );
    docker.ok(&["service", "rm", "everywhere"]).unwrap();

    // Version negotiation.
    let ping = http(socket, "HEAD", "/_ping", None).unwrap();
    assert_eq!(ping.status, 200);
    assert_eq!(ping.header("Api-Version"), Some("1.50"));
    assert_eq!(ping.header("Swarm"), Some("active/manager"));
    assert_eq!(ping.header("Ostype"), Some("linux"));
    let new = http(socket, "GET", "/v1.99/info", None).unwrap();
    assert_eq!(new.status, 400);
    assert_eq!(
        new.json()["message"],
        "client version 1.99 is too new. Maximum supported API version is 1.50"
    );
    let old = http(socket, "GET", "/v1.40/info", None).unwrap();
    assert_eq!(old.status, 400);
    assert!(old.json()["message"].as_str().unwrap().contains("too old"));
    let info = http(socket, "GET", "/v1.41/info", None).unwrap().json();
    assert_eq!(info["Swarm"]["LocalNodeState"], "active");
    assert_eq!(info["Swarm"]["ControlAvailable"], true);
    assert_eq!(info["Swarm"]["Managers"], 1);

    // Docker's codes for bad requests.
    let missing = http(socket, "GET", "/v1.50/services/nope", None).unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "service nope not found");
    assert_eq!(missing.header("Content-Type"), Some("application/json"));
    let bad_json = http(socket, "POST", "/v1.50/services/create", Some("{not json")).unwrap();
    assert_eq!(bad_json.status, 400);
    assert!(
        bad_json.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON")
    );
    let no_image = http(
        socket,
        "POST",
        "/v1.50/services/create",
        Some(r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{}}}"#),
    )
    .unwrap();
    assert_eq!(no_image.status, 400);
    let filter = http(
        socket,
        "GET",
        "/v1.50/services?filters=%7B%22colour%22%3A%7B%22red%22%3Atrue%7D%7D",
        None,
    )
    .unwrap();
    assert_eq!(filter.status, 400);
    assert_eq!(filter.json()["message"], "invalid filter 'colour'");

    // Events: a service created and updated, then removed, in order.
    let mut events = HttpStream::open(
        socket,
        "/v1.50/events?filters=%7B%22type%22%3A%7B%22service%22%3Atrue%7D%7D",
    )
    .unwrap();
    assert_eq!(events.status, 200);
    let spec = format!(
        r#"{{"Name":"evt","TaskTemplate":{{"ContainerSpec":{{"Image":"{REGISTRY}/tools:1","Args":["/bin/busybox","sleep","1000"]}}}},"Mode":{{"Replicated":{{"Replicas":1}}}}}}"#
    );
    let created = http(socket, "POST", "/v1.50/services/create", Some(&spec)).unwrap();
    assert_eq!(
        created.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&created.body)
    );
    let id = created.json()["ID"].as_str().unwrap().to_owned();
    let event = loop {
        let line: serde_json::Value = serde_json::from_str(&events.next_line().unwrap()).unwrap();
        if line["Action"] == "create" {
            break line;
        }
    };
    assert_eq!(event["Type"], "service");
    assert_eq!(event["scope"], "swarm");
    assert_eq!(event["Actor"]["ID"], id.as_str());
    assert_eq!(event["Actor"]["Attributes"]["name"], "evt");

    // An update from a stale version is refused as out of sequence.
    let version = http(socket, "GET", &format!("/v1.50/services/{id}"), None)
        .unwrap()
        .json()["Version"]["Index"]
        .as_u64()
        .unwrap();
    let scaled = spec.replace("\"Replicas\":1", "\"Replicas\":2");
    let update = |version: u64| {
        http(
            socket,
            "POST",
            &format!("/v1.50/services/{id}/update?version={version}"),
            Some(&scaled),
        )
        .unwrap()
    };
    let fresh = update(version);
    assert_eq!(
        fresh.status,
        200,
        "{}",
        String::from_utf8_lossy(&fresh.body)
    );
    let stale = update(version);
    assert_eq!(stale.status, 500);
    assert!(
        stale.json()["message"]
            .as_str()
            .unwrap()
            .ends_with("update out of sequence")
    );
    let event = loop {
        let line: serde_json::Value = serde_json::from_str(&events.next_line().unwrap()).unwrap();
        if line["Action"] == "update" && line["Actor"]["Attributes"]["replicas.new"] == "2" {
            break line;
        }
    };
    assert_eq!(event["Actor"]["Attributes"]["replicas.old"], "1");
    docker.ok(&["service", "rm", "evt"]).unwrap();
    loop {
        let line: serde_json::Value = serde_json::from_str(&events.next_line().unwrap()).unwrap();
        if line["Action"] == "remove" {
            assert_eq!(line["Actor"]["ID"], id.as_str());
            break;
        }
    }
}

#[test]
fn docker_20_10_drives_a_swarm() {
    drive_a_swarm(DOCKER_20_10, "swdk20");
}

#[test]
fn docker_login_and_with_registry_auth_pull_from_a_private_registry() {
    let (topology, plain) = bed("swdkau", 2);
    let docker = DockerCli::new(DOCKER_28, topology.daemon(0)).unwrap();
    let addr = topology.hosts[0].addr.to_string();
    docker
        .ok(&["swarm", "init", "--advertise-addr", &addr])
        .unwrap();
    let token = docker.ok(&["swarm", "join-token", "-q", "worker"]).unwrap();
    docker
        .at(topology.daemon(1))
        .unwrap()
        .ok(&[
            "swarm",
            "join",
            "--token",
            token.trim(),
            &format!("{addr}:2377"),
        ])
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path(), "198.18.0.100").unwrap();
    let htpasswd = htpasswd_file(certs.path(), "tester", "right-password").unwrap();
    let secure = "198.18.0.100:5443";
    let _secure =
        Registry::start_secure(&plain, secure.parse().unwrap(), &cert, &key, &htpasswd).unwrap();
    for host in 0..2 {
        let dir = topology.daemon(host).data_dir.join("certs.d").join(secure);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&ca, dir.join("ca.crt")).unwrap();
    }

    // The daemon asks the registry: a wrong password is refused.
    let wrong = docker
        .run_with_stdin(
            &["login", secure, "-u", "tester", "--password-stdin"],
            b"wrong-password",
        )
        .unwrap();
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "{err}");
    assert!(err.contains("unauthorized"), "{err}");
    let right = docker
        .ok_with_stdin(
            &["login", secure, "-u", "tester", "--password-stdin"],
            b"right-password",
        )
        .unwrap();
    assert!(right.contains("Login Succeeded"), "{right}");

    // The CLI sends the login with the service; both nodes pull with it.
    let image = format!("{secure}/tools:1");
    create_converged(
        &docker,
        &[
            "service",
            "create",
            "--name",
            "private",
            "--mode",
            "global",
            "--with-registry-auth",
            &image,
            "/bin/busybox",
            "sleep",
            "100000",
        ],
    );
    let pinned = image_of(&docker, "private");
    assert!(pinned.contains("tools:1@sha256:"), "{pinned}");
    let running = docker
        .ok(&[
            "service",
            "ls",
            "--format",
            "{{.Name}} {{.Mode}} {{.Replicas}}",
        ])
        .unwrap();
    assert!(has_line(&running, "private global 2/2"), "{running}");
}
