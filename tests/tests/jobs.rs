//! Job modes (`replicated-job`, `global-job`) on two nodes running a
//! busybox image from a real registry: tasks run to completion, at most
//! `--max-concurrent` at once, once per node for a global job, failed ones
//! restart per the policy, and `update --force` runs the job again; how
//! `service ls`, `ps` and `inspect` show them, and the Engine API's create.
//! Then the rolling update's `--update-max-failure-ratio` and the restart
//! policy's `--restart-window`.

use std::collections::BTreeSet;

use swarm_tests::{Daemon, busybox_swarm, docker_cli::http, is_running_row, wait_until};

fn tasks(daemon: &Daemon, service: &str) -> Vec<serde_json::Value> {
    daemon.swarm_json(&["service", "ps", service]).unwrap()
}

/// The tasks of `service` whose current state starts with `state`.
fn in_state(rows: &[serde_json::Value], state: &str) -> usize {
    rows.iter()
        .filter(|r| r["CurrentState"].as_str().unwrap_or("").starts_with(state))
        .count()
}

fn service_row(daemon: &Daemon, service: &str) -> serde_json::Value {
    daemon
        .swarm_json(&["service", "ls"])
        .unwrap()
        .into_iter()
        .find(|r| r["Name"] == service)
        .unwrap_or_else(|| panic!("no service {service} in service ls"))
}

fn inspect(daemon: &Daemon, service: &str) -> serde_json::Value {
    daemon
        .swarm_inspect(&["service", "inspect", service])
        .unwrap()[0]
        .clone()
}

#[test]
fn jobs_run_to_completion_once_restart_on_failure_and_rerun_on_update() {
    let (topology, _registry, image) = busybox_swarm("jobs");
    let h1 = topology.daemon(0);

    // Five completions, two at a time: never more than two run.
    h1.swarm_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "batch",
        "--mode",
        "replicated-job",
        "--replicas",
        "5",
        "--max-concurrent",
        "2",
        &image,
        "/bin/busybox",
        "sleep",
        "1",
    ])
    .unwrap();
    let mut most_running = 0;
    wait_until("five completed tasks of batch", || {
        let rows = tasks(h1, "batch");
        let running = in_state(&rows, "Running");
        most_running = most_running.max(running);
        assert!(running <= 2, "more than --max-concurrent run: {rows:?}");
        let complete = in_state(&rows, "Complete");
        (complete == 5).then_some(()).ok_or(format!("{rows:?}"))
    });
    assert_eq!(most_running, 2, "two tasks ran side by side");
    let rows = tasks(h1, "batch");
    assert_eq!(rows.len(), 5, "a completed task is not run again: {rows:?}");
    assert!(
        rows.iter().all(|r| r["DesiredState"] == "Complete"),
        "{rows:?}"
    );
    let row = service_row(h1, "batch");
    assert_eq!(row["Mode"], "replicated job");
    assert_eq!(row["Replicas"], "0/2 (5/5 completed)");
    let service = inspect(h1, "batch");
    assert_eq!(
        service["Spec"]["Mode"],
        serde_json::json!({"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}})
    );
    assert_eq!(
        service["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"],
        "on-failure"
    );
    let iteration = service["JobStatus"]["JobIteration"]["Index"]
        .as_u64()
        .unwrap();
    assert_eq!(service["ServiceStatus"]["CompletedTasks"], 5);

    // `update --force` runs the job again; without -d it returns once the
    // new iteration has completed.
    h1.swarm_ok(&["service", "update", "--force", "batch"])
        .unwrap();
    let rows = tasks(h1, "batch");
    assert_eq!(in_state(&rows, "Complete"), 10, "{rows:?}");
    assert_eq!(service_row(h1, "batch")["Replicas"], "0/2 (5/5 completed)");
    let service = inspect(h1, "batch");
    assert!(
        service["JobStatus"]["JobIteration"]["Index"]
            .as_u64()
            .unwrap()
            > iteration
    );
    // Scaling a replicated job sets its completions (Docker's rule).
    h1.swarm_ok(&["service", "scale", "-d", "batch=1"]).unwrap();
    assert_eq!(
        inspect(h1, "batch")["Spec"]["Mode"]["ReplicatedJob"]["TotalCompletions"],
        1
    );

    // A global job: once on each node; `create` waits for it to complete.
    h1.swarm_ok(&[
        "service",
        "create",
        "--name",
        "once",
        "--mode",
        "global-job",
        &image,
        "/bin/busybox",
        "true",
    ])
    .unwrap();
    let rows = tasks(h1, "once");
    assert_eq!(in_state(&rows, "Complete"), 2, "{rows:?}");
    let nodes: BTreeSet<&str> = rows.iter().filter_map(|r| r["Node"].as_str()).collect();
    assert_eq!(nodes.len(), 2, "one task per node: {rows:?}");
    let row = service_row(h1, "once");
    assert_eq!(row["Mode"], "global job");
    assert_eq!(row["Replicas"], "0/0 (2/2 completed)");
    assert_eq!(
        inspect(h1, "once")["Spec"]["Mode"],
        serde_json::json!({"GlobalJob": {}})
    );
    let refused = h1.swarm(&["service", "scale", "-d", "once=3"]).unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("scale can only be used with replicated or replicated-job mode")
    );

    // A job task that fails restarts on failure, up to the attempts.
    h1.swarm_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "flaky",
        "--mode",
        "replicated-job",
        "--restart-delay",
        "100ms",
        "--restart-max-attempts",
        "2",
        &image,
        "/bin/sh",
        "-c",
        "exit 3",
    ])
    .unwrap();
    wait_until("three failed runs of flaky", || {
        let rows = tasks(h1, "flaky");
        (in_state(&rows, "Failed") == 3)
            .then_some(())
            .ok_or(format!("{rows:?}"))
    });
    // The policy gave up: no fourth run comes.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let rows = tasks(h1, "flaky");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| !is_running_row(r)), "{rows:?}");
    assert_eq!(service_row(h1, "flaky")["Replicas"], "0/1 (0/1 completed)");

    // Update settings are refused for jobs, as Docker does.
    let refused = h1
        .swarm(&[
            "service",
            "update",
            "-d",
            "--update-parallelism",
            "2",
            "flaky",
        ])
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("update and rollback configuration is not supported for jobs")
    );

    // The Engine API takes a job as the docker CLI sends it.
    let socket = &h1.docker_socket;
    let spec = format!(
        r#"{{"Name":"api-job","TaskTemplate":{{"ContainerSpec":{{"Image":"{image}","Args":["/bin/busybox","true"]}}}},"Mode":{{"ReplicatedJob":{{"MaxConcurrent":1,"TotalCompletions":2}}}}}}"#
    );
    let created = http(socket, "POST", "/v1.50/services/create", Some(&spec)).unwrap();
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    wait_until("two completed tasks of api-job", || {
        let rows = tasks(h1, "api-job");
        (in_state(&rows, "Complete") == 2)
            .then_some(())
            .ok_or(format!("{rows:?}"))
    });
    let service = http(socket, "GET", "/v1.50/services/api-job", None)
        .unwrap()
        .json();
    assert_eq!(
        service["Spec"]["Mode"]["ReplicatedJob"]["TotalCompletions"],
        2
    );
    assert_eq!(service["JobStatus"]["JobIteration"]["Index"], 1);
}

/// The new tasks of `service` that failed, and its update's state.
fn update_outcome(daemon: &Daemon, service: &str) -> (String, usize, usize) {
    let rows = tasks(daemon, service);
    let failed = in_state(&rows, "Failed");
    let running = rows.iter().filter(|r| is_running_row(r)).count();
    let state = inspect(daemon, service)["UpdateStatus"]["State"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (state, failed, running)
}

#[test]
fn failure_ratio_lets_updates_past_failures_and_the_window_renews_restarts() {
    let (topology, _registry, image) = busybox_swarm("ratio");
    let h1 = topology.daemon(0);

    // Four tasks updated one by one to a command that fails at once: ratio
    // 0 pauses at the first failure, 0.5 tolerates two of four.
    for (service, ratio) in [("strict", "0"), ("lenient", "0.5")] {
        h1.swarm_ok(&[
            "service",
            "create",
            "--name",
            service,
            "--replicas",
            "4",
            "--update-max-failure-ratio",
            ratio,
            "--update-monitor",
            "3s",
            &image,
            "/bin/busybox",
            "sleep",
            "600",
        ])
        .unwrap();
    }
    for service in ["strict", "lenient"] {
        h1.swarm_ok(&[
            "service",
            "update",
            "-d",
            "--restart-condition",
            "none",
            "--args",
            "/bin/busybox false",
            service,
        ])
        .unwrap();
    }
    for (service, failures) in [("strict", 1), ("lenient", 3)] {
        wait_until(&format!("{service}'s update paused"), || {
            let outcome = update_outcome(h1, service);
            (outcome == ("paused".into(), failures, 4 - failures))
                .then_some(())
                .ok_or(format!("{outcome:?}"))
        });
    }
    let message = inspect(h1, "lenient")["UpdateStatus"]["Message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("update paused due to failure or early termination of task"),
        "{message}"
    );
    assert_eq!(
        inspect(h1, "lenient")["Spec"]["UpdateConfig"]["MaxFailureRatio"],
        0.5
    );

    // Runs of a second that fail, one restart allowed: without a window
    // that is all; with a window shorter than a run, no restart is recent
    // when a task fails, so the restarts go on.
    for (service, window) in [("capped", None), ("renewed", Some("500ms"))] {
        let mut args = vec![
            "service",
            "create",
            "-d",
            "--name",
            service,
            "--restart-delay",
            "0s",
            "--restart-max-attempts",
            "1",
        ];
        if let Some(window) = window {
            args.extend(["--restart-window", window]);
        }
        args.extend([image.as_str(), "/bin/sh", "-c", "sleep 1; exit 1"]);
        h1.swarm_ok(&args).unwrap();
    }
    wait_until("renewed restarted past its max attempts", || {
        let rows = tasks(h1, "renewed");
        (in_state(&rows, "Failed") >= 3)
            .then_some(())
            .ok_or(format!("{rows:?}"))
    });
    let rows = tasks(h1, "capped");
    assert_eq!(rows.len(), 2, "one run and one restart: {rows:?}");
    assert_eq!(
        inspect(h1, "renewed")["Spec"]["TaskTemplate"]["RestartPolicy"]["Window"],
        500_000_000
    );
}
