//! Hosts on a shared underlay, a client outside them, and their daemons.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{Daemon, Netns, netns::sweep_stale};

/// The underlay is 198.18.0.0/24 inside each topology (namespaces keep
/// topologies apart, so every test can use the same addresses).
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
const UNDERLAY_BRIDGE: &str = "br0";
/// The interface name of the underlay inside every host and the client.
const UNDERLAY_IFACE: &str = "eth0";
/// The data network's interface, with [`Topology::add_data_network`].
pub const DATA_IFACE: &str = "eth1";

static NEXT_TOPOLOGY: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Debug)]
pub struct TopologyOptions {
    /// Names start `<tag>-<pid>-<n>-`: `swt` for tests, `swdemo`, `swbench`.
    pub tag: String,
    pub hosts: usize,
    /// Underlay MTU.
    pub mtu: u32,
    /// Extra `swarm daemon` flags for every daemon, e.g. `--underlay-hook tc`.
    pub daemon_args: Vec<String>,
}

impl TopologyOptions {
    pub fn new(tag: &str, hosts: usize) -> Self {
        Self {
            tag: tag.to_owned(),
            hosts,
            mtu: 1500,
            daemon_args: Vec::new(),
        }
    }
}

/// One simulated host: a namespace with `eth0` on the underlay.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub addr: Ipv4Addr,
    pub netns: Netns,
}

impl Host {
    pub const UNDERLAY_IFACE: &'static str = UNDERLAY_IFACE;

    /// The MAC address of the host's underlay interface.
    pub fn mac(&self) -> anyhow::Result<[u8; 6]> {
        let json = self.netns.ip(&["-j", "link", "show", UNDERLAY_IFACE])?;
        let links: serde_json::Value = serde_json::from_str(&json)?;
        let text = links[0]["address"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no MAC address in {json}"))?;
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(text.split(':')) {
            *byte = u8::from_str_radix(part, 16)?;
        }
        Ok(mac)
    }
}

/// N hosts and a client on one underlay bridge, plus their daemons.
/// Dropping it stops the daemons and deletes everything; when dropped during
/// a panic it first prints every daemon's log.
pub struct Topology {
    pub prefix: String,
    pub hosts: Vec<Host>,
    pub client: Host,
    /// Daemons by host index (`None` until started).
    pub daemons: Vec<Option<Daemon>>,
    pub workdir: tempfile::TempDir,
    daemon_args: Vec<String>,
    /// Extra namespaces a test made (tasks, containers), deleted with the topology.
    pub extra_netns: Vec<Netns>,
    // Declared last: dropped after the hosts, so the veths go before the bridge.
    underlay: Netns,
}

impl Topology {
    pub fn new(options: &TopologyOptions) -> anyhow::Result<Self> {
        crate::require_root();
        sweep_stale(&options.tag);
        let prefix = format!(
            "{}-{}-{}",
            options.tag,
            std::process::id(),
            NEXT_TOPOLOGY.fetch_add(1, Ordering::Relaxed)
        );
        let workdir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()?;
        let underlay = Netns::create(&format!("{prefix}-ul"))?;
        underlay.ip(&["link", "add", UNDERLAY_BRIDGE, "type", "bridge"])?;
        // A switch, not a firewall: with br_netfilter loaded the bridge would
        // validate and drop malformed IP itself, before the hosts see it.
        for table in ["iptables", "ip6tables", "arptables"] {
            let knob = format!("/proc/sys/net/bridge/bridge-nf-call-{table}");
            if std::path::Path::new(&knob).exists() {
                underlay.exec("sh", &["-c", &format!("echo 0 > {knob}")])?;
            }
        }
        underlay.ip(&[
            "link",
            "set",
            UNDERLAY_BRIDGE,
            "mtu",
            &options.mtu.to_string(),
            "up",
        ])?;

        let mut hosts = Vec::with_capacity(options.hosts);
        for i in 1..=options.hosts {
            let addr = Ipv4Addr::new(198, 18, 0, i as u8);
            hosts.push(attach_host(
                &underlay,
                &prefix,
                &format!("h{i}"),
                addr,
                options.mtu,
            )?);
        }
        let client = attach_host(
            &underlay,
            &prefix,
            "client",
            Ipv4Addr::new(198, 18, 0, 100),
            options.mtu,
        )?;
        let daemons = (0..hosts.len()).map(|_| None).collect();
        Ok(Self {
            prefix,
            hosts,
            client,
            daemons,
            workdir,
            daemon_args: options.daemon_args.clone(),
            extra_netns: Vec::new(),
            underlay,
        })
    }

    /// Starts `swarm daemon` in every host and waits until each answers.
    pub fn start_daemons(&mut self) -> anyhow::Result<()> {
        for i in 0..self.hosts.len() {
            self.start_daemon(i)?;
        }
        Ok(())
    }

    /// Starts (or restarts, on the same data dir) the daemon of host `i`.
    pub fn start_daemon(&mut self, i: usize) -> anyhow::Result<&Daemon> {
        let args = self.daemon_args.clone();
        self.start_daemon_with(i, &args)
    }

    /// Like [`Topology::start_daemon`], with these flags instead of the topology's.
    pub fn start_daemon_with(&mut self, i: usize, args: &[String]) -> anyhow::Result<&Daemon> {
        if let Some(old) = self.daemons[i].take() {
            old.retire()?;
        }
        let host = &self.hosts[i];
        let dir = self.host_dir(i);
        let daemon = Daemon::start(host, &dir, args)?;
        self.daemons[i] = Some(daemon);
        Ok(self.daemon(i))
    }

    pub fn daemon(&self, i: usize) -> &Daemon {
        self.daemons[i]
            .as_ref()
            .unwrap_or_else(|| panic!("the daemon of host {} was not started", i + 1))
    }

    pub fn daemon_mut(&mut self, i: usize) -> &mut Daemon {
        self.daemons[i]
            .as_mut()
            .unwrap_or_else(|| panic!("the daemon of host {} was not started", i + 1))
    }

    /// The join token for `role` (`worker` or `manager`), as the manager on
    /// host `manager` gives it.
    pub fn join_token(&self, manager: usize, role: &str) -> anyhow::Result<String> {
        Ok(self
            .daemon(manager)
            .swarm_ok(&["join-token", "-q", role])?
            .trim()
            .to_owned())
    }

    /// Host `host` joins the swarm as `role` through the manager on host
    /// `through` (port 2377), with that manager's token; the CLI's output.
    pub fn join(&self, host: usize, role: &str, through: usize) -> anyhow::Result<String> {
        let token = self.join_token(through, role)?;
        let manager = format!("{}:2377", self.hosts[through].addr);
        self.daemon(host)
            .swarm_ok(&["join", "--token", &token, &manager])
    }

    /// A new namespace named `<prefix>-<role>`, deleted with the topology.
    /// A second network between the hosts, as a separate data network:
    /// `eth1` in host i with 198.19.0.(i+1)/24, on a bridge of its own.
    pub fn add_data_network(&mut self) -> anyhow::Result<()> {
        let bridge = Netns::create(&format!("{}-dp", self.prefix))?;
        bridge.ip(&["link", "add", "br1", "type", "bridge"])?;
        bridge.ip(&["link", "set", "br1", "up"])?;
        for (i, host) in self.hosts.iter().enumerate() {
            bridge.ip(&[
                "link",
                "add",
                &host.name,
                "type",
                "veth",
                "peer",
                "name",
                DATA_IFACE,
                "netns",
                host.netns.name(),
            ])?;
            bridge.ip(&["link", "set", &host.name, "master", "br1", "up"])?;
            host.netns.ip(&[
                "addr",
                "add",
                &format!("198.19.0.{}/24", i + 1),
                "dev",
                DATA_IFACE,
            ])?;
            host.netns.ip(&["link", "set", DATA_IFACE, "up"])?;
        }
        self.extra_netns.push(bridge);
        Ok(())
    }

    pub fn add_netns(&mut self, role: &str) -> anyhow::Result<&Netns> {
        let netns = Netns::create(&format!("{}-{role}", self.prefix))?;
        self.extra_netns.push(netns);
        Ok(self.extra_netns.last().expect("just pushed"))
    }

    /// Where host `i` keeps its daemon's data dir, socket and log.
    pub fn host_dir(&self, i: usize) -> PathBuf {
        self.workdir.path().join(&self.hosts[i].name)
    }

    /// Every namespace this topology made, for leak checks.
    pub fn netns_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .hosts
            .iter()
            .map(|h| h.netns.name().to_owned())
            .collect();
        names.push(self.client.netns.name().to_owned());
        names.push(self.underlay.name().to_owned());
        names
    }

    /// Prints each daemon's log to stderr (the test harness shows it on failure).
    pub fn dump_logs(&self) {
        for daemon in self.daemons.iter().flatten() {
            eprintln!("----- log of swarm daemon on {} -----", daemon.host);
            eprintln!("{}", daemon.log());
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for daemon in self.daemons.iter_mut().flatten() {
            daemon.teardown();
        }
    }
}

/// A host namespace wired to the underlay bridge through a veth, `eth0` inside.
fn attach_host(
    underlay: &Netns,
    prefix: &str,
    name: &str,
    addr: Ipv4Addr,
    mtu: u32,
) -> anyhow::Result<Host> {
    let netns = Netns::create(&format!("{prefix}-{name}"))?;
    let mtu = mtu.to_string();
    // The bridge-side end is named after the host; the host side is eth0.
    underlay.ip(&[
        "link",
        "add",
        name,
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        UNDERLAY_IFACE,
        "mtu",
        &mtu,
        "netns",
        netns.name(),
    ])?;
    underlay.ip(&["link", "set", name, "master", UNDERLAY_BRIDGE, "up"])?;
    netns.ip(&[
        "addr",
        "add",
        &format!("{addr}/{UNDERLAY_PREFIX_LEN}"),
        "dev",
        UNDERLAY_IFACE,
    ])?;
    netns.ip(&["link", "set", UNDERLAY_IFACE, "up"])?;
    // Like a physical NIC: GRO on. A veth does it only when asked (it then
    // receives through NAPI), and without it no tunnel traffic is aggregated.
    netns.exec("ethtool", &["-K", UNDERLAY_IFACE, "gro", "on"])?;
    Ok(Host {
        name: name.to_owned(),
        addr,
        netns,
    })
}
