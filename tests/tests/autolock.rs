//! Autolock and the Raft store at rest: a manager's data dir holds no Raft
//! entry, secret or private key in clear; with autolock on, a manager
//! restarted from disk stays locked (serves nothing, says why) until it is
//! given the unlock key; a wrong key is refused; a rotated key reaches
//! every manager, and a manager that was down meanwhile still opens with
//! the old one. Through the swarm CLI and the docker CLI (Engine API).

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use swarm_tests::{
    Swarm, Topology, TopologyOptions,
    docker_cli::{DOCKER_28, DockerCli, http},
    swarm_bin, wait_until_within,
};

const PATIENCE: Duration = Duration::from_secs(30);
/// A node label value and a secret that must never be on disk in clear.
const LABEL_VALUE: &str = "rack-label-value-5e1f0c";
const SECRET_VALUE: &str = "secret-value-autolock-93ab71";
/// Docker's words for a locked manager, as the swarm CLI says them.
const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used.";

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && std::fs::read(&path)
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// A manager's cluster directory holds none of the known values, no PEM
/// private key and no clear Raft entry.
fn assert_nothing_in_clear(topology: &Topology, host: usize) {
    let dir = topology.daemon(host).data_dir.join("cluster");
    assert!(
        dir.join("raft/raft.redb").exists(),
        "no Raft store in {dir:?}"
    );
    let all = topology.daemon(host).data_dir.clone();
    for needle in [
        LABEL_VALUE.as_bytes(),
        SECRET_VALUE.as_bytes(),
        b"PRIVATE KEY-----",
        // Any Raft entry's JSON names its log ID.
        b"\"log_id\"",
    ] {
        let found = files_holding(&all, needle);
        assert!(
            found.is_empty(),
            "h{} holds {:?} in clear in {found:?}",
            host + 1,
            String::from_utf8_lossy(needle)
        );
    }
}

/// Runs the swarm CLI on `host`'s daemon with `input` on its stdin.
fn swarm_with_stdin(
    topology: &Topology,
    host: usize,
    args: &[&str],
    input: &str,
) -> std::process::Output {
    let mut child = Command::new(swarm_bin())
        .arg("--host")
        .arg(format!("unix://{}", topology.daemon(host).socket.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn unlock(topology: &Topology, host: usize, key: &str) -> Result<(), String> {
    let output = swarm_with_stdin(topology, host, &["unlock"], &format!("{key}\n"));
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn failure(topology: &Topology, host: usize, args: &[&str]) -> String {
    let output = topology.daemon(host).swarm(args).unwrap();
    assert!(!output.status.success(), "`swarm {args:?}` succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn local_state(topology: &Topology, host: usize) -> String {
    let info = topology.daemon(host).swarm_json(&["info"]).unwrap();
    info[0]["Swarm"]["LocalNodeState"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Restarts host `host`'s daemon on its data dir (SIGTERM, then start).
fn restart(topology: &mut Topology, host: usize) {
    topology.daemon_mut(host).stop().unwrap();
    topology.start_daemon(host).unwrap();
}

fn listens_on_2377(topology: &Topology, host: usize) -> bool {
    topology.hosts[host]
        .netns
        .exec("ss", &["-ltnH"])
        .unwrap()
        .contains(":2377")
}

fn key_in(output: &str) -> String {
    output
        .split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in {output:?}"))
        .to_owned()
}

#[test]
fn an_autolocked_manager_stays_locked_on_restart_until_given_its_key() {
    let mut topology = Swarm::new()
        .init_args(&["--autolock"])
        .workers([1])
        .patience(PATIENCE)
        .start(&TopologyOptions::new("alk", 2))
        .unwrap();
    let formed_key = {
        let out = topology.daemon(0).swarm_ok(&["unlock-key"]).unwrap();
        assert!(out.contains("swarm unlock"), "{out}");
        key_in(&out)
    };
    let quiet = topology.daemon(0).swarm_ok(&["unlock-key", "-q"]).unwrap();
    assert_eq!(quiet.trim(), formed_key);
    let docker = DockerCli::new(DOCKER_28, topology.daemon(0)).unwrap();
    assert_eq!(
        docker.ok(&["swarm", "unlock-key", "-q"]).unwrap().trim(),
        formed_key,
        "the docker CLI reads the same key"
    );
    let swarm = http(&topology.daemon(0).docker_socket, "GET", "/swarm", None).unwrap();
    assert_eq!(
        swarm.json()["Spec"]["EncryptionConfig"]["AutoLockManagers"],
        true,
        "{swarm:?}"
    );
    // `swarm ca`: the root certificate, as `GET /swarm` has it; rotation refused by name.
    let root = topology.daemon(0).swarm_ok(&["ca", "-q"]).unwrap();
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
    assert_eq!(
        root.trim(),
        swarm.json()["TLSInfo"]["TrustRoot"]
            .as_str()
            .unwrap()
            .trim()
    );
    let err = failure(&topology, 0, &["ca", "--rotate"]);
    assert!(err.contains("--rotate is not supported by swarm"), "{err}");
    let err = docker.fails(&["swarm", "ca", "--rotate", "-d"]).unwrap();
    assert!(err.contains("rotating the root CA"), "{err}");

    // What must never be in clear: a node label and a secret.
    topology
        .daemon(0)
        .swarm_ok(&[
            "node",
            "update",
            "--label-add",
            &format!("rack={LABEL_VALUE}"),
            "h1",
        ])
        .unwrap();
    let secret_file = topology.host_dir(0).join("secret.txt");
    std::fs::write(&secret_file, SECRET_VALUE).unwrap();
    topology
        .daemon(0)
        .swarm_ok(&[
            "secret",
            "create",
            "autolock-secret",
            secret_file.to_str().unwrap(),
        ])
        .unwrap();
    std::fs::remove_file(&secret_file).unwrap();
    assert_nothing_in_clear(&topology, 0);

    // Restarted from disk: locked, serving nothing, saying why everywhere.
    restart(&mut topology, 0);
    assert_eq!(local_state(&topology, 0), "locked");
    let info = topology.daemon(0).swarm_ok(&["info"]).unwrap();
    assert!(
        info.contains("Swarm: locked") && info.contains(LOCKED),
        "{info}"
    );
    for args in [
        &["node", "ls"][..],
        &["service", "ls"],
        &["secret", "ls"],
        &["join-token", "worker"],
        &["unlock-key"],
        &["update", "--autolock=false"],
    ] {
        let err = failure(&topology, 0, args);
        assert!(err.contains(LOCKED), "{args:?}: {err}");
    }
    let err = docker.fails(&["node", "ls"]).unwrap();
    assert!(
        err.contains(LOCKED) && err.contains("\"docker swarm unlock\""),
        "{err}"
    );
    assert!(
        !listens_on_2377(&topology, 0),
        "a locked manager serves its API"
    );
    assert_nothing_in_clear(&topology, 0);

    // A malformed key and a wrong one are refused, as Docker refuses them.
    let err = unlock(&topology, 0, "not-a-key").unwrap_err();
    assert!(err.contains("invalid key string"), "{err}");
    let wrong = format!("SWMKEY-1-{}", "A".repeat(43));
    let err = unlock(&topology, 0, &wrong).unwrap_err();
    assert!(err.contains("invalid key provided"), "{err}");
    assert_eq!(local_state(&topology, 0), "locked");

    // The right key, through the docker CLI: everything is back.
    docker
        .ok_with_stdin(&["swarm", "unlock"], format!("{formed_key}\n").as_bytes())
        .unwrap();
    assert_eq!(local_state(&topology, 0), "active");
    wait_until_within("the manager serves its API again", PATIENCE, || {
        listens_on_2377(&topology, 0)
            .then_some(())
            .ok_or("not listening on 2377".into())
    });
    let node = topology
        .daemon(0)
        .swarm_inspect(&["node", "inspect", "h1"])
        .unwrap();
    assert_eq!(node[0]["Spec"]["Labels"]["rack"], LABEL_VALUE, "{node}");
    let secrets = topology.daemon(0).swarm_ok(&["secret", "ls"]).unwrap();
    assert!(secrets.contains("autolock-secret"), "{secrets}");
    wait_until_within("h2 is Ready under the unlocked manager", PATIENCE, || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["node", "ls"])
            .map_err(|e| e.to_string())?;
        rows.iter()
            .any(|r| r["Hostname"] == "h2" && r["Status"] == "Ready")
            .then_some(())
            .ok_or(format!("{rows:?}"))
    });
    let err = unlock(&topology, 0, &formed_key).unwrap_err();
    assert!(err.contains("swarm is not locked"), "{err}");
    // A worker's keys are not locked, as in Docker.
    restart(&mut topology, 1);
    assert_eq!(local_state(&topology, 1), "active");

    // Rotated: the old key no longer opens this manager, the new one does.
    let rotated = topology
        .daemon(0)
        .swarm_ok(&["unlock-key", "--rotate"])
        .unwrap();
    assert!(
        rotated.contains("Successfully rotated manager unlock key."),
        "{rotated}"
    );
    let new_key = key_in(&rotated);
    assert_ne!(new_key, formed_key);
    restart(&mut topology, 0);
    assert_eq!(local_state(&topology, 0), "locked");
    let err = unlock(&topology, 0, &formed_key).unwrap_err();
    assert!(err.contains("invalid key provided"), "{err}");
    unlock(&topology, 0, &new_key).unwrap();
    assert_nothing_in_clear(&topology, 0);

    // Autolock off: the keys are written in clear again and a restart
    // needs no key.
    let out = topology
        .daemon(0)
        .swarm_ok(&["update", "--autolock=false"])
        .unwrap();
    assert!(out.contains("Swarm updated."), "{out}");
    let err = failure(&topology, 0, &["unlock-key"]);
    assert!(err.contains("no unlock key is set"), "{err}");
    restart(&mut topology, 0);
    assert_eq!(local_state(&topology, 0), "active");
    // Without autolock the Raft store is still sealed: only the keys are in clear.
    let data = topology.daemon(0).data_dir.clone();
    for needle in [LABEL_VALUE, SECRET_VALUE, "\"log_id\""] {
        let found = files_holding(&data, needle.as_bytes());
        assert!(found.is_empty(), "{needle} in clear in {found:?}");
    }
    // On again through `update`: a new key is printed and locks the next start.
    let out = topology
        .daemon(0)
        .swarm_ok(&["update", "--autolock=true"])
        .unwrap();
    let again = key_in(&out);
    restart(&mut topology, 0);
    assert_eq!(local_state(&topology, 0), "locked");
    unlock(&topology, 0, &again).unwrap();
    assert_eq!(local_state(&topology, 0), "active");
}

#[test]
fn a_rotated_unlock_key_reaches_every_manager_and_the_old_one_opens_one_that_was_down() {
    let mut topology = Swarm::new()
        .init_args(&["--autolock"])
        .managers([1, 2])
        .patience(PATIENCE)
        .start(&TopologyOptions::new("alr", 3))
        .unwrap();
    let old_key = topology
        .daemon(0)
        .swarm_ok(&["unlock-key", "-q"])
        .unwrap()
        .trim()
        .to_owned();
    topology
        .daemon(0)
        .swarm_ok(&[
            "node",
            "update",
            "--label-add",
            &format!("rack={LABEL_VALUE}"),
            "h2",
        ])
        .unwrap();
    // Every manager seals its keys under the key once it has the store.
    for host in 0..3 {
        wait_until_within(&format!("h{} sealed its keys", host + 1), PATIENCE, || {
            let key = std::fs::read(topology.daemon(host).data_dir.join("cluster/node-key.pem"))
                .map_err(|e| e.to_string())?;
            (!key.windows(11).any(|w| w == b"PRIVATE KEY"))
                .then_some(())
                .ok_or("node-key.pem is in clear".into())
        });
        assert_nothing_in_clear(&topology, host);
    }

    // h3 is down while the key rotates through the Engine API.
    topology.daemon_mut(2).stop().unwrap();
    let docker = DockerCli::new(DOCKER_28, topology.daemon(0)).unwrap();
    let out = docker.ok(&["swarm", "unlock-key", "--rotate"]).unwrap();
    assert!(
        out.contains("Successfully rotated manager unlock key."),
        "{out}"
    );
    let new_key = key_in(&out);
    assert_ne!(new_key, old_key);

    // h2 was up: it takes the new key; the old one no longer opens it.
    wait_until_within("h2 resealed under the new key", PATIENCE, || {
        // Each manager reseals within its next 1 s tick.
        std::thread::sleep(Duration::from_secs(2));
        restart(&mut topology, 1);
        match unlock(&topology, 1, &old_key) {
            Err(e) if e.contains("invalid key provided") => Ok(()),
            Err(e) => Err(e),
            // Not resealed yet: it opened with the old key; try again.
            Ok(()) => Err("h2 still opened with the old key".into()),
        }
    });
    unlock(&topology, 1, &new_key).unwrap();

    // h3 was down: its disk is under the old key, which still opens it.
    topology.start_daemon(2).unwrap();
    assert_eq!(local_state(&topology, 2), "locked");
    let err = unlock(&topology, 2, &new_key).unwrap_err();
    assert!(err.contains("invalid key provided"), "{err}");
    unlock(&topology, 2, &old_key).unwrap();
    wait_until_within("h3 caught up with the label", PATIENCE, || {
        let node = topology
            .daemon(2)
            .swarm_inspect(&["node", "inspect", "h2"])
            .map_err(|e| e.to_string())?;
        (node[0]["Spec"]["Labels"]["rack"] == LABEL_VALUE)
            .then_some(())
            .ok_or(format!("{node}"))
    });
    // Once it has applied the rotation, h3 too is under the new key only.
    wait_until_within("h3 resealed under the new key", PATIENCE, || {
        std::thread::sleep(Duration::from_secs(2));
        restart(&mut topology, 2);
        match unlock(&topology, 2, &old_key) {
            Err(e) if e.contains("invalid key provided") => Ok(()),
            Err(e) => Err(e),
            Ok(()) => Err("h3 still opened with the old key".into()),
        }
    });
    unlock(&topology, 2, &new_key).unwrap();
    for host in 0..3 {
        assert_nothing_in_clear(&topology, host);
    }
}
