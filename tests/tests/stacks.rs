//! `swarm stack`: a compose file of the kind users write (web, api with a
//! secret, a config and a volume, a global agent, two networks, a
//! constraint) deployed on three nodes from a real registry; services
//! reach each other by short name; redeploy updates in place; prune, rm;
//! a broken file changes nothing.

use std::{collections::BTreeSet, net::SocketAddr, path::Path};

use swarm_tests::{
    Registry, Swarm, TestImage, TestLayer, Topology, TopologyOptions, resolve_in_task,
    servers::http_get, wait_until,
};

const REGISTRY: &str = "198.18.0.100:5000";

const COMPOSE: &str = r#"
version: "3.8"
x-image: &image ${REGISTRY}/tools:1
services:
  web:
    image: ${REGISTRY}/tools:${WEB_TAG:-1}
    command: ["/bin/sh", "-c", "mkdir -p /www && echo web > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www"]
    ports: ["8080:80"]
    networks: [front]
    deploy:
      replicas: ${WEB_REPLICAS}
  api:
    image: *image
    command: /bin/sh -c 'cat /run/secrets/db_password /etc/app.conf > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www'
    networks:
      front:
        aliases: [backend]
      back: {}
    secrets: [db_password]
    configs:
      - source: app_conf
        target: /etc/app.conf
    volumes:
      - data:/srv
      - type: tmpfs
        target: /www
    deploy:
      placement:
        constraints: [node.role==worker]
  agent:
    image: *image
    command: /bin/busybox sleep 100000
    build: ./agent
    deploy:
      mode: global
networks:
  front:
  back:
secrets:
  db_password:
    file: ./db_password.txt
configs:
  app_conf:
    file: ./app.conf
volumes:
  data:
"#;

fn deploy(topology: &Topology, dir: &Path, file: &str, extra: &[&str]) -> std::process::Output {
    let compose = dir.join(file).display().to_string();
    let mut args = vec!["stack", "deploy", "-c", compose.as_str()];
    args.extend_from_slice(extra);
    args.push("app");
    topology
        .daemon(0)
        .swarm_env(&[("REGISTRY", REGISTRY)], &args)
        .unwrap()
}

fn running(topology: &Topology, service: &str) -> Vec<String> {
    topology
        .daemon(0)
        .swarm_json(&["service", "ps", service])
        .unwrap()
        .into_iter()
        .filter(|r| {
            r["DesiredState"] == "Running"
                && r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Running")
        })
        .filter_map(|r| r["ID"].as_str().map(str::to_owned))
        .collect()
}

fn wait_running(topology: &Topology, service: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    wait_until(&format!("{count} tasks of {service} running"), || {
        ids = running(topology, service);
        (ids.len() == count).then_some(()).ok_or(format!("{ids:?}"))
    });
    ids
}

fn service_id(topology: &Topology, service: &str) -> String {
    topology
        .daemon(0)
        .swarm_inspect(&["service", "inspect", service])
        .unwrap()[0]["ID"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_compose_stack_deploys_updates_in_place_prunes_and_goes() {
    let mut options = TopologyOptions::new("swst", 3);
    options.daemon_args = vec!["--insecure-registry".into(), REGISTRY.into()];
    let topology = Swarm::new().workers([1, 2]).start(&options).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compose.yml"), COMPOSE).unwrap();
    std::fs::write(dir.path().join("db_password.txt"), "stack-secret\n").unwrap();
    std::fs::write(dir.path().join("app.conf"), "mode=stack\n").unwrap();
    // The environment wins over the .env beside the file (redeploy below).
    std::fs::write(dir.path().join(".env"), "WEB_REPLICAS=2\n").unwrap();

    // A broken file changes nothing, and says where it is broken.
    std::fs::write(
        dir.path().join("broken.yml"),
        "services:\n  web:\n    image: x\n    deploy:\n      replicas: lots\n",
    )
    .unwrap();
    let broken = deploy(&topology, dir.path(), "broken.yml", &[]);
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(!broken.status.success());
    assert!(
        err.contains("broken.yml: line 5: services.web.deploy.replicas"),
        "{err}"
    );
    assert!(
        topology
            .daemon(0)
            .swarm_json(&["service", "ls"])
            .unwrap()
            .is_empty()
    );

    let first = deploy(&topology, dir.path(), "compose.yml", &[]);
    let (out, err) = (
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr),
    );
    assert!(first.status.success(), "{out}{err}");
    assert!(err.contains("Ignoring unsupported options: build"), "{err}");
    for line in [
        "Creating network app_front",
        "Creating network app_back",
        "Creating secret app_db_password",
        "Creating config app_app_conf",
        "Creating service app_web",
        "Creating service app_api",
        "Creating service app_agent",
    ] {
        assert!(out.contains(line), "{line:?} missing from: {out}");
    }
    wait_running(&topology, "app_web", 2);
    let api_tasks = wait_running(&topology, "app_api", 1);
    wait_running(&topology, "app_agent", 3);
    let stacks = topology.daemon(0).swarm_json(&["stack", "ls"]).unwrap();
    assert_eq!(stacks, [serde_json::json!({"Name": "app", "Services": 3})]);
    let ps = topology
        .daemon(0)
        .swarm_json(&["stack", "ps", "app"])
        .unwrap();
    assert!(ps.len() >= 6, "{ps:?}");

    // From a web task, api answers by its short name and its alias, with
    // its secret and config.
    let web_task = running(&topology, "app_web")[0].clone();
    for name in ["api", "backend"] {
        wait_until(&format!("{name} answering from a web task"), || {
            let vips = resolve_in_task(&web_task, name);
            let Some(vip) = vips.iter().next() else {
                return Err("no address".into());
            };
            let target = SocketAddr::new(vip.parse().map_err(|e| format!("{e}"))?, 80);
            let answer =
                http_get(&format!("swarm-{web_task}"), target).map_err(|e| e.to_string())?;
            (answer.contains("stack-secret") && answer.contains("mode=stack"))
                .then_some(())
                .ok_or(answer)
        });
    }

    // Redeploy with 3 web replicas: the same service, api untouched.
    let web_id = service_id(&topology, "app_web");
    let again = topology
        .daemon(0)
        .swarm_env(
            &[
                ("REGISTRY", REGISTRY),
                ("WEB_REPLICAS", "3"),
                ("WEB_TAG", "2"),
            ],
            &[
                "stack",
                "deploy",
                "-c",
                &dir.path().join("compose.yml").display().to_string(),
                "app",
            ],
        )
        .unwrap();
    assert!(again.status.success(), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("Updating service app_web"));
    wait_running(&topology, "app_web", 3);
    assert_eq!(service_id(&topology, "app_web"), web_id);
    let image = topology
        .daemon(0)
        .swarm_inspect(&["service", "inspect", "app_web"])
        .unwrap()[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        image.starts_with(&format!("{REGISTRY}/tools:2@sha256:")),
        "{image}"
    );
    wait_until("every web task on the new image", || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", "app_web"])
            .unwrap();
        let current: Vec<_> = rows
            .iter()
            .filter(|r| r["DesiredState"] == "Running")
            .filter(|r| r["Image"].as_str().unwrap_or("").contains("tools:2@"))
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Running")
            })
            .collect();
        (current.len() == 3)
            .then_some(())
            .ok_or(format!("{rows:?}"))
    });
    assert_eq!(
        running(&topology, "app_api"),
        api_tasks,
        "api was restarted"
    );

    // Prune: a file without the agent removes it.
    let without_agent = COMPOSE.replace("  agent:\n    image: *image\n    command: /bin/busybox sleep 100000\n    build: ./agent\n    deploy:\n      mode: global\n", "");
    std::fs::write(dir.path().join("smaller.yml"), without_agent).unwrap();
    let pruned = deploy(&topology, dir.path(), "smaller.yml", &["--prune"]);
    assert!(
        String::from_utf8_lossy(&pruned.stdout).contains("Removing service app_agent"),
        "{pruned:?}"
    );
    let names: BTreeSet<String> = topology
        .daemon(0)
        .swarm_json(&["stack", "services", "app"])
        .unwrap()
        .iter()
        .filter_map(|r| r["Name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["app_api".to_owned(), "app_web".to_owned()])
    );

    // rm: services, networks, secret and config of the stack, nothing else.
    topology
        .daemon(0)
        .swarm_ok(&["network", "create", "-d", "overlay", "outside"])
        .unwrap();
    topology
        .daemon(0)
        .swarm_ok(&["stack", "rm", "app"])
        .unwrap();
    assert!(
        topology
            .daemon(0)
            .swarm_json(&["service", "ls"])
            .unwrap()
            .is_empty()
    );
    assert!(
        topology
            .daemon(0)
            .swarm_json(&["secret", "ls"])
            .unwrap()
            .is_empty()
    );
    assert!(
        topology
            .daemon(0)
            .swarm_json(&["config", "ls"])
            .unwrap()
            .is_empty()
    );
    let networks: BTreeSet<String> = topology
        .daemon(0)
        .swarm_json(&["network", "ls"])
        .unwrap()
        .iter()
        .filter_map(|r| r["Name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        networks,
        BTreeSet::from(["ingress".to_owned(), "outside".to_owned()])
    );
}
