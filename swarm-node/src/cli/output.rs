//! How the CLI prints answers: Docker's aligned tables for people, JSON
//! lines for scripts, and Go templates (`--format`) for either.

use std::io::{self, Write as _};

use serde_json::{Value, json};

use super::format::{self, Format};
use crate::{
    api::control::DaemonInfo,
    dataplane::{DataplaneStats, EndpointRow, ServiceRow},
};

/// What a list shows: each field a template names (Docker's, where Docker
/// has the list) with its column header, and the default table when it is
/// not every field in order.
pub struct Listing {
    pub fields: &'static [(&'static str, &'static str)],
    pub table: Option<&'static str>,
}

impl Listing {
    fn table_template(&self) -> String {
        match self.table {
            Some(text) => text.to_owned(),
            None => self
                .fields
                .iter()
                .map(|(field, _)| format!("{{{{.{field}}}}}"))
                .collect::<Vec<_>>()
                .join("\t"),
        }
    }

    /// The dot a header row is rendered with: each field's header.
    fn header(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|(field, header)| ((*field).to_owned(), Value::from(*header)))
                .collect(),
        )
    }
}

/// A list: `rows` (the daemon's, printed whole by `--format json`) and
/// `contexts` (each row as the fields `listing` names, for tables and
/// templates), in the same order.
pub fn print_listing(
    rows: &[Value],
    contexts: &[Value],
    listing: &Listing,
    format: &Format,
) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let (text, table) = match format {
        Format::Json => {
            for row in rows {
                writeln!(out, "{}", serde_json::to_string(row)?)?;
            }
            return Ok(());
        }
        Format::Table => (listing.table_template(), true),
        Format::Template { text, table } => (text.clone(), *table),
    };
    let template = format::compile(&text).map_err(anyhow::Error::msg)?;
    let mut lines = String::new();
    if table {
        lines.push_str(&format::render(&template, &listing.header())?);
        lines.push('\n');
    }
    for context in contexts {
        lines.push_str(&format::render(&template, context)?);
        lines.push('\n');
    }
    if table {
        out.write_all(align_columns(&lines).as_bytes())?;
    } else {
        out.write_all(lines.as_bytes())?;
    }
    Ok(())
}

/// A list whose rows are their own template dots (this project's lists).
pub fn print_rows(rows: &[Value], listing: &Listing, format: &Format) -> anyhow::Result<()> {
    print_listing(rows, rows, listing, format)
}

/// Docker's table writer (Go's tabwriter: minimum width 10, padding 3):
/// each tab-ended cell padded to its column's width; the last cell of a
/// line is not a column.
pub fn align_columns(text: &str) -> String {
    const MIN_WIDTH: usize = 10;
    const PADDING: usize = 3;
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split('\t').collect())
        .collect();
    let mut widths: Vec<usize> = Vec::new();
    for cells in &lines {
        for (i, cell) in cells.iter().take(cells.len() - 1).enumerate() {
            if widths.len() <= i {
                widths.push(MIN_WIDTH);
            }
            widths[i] = widths[i].max(cell.chars().count() + PADDING);
        }
    }
    let mut out = String::new();
    for cells in &lines {
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

const STATS: Listing = Listing {
    fields: &[
        ("Kind", "KIND"),
        ("Counter", "COUNTER"),
        ("Packets", "PACKETS"),
        ("Bytes", "BYTES"),
    ],
    table: None,
};

pub fn print_stats(stats: &DataplaneStats, format: &Format) -> anyhow::Result<()> {
    let rows: Vec<Value> = stats
        .packets
        .iter()
        .map(|row| ("packet", row))
        .chain(stats.drops.iter().map(|row| ("drop", row)))
        .map(|(kind, row)| {
            json!({
                "Kind": kind,
                "Counter": row.name,
                "Packets": row.packets,
                "Bytes": row.bytes,
            })
        })
        .collect();
    print_rows(&rows, &STATS, format)
}

const ENDPOINTS: Listing = Listing {
    fields: &[
        ("VNI", "VNI"),
        ("IP", "IP"),
        ("MAC", "MAC"),
        ("Location", "LOCATION"),
        ("Via", "VIA"),
    ],
    table: None,
};

pub fn print_endpoints(rows: &[EndpointRow], format: &Format) -> anyhow::Result<()> {
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "VNI": row.vni,
                "IP": row.ip,
                "MAC": row.mac,
                "Location": row.location,
                "Via": row.via,
            })
        })
        .collect();
    print_rows(&rows, &ENDPOINTS, format)
}

const BALANCED_SERVICES: Listing = Listing {
    fields: &[
        ("Name", "NAME"),
        ("VNI", "VNI"),
        ("VIP", "VIP"),
        ("Published", "PUBLISHED"),
        ("Backends", "BACKENDS"),
        ("LocalBackends", "LOCAL"),
        ("Connections", "CONNECTIONS"),
    ],
    table: None,
};

/// `dataplane services`: lists of addresses joined by commas, `-` for none.
pub fn print_services(rows: &[ServiceRow], format: &Format) -> anyhow::Result<()> {
    let join = |ips: &[std::net::Ipv4Addr]| {
        ips.iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let contexts: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "Name": row.name,
                "VNI": row.vni,
                "VIP": row.vip.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
                "Published": if row.published.is_empty() {
                    "-".to_owned()
                } else {
                    row.published.join(",")
                },
                "Backends": join(&row.backends),
                "LocalBackends": join(&row.local_backends),
                "Connections": row.connections,
            })
        })
        .collect();
    let rows = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    print_listing(&rows, &contexts, &BALANCED_SERVICES, format)
}

pub fn print_info(info: &DaemonInfo, format: &Format) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(info)?)?,
        Format::Template { text, .. } => {
            let template = format::compile(text).map_err(anyhow::Error::msg)?;
            writeln!(
                out,
                "{}",
                format::render(&template, &serde_json::to_value(info)?)?
            )?;
        }
        Format::Table => {
            let fields = [
                ("Node ID", info.node_id.clone()),
                ("Hostname", info.hostname.clone()),
                ("Advertise address", info.advertise_addr.clone()),
                ("Underlay interface", info.underlay_iface.clone()),
                ("Underlay hook", info.underlay_hook.label().to_owned()),
                ("Local delivery", info.local_delivery.label().to_owned()),
                ("Data path port", info.data_path_port.to_string()),
                ("Task runtime", info.runtime.clone()),
                ("Data dir", info.data_dir.clone()),
                ("BPF pins", info.pin_dir.clone()),
                ("Daemon PID", info.pid.to_string()),
                ("Version", info.version.clone()),
                ("Swarm", info.swarm.local_node_state.clone()),
            ];
            for (name, value) in fields {
                writeln!(out, "{name}: {value}")?;
            }
            let swarm = &info.swarm;
            if swarm.local_node_state == "locked" {
                writeln!(out, " {}", crate::api::ClusterError::SwarmLocked)?;
            }
            if swarm.local_node_state == "active" {
                let fields = [
                    ("NodeID", swarm.node_id.clone()),
                    ("Is Manager", swarm.control_available.to_string()),
                    ("ClusterID", swarm.cluster_id.clone()),
                    ("Managers", swarm.managers.to_string()),
                    ("Is Leader", swarm.is_leader.to_string()),
                    ("Leader Address", swarm.leader_addr.clone()),
                    ("Nodes", swarm.nodes.to_string()),
                    ("Node Address", swarm.node_addr.clone()),
                    ("Data Path Address", swarm.data_path_addr.clone()),
                ];
                for (name, value) in fields {
                    writeln!(out, " {name}: {value}")?;
                }
                if let Some(raft) = &swarm.raft {
                    writeln!(
                        out,
                        " Raft:\n  Term: {}\n  Voters: {}\n  Last Applied: {}\n  Last Log Index: {}\n  Snapshot Index: {}\n  Purged Index: {}\n  Retained Snapshots: {}",
                        raft.term,
                        raft.voters,
                        raft.last_applied,
                        raft.last_log_index,
                        raft.snapshot_index,
                        raft.purged_index,
                        raft.retained_snapshots
                    )?;
                }
            }
            if let Some(gossip) = &info.gossip {
                writeln!(
                    out,
                    "Gossip:\n Key ID: {}\n Sent: {}\n Received: {}\n Dropped: {} malformed, {} unauthenticated, {} bad message",
                    gossip.key_id,
                    gossip.sent,
                    gossip.received,
                    gossip.dropped_malformed,
                    gossip.dropped_unauthenticated,
                    gossip.dropped_bad_message
                )?;
            }
            let dns = &info.dns;
            writeln!(
                out,
                "DNS:\n Queries: {}\n Answered: {}\n Forwarded: {}\n NXDOMAIN: {}\n SERVFAIL: {}\n Malformed: {}",
                dns.queries, dns.answered, dns.forwarded, dns.nxdomain, dns.servfail, dns.malformed
            )?;
        }
    }
    Ok(())
}

/// Docker's join instructions.
pub fn print_join_command(role: &str, token: &str, manager_addr: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "To add a {role} to this swarm, run the following command:\n\n    swarm join --token {token} {manager_addr}\n"
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_as_docker_tabwriter() {
        let expected = [
            format!("A{}LONGER{}xyz", " ".repeat(9), " ".repeat(4)),
            format!("xyz{}1{}", " ".repeat(7), " ".repeat(9)),
            format!("q{}22{}last", " ".repeat(9), " ".repeat(8)),
        ];
        assert_eq!(
            align_columns("A\tLONGER\txyz\nxyz\t1\t\nq\t22\tlast\n"),
            expected.join("\n") + "\n"
        );
        // A cell wider than the minimum takes its width and the padding.
        assert_eq!(
            align_columns("NETWORK ID\tNAME\nabc\tx\n"),
            "NETWORK ID   NAME\nabc          x\n"
        );
    }

    #[test]
    fn table_templates_print_a_header_row() {
        let listing = Listing {
            fields: &[("ID", "ID"), ("Name", "NAME")],
            table: None,
        };
        assert_eq!(listing.table_template(), "{{.ID}}\t{{.Name}}");
        assert_eq!(listing.header()["Name"], "NAME");
    }
}
