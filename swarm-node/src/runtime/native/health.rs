//! Health checks of native tasks: one thread per checked task runs the
//! check command inside the task (its namespaces and root, through
//! `nsenter` on the task's init) every interval, and keeps the verdict.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{debug, info};

use super::super::{Health, HealthCheck};
use crate::lock::Locked as _;

/// How often a checker looks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(100);

#[derive(Default)]
pub(super) struct HealthChecks {
    watched: Mutex<HashMap<String, Watch>>,
}

/// What a running task's health is known by.
enum Watch {
    Checker(Arc<Checker>),
    /// Neither its spec nor its image has a check.
    Unchecked,
}

struct Checker {
    verdict: Mutex<Health>,
    stop: AtomicBool,
}

impl HealthChecks {
    /// The verdict on `task_id`, whose init's PID is in `init_pid_file`;
    /// on the first call asks `find_check` for its check and starts
    /// running it. `None`: the task has no check.
    pub(super) fn verdict(
        &self,
        task_id: &str,
        find_check: impl FnOnce() -> Option<HealthCheck>,
        init_pid_file: PathBuf,
    ) -> Option<Health> {
        let mut watched = self.lock();
        match watched.get(task_id) {
            Some(Watch::Checker(checker)) => return Some(*checker.verdict.locked()),
            Some(Watch::Unchecked) => return None,
            None => {}
        }
        let Some(check) = find_check() else {
            watched.insert(task_id.to_owned(), Watch::Unchecked);
            return None;
        };
        let checker = Arc::new(Checker {
            verdict: Mutex::new(Health::Starting),
            stop: AtomicBool::new(false),
        });
        watched.insert(task_id.to_owned(), Watch::Checker(checker.clone()));
        let task = task_id.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("health-{}", &task_id[..task_id.len().min(8)]))
            .spawn(move || run(&checker, &task, &check, &init_pid_file));
        if let Err(err) = spawned {
            debug!(task = task_id, %err, "cannot start a health-check thread");
            watched.remove(task_id);
        }
        Some(Health::Starting)
    }

    /// Stops checking `task_id` (it stopped, or is removed).
    pub(super) fn forget(&self, task_id: &str) {
        if let Some(Watch::Checker(checker)) = self.lock().remove(task_id) {
            checker.stop.store(true, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watch>> {
        self.watched.locked()
    }
}

fn run(checker: &Checker, task: &str, check: &HealthCheck, init_pid_file: &PathBuf) {
    let started = Instant::now();
    let start_period = Duration::from_millis(check.start_period_millis);
    let mut failures = 0;
    loop {
        let next = Instant::now() + Duration::from_millis(check.interval_millis);
        while Instant::now() < next {
            if checker.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(STOP_POLL.min(next.saturating_duration_since(Instant::now())));
        }
        let Some(init) = std::fs::read_to_string(init_pid_file)
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let passed = probe(
            init,
            &check.command,
            Duration::from_millis(check.timeout_millis),
        );
        let mut verdict = checker.verdict.locked();
        if passed {
            failures = 0;
            if *verdict != Health::Healthy {
                info!(task, "health check passed: healthy");
            }
            *verdict = Health::Healthy;
        } else if *verdict == Health::Starting && started.elapsed() < start_period {
            // Still starting up: failures do not count yet.
        } else {
            failures += 1;
            debug!(task, failures, "health check failed");
            if failures >= check.retries.max(1) {
                if *verdict != Health::Unhealthy {
                    info!(task, failures, "health check failed: unhealthy");
                }
                *verdict = Health::Unhealthy;
            }
        }
    }
}

/// Runs `sh -c COMMAND` in the namespaces and root of process `init`;
/// true when it exits 0 within `timeout`.
fn probe(init: i32, command: &str, timeout: Duration) -> bool {
    let child = Command::new("nsenter")
        .args(["--target", &init.to_string()])
        .args([
            "--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd",
        ])
        .args(["--", "/bin/sh", "-c", command])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}
