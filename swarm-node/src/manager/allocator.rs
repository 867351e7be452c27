//! The allocator, after swarmkit's: networks get a subnet (a /24 of the
//! default pool unless given) and a VNI, services their VIPs and published
//! ports, tasks their addresses. It runs while a command is applied, so
//! every manager allocates the same.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::store::{ClusterState, NetworkRecord, NetworkRequest, Refusal, services::ServiceRecord};
use crate::{
    api::specs::{EndpointMode, PortConfig},
    dataplane::Protocol,
};

/// Docker's range for published ports it picks itself.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;
/// Docker's default address pool, carved into /24s, and its first VXLAN ID.
pub const POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 0, 0), 8);
pub const POOL_PREFIX: u8 = 24;
/// The smallest subnet `--default-addr-pool-mask-length` may ask for: a
/// /29 holds a gateway, a VIP and four tasks.
pub const MAX_SUBNET_PREFIX: u8 = 29;
pub const FIRST_VNI: u32 = 4096;
/// Underlay MTU 1500 less the 50 bytes of VXLAN encapsulation.
pub const DEFAULT_OVERLAY_MTU: u32 = 1450;

impl ClusterState {
    /// A network for `request`, or why there is none: its name taken, its
    /// subnet overlapping another's, or the pool exhausted.
    pub(super) fn allocate_network(
        &self,
        request: NetworkRequest,
    ) -> Result<NetworkRecord, Refusal> {
        if self.networks.values().any(|n| n.name == request.name) {
            return Err(Refusal::NetworkExists(request.name));
        }
        let subnet = match request.subnet {
            Some(subnet) => {
                if let Some(other) = self.networks.values().find(|n| overlaps(n.subnet, subnet)) {
                    return Err(Refusal::SubnetOverlaps {
                        subnet,
                        other: other.name.clone(),
                        other_subnet: other.subnet,
                    });
                }
                subnet
            }
            None => first_free_subnet(
                &self.address_pools(),
                self.subnet_size(),
                self.networks.values().map(|n| n.subnet),
            )
            .ok_or(Refusal::PoolExhausted)?,
        };
        let vni = (FIRST_VNI..)
            .find(|vni| !self.networks.values().any(|n| n.vni == *vni))
            .expect("fewer networks than VNIs");
        let gateway = request
            .gateway
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.0) + 1));
        if !contains(subnet, gateway) {
            return Err(Refusal::GatewayOutside { gateway, subnet });
        }
        Ok(NetworkRecord {
            id: request.id,
            name: request.name,
            subnet,
            gateway,
            vni,
            mtu: request.mtu.unwrap_or(DEFAULT_OVERLAY_MTU),
            attachable: request.attachable,
            ingress: false,
            labels: request.labels,
            created_at: request.created_at,
        })
    }

    /// VIPs on the service's networks and its published ports; those it
    /// holds already (an update) are kept.
    pub(super) fn allocate_endpoint(&self, service: &mut ServiceRecord) -> Result<(), Refusal> {
        let held_vips = std::mem::take(&mut service.vips);
        let held_ports = std::mem::take(&mut service.ports);
        for network in &service.spec.networks {
            if !self.networks.contains_key(network) {
                return Err(Refusal::NoSuchNetwork(network.clone()));
            }
        }
        let mut ports = Vec::new();
        for port in &service.spec.ports {
            let taken = |published: u16, protocol: Protocol| {
                ports
                    .iter()
                    .any(|p: &PortConfig| p.published == Some(published) && p.protocol == protocol)
                    || self.services.values().any(|s| {
                        s.id != service.id
                            && s.ports
                                .iter()
                                .any(|p| p.published == Some(published) && p.protocol == protocol)
                    })
            };
            let published = match port.published {
                Some(published) => {
                    if taken(published, port.protocol) {
                        return Err(Refusal::PortInUse(published));
                    }
                    published
                }
                None => match held_ports.iter().find(|held| {
                    held.target == port.target
                        && held.protocol == port.protocol
                        && held.mode == port.mode
                        && held.published.is_some_and(|p| !taken(p, port.protocol))
                }) {
                    Some(held) => held.published.unwrap_or_default(),
                    None => DYNAMIC_PORTS
                        .clone()
                        .find(|p| !taken(*p, port.protocol))
                        .ok_or(Refusal::NoFreePort)?,
                },
            };
            ports.push(PortConfig {
                published: Some(published),
                ..*port
            });
        }
        service.ports = ports;
        if service.spec.endpoint_mode == EndpointMode::Vip {
            for network in service.task_networks(self) {
                let ip = match held_vips.get(&network) {
                    Some(ip) => *ip,
                    None => self.free_address(&network)?,
                };
                service.vips.insert(network, ip);
            }
        }
        Ok(())
    }

    /// The lowest address of `network` nobody holds: not the network, its
    /// gateway or broadcast address, a VIP, or a live task's.
    pub(super) fn free_address(&self, network_id: &str) -> Result<Ipv4Addr, Refusal> {
        let network = self
            .networks
            .get(network_id)
            .ok_or_else(|| Refusal::NoSuchNetwork(network_id.to_owned()))?;
        let mut used = BTreeSet::from([network.gateway]);
        used.extend(
            self.services
                .values()
                .filter_map(|s| s.vips.get(network_id)),
        );
        used.extend(
            self.tasks
                .values()
                .filter(|t| t.holds_addresses())
                .filter_map(|t| t.addresses.get(network_id)),
        );
        first_free(network, &used).ok_or_else(|| Refusal::NoFreeAddress(network.name.clone()))
    }
}

/// The first subnet of `size` bits carved from `pools`, in order, that
/// overlaps none of `taken`.
pub fn first_free_subnet(
    pools: &[(Ipv4Addr, u8)],
    size: u8,
    taken: impl Iterator<Item = (Ipv4Addr, u8)> + Clone,
) -> Option<(Ipv4Addr, u8)> {
    pools.iter().find_map(|&(base, prefix)| {
        let count = 1u64 << size.saturating_sub(prefix);
        let base = u64::from(u32::from(base));
        (0..count)
            .map(|i| (Ipv4Addr::from((base + (i << (32 - size))) as u32), size))
            .find(|candidate| !taken.clone().any(|t| overlaps(t, *candidate)))
    })
}

/// Checks `--default-addr-pool` and `--default-addr-pool-mask-length`
/// as `init` is given them: each pool a network address that holds at
/// least one subnet of the size asked, no two pools overlapping.
pub fn check_address_pools(pools: &[(Ipv4Addr, u8)], size: u8) -> Result<(), String> {
    if !(1..=MAX_SUBNET_PREFIX).contains(&size) {
        return Err(format!(
            "--default-addr-pool-mask-length {size}: give a prefix length up to {MAX_SUBNET_PREFIX} (Docker's default is {POOL_PREFIX})"
        ));
    }
    for (i, &(base, prefix)) in pools.iter().enumerate() {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(base) & !mask != 0 {
            return Err(format!(
                "--default-addr-pool {base}/{prefix}: not a network address; did you mean {}/{prefix}?",
                Ipv4Addr::from(u32::from(base) & mask)
            ));
        }
        if prefix > size {
            return Err(format!(
                "--default-addr-pool {base}/{prefix} is smaller than a /{size} subnet: give a larger pool or a longer --default-addr-pool-mask-length"
            ));
        }
        if let Some(&(other, other_prefix)) = pools[..i]
            .iter()
            .find(|other| overlaps(**other, (base, prefix)))
        {
            return Err(format!(
                "--default-addr-pool {base}/{prefix} overlaps {other}/{other_prefix}"
            ));
        }
    }
    Ok(())
}

/// Whether two subnets share an address.
fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    contains(a, b.0) || contains(b, a.0)
}

fn contains((net, prefix): (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(net) & mask == u32::from(ip) & mask
}

fn first_free(network: &NetworkRecord, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (net, prefix) = network.subnet;
    let size = 1u64 << (32 - u32::from(prefix));
    let base = u64::from(u32::from(net));
    // Skip the network address and the broadcast address.
    (1..size.saturating_sub(1))
        .map(|offset| Ipv4Addr::from((base + offset) as u32))
        .find(|ip| !used.contains(ip))
}

/// Docker's `ingress` network, made by `init`: the first subnet of the
/// address pools (10.0.0.0/24 by default), the first VNI.
pub fn ingress_network(id: String, created_at: u64, subnet: (Ipv4Addr, u8)) -> NetworkRecord {
    NetworkRecord {
        id,
        name: "ingress".into(),
        subnet,
        gateway: Ipv4Addr::from(u32::from(subnet.0) + 1),
        vni: FIRST_VNI,
        mtu: DEFAULT_OVERLAY_MTU,
        attachable: false,
        ingress: true,
        labels: BTreeMap::new(),
        created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> (Ipv4Addr, u8) {
        let (ip, prefix) = text.split_once('/').unwrap();
        (ip.parse().unwrap(), prefix.parse().unwrap())
    }

    #[test]
    fn subnets_come_from_the_pools_in_order_around_those_taken() {
        let pools = [net("10.20.0.0/24"), net("192.168.0.0/16")];
        let none = std::iter::empty();
        assert_eq!(
            first_free_subnet(&pools, 26, none),
            Some(net("10.20.0.0/26"))
        );
        let taken = [net("10.20.0.0/26"), net("10.20.0.128/25")];
        assert_eq!(
            first_free_subnet(&pools, 26, taken.iter().copied()),
            Some(net("10.20.0.64/26"))
        );
        // The first pool full: the second one's first subnet.
        let full = [net("10.20.0.0/24")];
        assert_eq!(
            first_free_subnet(&pools, 26, full.iter().copied()),
            Some(net("192.168.0.0/26"))
        );
        let everything = [net("0.0.0.0/1"), net("128.0.0.0/1")];
        assert_eq!(
            first_free_subnet(&pools, 26, everything.iter().copied()),
            None
        );
    }

    #[test]
    fn bad_pools_are_refused_naming_the_flag() {
        assert!(check_address_pools(&[net("10.20.0.0/16")], 24).is_ok());
        assert!(check_address_pools(&[], 24).is_ok());
        let err = check_address_pools(&[net("10.20.0.1/16")], 24).unwrap_err();
        assert!(err.contains("did you mean 10.20.0.0/16"), "{err}");
        let err = check_address_pools(&[net("10.20.0.0/26")], 24).unwrap_err();
        assert!(err.contains("smaller than a /24"), "{err}");
        let err = check_address_pools(&[net("10.0.0.0/8"), net("10.20.0.0/16")], 24).unwrap_err();
        assert!(err.contains("overlaps 10.0.0.0/8"), "{err}");
        let err = check_address_pools(&[], 30).unwrap_err();
        assert!(err.contains("--default-addr-pool-mask-length 30"), "{err}");
    }
}
