//! Images from a real registry (Debian's docker-registry, in the client's
//! namespace) run on the native runtime: the image's Cmd and Env, its
//! layers stacked with their whiteouts, each layer fetched once per node
//! however many tasks start from it, and a missing image named in the
//! task's error.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
};

use swarm_tests::{
    Registry, Swarm, TestImage, TestLayer, Topology, TopologyOptions, docker::DockerEngine,
    htpasswd_file, servers::http_get, test_certificates, wait_until,
};

const REGISTRY: &str = "198.18.0.100:5000";

/// Three nodes that reach the registry over plain HTTP, and the registry.
fn swarm_with_registry(tag: &str) -> (Topology, Registry) {
    let mut options = TopologyOptions::new(tag, 3);
    options.daemon_args = vec!["--insecure-registry".into(), REGISTRY.into()];
    let topology = Swarm::new().workers([1, 2]).start(&options).unwrap();
    let registry =
        Registry::start(topology.client.netns.name(), REGISTRY.parse().unwrap()).unwrap();
    (topology, registry)
}

/// busybox, with /etc/motd in its first layer and whited out in its second;
/// its Cmd writes what the task sees into the page httpd serves.
fn web_image() -> TestImage {
    let mut base = TestLayer::busybox();
    base.files
        .insert("etc/motd".into(), Some(b"from the first layer\n".to_vec()));
    let mut top = TestLayer::default();
    top.whiteouts.push("etc/motd".into());
    top.files.insert("www/".into(), None);
    TestImage {
        layers: vec![base, top],
        config: serde_json::json!({
            "Env": ["PATH=/bin", "GREETING=from-the-image"],
            "Cmd": [
                "/bin/sh", "-c",
                "{ echo $HOSTNAME; [ -e /etc/motd ] && echo motd-present || echo motd-gone; echo $GREETING; } > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www"
            ],
        }),
    }
}

/// busybox serving one word, `VERSION` in the image's Env.
fn versioned_image(version: &str) -> TestImage {
    TestImage {
        layers: vec![TestLayer::busybox()],
        config: serde_json::json!({
            "Env": ["PATH=/bin", format!("VERSION={version}")],
            "Cmd": ["/bin/sh", "-c", "echo $VERSION > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www"],
        }),
    }
}

/// What the mesh answers on every node, over `tries` requests to each.
fn answers(topology: &Topology, tries: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for host in 1..=3u8 {
        let target = SocketAddr::from((Ipv4Addr::new(198, 18, 0, host), 8080));
        for _ in 0..tries {
            if let Ok(answer) = http_get(topology.client.netns.name(), target) {
                seen.insert(answer.rsplit(" | ").next().unwrap_or("").trim().to_owned());
            }
        }
    }
    seen
}

fn image_of(topology: &Topology, service: &str) -> String {
    let inspect = topology
        .daemon(0)
        .swarm_inspect(&["service", "inspect", service])
        .unwrap();
    inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn wait_running(topology: &Topology, service: &str, count: usize) {
    wait_until(&format!("{count} tasks of {service} running"), || {
        let rows = running(topology, service);
        let up = rows
            .iter()
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Running")
            })
            .count();
        (up == count && rows.len() == count)
            .then_some(())
            .ok_or(format!("{rows:#?}"))
    });
}

fn running(topology: &Topology, service: &str) -> Vec<serde_json::Value> {
    topology
        .daemon(0)
        .swarm_json(&["service", "ps", service])
        .unwrap()
        .into_iter()
        .filter(|r| r["DesiredState"] == "Running")
        .collect()
}

#[test]
fn an_image_from_a_registry_serves_through_the_mesh_with_its_cmd_env_and_whiteouts() {
    let (topology, registry) = swarm_with_registry("swt");
    registry.push("web", "1", &web_image()).unwrap();
    let image = format!("{REGISTRY}/web:1");
    // No command: the image's Cmd runs. Two tasks per node start at once.
    topology
        .daemon(0)
        .swarm_ok(&[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "6",
            "-p",
            "8080:80",
            &image,
        ])
        .unwrap();
    wait_until("6 tasks of web running", || {
        let rows = running(&topology, "web");
        let up = rows
            .iter()
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Running")
            })
            .count();
        (up == 6).then_some(()).ok_or(format!("{rows:#?}"))
    });

    // Through every node's published port: every replica, each seeing the
    // image's environment and not the file its second layer whited out.
    let mut seen = BTreeSet::new();
    wait_until("the mesh reaching all 6 replicas", || {
        for host in 1..=3u8 {
            let target = SocketAddr::from((Ipv4Addr::new(198, 18, 0, host), 8080));
            let answer =
                http_get(topology.client.netns.name(), target).map_err(|e| e.to_string())?;
            let lines: Vec<&str> = answer.split(" | ").nth(1).unwrap_or("").lines().collect();
            if lines.len() != 3 || lines[1] != "motd-gone" || lines[2] != "from-the-image" {
                return Err(format!("{target} answered {answer:?}"));
            }
            seen.insert(lines[0].to_owned());
        }
        (seen.len() == 6).then_some(()).ok_or(format!("{seen:?}"))
    });

    // Each layer once per node, though two tasks on each pulled at once.
    for layer in registry.layer_digests("web", "1").unwrap() {
        assert_eq!(
            registry.blob_fetches("web", &layer),
            3,
            "layer {layer} fetched other than once per node:\n{}",
            registry.log()
        );
    }

    // The node lists what it pulled, and keeps an image its tasks run.
    let listed = topology.daemon(0).swarm_json(&["image", "ls"]).unwrap();
    assert!(
        listed
            .iter()
            .any(|row| row["Repository"] == format!("{REGISTRY}/web") && row["Tasks"] == 2),
        "{listed:#?}"
    );
    let refused = topology.daemon(0).swarm(&["image", "rm", &image]).unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("conflict: unable to remove repository reference"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Removing the service unmounts the tasks' roots and removes them.
    topology
        .daemon(0)
        .swarm_ok(&["service", "rm", "web"])
        .unwrap();
    wait_until("no task root left mounted", || {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left: Vec<&str> = mounts
            .lines()
            .filter(|l| l.contains(&topology.prefix) && l.contains("/rootfs"))
            .collect();
        left.is_empty().then_some(()).ok_or(format!("{left:#?}"))
    });

    // Unused now: pruned, and its layers gone from the node.
    let layers = topology.daemon(0).data_dir.join("images").join("layers");
    assert!(std::fs::read_dir(&layers).unwrap().count() >= 2);
    wait_until("the image unused on h1", || {
        let rows = topology.daemon(0).swarm_json(&["image", "ls"]).unwrap();
        rows.iter()
            .all(|r| r["Tasks"] == 0)
            .then_some(())
            .ok_or(format!("{rows:#?}"))
    });
    let pruned = topology
        .daemon(0)
        .swarm_ok(&["image", "prune", "-f"])
        .unwrap();
    assert!(pruned.contains(&format!("Deleted: {image}")), "{pruned}");
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 0);
    assert!(
        topology
            .daemon(0)
            .swarm_json(&["image", "ls"])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_missing_image_rejects_its_task_and_a_bad_reference_is_refused() {
    let (topology, _registry) = swarm_with_registry("swt");
    let missing = format!("{REGISTRY}/nothing-here:1");
    topology
        .daemon(0)
        .swarm_ok(&["service", "create", "--name", "gone", "-d", &missing])
        .unwrap();
    wait_until("the task rejected, naming the image", || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", "gone"])
            .unwrap();
        rows.iter()
            .any(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Rejected")
                    && r["Error"]
                        .as_str()
                        .is_some_and(|e| e.contains(&format!("No such image: {missing}")))
            })
            .then_some(())
            .ok_or(format!("{rows:#?}"))
    });

    let refused = topology
        .daemon(0)
        .swarm(&["service", "create", "--name", "bad", "Not/An:Image:"])
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("invalid reference format") && stderr.contains("NAME[:TAG]"),
        "{stderr}"
    );
}

#[test]
fn a_tag_is_pinned_to_its_digest_and_an_update_rolls_to_a_new_tag() {
    let (topology, registry) = swarm_with_registry("swt");
    let one = registry.push("web", "1", &versioned_image("one")).unwrap();
    let tag = format!("{REGISTRY}/web:1");
    topology
        .daemon(0)
        .swarm_ok(&[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "8080:80",
            &tag,
        ])
        .unwrap();
    assert_eq!(image_of(&topology, "web"), format!("{tag}@{one}"));
    wait_running(&topology, "web", 2);
    wait_until("the mesh answering one", || {
        let seen = answers(&topology, 3);
        (seen == BTreeSet::from(["one".to_owned()]))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });

    // The tag moves on; the service keeps the bytes it was pinned to, on
    // the tasks it starts later too.
    registry
        .push("web", "1", &versioned_image("moved"))
        .unwrap();
    topology
        .daemon(0)
        .swarm_ok(&["service", "scale", "web=4"])
        .unwrap();
    wait_running(&topology, "web", 4);
    assert_eq!(answers(&topology, 6), BTreeSet::from(["one".to_owned()]));

    // --no-resolve-image keeps the tag as given.
    topology
        .daemon(0)
        .swarm_ok(&[
            "service",
            "update",
            "--no-resolve-image",
            "--image",
            &tag,
            "web",
        ])
        .unwrap();
    assert_eq!(image_of(&topology, "web"), tag);

    // A new tag rolls every task over to it, pinned.
    let two = registry.push("web", "2", &versioned_image("two")).unwrap();
    let next = format!("{REGISTRY}/web:2");
    topology
        .daemon(0)
        .swarm_ok(&["service", "update", "--image", &next, "web"])
        .unwrap();
    assert_eq!(image_of(&topology, "web"), format!("{next}@{two}"));
    wait_until("every task serving two", || {
        let seen = answers(&topology, 4);
        (seen == BTreeSet::from(["two".to_owned()]))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
    wait_running(&topology, "web", 4);
}

#[test]
fn the_docker_runtime_pulls_an_image_it_lacks() {
    // Declared first, so it is dropped last: after the daemons removed
    // their containers.
    let engine = DockerEngine::start().unwrap();
    // The engine runs in this process's namespace: its registry on loopback.
    let port = 15_000 + (std::process::id() % 1000) as u16;
    let registry = Registry::start_on_loopback(port).unwrap();
    registry
        .push("pulled", "1", &versioned_image("docker"))
        .unwrap();
    let mut options = TopologyOptions::new("svk", 3);
    options.daemon_args = vec![
        "--runtime".into(),
        "docker".into(),
        "--docker-host".into(),
        engine.host(),
    ];
    let topology = Swarm::new().workers([1, 2]).start(&options).unwrap();
    let image = format!("127.0.0.1:{port}/pulled:1");
    // The managers reach no registry on their own loopback: no pinning.
    topology
        .daemon(0)
        .swarm_ok(&[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "-p",
            "8080:80",
            "--no-resolve-image",
            &image,
        ])
        .unwrap();
    wait_running(&topology, "web", 3);
    assert!(
        engine
            .docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
            .unwrap()
            .contains(&image),
        "the engine holds no {image}"
    );
    wait_until("the mesh answering from the pulled image", || {
        let seen = answers(&topology, 3);
        (seen == BTreeSet::from(["docker".to_owned()]))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
    // The engine runs the image's HEALTHCHECK; a failing one fails the task.
    registry
        .push("checked", "bad", &checked_image("exit 1"))
        .unwrap();
    topology
        .daemon(0)
        .swarm_ok(&[
            "service",
            "create",
            "--detach",
            "--name",
            "bad",
            "--no-resolve-image",
            &format!("127.0.0.1:{port}/checked:bad"),
        ])
        .unwrap();
    wait_until("the image's failing check failing a task of bad", || {
        let errors = task_errors(&topology, "bad");
        errors
            .iter()
            .any(|e| e.contains("unhealthy"))
            .then_some(())
            .ok_or(format!("{errors:?}"))
    });
    topology
        .daemon(0)
        .swarm_ok(&["service", "rm", "web", "bad"])
        .unwrap();
    wait_until("no task container left", || {
        let left = engine.task_containers().unwrap();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });
    let _ = engine.docker(&[
        "image",
        "rm",
        &image,
        &format!("127.0.0.1:{port}/checked:bad"),
    ]);
}

/// A docker config.json in `dir` holding `user:password` for `registry`.
fn docker_config(dir: &std::path::Path, registry: &str, user: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string(),
    )
    .unwrap();
}

fn task_errors(topology: &Topology, service: &str) -> Vec<String> {
    topology
        .daemon(0)
        .swarm_json(&["service", "ps", service])
        .unwrap()
        .iter()
        .filter_map(|r| r["Error"].as_str().map(str::to_owned))
        .filter(|e| !e.is_empty())
        .collect()
}

#[test]
fn a_tls_registry_with_a_login_pulls_with_its_ca_and_the_right_password_only() {
    let (topology, plain) = swarm_with_registry("swt");
    plain
        .push("private", "1", &versioned_image("secret"))
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path(), "198.18.0.100").unwrap();
    let htpasswd = htpasswd_file(certs.path(), "tester", "right-password").unwrap();
    let secure_addr = "198.18.0.100:5443";
    let _secure =
        Registry::start_secure(&plain, secure_addr.parse().unwrap(), &cert, &key, &htpasswd)
            .unwrap();
    // Every node trusts the registry's CA, as Docker's certs.d.
    for host in 0..3 {
        let dir = topology
            .daemon(host)
            .data_dir
            .join("certs.d")
            .join(secure_addr);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&ca, dir.join("ca.crt")).unwrap();
    }
    let image = format!("{secure_addr}/private:1");

    // No login: refused, in Docker's word.
    topology
        .daemon(0)
        .swarm_ok(&["service", "create", "--name", "anonymous", "-d", &image])
        .unwrap();
    wait_until("the anonymous task rejected as unauthorized", || {
        let errors = task_errors(&topology, "anonymous");
        errors
            .iter()
            .any(|e| e.contains("unauthorized"))
            .then_some(())
            .ok_or(format!("{errors:?}"))
    });

    // A wrong password: refused the same way.
    let wrong = certs.path().join("wrong");
    docker_config(&wrong, secure_addr, "tester", "wrong-password");
    let created = topology
        .daemon(0)
        .swarm_env(
            &[("DOCKER_CONFIG", wrong.to_str().unwrap())],
            &[
                "service",
                "create",
                "--name",
                "wrong",
                "-d",
                "--with-registry-auth",
                &image,
            ],
        )
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    wait_until("the wrong login's task rejected as unauthorized", || {
        let errors = task_errors(&topology, "wrong");
        errors
            .iter()
            .any(|e| e.contains("unauthorized"))
            .then_some(())
            .ok_or(format!("{errors:?}"))
    });

    // The right password: pulled over TLS, pinned, serving; and inspect
    // never shows the login.
    let right = certs.path().join("right");
    docker_config(&right, secure_addr, "tester", "right-password");
    let created = topology
        .daemon(0)
        .swarm_env(
            &[("DOCKER_CONFIG", right.to_str().unwrap())],
            &[
                "service",
                "create",
                "--name",
                "web",
                "-p",
                "8080:80",
                "--with-registry-auth",
                &image,
            ],
        )
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    wait_running(&topology, "web", 1);
    assert!(image_of(&topology, "web").starts_with(&format!("{image}@sha256:")));
    wait_until("the mesh answering from the private image", || {
        let seen = answers(&topology, 2);
        (seen == BTreeSet::from(["secret".to_owned()]))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
    let inspect = topology
        .daemon(0)
        .swarm_ok(&["service", "inspect", "web"])
        .unwrap();
    assert!(!inspect.contains("right-password"), "{inspect}");
}

#[test]
fn entrypoint_workdir_and_user_replace_the_images() {
    let (topology, registry) = swarm_with_registry("swt");
    registry
        .push("web", "1", &versioned_image("unused"))
        .unwrap();
    let image = format!("{REGISTRY}/web:1");
    topology
        .daemon(0)
        .swarm_ok(&[
            "service", "create", "--name", "who", "-p", "8080:8080",
            "--entrypoint", "/bin/sh", "--workdir", "/tmp", "--user", "1000:1000",
            &image, "-c",
            "mkdir -p www && { /bin/busybox id -u; pwd; } > www/index.html && exec /bin/busybox httpd -f -p 8080 -h /tmp/www",
        ])
        .unwrap();
    let inspect = topology
        .daemon(0)
        .swarm_inspect(&["service", "inspect", "who"])
        .unwrap();
    let container = &inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(container["Command"], serde_json::json!(["/bin/sh"]));
    assert_eq!(
        (container["Dir"].as_str(), container["User"].as_str()),
        (Some("/tmp"), Some("1000:1000"))
    );
    wait_running(&topology, "who", 1);
    wait_until("the task answering as uid 1000 in /tmp", || {
        let seen = answers(&topology, 1);
        (seen == BTreeSet::from(["1000\n/tmp".to_owned()]))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
}

/// busybox whose HEALTHCHECK passes only when `check` does, every second.
fn checked_image(check: &str) -> TestImage {
    TestImage {
        layers: vec![TestLayer::busybox()],
        config: serde_json::json!({
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh", "-c", "echo checked > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www"],
            "Healthcheck": {
                "Test": ["CMD-SHELL", check],
                "Interval": 1_000_000_000u64,
                "Timeout": 1_000_000_000u64,
                "Retries": 2,
            },
        }),
    }
}

#[test]
fn the_images_healthcheck_runs_unless_the_service_disables_it() {
    let (topology, registry) = swarm_with_registry("swh");
    registry
        .push("checked", "good", &checked_image("test -e /www/index.html"))
        .unwrap();
    registry
        .push("checked", "bad", &checked_image("exit 1"))
        .unwrap();
    let manager = topology.daemon(0);
    manager
        .swarm_ok(&[
            "service",
            "create",
            "--name",
            "good",
            &format!("{REGISTRY}/checked:good"),
        ])
        .unwrap();
    manager
        .swarm_ok(&[
            "service",
            "create",
            "--detach",
            "--name",
            "bad",
            &format!("{REGISTRY}/checked:bad"),
        ])
        .unwrap();
    manager
        .swarm_ok(&[
            "service",
            "create",
            "--name",
            "unchecked",
            "--no-healthcheck",
            &format!("{REGISTRY}/checked:bad"),
        ])
        .unwrap();
    wait_running(&topology, "good", 1);
    wait_until("the image's failing check failing a task of bad", || {
        let errors = task_errors(&topology, "bad");
        errors
            .iter()
            .any(|e| e.contains("unhealthy"))
            .then_some(())
            .ok_or(format!("{errors:?}"))
    });
    let inspect = manager
        .swarm_inspect(&["service", "inspect", "unchecked"])
        .unwrap();
    assert_eq!(
        inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"],
        serde_json::json!(["NONE"])
    );
    wait_running(&topology, "unchecked", 1);
    // Long past the bad check's two failures a second apart: the task
    // that runs without it is still the first one.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let tasks = manager.swarm_json(&["service", "ps", "unchecked"]).unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert!(
        tasks[0]["CurrentState"]
            .as_str()
            .unwrap_or("")
            .starts_with("Running"),
        "{tasks:#?}"
    );
    assert!(task_errors(&topology, "good").is_empty());
}

#[test]
fn an_image_index_runs_this_architectures_image_with_zstd_layers() {
    let (topology, registry) = swarm_with_registry("swi");
    let serving = |word: &str, zstd: bool| {
        let mut top = TestLayer {
            zstd,
            ..TestLayer::default()
        };
        top.files.insert(
            "www/index.html".into(),
            Some(format!("{word}\n").into_bytes()),
        );
        TestImage {
            layers: vec![TestLayer::busybox(), top],
            config: serde_json::json!({
                "Env": ["PATH=/bin"],
                "Cmd": ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
            }),
        }
    };
    let other_arch = if cfg!(target_arch = "x86_64") {
        "arm64"
    } else {
        "amd64"
    };
    let index = registry
        .push_index(
            "multi",
            "1",
            &serving("this-arch", true),
            &serving("other-arch", false),
            other_arch,
        )
        .unwrap();
    topology
        .daemon(0)
        .swarm_ok(&[
            "service",
            "create",
            "--name",
            "multi",
            "--replicas",
            "3",
            "-p",
            "8080:80",
            &format!("{REGISTRY}/multi:1"),
        ])
        .unwrap();
    // Pinned to the index, as Docker pins: every node picks its own.
    assert_eq!(
        image_of(&topology, "multi"),
        format!("{REGISTRY}/multi:1@{index}")
    );
    wait_running(&topology, "multi", 3);
    wait_until("the mesh answering from this architecture's image", || {
        let seen = answers(&topology, 3);
        (seen == BTreeSet::from(["this-arch".to_owned()]))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
}
