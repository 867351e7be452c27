//! How the CLI prints answers: aligned tables for people, JSON lines for scripts.

use std::io::{self, Write as _};

use serde_json::json;

use super::Format;
use crate::{
    api::control::{DaemonInfo, NetworkRow, NodeRow},
    dataplane::{DataplaneStats, EndpointRow, ServiceRow},
};

pub fn print_stats(stats: &DataplaneStats, format: Format) -> anyhow::Result<()> {
    let rows = stats
        .packets
        .iter()
        .map(|row| ("packet", row))
        .chain(stats.drops.iter().map(|row| ("drop", row)));
    let mut out = io::stdout().lock();
    match format {
        Format::Json => {
            for (kind, row) in rows {
                let line = json!({
                    "Kind": kind,
                    "Counter": row.name,
                    "Packets": row.packets,
                    "Bytes": row.bytes,
                });
                writeln!(out, "{line}")?;
            }
        }
        Format::Table => {
            let table: Vec<[String; 4]> = rows
                .map(|(kind, row)| {
                    [
                        kind.to_owned(),
                        row.name.clone(),
                        row.packets.to_string(),
                        row.bytes.to_string(),
                    ]
                })
                .collect();
            write_table(&mut out, ["KIND", "COUNTER", "PACKETS", "BYTES"], &table)?;
        }
    }
    Ok(())
}

pub fn print_endpoints(rows: &[EndpointRow], format: Format) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json => {
            for row in rows {
                let line = json!({
                    "VNI": row.vni,
                    "IP": row.ip,
                    "MAC": row.mac,
                    "Location": row.location,
                    "Via": row.via,
                });
                writeln!(out, "{line}")?;
            }
        }
        Format::Table => {
            let table: Vec<[String; 5]> = rows
                .iter()
                .map(|row| {
                    [
                        row.vni.to_string(),
                        row.ip.to_string(),
                        row.mac.clone(),
                        row.location.clone(),
                        row.via.clone(),
                    ]
                })
                .collect();
            write_table(&mut out, ["VNI", "IP", "MAC", "LOCATION", "VIA"], &table)?;
        }
    }
    Ok(())
}

pub fn print_services(rows: &[ServiceRow], format: Format) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let join = |ips: &[std::net::Ipv4Addr]| {
        ips.iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match format {
        Format::Json => {
            for row in rows {
                writeln!(out, "{}", serde_json::to_string(row)?)?;
            }
        }
        Format::Table => {
            let table: Vec<[String; 7]> = rows
                .iter()
                .map(|row| {
                    [
                        row.name.clone(),
                        row.vni.to_string(),
                        row.vip.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
                        if row.published.is_empty() {
                            "-".to_owned()
                        } else {
                            row.published.join(",")
                        },
                        join(&row.backends),
                        join(&row.local_backends),
                        row.connections.to_string(),
                    ]
                })
                .collect();
            write_table(
                &mut out,
                [
                    "NAME",
                    "VNI",
                    "VIP",
                    "PUBLISHED",
                    "BACKENDS",
                    "LOCAL",
                    "CONNECTIONS",
                ],
                &table,
            )?;
        }
    }
    Ok(())
}

pub fn print_info(info: &DaemonInfo, format: Format) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(info)?)?,
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

/// Rows as one JSON object per line, or as a table with these headers.
fn print_rows<R: serde::Serialize, const N: usize>(
    rows: &[R],
    format: Format,
    headers: [&str; N],
    cells: impl Fn(&R) -> [String; N],
) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json => {
            for row in rows {
                writeln!(out, "{}", serde_json::to_string(row)?)?;
            }
        }
        Format::Table => {
            let table: Vec<[String; N]> = rows.iter().map(cells).collect();
            write_table(&mut out, headers, &table)?;
        }
    }
    Ok(())
}

pub fn print_nodes(rows: &[NodeRow], format: Format) -> anyhow::Result<()> {
    print_rows(
        rows,
        format,
        ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"],
        |row| {
            let id = if row.is_self {
                format!("{} *", row.id)
            } else {
                row.id.clone()
            };
            [
                id,
                row.hostname.clone(),
                row.status.clone(),
                row.availability.clone(),
                row.manager_status.clone(),
            ]
        },
    )
}

/// `network ls`: Docker's columns, the ID cut to 12 characters as Docker does.
pub fn print_networks(rows: &[NetworkRow], format: Format) -> anyhow::Result<()> {
    print_rows(
        rows,
        format,
        ["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
        |row| {
            [
                row.id.chars().take(12).collect(),
                row.name.clone(),
                row.driver.clone(),
                row.scope.clone(),
            ]
        },
    )
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

/// Columns padded to their widest cell, three spaces apart, like docker's tables.
fn write_table<const N: usize>(
    out: &mut impl io::Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut line = |cells: [&str; N]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(header)?;
    for row in rows {
        line(row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

/// JSON rows as one object per line, or as a table of `keys` under
/// `headers`; `id_width` cuts the ID column as Docker does.
/// `-q`: one `key` of each row a line (IDs, names).
pub fn print_keys(rows: &[serde_json::Value], key: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    for row in rows {
        writeln!(out, "{}", row[key].as_str().unwrap_or_default())?;
    }
    Ok(())
}

pub fn print_json_rows(
    rows: &[serde_json::Value],
    format: Format,
    headers: &[&str],
    keys: &[&str],
    id_width: Option<usize>,
) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    if format == Format::Json {
        for row in rows {
            writeln!(out, "{}", serde_json::to_string(row)?)?;
        }
        return Ok(());
    }
    let cell = |row: &serde_json::Value, key: &str| match &row[key] {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            keys.iter()
                .map(|key| {
                    let text = cell(row, key);
                    match (*key, id_width) {
                        ("ID", Some(width)) => text.chars().take(width).collect(),
                        _ => text,
                    }
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &table {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   "));
            }
        }
        text.trim_end().to_owned()
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in &table {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_align() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            ["A", "LONGER"],
            &[["xyz".into(), "1".into()], ["q".into(), "22".into()]],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A     LONGER\nxyz   1\nq     22\n"
        );
    }
}
