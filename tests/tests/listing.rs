//! Docker's listing flags on a two-node swarm: `-q`, `-f KEY=VALUE` with
//! each list's keys, `--format` Go templates (plain, `table`, `{{json .}}`),
//! `--no-trunc`, `node ps`, `node inspect self`/`--pretty`, `service
//! inspect --pretty`, and the refusals (an unknown filter key, a bad
//! template).

use std::collections::BTreeSet;

use swarm_tests::{Daemon, Registry, Swarm, TestImage, TestLayer, TopologyOptions, wait_until};

const REGISTRY: &str = "198.18.0.100:5000";

/// Output lines as a set (the order of a list is not what is checked).
fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// `swarm ARGS`, which must succeed, as a set of lines.
fn listed(daemon: &Daemon, args: &[&str]) -> BTreeSet<String> {
    lines(&daemon.swarm_ok(args).unwrap())
}

/// `swarm ARGS`, which must fail; its stderr.
fn refused(daemon: &Daemon, args: &[&str]) -> String {
    let output = daemon.swarm(args).unwrap();
    assert!(
        !output.status.success(),
        "`swarm {}` succeeded",
        args.join(" ")
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ids(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .map(|row| row["ID"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn lists_filter_quiet_template_and_pretty_print_as_docker() {
    let mut options = TopologyOptions::new("listing", 2);
    options.daemon_args = vec!["--insecure-registry".into(), REGISTRY.into()];
    let topology = Swarm::new().workers([1]).start(&options).unwrap();
    let registry =
        Registry::start(topology.client.netns.name(), REGISTRY.parse().unwrap()).unwrap();
    let image = TestImage {
        layers: vec![TestLayer::busybox()],
        config: serde_json::json!({"Env": ["PATH=/bin"]}),
    };
    registry.push("tools", "1", &image).unwrap();
    let image = format!("{REGISTRY}/tools:1");
    let h1 = topology.daemon(0);

    h1.swarm_ok(&["node", "update", "--label-add", "zone=east", "h2"])
        .unwrap();
    for (name, mode, tier) in [("web", "replicated", "front"), ("cache", "global", "back")] {
        let mut args = vec!["service", "create", "--name", name, "--mode", mode];
        if mode == "replicated" {
            args.extend(["--replicas", "2", "--replicas-max-per-node", "1"]);
        }
        let label = format!("tier={tier}");
        args.extend(["--label", &label, &image, "/bin/busybox", "sleep", "600"]);
        h1.swarm_ok(&args).unwrap();
    }
    wait_until("four running tasks", || {
        let rows = h1
            .swarm_json(&["node", "ps", "h1", "h2"])
            .map_err(|e| e.to_string())?;
        let running = rows
            .iter()
            .filter(|r| swarm_tests::is_running_row(r))
            .count();
        (running == 4).then_some(()).ok_or(format!("{rows:?}"))
    });
    for (name, label) in [("front-net", "purpose=test"), ("back-net", "purpose=other")] {
        h1.swarm_ok(&["network", "create", "--label", label, name])
            .unwrap();
    }
    let data = topology.workdir.path().join("data");
    std::fs::write(&data, "s3cret").unwrap();
    let data = data.to_str().unwrap();
    for kind in ["secret", "config"] {
        for (name, label) in [("db-pass", "kind=db"), ("api-key", "kind=api")] {
            h1.swarm_ok(&[kind, "create", "--label", label, name, data])
                .unwrap();
        }
    }

    // service ls: -q prints Docker's short IDs; each filter key narrows.
    let services = h1.swarm_json(&["service", "ls"]).unwrap();
    let short: BTreeSet<String> = ids(&services)
        .iter()
        .map(|id| id[..12].to_owned())
        .collect();
    assert_eq!(listed(h1, &["service", "ls", "-q"]), short);
    let web_id = services.iter().find(|r| r["Name"] == "web").unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    let names = |filters: &[&str]| {
        let mut args = vec!["service", "ls", "--format", "{{.Name}}"];
        for filter in filters {
            args.extend(["-f", filter]);
        }
        listed(h1, &args)
    };
    assert_eq!(names(&["name=we"]), set(&["web"]));
    assert_eq!(names(&["mode=global"]), set(&["cache"]));
    assert_eq!(names(&["label=tier=front"]), set(&["web"]));
    assert_eq!(names(&["label=tier"]), set(&["web", "cache"]));
    assert_eq!(names(&[&format!("id={}", &web_id[..6])]), set(&["web"]));
    assert_eq!(names(&["name=web", "name=cache"]), set(&["web", "cache"]));
    assert!(names(&["name=web", "mode=global"]).is_empty());
    let refusal = refused(h1, &["service", "ls", "-f", "colour=red"]);
    assert!(
        refusal.contains("invalid filter 'colour'") && refusal.contains("id, label, mode, name"),
        "{refusal}"
    );
    let refusal = refused(h1, &["service", "ls", "-f", "colour"]);
    assert!(refusal.contains("expected name=value"), "{refusal}");

    // --format: a table template has Docker's header row and alignment;
    // {{json .}} shows the formatter's fields; a bad template is refused.
    let table = h1
        .swarm_ok(&[
            "service",
            "ls",
            "-f",
            "name=web",
            "--format",
            r"table {{.Name}}\t{{.Mode}}",
        ])
        .unwrap();
    assert_eq!(table, "NAME      MODE\nweb       replicated\n");
    let json = h1
        .swarm_ok(&["service", "ls", "-f", "name=web", "--format", "{{json .}}"])
        .unwrap();
    let object: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(object["Name"], "web");
    assert_eq!(object["ID"], &web_id[..12]);
    assert_eq!(object["Replicas"], "2/2 (max 1 per node)");
    let keys: Vec<&String> = object.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ID", "Image", "Mode", "Name", "Ports", "Replicas"]);
    assert_eq!(
        listed(
            h1,
            &[
                "service",
                "ls",
                "-f",
                "name=web",
                "--format",
                "{{upper .Name}}:{{truncate .Mode 3}}"
            ]
        ),
        set(&["WEB:rep"])
    );
    let refusal = refused(h1, &["service", "ls", "--format", "{{.Name"]);
    assert!(
        refusal.contains("--format") && refusal.contains("template parsing error"),
        "{refusal}"
    );
    let refusal = refused(h1, &["service", "ls", "--format", "{{.Nope}}"]);
    assert!(refusal.contains("--format"), "{refusal}");

    // service ps: short task IDs unless --no-trunc; its filters.
    let tasks = h1.swarm_json(&["service", "ps", "web"]).unwrap();
    let full: BTreeSet<String> = ids(&tasks).into_iter().collect();
    let cut: BTreeSet<String> = full.iter().map(|id| id[..12].to_owned()).collect();
    assert_eq!(listed(h1, &["service", "ps", "-q", "web"]), cut);
    assert_eq!(
        listed(h1, &["service", "ps", "-q", "--no-trunc", "web"]),
        full
    );
    let table = h1
        .swarm_ok(&["service", "ps", "--no-trunc", "web"])
        .unwrap();
    assert!(full.iter().all(|id| table.contains(id.as_str())), "{table}");
    assert_eq!(
        listed(
            h1,
            &[
                "service",
                "ps",
                "-f",
                "desired-state=running",
                "--format",
                "{{.DesiredState}}",
                "web"
            ]
        ),
        set(&["Running"])
    );
    assert!(
        listed(
            h1,
            &["service", "ps", "-q", "-f", "desired-state=shutdown", "web"]
        )
        .is_empty()
    );
    assert_eq!(
        listed(
            h1,
            &[
                "service",
                "ps",
                "-f",
                "node=h2",
                "--format",
                "{{.Node}}",
                "web",
                "cache"
            ]
        ),
        set(&["h2"])
    );
    assert_eq!(
        listed(
            h1,
            &[
                "service",
                "ps",
                "-f",
                "name=cache",
                "--format",
                "{{.Node}}",
                "web",
                "cache"
            ]
        ),
        set(&["h1", "h2"])
    );
    let refusal = refused(h1, &["service", "ps", "-f", "mode=global", "web"]);
    assert!(refusal.contains("invalid filter 'mode'"), "{refusal}");

    // node ps: this node's tasks by default, or the nodes named.
    let mine = h1.swarm_json(&["node", "ps"]).unwrap();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(mine.iter().all(|r| r["Node"] == "h1"), "{mine:?}");
    assert_eq!(
        listed(
            h1,
            &[
                "node",
                "ps",
                "--format",
                "{{.Node}} {{.DesiredState}}",
                "h2"
            ]
        ),
        set(&["h2 Running"])
    );
    assert_eq!(
        listed(
            h1,
            &[
                "node",
                "ps",
                "-f",
                "name=cache",
                "--format",
                "{{.Node}}",
                "self",
                "h2"
            ]
        ),
        set(&["h1", "h2"])
    );
    assert_eq!(listed(h1, &["node", "ps", "-q", "self"]).len(), 2);

    // node ls: whole IDs with -q; role, name, labels, membership.
    let nodes = h1.swarm_json(&["node", "ls"]).unwrap();
    let node_ids: BTreeSet<String> = ids(&nodes).into_iter().collect();
    assert_eq!(listed(h1, &["node", "ls", "-q"]), node_ids);
    let hostnames = |filter: &str| {
        listed(
            h1,
            &["node", "ls", "-f", filter, "--format", "{{.Hostname}}"],
        )
    };
    assert_eq!(hostnames("role=worker"), set(&["h2"]));
    assert_eq!(hostnames("role=manager"), set(&["h1"]));
    assert_eq!(hostnames("node.label=zone=east"), set(&["h2"]));
    // `label` is engine labels (tests/tests/engine_labels.rs), as Docker's.
    assert!(hostnames("label=zone").is_empty());
    assert_eq!(hostnames("name=h1"), set(&["h1"]));
    assert_eq!(hostnames("membership=accepted"), set(&["h1", "h2"]));
    assert_eq!(
        listed(
            h1,
            &[
                "node",
                "ls",
                "--format",
                "{{.Hostname}} {{.Self}} {{.Status}}"
            ]
        ),
        set(&["h1 true Ready", "h2 false Ready"])
    );
    let table = h1.swarm_ok(&["node", "ls"]).unwrap();
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("ENGINE VERSION"), "{table}");
    assert!(refused(h1, &["node", "ls", "-f", "mode=x"]).contains("invalid filter 'mode'"));

    // node inspect: `self`, several nodes, and Docker's --pretty text.
    let me = h1.swarm_inspect(&["node", "inspect", "self"]).unwrap();
    assert_eq!(me[0]["Description"]["Hostname"], "h1");
    let both = h1
        .swarm_inspect(&["node", "inspect", "self", "h2"])
        .unwrap();
    assert_eq!(both.as_array().unwrap().len(), 2);
    assert_eq!(both[1]["Description"]["Hostname"], "h2");
    let pretty = h1.swarm_ok(&["node", "inspect", "--pretty", "h2"]).unwrap();
    let h2_id = both[1]["ID"].as_str().unwrap();
    assert!(
        pretty.starts_with(&format!("ID:\t\t\t{h2_id}\n")),
        "{pretty}"
    );
    assert!(pretty.contains("\nLabels:\n - zone=east\n"), "{pretty}");
    assert!(
        pretty.contains("\nHostname:              \th2\n"),
        "{pretty}"
    );
    assert!(pretty.contains("\n State:\t\t\tReady\n"), "{pretty}");
    assert!(!pretty.contains("Manager Status:"), "{pretty}");
    let pretty = h1
        .swarm_ok(&["node", "inspect", "--pretty", "self"])
        .unwrap();
    assert!(pretty.contains("\nManager Status:\n"), "{pretty}");
    assert!(pretty.contains("\n Leader:\t\tYes\n"), "{pretty}");

    // service inspect --pretty.
    let pretty = h1
        .swarm_ok(&["service", "inspect", "--pretty", "web"])
        .unwrap();
    assert!(
        pretty.starts_with(&format!("\nID:\t\t{web_id}\nName:\t\tweb\n")),
        "{pretty}"
    );
    assert!(pretty.contains("\nLabels:\n tier=front\n"), "{pretty}");
    assert!(
        pretty.contains("\nService Mode:\tReplicated\n Replicas:\t2\n"),
        "{pretty}"
    );
    assert!(
        pretty.contains(&format!("\n Image:\t\t{image}")),
        "{pretty}"
    );
    assert!(
        pretty.contains("\n Args:\t\t/bin/busybox sleep 600 \n"),
        "{pretty}"
    );
    assert!(
        pretty.contains("\n Max Replicas Per Node:   1\n"),
        "{pretty}"
    );

    // network ls: short IDs unless --no-trunc; its keys.
    let networks = h1.swarm_json(&["network", "ls"]).unwrap();
    let front = networks.iter().find(|r| r["Name"] == "front-net").unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    let network_names = |filter: &str| {
        listed(
            h1,
            &["network", "ls", "-f", filter, "--format", "{{.Name}}"],
        )
    };
    assert_eq!(network_names("label=purpose=test"), set(&["front-net"]));
    assert_eq!(network_names("name=back"), set(&["back-net"]));
    assert_eq!(
        network_names(&format!("id={}", &front[..5])),
        set(&["front-net"])
    );
    assert!(network_names("driver=bridge").is_empty());
    assert!(network_names("scope=swarm").is_superset(&set(&["front-net", "back-net"])));
    assert!(network_names("type=custom").contains("front-net"));
    let quiet = listed(h1, &["network", "ls", "-q", "-f", "name=front"]);
    assert_eq!(quiet, set(&[&front[..12]]));
    let whole = listed(
        h1,
        &["network", "ls", "-q", "--no-trunc", "-f", "name=front"],
    );
    assert_eq!(whole, set(&[&front]));
    assert_eq!(
        listed(
            h1,
            &[
                "network",
                "ls",
                "-f",
                "name=front",
                "--format",
                "{{.Labels}} {{.Driver}} {{.Internal}}"
            ]
        ),
        set(&["purpose=test overlay false"])
    );
    assert!(
        refused(h1, &["network", "ls", "-f", "colour=x"])
            .contains("driver, id, label, name, scope, type")
    );

    // secret and config ls: whole IDs with -q; id, label, name.
    for kind in ["secret", "config"] {
        let rows = h1.swarm_json(&[kind, "ls"]).unwrap();
        assert_eq!(
            listed(h1, &[kind, "ls", "-q"]),
            ids(&rows).into_iter().collect()
        );
        let names = |filter: &str| listed(h1, &[kind, "ls", "-f", filter, "--format", "{{.Name}}"]);
        assert_eq!(names("name=db"), set(&["db-pass"]));
        assert_eq!(names("label=kind=api"), set(&["api-key"]));
        assert_eq!(names("label=kind"), set(&["db-pass", "api-key"]));
        let table = h1
            .swarm_ok(&[
                kind,
                "ls",
                "-f",
                "name=api",
                "--format",
                r"table {{.Name}}\t{{.Labels}}",
            ])
            .unwrap();
        assert_eq!(table, "NAME      LABELS\napi-key   kind=api\n");
        assert!(refused(h1, &[kind, "ls", "-f", "driver=x"]).contains("invalid filter 'driver'"));
        // CREATED and UPDATED say how long ago, as Docker's table does.
        let ages = listed(
            h1,
            &[
                kind,
                "ls",
                "-f",
                "name=api",
                "--format",
                "{{.CreatedAt}}|{{.UpdatedAt}}",
            ],
        );
        let age = ages.iter().next().unwrap();
        assert!(
            age.ends_with(" ago") && age.split('|').all(|a| a.ends_with(" ago")),
            "{age}"
        );
    }

    // inspect -f: a Go template per object, `json` the array on one line;
    // refused with --pretty as Docker refuses it.
    assert_eq!(
        h1.swarm_ok(&[
            "service",
            "inspect",
            "-f",
            "{{.Spec.Name}} {{.Spec.Labels.tier}}",
            "web",
            "cache"
        ])
        .unwrap(),
        "web front\ncache back\n"
    );
    let one_line = h1
        .swarm_ok(&["service", "inspect", "--format", "json", "web"])
        .unwrap();
    assert_eq!(one_line.lines().count(), 1, "{one_line}");
    let parsed: serde_json::Value = serde_json::from_str(&one_line).unwrap();
    assert_eq!(parsed[0]["Spec"]["Name"], "web");
    assert_eq!(
        h1.swarm_ok(&["node", "inspect", "-f", "{{.Description.Hostname}}", "self"])
            .unwrap(),
        "h1\n"
    );
    assert_eq!(
        h1.swarm_ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Name}} {{.Labels.purpose}}",
            "front-net"
        ])
        .unwrap(),
        "front-net test\n"
    );
    for kind in ["secret", "config"] {
        assert_eq!(
            h1.swarm_ok(&[kind, "inspect", "-f", "{{.Spec.Name}}", "db-pass"])
                .unwrap(),
            "db-pass\n"
        );
    }
    assert!(
        refused(
            h1,
            &["node", "inspect", "--pretty", "-f", "{{.ID}}", "self"]
        )
        .contains("--format is incompatible with human friendly format")
    );
    assert!(refused(h1, &["service", "inspect", "-f", "{{.Spec", "web"]).contains("template"));

    // ps --no-resolve: service and node IDs where their names were.
    let h2_id = topology.daemon(1).node_id().unwrap();
    let resolved = listed(
        h1,
        &[
            "service",
            "ps",
            "-f",
            "node=h2",
            "--format",
            "{{.Name}} {{.Node}}",
            "cache",
        ],
    );
    let cache_id = h1
        .swarm_ok(&["service", "inspect", "-f", "{{.ID}}", "cache"])
        .unwrap();
    assert_eq!(resolved, set(&[&format!("cache.{h2_id} h2")]));
    let unresolved = listed(
        h1,
        &[
            "service",
            "ps",
            "--no-resolve",
            "-f",
            "node=h2",
            "--format",
            "{{.Name}} {{.Node}}",
            "cache",
        ],
    );
    assert_eq!(
        unresolved,
        set(&[&format!("{}.{h2_id} {h2_id}", cache_id.trim())])
    );

    // create and update -q: the ID alone, no progress, having waited.
    let created = h1
        .swarm(&[
            "service",
            "create",
            "-q",
            "--name",
            "quiet",
            &image,
            "/bin/busybox",
            "sleep",
            "600",
        ])
        .unwrap();
    assert!(created.status.success());
    assert!(
        created.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert_eq!(id.len(), 25, "{id}");
    let rows = h1.swarm_json(&["service", "ps", "quiet"]).unwrap();
    assert!(rows.iter().any(swarm_tests::is_running_row), "{rows:?}");
    let loud = h1
        .swarm(&["service", "update", "--env-add", "A=1", "quiet"])
        .unwrap();
    assert!(String::from_utf8_lossy(&loud.stderr).contains("overall progress"));
    let updated = h1
        .swarm(&["service", "update", "-q", "--env-add", "A=2", "quiet"])
        .unwrap();
    assert!(updated.status.success() && updated.stderr.is_empty());
}
