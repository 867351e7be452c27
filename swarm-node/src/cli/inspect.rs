//! `node inspect --pretty` and `service inspect --pretty`: Docker's
//! human-readable layout (its templates' lines, tabs included) of the
//! Docker-shaped JSON the daemon answers, for the fields swarm has.

use std::fmt::Write as _;

use serde_json::Value;

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Docker's `PrettyPrint`: the first letter upper-cased.
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// go-units' `BytesSize`: binary units, four significant digits.
fn bytes_size(bytes: f64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = bytes;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{}{}", significant(size, 4), UNITS[unit])
}

/// Go's `%.Ng` for values below 10^N: N significant digits, no trailing zeros.
fn significant(value: f64, digits: i32) -> String {
    let integer_digits = if value < 1.0 {
        1
    } else {
        value.log10().floor() as i32 + 1
    };
    let decimals = (digits - integer_digits).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Go's `time.Duration` text (`5s`, `1m30s`, `500ms`) of nanoseconds.
fn go_duration(nanos: u64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = match nanos {
            n if n < 1_000 => return format!("{n}ns"),
            n if n < 1_000_000 => ("µs", 1_000.0),
            _ => ("ms", 1_000_000.0),
        };
        return format!("{}{unit}", trimmed(nanos as f64 / scale));
    }
    let secs = nanos as f64 / 1e9;
    let hours = (secs / 3600.0).floor();
    let minutes = ((secs - hours * 3600.0) / 60.0).floor();
    let seconds = secs - hours * 3600.0 - minutes * 60.0;
    let mut out = String::new();
    if hours > 0.0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0.0 || minutes > 0.0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{}s", trimmed(seconds));
    out
}

fn trimmed(value: f64) -> String {
    let text = format!("{value:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn labels(out: &mut String, labels: &Value, prefix: &str) {
    let Some(map) = labels.as_object().filter(|m| !m.is_empty()) else {
        return;
    };
    out.push_str("\nLabels:");
    for (key, value) in map {
        let value = text(value);
        if value.is_empty() {
            let _ = write!(out, "\n{prefix}{key}");
        } else {
            let _ = write!(out, "\n{prefix}{key}={value}");
        }
    }
}

/// Docker's `node inspect --pretty` of each node.
pub fn pretty_nodes(nodes: &[Value]) -> String {
    let mut out = String::new();
    for node in nodes {
        let _ = write!(out, "ID:\t\t\t{}", text(&node["ID"]));
        if let Some(name) = node["Spec"]["Name"].as_str().filter(|n| !n.is_empty()) {
            let _ = write!(out, "\nName:\t\t\t{name}");
        }
        labels(&mut out, &node["Spec"]["Labels"], " - ");
        let _ = write!(
            out,
            "\nHostname:              \t{}",
            text(&node["Description"]["Hostname"])
        );
        if let Some(created) = node["CreatedAt"].as_str() {
            let _ = write!(out, "\nJoined at:             \t{created}");
        }
        let status = &node["Status"];
        let _ = write!(
            out,
            "\nStatus:\n State:\t\t\t{}",
            capitalized(text(&status["State"]))
        );
        if let Some(message) = status["Message"].as_str().filter(|m| !m.is_empty()) {
            let _ = write!(out, "\n Message:              \t{}", capitalized(message));
        }
        let _ = write!(
            out,
            "\n Availability:         \t{}",
            capitalized(text(&node["Spec"]["Availability"]))
        );
        if let Some(addr) = status["Addr"].as_str().filter(|a| !a.is_empty()) {
            let _ = write!(out, "\n Address:\t\t{addr}");
        }
        let manager = &node["ManagerStatus"];
        if manager.is_object() {
            let leader = if manager["Leader"].as_bool() == Some(true) {
                "Yes"
            } else {
                "No"
            };
            let _ = write!(
                out,
                "\nManager Status:\n Address:\t\t{}\n Raft Status:\t\t{}\n Leader:\t\t{leader}",
                text(&manager["Addr"]),
                capitalized(text(&manager["Reachability"]))
            );
        }
        let description = &node["Description"];
        let _ = write!(
            out,
            "\nPlatform:\n Operating System:\t{}\n Architecture:\t\t{}",
            text(&description["Platform"]["OS"]),
            text(&description["Platform"]["Architecture"])
        );
        let cpus = description["Resources"]["NanoCPUs"].as_u64().unwrap_or(0) / 1_000_000_000;
        let memory = description["Resources"]["MemoryBytes"]
            .as_u64()
            .unwrap_or(0);
        let memory = if memory == 0 {
            String::new()
        } else {
            bytes_size(memory as f64)
        };
        let _ = write!(
            out,
            "\nResources:\n CPUs:\t\t\t{cpus}\n Memory:\t\t{memory}"
        );
        let _ = write!(
            out,
            "\nEngine Version:\t\t{}",
            text(&description["Engine"]["EngineVersion"])
        );
        if let Some(labels) = description["Engine"]["Labels"]
            .as_object()
            .filter(|l| !l.is_empty())
        {
            out.push_str("\nEngine Labels:");
            for (key, value) in labels {
                match value.as_str().unwrap_or_default() {
                    "" => _ = write!(out, "\n - {key}"),
                    value => _ = write!(out, "\n - {key}={value}"),
                }
            }
        }
        out.push('\n');
    }
    out
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Docker's update or rollback config block.
fn change_config(out: &mut String, title: &str, order_word: &str, config: &Value) {
    if !config.is_object() {
        return;
    }
    let _ = write!(
        out,
        "\n{title}:\n Parallelism:\t{}",
        config["Parallelism"].as_u64().unwrap_or(0)
    );
    let delay = config["Delay"].as_u64().unwrap_or(0);
    if delay > 0 {
        let _ = write!(out, "\n Delay:\t\t{}", go_duration(delay));
    }
    let _ = write!(out, "\n On failure:\t{}", text(&config["FailureAction"]));
    let monitor = config["Monitor"].as_u64().unwrap_or(0);
    if monitor > 0 {
        let _ = write!(out, "\n Monitoring Period: {}", go_duration(monitor));
    }
    let _ = write!(
        out,
        "\n Max failure ratio: {}\n {order_word} order:{}{}",
        config["MaxFailureRatio"].as_f64().unwrap_or(0.0),
        // Docker's template lines the two orders' values up.
        " ".repeat(19 - order_word.len() - " order:".len()),
        text(&config["Order"])
    );
}

/// Docker's `service inspect --pretty` of each service.
pub fn pretty_services(services: &[Value]) -> String {
    let mut out = String::new();
    for service in services {
        let spec = &service["Spec"];
        let task = &spec["TaskTemplate"];
        let container = &task["ContainerSpec"];
        let _ = write!(
            out,
            "\nID:\t\t{}\nName:\t\t{}",
            text(&service["ID"]),
            text(&spec["Name"])
        );
        labels(&mut out, &spec["Labels"], " ");
        out.push_str("\nService Mode:");
        if spec["Mode"]["Global"].is_object() {
            out.push_str("\tGlobal");
        } else if spec["Mode"]["Replicated"].is_object() {
            out.push_str("\tReplicated");
            if let Some(replicas) = spec["Mode"]["Replicated"]["Replicas"].as_u64() {
                let _ = write!(out, "\n Replicas:\t{replicas}");
            }
        }
        let update = &service["UpdateStatus"];
        if let Some(state) = update["State"].as_str().filter(|s| !s.is_empty()) {
            let _ = write!(
                out,
                "\nUpdateStatus:\n State:\t\t{state}\n Message:\t{}",
                text(&update["Message"])
            );
        }
        out.push_str("\nPlacement:");
        let placement = &task["Placement"];
        let constraints = strings(&placement["Constraints"]);
        if !constraints.is_empty() {
            let _ = write!(out, "\n Constraints:\t[{}]", constraints.join(" "));
        }
        let preferences: Vec<String> = placement["Preferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["Spread"]["SpreadDescriptor"].as_str())
            .map(|d| format!("spread={d}"))
            .collect();
        if !preferences.is_empty() {
            let _ = write!(out, "\n Preferences:   [{}]", preferences.join(" "));
        }
        if let Some(max) = placement["MaxReplicas"].as_u64().filter(|m| *m > 0) {
            let _ = write!(out, "\n Max Replicas Per Node:   {max}");
        }
        change_config(&mut out, "UpdateConfig", "Update", &spec["UpdateConfig"]);
        change_config(
            &mut out,
            "RollbackConfig",
            "Rollback",
            &spec["RollbackConfig"],
        );
        let _ = write!(
            out,
            "\nContainerSpec:\n Image:\t\t{}",
            text(&container["Image"])
        );
        let args = strings(&container["Args"]);
        if !args.is_empty() {
            let _ = write!(out, "\n Args:\t\t{} ", args.join(" "));
        }
        let env = strings(&container["Env"]);
        if !env.is_empty() {
            let _ = write!(out, "\n Env:\t\t{} ", env.join(" "));
        }
        if let Some(dir) = container["Dir"].as_str().filter(|d| !d.is_empty()) {
            let _ = write!(out, "\n Dir:\t\t{dir}");
        }
        if let Some(user) = container["User"].as_str().filter(|u| !u.is_empty()) {
            let _ = write!(out, "\n User: {user}");
        }
        let mounts = container["Mounts"].as_array().cloned().unwrap_or_default();
        if !mounts.is_empty() {
            out.push_str("\nMounts:");
        }
        for mount in &mounts {
            let _ = write!(
                out,
                "\n Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\t{}",
                text(&mount["Target"]),
                text(&mount["Source"]),
                mount["ReadOnly"].as_bool().unwrap_or(false),
                text(&mount["Type"])
            );
        }
        for (title, key, name) in [
            ("Configs", "Configs", "ConfigName"),
            ("Secrets", "Secrets", "SecretName"),
        ] {
            let items = container[key].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                continue;
            }
            let _ = write!(out, "\n{title}:");
            for item in &items {
                let _ = write!(
                    out,
                    "\n Target:\t{}\n  Source:\t{}",
                    text(&item["File"]["Name"]),
                    text(&item[name])
                );
            }
        }
        let resources = &task["Resources"];
        if resources.is_object() {
            out.push_str("\nResources:");
            for (title, key) in [("Reservations", "Reservations"), ("Limits", "Limits")] {
                let block = &resources[key];
                let cpus = block["NanoCPUs"].as_u64().unwrap_or(0);
                let memory = block["MemoryBytes"].as_u64().unwrap_or(0);
                if cpus == 0 && memory == 0 {
                    continue;
                }
                let _ = write!(out, "\n {title}:");
                if cpus > 0 {
                    let _ = write!(out, "\n  CPU:\t\t{}", cpus as f64 / 1e9);
                }
                if memory > 0 {
                    let _ = write!(out, "\n  Memory:\t{}", bytes_size(memory as f64));
                }
            }
        }
        let networks: Vec<&str> = task["Networks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["Target"].as_str())
            .collect();
        if !networks.is_empty() {
            out.push_str("\nNetworks:");
            for network in networks {
                let _ = write!(out, " {network}");
            }
            out.push(' ');
        }
        let _ = write!(
            out,
            "\nEndpoint Mode:\t{}",
            text(&spec["EndpointSpec"]["Mode"])
        );
        let ports = service["Endpoint"]["Ports"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !ports.is_empty() {
            out.push_str("\nPorts:");
            for port in &ports {
                let _ = write!(
                    out,
                    "\n PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {}",
                    port["PublishedPort"].as_u64().unwrap_or(0),
                    text(&port["Protocol"]),
                    port["TargetPort"].as_u64().unwrap_or(0),
                    text(&port["PublishMode"])
                );
            }
            out.push(' ');
        }
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sizes_and_durations_read_as_go_prints_them() {
        assert_eq!(bytes_size(2_087_354_368.0), "1.944GiB");
        assert_eq!(bytes_size(512.0 * 1024.0 * 1024.0), "512MiB");
        assert_eq!(bytes_size(100.0), "100B");
        assert_eq!(go_duration(5_000_000_000), "5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(500_000_000), "500ms");
    }

    #[test]
    fn a_node_reads_as_docker_pretty_prints_it() {
        let node = json!({
            "ID": "n1",
            "Spec": {"Labels": {"zone": "east"}, "Role": "manager", "Availability": "active"},
            "Description": {
                "Hostname": "h1",
                "Platform": {"OS": "linux", "Architecture": "x86_64"},
                "Resources": {"NanoCPUs": 2_000_000_000u64, "MemoryBytes": 1_073_741_824u64},
                "Engine": {"EngineVersion": "swarm 0.1.0"},
            },
            "Status": {"State": "ready", "Addr": "198.18.0.1"},
            "ManagerStatus": {"Leader": true, "Reachability": "reachable", "Addr": "198.18.0.1:2377"},
        });
        let text = pretty_nodes(&[node]);
        let expected = "ID:\t\t\tn1\nLabels:\n - zone=east\nHostname:              \th1\n\
            Status:\n State:\t\t\tReady\n Availability:         \tActive\n Address:\t\t198.18.0.1\n\
            Manager Status:\n Address:\t\t198.18.0.1:2377\n Raft Status:\t\tReachable\n Leader:\t\tYes\n\
            Platform:\n Operating System:\tlinux\n Architecture:\t\tx86_64\n\
            Resources:\n CPUs:\t\t\t2\n Memory:\t\t1GiB\nEngine Version:\t\tswarm 0.1.0\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_service_reads_as_docker_pretty_prints_it() {
        let service = json!({
            "ID": "s1",
            "Spec": {
                "Name": "web",
                "Mode": {"Replicated": {"Replicas": 2}},
                "TaskTemplate": {
                    "ContainerSpec": {"Image": "busybox:1", "Args": ["sleep", "60"]},
                    "Placement": {"Constraints": ["node.role==worker"]},
                },
                "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "MaxFailureRatio": 0, "Order": "stop-first"},
                "EndpointSpec": {"Mode": "vip"},
            },
            "Endpoint": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]},
        });
        let text = pretty_services(&[service]);
        let expected = "\nID:\t\ts1\nName:\t\tweb\nService Mode:\tReplicated\n Replicas:\t2\n\
            Placement:\n Constraints:\t[node.role==worker]\n\
            UpdateConfig:\n Parallelism:\t1\n On failure:\tpause\n Max failure ratio: 0\n Update order:      stop-first\n\
            ContainerSpec:\n Image:\t\tbusybox:1\n Args:\t\tsleep 60 \n\
            Endpoint Mode:\tvip\nPorts:\n PublishedPort = 8080\n  Protocol = tcp\n  TargetPort = 80\n  PublishMode = ingress \n\n";
        assert_eq!(text, expected);
    }
}
