//! What each swarm list shows, as Docker's formatters name it: the fields a
//! `--format` template can use, their headers, and each daemon row turned
//! into those fields (IDs cut as Docker cuts them unless `--no-trunc`).

use clap::Args;
use serde_json::{Value, json};

use super::output::Listing;
use crate::api::filters::Filters;

/// `-f/--filter KEY=VALUE`, repeatable: values of one key are alternatives,
/// different keys must all match; the daemon refuses a key the list does
/// not take.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Show only what matches KEY=VALUE (repeat; Docker's keys, see the command's help).
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE", value_parser = parse_filter)]
    pub filter: Vec<String>,
}

impl FilterArgs {
    pub fn filters(&self) -> Filters {
        Filters::from_args(&self.filter).expect("each value was checked when parsed")
    }
}

fn parse_filter(text: &str) -> Result<String, String> {
    Filters::from_args(&[text])
        .map(|_| text.to_owned())
        .map_err(|err| err.to_string())
}

/// Docker's short IDs.
const SHORT_ID: usize = 12;
/// How much of a task's error a table shows unless `--no-trunc`.
const ERROR_WIDTH: usize = 40;

/// `service ls`, `stack services`.
pub const SERVICES: Listing = Listing {
    fields: &[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Mode", "MODE"),
        ("Replicas", "REPLICAS"),
        ("Image", "IMAGE"),
        ("Ports", "PORTS"),
    ],
    table: None,
};

/// `service ps`, `node ps`, `stack ps`.
pub const TASKS: Listing = Listing {
    fields: &[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Image", "IMAGE"),
        ("Node", "NODE"),
        ("DesiredState", "DESIRED STATE"),
        ("CurrentState", "CURRENT STATE"),
        ("Error", "ERROR"),
        ("Ports", "PORTS"),
    ],
    table: None,
};

/// `node ls`: the node answering is marked `*`.
pub const NODES: Listing = Listing {
    fields: &[
        ("ID", "ID"),
        ("Self", ""),
        ("Hostname", "HOSTNAME"),
        ("Status", "STATUS"),
        ("Availability", "AVAILABILITY"),
        ("ManagerStatus", "MANAGER STATUS"),
        ("EngineVersion", "ENGINE VERSION"),
        ("TLSStatus", "TLS STATUS"),
    ],
    table: Some(
        "{{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}",
    ),
};

/// `network ls`.
pub const NETWORKS: Listing = Listing {
    fields: &[
        ("ID", "NETWORK ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("Scope", "SCOPE"),
        ("IPv6", "IPV6"),
        ("Internal", "INTERNAL"),
        ("Labels", "LABELS"),
        ("CreatedAt", "CREATED AT"),
    ],
    table: Some("{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"),
};

/// `secret ls`.
pub const SECRETS: Listing = Listing {
    fields: &[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("CreatedAt", "CREATED"),
        ("UpdatedAt", "UPDATED"),
        ("Labels", "LABELS"),
    ],
    table: Some("{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}"),
};

/// `config ls`.
pub const CONFIGS: Listing = Listing {
    fields: &[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("CreatedAt", "CREATED"),
        ("UpdatedAt", "UPDATED"),
        ("Labels", "LABELS"),
    ],
    table: Some("{{.ID}}\t{{.Name}}\t{{.CreatedAt}}\t{{.UpdatedAt}}"),
};

/// `stack ls`.
pub const STACKS: Listing = Listing {
    fields: &[("Name", "NAME"), ("Services", "SERVICES")],
    table: None,
};

/// `volume ls` (this node's volumes, with the tasks using each).
pub const VOLUMES: Listing = Listing {
    fields: &[
        ("Driver", "DRIVER"),
        ("Name", "VOLUME NAME"),
        ("Tasks", "TASKS"),
    ],
    table: None,
};

/// `image ls` (this node's images, with the tasks running each).
pub const IMAGES: Listing = Listing {
    fields: &[
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
        ("ID", "IMAGE ID"),
        ("Size", "SIZE"),
        ("Tasks", "TASKS"),
    ],
    table: None,
};

/// `dataplane network ls`.
pub const DATAPLANE_NETWORKS: Listing = Listing {
    fields: &[
        ("VNI", "VNI"),
        ("Subnet", "SUBNET"),
        ("Gateway", "GATEWAY"),
        ("MTU", "MTU"),
    ],
    table: None,
};

/// `dataplane flows`.
pub const DATAPLANE_FLOWS: Listing = Listing {
    fields: &[
        ("Service", "SERVICE"),
        ("Protocol", "PROTO"),
        ("Client", "CLIENT"),
        ("Frontend", "FRONTEND"),
        ("Backend", "BACKEND"),
        ("Node", "NODE"),
        ("IdleSecs", "IDLE (S)"),
        ("State", "STATE"),
    ],
    table: None,
};

fn short(id: &Value, no_trunc: bool) -> Value {
    let id = id.as_str().unwrap_or_default();
    if no_trunc {
        id.into()
    } else {
        id.chars().take(SHORT_ID).collect::<String>().into()
    }
}

/// Labels as Docker's formatters show them: `k=v` joined by commas.
fn labels_text(labels: &Value) -> Value {
    labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
        .into()
}

/// Only `listing`'s fields of `row` (what Docker's `{{json .}}` shows).
fn pick(row: &Value, listing: &Listing) -> serde_json::Map<String, Value> {
    listing
        .fields
        .iter()
        .map(|(field, _)| {
            let value = row.get(*field).cloned().unwrap_or_else(|| "".into());
            ((*field).to_owned(), value)
        })
        .collect()
}

/// A service row: Docker always shows its short ID.
pub fn service(row: &Value) -> Value {
    let mut fields = pick(row, &SERVICES);
    fields.insert("ID".into(), short(&row["ID"], false));
    Value::Object(fields)
}

/// A task row: short ID and error unless `no_trunc`.
pub fn task(row: &Value, no_trunc: bool, no_resolve: bool) -> Value {
    let mut fields = pick(row, &TASKS);
    fields.insert("ID".into(), short(&row["ID"], no_trunc));
    if no_resolve {
        // Docker's `--no-resolve`: IDs where names would be.
        let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
        let history = if text("Name").starts_with(" \\_ ") {
            " \\_ "
        } else {
            ""
        };
        let suffix = match row["Slot"].as_u64() {
            Some(slot) if slot != 0 => slot.to_string(),
            _ => text("NodeID"),
        };
        let name = format!("{history}{}.{suffix}", text("ServiceID"));
        fields.insert("Name".into(), name.into());
        fields.insert("Node".into(), text("NodeID").into());
    }
    if let Some(error) = row["Error"].as_str() {
        let error = if !no_trunc && error.chars().count() > ERROR_WIDTH {
            let cut: String = error.chars().take(ERROR_WIDTH - 1).collect();
            format!("{cut}…")
        } else {
            error.to_owned()
        };
        fields.insert("Error".into(), error.into());
    }
    Value::Object(fields)
}

/// A node row: Docker shows whole node IDs; TLS status as the leader saw
/// the node's certificate (`Unknown` from an older daemon).
pub fn node(row: &Value) -> Value {
    let mut fields = pick(row, &NODES);
    fields.insert("Self".into(), row["Self"].as_bool().unwrap_or(false).into());
    let tls = row["TLSStatus"].as_str().filter(|s| !s.is_empty());
    fields.insert("TLSStatus".into(), tls.unwrap_or("Unknown").into());
    Value::Object(fields)
}

/// A network row: short ID unless `no_trunc`; flags as Go prints them.
pub fn network(row: &Value, no_trunc: bool) -> Value {
    let mut fields = pick(row, &NETWORKS);
    fields.insert("ID".into(), short(&row["ID"], no_trunc));
    for flag in ["IPv6", "Internal"] {
        let on = row[flag].as_bool().unwrap_or(false);
        fields.insert(flag.into(), on.to_string().into());
    }
    fields.insert("Labels".into(), labels_text(&row["Labels"]));
    Value::Object(fields)
}

/// A secret or config row: Docker shows whole IDs, and how long ago it
/// was created and updated.
pub fn payload(row: &Value, listing: &Listing) -> Value {
    let mut fields = pick(row, listing);
    fields.insert("Labels".into(), labels_text(&row["Labels"]));
    for key in ["CreatedAt", "UpdatedAt"] {
        if let Some(then) = row[key].as_str().and_then(crate::log_time::parse_stamp) {
            let secs = (crate::log_time::now_nanos() - then).max(0) / 1_000_000_000;
            let ago = format!("{} ago", crate::clock::human_duration(secs as u64));
            fields.insert(key.into(), ago.into());
        }
    }
    Value::Object(fields)
}

/// A stack row.
pub fn stack(name: &str, services: usize) -> Value {
    json!({"Name": name, "Services": services})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_cut_as_docker_cuts_them() {
        let id = "abcdefghijklmnopqrstuvwxy";
        let row = json!({"ID": id, "Name": "web.1", "Error": "e".repeat(50)});
        assert_eq!(service(&row)["ID"], "abcdefghijkl");
        assert_eq!(task(&row, false, false)["ID"], "abcdefghijkl");
        assert_eq!(task(&row, true, false)["ID"], id);
        assert_eq!(
            task(&row, false, false)["Error"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            40
        );
        assert_eq!(task(&row, true, false)["Error"].as_str().unwrap().len(), 50);
        assert_eq!(network(&row, false)["ID"], "abcdefghijkl");
        assert_eq!(network(&row, true)["ID"], id);
        assert_eq!(node(&json!({"ID": id, "Self": true}))["ID"], id);
    }

    #[test]
    fn no_resolve_shows_ids_where_names_were() {
        let row = json!({"ID": "t1", "Name": "web.2", "Node": "h1", "NodeID": "n1",
                         "ServiceID": "s1", "Slot": 2});
        let shown = task(&row, false, true);
        assert_eq!(
            (&shown["Name"], &shown["Node"]),
            (&json!("s1.2"), &json!("n1"))
        );
        let old = json!({"ID": "t0", "Name": " \\_ web.2", "NodeID": "n1", "ServiceID": "s1",
                         "Slot": 2});
        assert_eq!(task(&old, false, true)["Name"], " \\_ s1.2");
        let global = json!({"ID": "t2", "Name": "agent.n1", "NodeID": "n1", "ServiceID": "s2",
                            "Slot": 0});
        assert_eq!(task(&global, false, true)["Name"], "s2.n1");
        assert_eq!(task(&global, false, false)["Name"], "agent.n1");
    }

    #[test]
    fn rows_show_only_dockers_fields() {
        let row = json!({
            "ID": "n1", "Name": "front", "Driver": "overlay", "Scope": "swarm",
            "Labels": {"tier": "web"}, "Subnet": "10.0.0.0/24",
        });
        let shown = network(&row, false);
        assert_eq!(shown["Labels"], "tier=web");
        assert_eq!(shown["IPv6"], "false");
        assert!(shown.get("Subnet").is_none());
        assert_eq!(shown.as_object().unwrap().len(), NETWORKS.fields.len());
    }
}
