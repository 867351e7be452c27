//! Secrets, configs and mounts as a Docker Swarm user has them, on three
//! nodes pulling a busybox image from a real registry: what a task sees,
//! where the secret's bytes are (never on a disk, only on the node that
//! runs the task), and the refusals in Docker's words.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use swarm_tests::{
    Registry, Swarm, TestImage, TestLayer, Topology, TopologyOptions, servers::http_get, wait_until,
};

const REGISTRY: &str = "198.18.0.100:5000";

fn swarm_with_registry(tag: &str) -> (Topology, Registry, String) {
    let mut options = TopologyOptions::new(tag, 3);
    options.daemon_args = vec!["--insecure-registry".into(), REGISTRY.into()];
    let topology = Swarm::new().workers([1, 2]).start(&options).unwrap();
    let registry =
        Registry::start(topology.client.netns.name(), REGISTRY.parse().unwrap()).unwrap();
    let mut base = TestLayer::busybox();
    base.files
        .insert("srv/seed.txt".into(), Some(b"from the image\n".to_vec()));
    let image = TestImage {
        layers: vec![base],
        config: serde_json::json!({"Env": ["PATH=/bin"]}),
    };
    registry.push("tools", "1", &image).unwrap();
    (topology, registry, format!("{REGISTRY}/tools:1"))
}

/// The page the mesh serves on port 8080 (one task behind it).
fn page(topology: &Topology) -> Option<String> {
    let target = SocketAddr::from((Ipv4Addr::new(198, 18, 0, 1), 8080));
    http_get(topology.client.netns.name(), target)
        .ok()
        .map(|answer| {
            answer
                .split_once(" | ")
                .map_or(answer.clone(), |(_, body)| body.to_owned())
        })
}

fn wait_page(topology: &Topology, what: &str, check: impl Fn(&str) -> bool) -> String {
    let mut seen = String::new();
    wait_until(what, || {
        seen = page(topology).unwrap_or_default();
        check(&seen).then_some(()).ok_or(seen.clone())
    });
    seen
}

/// A shell command writing `script`'s output as the page, then serving it.
fn serving(script: &str) -> String {
    format!(
        "mkdir -p /www && {{ {script}; }} > /www/index.html 2>&1; exec /bin/busybox httpd -f -p 80 -h /www"
    )
}

fn task_errors(topology: &Topology, service: &str) -> Vec<String> {
    topology
        .daemon(0)
        .swarm_json(&["service", "ps", "--no-trunc", service])
        .unwrap()
        .iter()
        .filter_map(|r| r["Error"].as_str().map(str::to_owned))
        .filter(|e| !e.is_empty())
        .collect()
}

/// Every regular file under `dir` that is on a disk: mount points below it
/// (a task's tmpfs, a task's overlay root) are not walked.
fn files_on_disk(dir: &Path) -> Vec<PathBuf> {
    let mounts: BTreeSet<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
        .collect();
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && !mounts.contains(&path) {
                pending.push(path);
            } else if kind.is_file() {
                found.push(path);
            }
        }
    }
    found
}

fn holding(files: &[PathBuf], needle: &[u8]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|path| {
            std::fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
        .cloned()
        .collect()
}

#[test]
fn a_secret_and_a_config_reach_only_their_tasks_node_and_never_a_disk() {
    let (topology, _registry, image) = swarm_with_registry("sws");
    let manager = topology.daemon(0);
    // The data sits outside every node's data dir, which is grepped below.
    let outside = tempfile::tempdir().unwrap();
    let secret = format!("pw-{}-never-on-disk", std::process::id());
    std::fs::write(outside.path().join("secret"), &secret).unwrap();
    std::fs::write(outside.path().join("app.conf"), "listen=8080\n").unwrap();
    let secret_file = outside.path().join("secret");
    let config_file = outside.path().join("app.conf");
    manager
        .swarm_ok(&[
            "secret",
            "create",
            "-l",
            "app=db",
            "db-pw",
            secret_file.to_str().unwrap(),
        ])
        .unwrap();
    manager
        .swarm_ok(&[
            "config",
            "create",
            "app.conf",
            config_file.to_str().unwrap(),
        ])
        .unwrap();
    let listed = manager.swarm_json(&["secret", "ls"]).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["Name"], "db-pw");
    let inspect = manager
        .swarm_inspect(&["secret", "inspect", "db-pw"])
        .unwrap();
    assert_eq!(inspect[0]["Spec"]["Labels"]["app"], "db");
    assert!(inspect[0]["Spec"].get("Data").is_none(), "{inspect}");
    assert!(!inspect.to_string().contains(&secret));
    let config = manager
        .swarm_inspect(&["config", "inspect", "app.conf"])
        .unwrap();
    assert_eq!(config[0]["Spec"]["Data"], "bGlzdGVuPTgwODAK");

    let script = "cat /run/secrets/db-pw; echo; stat -c %a:%u /run/secrets/pw2; \
                  stat -f -c %T /run/secrets/db-pw; cat /etc/app.conf; \
                  (echo x > /run/secrets/db-pw) 2>/dev/null && echo writable || echo read-only";
    manager
        .swarm_ok(&[
            "service",
            "create",
            "--name",
            "reader",
            "-p",
            "8080:80",
            "--constraint",
            "node.hostname==h2",
            "--secret",
            "db-pw",
            "--secret",
            "source=db-pw,target=pw2,uid=7,mode=0400",
            "--config",
            "source=app.conf,target=/etc/app.conf",
            // The page holds the secret: in memory, not on the task's disk.
            "--mount",
            "type=tmpfs,target=/www",
            &image,
            "/bin/sh",
            "-c",
            &serving(script),
        ])
        .unwrap();
    let seen = wait_page(&topology, "the task's page", |p| {
        p.contains("read-only") || p.contains("writable")
    });
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [
            secret.as_str(),
            "400:7",
            "tmpfs",
            "listen=8080",
            "read-only"
        ],
        "{seen}"
    );

    // In use: refused, naming the service.
    let refused = manager.swarm(&["secret", "rm", "db-pw"]).unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("secret 'db-pw' is in use by the following service: reader"),
        "{refused:?}"
    );
    // Nowhere on a disk: not in any node's data dir (Raft log and snapshots
    // included), not in any daemon's log.
    for i in 0..3 {
        let files = files_on_disk(&topology.host_dir(i));
        assert!(files.len() > 3, "h{}: {files:?}", i + 1);
        let found = holding(&files, secret.as_bytes());
        assert!(
            found.is_empty(),
            "the secret is on h{}'s disk: {found:?}",
            i + 1
        );
        assert!(!topology.daemon(i).log().contains(&secret));
    }

    manager
        .swarm_ok(&["service", "update", "--secret-rm", "db-pw", "reader"])
        .unwrap();
    let seen = wait_page(&topology, "the page without the secret", |p| {
        !p.is_empty() && !p.contains(&secret)
    });
    assert!(seen.contains("listen=8080"), "{seen}");
    manager.swarm_ok(&["secret", "rm", "db-pw"]).unwrap();
    assert!(manager.swarm_json(&["secret", "ls"]).unwrap().is_empty());
    let missing = manager
        .swarm(&[
            "service", "create", "--name", "x", "--secret", "nope", &image, "true",
        ])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("secret not found: nope"),
        "{missing:?}"
    );
}

#[test]
fn bind_volume_and_tmpfs_mounts_behave_as_dockers() {
    let (topology, _registry, image) = swarm_with_registry("swm");
    let manager = topology.daemon(0);
    // A bind source that exists on no node.
    manager
        .swarm_ok(&[
            "service",
            "create",
            "--detach",
            "--name",
            "bound",
            "--mount",
            "type=bind,source=/nonexistent/swarm-test,target=/data",
            &image,
            "sleep",
            "1000",
        ])
        .unwrap();
    wait_until("the bind refused in Docker's words", || {
        let errors = task_errors(&topology, "bound");
        errors
            .iter()
            .any(|e| e == "invalid mount config for type \"bind\": bind source path does not exist: /nonexistent/swarm-test")
            .then_some(())
            .ok_or(format!("{errors:?}"))
    });
    manager.swarm_ok(&["service", "rm", "bound"]).unwrap();

    // A named volume seeded from the image, kept across an update; a
    // nocopy one empty; a tmpfs of 1 MiB.
    let script = "cat /srv/seed.txt; ls /empty | wc -l; date +%s%N >> /srv/runs; wc -l < /srv/runs; \
                  df -k /scratch | tail -1 | awk '{print $2}'; \
                  dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>/dev/null && echo fits || echo full";
    manager
        .swarm_ok(&[
            "service",
            "create",
            "--name",
            "stateful",
            "-p",
            "8080:80",
            "--constraint",
            "node.hostname==h3",
            "--mount",
            "type=volume,source=state,target=/srv",
            "--mount",
            "type=volume,source=blank,target=/empty,volume-nocopy",
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=1m",
            &image,
            "/bin/sh",
            "-c",
            &serving(script),
        ])
        .unwrap();
    let seen = wait_page(&topology, "the first task's page", |p| {
        p.contains("full") || p.contains("fits")
    });
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        ["from the image", "0", "1", "1024", "full"],
        "{seen}"
    );
    let volumes = topology.daemon(2).swarm_json(&["volume", "ls"]).unwrap();
    let names: BTreeSet<&str> = volumes.iter().filter_map(|v| v["Name"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["blank", "state"]));
    let refused = topology
        .daemon(2)
        .swarm(&["volume", "rm", "state"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("volume is in use"),
        "{refused:?}"
    );
    manager
        .swarm_ok(&["service", "update", "--force", "stateful"])
        .unwrap();
    let seen = wait_page(&topology, "the second task's page", |p| {
        p.lines().nth(2) == Some("2")
    });
    assert!(seen.starts_with("from the image\n0\n2\n"), "{seen}");
    manager.swarm_ok(&["service", "rm", "stateful"]).unwrap();
    wait_until("the volumes free", || {
        match topology
            .daemon(2)
            .swarm(&["volume", "rm", "state", "blank"])
        {
            Ok(out) if out.status.success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(
        topology
            .daemon(2)
            .swarm_json(&["volume", "ls"])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_docker_runtime_gets_the_same_secrets_configs_and_mounts() {
    // Declared first, so it is dropped last: after the daemons removed
    // their containers.
    let engine = swarm_tests::docker::DockerEngine::start().unwrap();
    let port = 16_000 + (std::process::id() % 1000) as u16;
    let registry = Registry::start_on_loopback(port).unwrap();
    let mut base = TestLayer::busybox();
    base.files
        .insert("srv/seed.txt".into(), Some(b"from the image\n".to_vec()));
    registry
        .push(
            "tools",
            "1",
            &TestImage {
                layers: vec![base],
                config: serde_json::json!({"Env": ["PATH=/bin"]}),
            },
        )
        .unwrap();
    let image = format!("127.0.0.1:{port}/tools:1");
    let mut options = TopologyOptions::new("swsd", 2);
    options.daemon_args = vec![
        "--runtime".into(),
        "docker".into(),
        "--docker-host".into(),
        engine.host(),
    ];
    let topology = Swarm::new().workers([1]).start(&options).unwrap();
    let manager = topology.daemon(0);
    let outside = tempfile::tempdir().unwrap();
    let secret = format!("docker-pw-{}", std::process::id());
    std::fs::write(outside.path().join("secret"), &secret).unwrap();
    std::fs::write(outside.path().join("conf"), "mode=docker\n").unwrap();
    manager
        .swarm_ok(&[
            "secret",
            "create",
            "pw",
            outside.path().join("secret").to_str().unwrap(),
        ])
        .unwrap();
    manager
        .swarm_ok(&[
            "config",
            "create",
            "conf",
            outside.path().join("conf").to_str().unwrap(),
        ])
        .unwrap();
    let script = "cat /run/secrets/pw; echo; stat -c %a /run/secrets/pw; cat /etc/app.conf; \
                  cat /srv/seed.txt; df -k /scratch | tail -1 | awk '{print $2}'";
    manager
        .swarm_ok(&[
            "service",
            "create",
            "--name",
            "reader",
            "-p",
            "8080:80",
            "--no-resolve-image",
            "--secret",
            "source=pw,mode=0400",
            "--config",
            "source=conf,target=/etc/app.conf",
            "--mount",
            "type=volume,source=swarm-test-state,target=/srv",
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=1m",
            "--mount",
            "type=tmpfs,target=/www",
            &image,
            "/bin/sh",
            "-c",
            &serving(script),
        ])
        .unwrap();
    let seen = wait_page(&topology, "the container's page", |p| {
        p.lines().count() >= 5
    });
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [
            secret.as_str(),
            "400",
            "mode=docker",
            "from the image",
            "1024"
        ],
        "{seen}"
    );
    manager
        .swarm_ok(&[
            "service",
            "create",
            "--detach",
            "--name",
            "bound",
            "--no-resolve-image",
            "--mount",
            "type=bind,source=/nonexistent/swarm-test,target=/data",
            &image,
            "sleep",
            "1000",
        ])
        .unwrap();
    wait_until("the bind refused in Docker's words", || {
        let errors = task_errors(&topology, "bound");
        errors
            .iter()
            .any(|e| e == "invalid mount config for type \"bind\": bind source path does not exist: /nonexistent/swarm-test")
            .then_some(())
            .ok_or(format!("{errors:?}"))
    });
    manager
        .swarm_ok(&["service", "rm", "reader", "bound"])
        .unwrap();
    wait_until("no task container left", || {
        let left = engine.task_containers().unwrap();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });
    let _ = engine.docker(&["volume", "rm", "swarm-test-state"]);
    let _ = engine.docker(&["image", "rm", &image]);
}
