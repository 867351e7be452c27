//! The eBPF data plane: loads swarm's programs into the kernel, attaches them,
//! and reads and writes their maps. The rest of the node talks to the kernel
//! programs only through this module.

mod bpffs;
pub(crate) mod netlink;
pub mod overlay;
mod probe;
mod services;
mod stats;
pub mod test_run;

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpFlags, tc, tc::SchedClassifierLinkId,
    },
};
use serde::{Deserialize, Serialize};
use swarm_common::{
    globals, map_names, program_names,
    stats::{Counter, DropReason, PacketKind},
};
use tracing::{info, warn};

pub use bpffs::{BPFFS_ROOT, BpffsError, SWARM_PIN_ROOT, remove_pin_dir};
pub use netlink::NetlinkError;
pub use overlay::{EndpointRow, LocalEndpointSpec, OverlayNetwork, RemoteEndpointSpec};

pub use services::{
    BalancedService, FlowRow, PortConfig, PortError, Protocol, PublishMode, PublishedPort,
    ServiceRow,
};
pub use stats::{CounterRow, DataplaneStats};

/// The compiled eBPF object, built by build.rs (empty with SWARM_SKIP_EBPF=1).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/swarm-dataplane"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "this swarm binary was built with SWARM_SKIP_EBPF=1 and holds no eBPF programs; rebuild it without that switch (`cargo xtask run` or `cargo build`)"
    )]
    NoEmbeddedObject,
    #[error(transparent)]
    Bpffs(#[from] bpffs::BpffsError),
    #[error(
        "loading the eBPF programs failed: {0}. Is BPF enabled in this kernel (CONFIG_BPF_SYSCALL), and are you root? `bpftool feature probe` tells"
    )]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("no such interface {0:?}: check `ip link` for the underlay interface's name")]
    NoSuchInterface(String),
    #[error(
        "{0} already has an XDP program attached: another swarm daemon on this host, or another tool (see `ip link show {0}`; `ip link set {0} xdp off` removes a stale one)"
    )]
    XdpBusy(String),
    #[error("attaching XDP to {iface} failed: {source}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("attaching TC to {iface}: {source}")]
    AttachTc {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("the overlay is not started on this node")]
    OverlayNotStarted,
    #[error("invalid network: {0}")]
    InvalidNetwork(String),
    #[error("invalid service: {0}")]
    InvalidService(String),
    #[error("no service named {0:?} on this node (see `swarm dataplane services`)")]
    NoSuchService(String),
    #[error("no overlay network with VNI {0} on this node; create it first")]
    NoSuchNetwork(u32),
    #[error("network {vni} is still in use ({ids}); detach or remove those first")]
    NetworkInUse { vni: u32, ids: String },
    #[error("{ip} is not in network {vni}'s subnet {subnet}/{prefix_len}")]
    OutsideSubnet {
        ip: Ipv4Addr,
        vni: u32,
        subnet: Ipv4Addr,
        prefix_len: u8,
    },
    #[error("endpoint {0:?} is already attached")]
    EndpointExists(String),
    #[error("{ip} is already in use on network {vni}")]
    AddressInUse { ip: Ipv4Addr, vni: u32 },
    #[error("no local endpoint {0:?}")]
    NoSuchEndpoint(String),
    #[error("no remote endpoint {ip} on network {vni}")]
    NoSuchRemote { vni: u32, ip: Ipv4Addr },
    #[error("cannot open the task's network namespace {path}: {source}")]
    OpenNetns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("overlay state {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("writing map {name}: {source}")]
    MapWrite {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("reading map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Whether `iface` is a veth, by its driver as ethtool reports it. Not read
/// from /sys/class/net: that shows the netns of the mount, not of this process.
fn is_veth(iface: &str) -> bool {
    driver_name(iface).is_some_and(|d| d == "veth")
}

fn driver_name(iface: &str) -> Option<String> {
    // struct ethtool_drvinfo: cmd, then driver[32], version[32], ...
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(iface.bytes().take(15)) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: a datagram socket for the ioctl, closed below; ifr points at valid memory.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut ifr);
        libc::close(fd);
        if rc < 0 {
            return None;
        }
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// The kernel's answer when an interface already has an XDP program.
fn is_busy(err: &ProgramError) -> bool {
    let ProgramError::SyscallError(aya::sys::SyscallError { io_error, .. }) = err else {
        return false;
    };
    matches!(io_error.raw_os_error(), Some(libc::EBUSY | libc::EEXIST))
}

/// Which hook to run the underlay program in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum UnderlayHookChoice {
    /// XDP: native in the driver, except on a veth, where native XDP strips
    /// the peer's segmentation offload: generic XDP there.
    #[default]
    Auto,
    /// XDP in the driver (generic if the driver has no XDP support).
    XdpNative,
    /// XDP on the skb path, for any interface.
    XdpGeneric,
    /// TC ingress, after GRO: no packet copies on interfaces where generic XDP
    /// would have to make them (a veth underlay).
    Tc,
}

/// How the overlay programs hand a frame to a task on this node.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum LocalDelivery {
    /// `bpf_redirect_peer`: straight into the task's namespace (fastest).
    #[default]
    Peer,
    /// `bpf_redirect` to the host-side veth, which passes the frame to the
    /// task through the kernel's backlog queue: for comparison only.
    Redirect,
}

impl LocalDelivery {
    pub fn label(self) -> &'static str {
        match self {
            Self::Peer => "bpf_redirect_peer",
            Self::Redirect => "bpf_redirect",
        }
    }

    fn map_value(self) -> u32 {
        match self {
            Self::Peer => swarm_common::overlay::LOCAL_DELIVERY_PEER,
            Self::Redirect => swarm_common::overlay::LOCAL_DELIVERY_REDIRECT,
        }
    }
}

/// What a clean shutdown left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Everything this node made is gone.
    Removed,
    /// This many task endpoints, the VXLAN device and the pinned maps stay.
    KeptEndpoints(usize),
}

/// Where the underlay program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnderlayHook {
    /// XDP in the driver: runs before the kernel allocates an skb.
    XdpNative,
    /// XDP on the skb path.
    XdpGeneric,
    /// TC ingress.
    Tc,
}

impl UnderlayHook {
    pub fn label(self) -> &'static str {
        match self {
            UnderlayHook::XdpNative => "xdp-native",
            UnderlayHook::XdpGeneric => "xdp-generic",
            UnderlayHook::Tc => "tc",
        }
    }
}

/// Settings the programs are loaded with.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    /// Where this node's maps are pinned: `/sys/fs/bpf/swarm/<node id>`.
    pub pin_dir: PathBuf,
    /// UDP port of the VXLAN data path.
    pub data_path_port: u16,
    /// Where the overlay's networks and local endpoints are recorded across
    /// restarts (the maps hold the rest); `None` keeps nothing.
    pub state_file: Option<PathBuf>,
}

impl DataplaneConfig {
    pub fn for_node(node_id: &str, data_path_port: u16) -> Self {
        Self {
            pin_dir: Path::new(SWARM_PIN_ROOT).join(node_id),
            data_path_port,
            state_file: None,
        }
    }
}

/// The loaded programs and their maps. Dropping it detaches every program;
/// [`Dataplane::unpin`] also removes the pinned maps (a clean shutdown), while a
/// crash leaves them for the next start to pick up.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    tunnel: Option<Tunnel>,
    networks: HashMap<u32, OverlayNetwork>,
    local: HashMap<String, LocalEndpoint>,
    services: services::Services,
    underlay_ifindex: u32,
    state_file: Option<PathBuf>,
    state_saved_at: Option<std::time::Instant>,
    state_pending: bool,
}

struct Tunnel {
    ifindex: u32,
    link: SchedClassifierLinkId,
}

struct LocalEndpoint {
    vni: u32,
    ip: Ipv4Addr,
    host_iface: String,
    ifindex: u32,
    link: SchedClassifierLinkId,
}

impl Dataplane {
    /// Loads the programs into the kernel, pinning maps under the config's pin
    /// dir (reusing maps a previous run left there). Attaches nothing.
    pub fn load(config: &DataplaneConfig) -> Result<Self, DataplaneError> {
        if EBPF_OBJECT.is_empty() {
            return Err(DataplaneError::NoEmbeddedObject);
        }
        bpffs::ensure_pin_dir(&config.pin_dir)?;
        let ebpf = EbpfLoader::new()
            .map_pin_path(&config.pin_dir)
            .set_global(globals::DATA_PATH_PORT, &config.data_path_port, true)
            .load(EBPF_OBJECT)
            .map_err(DataplaneError::Load)?;
        let mut dataplane = Self {
            ebpf,
            pin_dir: config.pin_dir.clone(),
            tunnel: None,
            networks: HashMap::new(),
            local: HashMap::new(),
            services: services::Services::default(),
            underlay_ifindex: 0,
            state_file: config.state_file.clone(),
            state_saved_at: None,
            state_pending: false,
        };
        dataplane
            .underlay_program()?
            .load()
            .map_err(|source| DataplaneError::Program {
                name: program_names::UNDERLAY_XDP,
                source,
            })?;
        for name in [
            program_names::UNDERLAY_TC,
            program_names::MESH_TC,
            program_names::TASK_INGRESS,
            program_names::VXLAN_INGRESS,
        ] {
            dataplane
                .classifier(name)?
                .load()
                .map_err(|source| DataplaneError::Program { name, source })?;
        }
        Ok(dataplane)
    }

    /// The underlay XDP program, loaded but perhaps not attached (tests run it
    /// with BPF_PROG_TEST_RUN).
    pub fn underlay_program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        let program =
            self.ebpf
                .program_mut(program_names::UNDERLAY_XDP)
                .ok_or(DataplaneError::Missing {
                    kind: "program",
                    name: program_names::UNDERLAY_XDP,
                })?;
        program
            .try_into()
            .map_err(|source| DataplaneError::Program {
                name: program_names::UNDERLAY_XDP,
                source,
            })
    }

    /// A loaded TC program, e.g. to run it with BPF_PROG_TEST_RUN.
    pub fn classifier(
        &mut self,
        name: &'static str,
    ) -> Result<&mut SchedClassifier, DataplaneError> {
        let program = self.ebpf.program_mut(name).ok_or(DataplaneError::Missing {
            kind: "program",
            name,
        })?;
        program
            .try_into()
            .map_err(|source| DataplaneError::Program { name, source })
    }

    /// Attaches TC program `name` on `iface`'s ingress.
    fn attach_tc(
        &mut self,
        name: &'static str,
        iface: &str,
    ) -> Result<SchedClassifierLinkId, DataplaneError> {
        // Only needed before TCX (kernel 6.6); harmless after.
        if let Err(err) = tc::qdisc_add_clsact(iface)
            && err.kind() != std::io::ErrorKind::AlreadyExists
        {
            tracing::debug!(iface, error = %err, "no clsact qdisc; relying on TCX");
        }
        self.classifier(name)?
            .attach(iface, TcAttachType::Ingress)
            .map_err(|source| DataplaneError::AttachTc {
                iface: iface.to_owned(),
                source,
            })
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut MapData, K, V>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        BpfHashMap::try_from(map).map_err(|source| DataplaneError::Map { name, source })
    }

    /// Attaches the underlay program to `iface` in the hook `choice` asks for.
    pub fn attach_underlay(
        &mut self,
        iface: &str,
        choice: UnderlayHookChoice,
    ) -> Result<UnderlayHook, DataplaneError> {
        if nix::net::if_::if_nametoindex(iface).is_err() {
            return Err(DataplaneError::NoSuchInterface(iface.to_owned()));
        }
        let hook = match choice {
            UnderlayHookChoice::Tc => {
                self.attach_tc(program_names::UNDERLAY_TC, iface)?;
                UnderlayHook::Tc
            }
            UnderlayHookChoice::XdpGeneric => self.attach_xdp(iface, false)?,
            UnderlayHookChoice::XdpNative => self.attach_xdp(iface, true)?,
            UnderlayHookChoice::Auto => self.attach_xdp(iface, !is_veth(iface))?,
        };
        if hook != UnderlayHook::Tc {
            // The routing mesh rewrites and redirects skbs: TC, beside the XDP hook.
            self.attach_tc(program_names::MESH_TC, iface)?;
        }
        self.underlay_ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|_| DataplaneError::NoSuchInterface(iface.to_owned()))?;
        info!(iface, hook = hook.label(), "underlay program attached");
        Ok(hook)
    }

    fn attach_xdp(&mut self, iface: &str, native: bool) -> Result<UnderlayHook, DataplaneError> {
        let program = self.underlay_program()?;
        let attach_err = |source: ProgramError| {
            if is_busy(&source) {
                DataplaneError::XdpBusy(iface.to_owned())
            } else {
                DataplaneError::Attach {
                    iface: iface.to_owned(),
                    source,
                }
            }
        };
        if native {
            match program.attach(iface, XdpFlags::DRV_MODE) {
                Ok(_) => return Ok(UnderlayHook::XdpNative),
                Err(err) if is_busy(&err) => return Err(attach_err(err)),
                Err(err) => {
                    warn!(iface, error = %err, "native XDP unavailable, using generic mode")
                }
            }
        }
        program
            .attach(iface, XdpFlags::SKB_MODE)
            .map_err(attach_err)?;
        Ok(UnderlayHook::XdpGeneric)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Sums the per-CPU packet and drop counters.
    pub fn stats(&self) -> Result<DataplaneStats, DataplaneError> {
        let packets =
            self.read_counters(map_names::PACKET_COUNTERS, PacketKind::ALL, |k| k.label())?;
        let drops = self.read_counters(map_names::DROP_COUNTERS, DropReason::ALL, |r| r.label())?;
        Ok(DataplaneStats { packets, drops })
    }

    fn read_counters<K: Copy + Into<u32>>(
        &self,
        name: &'static str,
        keys: &[K],
        label: impl Fn(K) -> &'static str,
    ) -> Result<Vec<CounterRow>, DataplaneError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        let array = PerCpuArray::<_, Counter>::try_from(map)
            .map_err(|source| DataplaneError::Map { name, source })?;
        keys.iter()
            .map(|&key| {
                let per_cpu = array
                    .get(&key.into(), 0)
                    .map_err(|source| DataplaneError::Map { name, source })?;
                let total = per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
                    packets: sum.packets + c.packets,
                    bytes: sum.bytes + c.bytes,
                });
                Ok(CounterRow {
                    name: label(key).to_owned(),
                    packets: total.packets,
                    bytes: total.bytes,
                })
            })
            .collect()
    }

    /// The clean-shutdown path. With task endpoints attached, the overlay
    /// (veths, VXLAN device, pinned maps) stays for the next start to adopt,
    /// so the tasks' flows survive a restart; only the programs detach.
    /// Otherwise everything goes: device, programs, pins.
    pub fn shutdown(mut self) -> Result<Shutdown, DataplaneError> {
        if !self.local.is_empty() {
            self.save_state()?;
            let kept = self.local.len();
            drop(self);
            return Ok(Shutdown::KeptEndpoints(kept));
        }
        if let Some(tunnel) = self.tunnel.take() {
            let _ = self
                .classifier(program_names::VXLAN_INGRESS)?
                .detach(tunnel.link);
            let netlink = netlink::Netlink::open()?;
            netlink.delete_link(tunnel.ifindex)?;
        }
        self.remove_state()?;
        let pin_dir = self.pin_dir.clone();
        drop(self);
        bpffs::remove_pin_dir(&pin_dir)?;
        Ok(Shutdown::Removed)
    }
}
