//! Which names the resolver answers: the managers' records, less the
//! addresses of tasks on nodes gossip holds dead (their names stop
//! resolving as soon as the failure detector says so, not when the
//! managers' word arrives), plus the names live nodes gossip with their
//! endpoints (tasks the managers' latest word lacks, perhaps because they
//! are out of reach).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use crate::{
    api::assignments::{DnsRecord, RemoteEndpoint},
    gossip::GossipedEndpoints,
};

/// The records to answer from the managers' `records` (with the
/// `remote` endpoints, which say where each address lives) and what gossip
/// says, when it runs.
pub fn merge(
    records: &[DnsRecord],
    remote: &[RemoteEndpoint],
    gossiped: Option<&GossipedEndpoints>,
) -> Vec<DnsRecord> {
    let Some(gossiped) = gossiped else {
        return records.to_vec();
    };
    let on_dead_node: BTreeSet<(u32, Ipv4Addr)> = remote
        .iter()
        .filter(|endpoint| gossiped.dead_nodes.contains(&endpoint.node))
        .map(|endpoint| (endpoint.vni, endpoint.ip))
        .collect();
    let mut merged: BTreeMap<(u32, String), Vec<Ipv4Addr>> = BTreeMap::new();
    // A task name's reverse name, as the managers gave it: a task only
    // gossip knows of has none until they do (gossip does not carry its
    // network's name).
    let mut reverse: BTreeMap<(u32, String), String> = BTreeMap::new();
    for record in records {
        if let Some(name) = &record.reverse {
            reverse.insert((record.vni, record.name.clone()), name.clone());
        }
        let addresses = merged.entry((record.vni, record.name.clone())).or_default();
        addresses.extend(
            record
                .addresses
                .iter()
                .filter(|ip| !on_dead_node.contains(&(record.vni, **ip))),
        );
    }
    // Whether the managers named this service on this network: only then is
    // its VIP programmed in this node's data plane.
    let known: BTreeSet<(u32, String)> = records
        .iter()
        .map(|record| (record.vni, record.name.clone()))
        .collect();
    let mut add = |vni: u32, name: &str, ip: Ipv4Addr| {
        let addresses = merged.entry((vni, name.to_owned())).or_default();
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    };
    for (&(vni, ip), names) in &gossiped.names {
        add(vni, &format!("tasks.{}", names.service), ip);
        add(vni, &names.task, ip);
        for service_name in std::iter::once(&names.service).chain(&names.aliases) {
            match names.vip {
                // Known: its record already holds the VIP.
                Some(_) if known.contains(&(vni, service_name.clone())) => {}
                // A service the managers have not told this node of has no
                // VIP here yet: its tasks, reachable over the overlay that
                // gossip programs, answer for it until they do.
                _ => add(vni, service_name, ip),
            }
        }
    }
    merged
        .into_iter()
        .map(|((vni, name), addresses)| DnsRecord {
            reverse: reverse.remove(&(vni, name.clone())),
            vni,
            name,
            addresses,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::assignments::EndpointNames;

    const VNI: u32 = 4097;
    const LIVE_NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const DEAD_NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 1, last)
    }

    fn record(name: &str, addresses: &[Ipv4Addr]) -> DnsRecord {
        DnsRecord {
            vni: VNI,
            name: name.into(),
            addresses: addresses.to_vec(),
            reverse: None,
        }
    }

    fn remote(task: u8, node: Ipv4Addr) -> RemoteEndpoint {
        RemoteEndpoint {
            vni: VNI,
            ip: ip(task),
            node,
        }
    }

    fn names(service: &str, task: &str, vip: Option<Ipv4Addr>) -> EndpointNames {
        EndpointNames {
            service: service.into(),
            aliases: vec![format!("{service}-alias")],
            vip,
            task: task.into(),
        }
    }

    fn addresses_of<'a>(records: &'a [DnsRecord], name: &str) -> Option<&'a [Ipv4Addr]> {
        records
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.addresses.as_slice())
    }

    /// The managers' word: `web` (VIP .2) with tasks .10 on the live node
    /// and .11 on the dead one.
    fn managers_word() -> (Vec<DnsRecord>, Vec<RemoteEndpoint>) {
        (
            vec![
                record("web", &[ip(2)]),
                record("tasks.web", &[ip(10), ip(11)]),
                DnsRecord {
                    reverse: Some("web.1.a.back".into()),
                    ..record("web.1.a", &[ip(10)])
                },
                record("web.2.b", &[ip(11)]),
            ],
            vec![remote(10, LIVE_NODE), remote(11, DEAD_NODE)],
        )
    }

    #[test]
    fn without_gossip_the_managers_word_stands() {
        let (records, remote) = managers_word();
        assert_eq!(merge(&records, &remote, None), records);
    }

    #[test]
    fn tasks_on_a_dead_node_stop_resolving_and_the_vip_stays() {
        let (records, remote) = managers_word();
        let gossiped = GossipedEndpoints {
            dead_nodes: BTreeSet::from([DEAD_NODE]),
            ..Default::default()
        };
        let merged = merge(&records, &remote, Some(&gossiped));
        assert_eq!(addresses_of(&merged, "tasks.web"), Some(&[ip(10)][..]));
        assert_eq!(addresses_of(&merged, "web.2.b"), Some(&[][..]));
        assert_eq!(addresses_of(&merged, "web"), Some(&[ip(2)][..]));
        // A task's reverse name is kept.
        let live = merged.iter().find(|r| r.name == "web.1.a").unwrap();
        assert_eq!(live.reverse.as_deref(), Some("web.1.a.back"));
    }

    #[test]
    fn a_gossiped_task_of_a_known_service_joins_its_names_and_the_vip_stays() {
        let (records, remote) = managers_word();
        let gossiped = GossipedEndpoints {
            names: BTreeMap::from([((VNI, ip(12)), names("web", "web.3.c", Some(ip(2))))]),
            ..Default::default()
        };
        let merged = merge(&records, &remote, Some(&gossiped));
        assert_eq!(
            addresses_of(&merged, "tasks.web"),
            Some(&[ip(10), ip(11), ip(12)][..])
        );
        assert_eq!(addresses_of(&merged, "web.3.c"), Some(&[ip(12)][..]));
        assert_eq!(addresses_of(&merged, "web"), Some(&[ip(2)][..]));
        // The alias is not in the managers' word here: the task answers.
        assert_eq!(addresses_of(&merged, "web-alias"), Some(&[ip(12)][..]));
    }

    #[test]
    fn an_unknown_service_is_answered_by_its_gossiped_tasks() {
        let gossiped = GossipedEndpoints {
            names: BTreeMap::from([
                ((VNI, ip(20)), names("api", "api.1.x", Some(ip(3)))),
                ((VNI, ip(21)), names("api", "api.2.y", Some(ip(3)))),
            ]),
            ..Default::default()
        };
        let merged = merge(&[], &[], Some(&gossiped));
        assert_eq!(addresses_of(&merged, "api"), Some(&[ip(20), ip(21)][..]));
        assert_eq!(
            addresses_of(&merged, "tasks.api"),
            Some(&[ip(20), ip(21)][..])
        );
        assert_eq!(addresses_of(&merged, "api.2.y"), Some(&[ip(21)][..]));
    }

    #[test]
    fn a_dnsrr_service_gets_its_gossiped_tasks() {
        let records = vec![record("db", &[ip(30)]), record("tasks.db", &[ip(30)])];
        let gossiped = GossipedEndpoints {
            names: BTreeMap::from([((VNI, ip(31)), names("db", "db.2.z", None))]),
            ..Default::default()
        };
        let merged = merge(&records, &[], Some(&gossiped));
        assert_eq!(addresses_of(&merged, "db"), Some(&[ip(30), ip(31)][..]));
        assert_eq!(
            addresses_of(&merged, "tasks.db"),
            Some(&[ip(30), ip(31)][..])
        );
    }
}
