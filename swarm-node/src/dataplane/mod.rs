//! The eBPF data plane: loads swarm's programs into the kernel, attaches them,
//! and reads and writes their maps. The rest of the node talks to the kernel
//! programs only through this module.

mod bpffs;
mod stats;
pub mod test_run;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::PerCpuArray,
    programs::{ProgramError, Xdp, XdpFlags, xdp::XdpLinkId},
};
use serde::{Deserialize, Serialize};
use swarm_common::{
    globals, map_names, program_names,
    stats::{Counter, DropReason, PacketKind},
};
use tracing::{info, warn};

pub use bpffs::{BPFFS_ROOT, BpffsError, SWARM_PIN_ROOT, remove_pin_dir};
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
    #[error("{0}")]
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
    #[error("attaching XDP to {iface} failed in native and generic mode: {source}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("reading map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The kernel's answer when an interface already has an XDP program.
fn is_busy(err: &ProgramError) -> bool {
    let ProgramError::SyscallError(aya::sys::SyscallError { io_error, .. }) = err else {
        return false;
    };
    matches!(io_error.raw_os_error(), Some(libc::EBUSY | libc::EEXIST))
}

/// How the underlay XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver: runs before the kernel allocates an skb.
    Native,
    /// Generic (skb) mode: for drivers without XDP support.
    Generic,
}

/// Settings the programs are loaded with.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    /// Where this node's maps are pinned: `/sys/fs/bpf/swarm/<node id>`.
    pub pin_dir: PathBuf,
    /// UDP port of the VXLAN data path.
    pub data_path_port: u16,
}

impl DataplaneConfig {
    pub fn for_node(node_id: &str, data_path_port: u16) -> Self {
        Self {
            pin_dir: Path::new(SWARM_PIN_ROOT).join(node_id),
            data_path_port,
        }
    }
}

/// The loaded programs and their maps. Dropping it detaches every program;
/// [`Dataplane::unpin`] also removes the pinned maps (a clean shutdown), while a
/// crash leaves them for the next start to pick up.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    underlay: Option<(String, XdpMode, XdpLinkId)>,
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
            underlay: None,
        };
        dataplane
            .underlay_program()?
            .load()
            .map_err(|source| DataplaneError::Program {
                name: program_names::UNDERLAY_XDP,
                source,
            })?;
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

    /// Attaches the underlay program to `iface`, natively when the driver
    /// supports it and in generic mode otherwise.
    pub fn attach_underlay(&mut self, iface: &str) -> Result<XdpMode, DataplaneError> {
        if nix::net::if_::if_nametoindex(iface).is_err() {
            return Err(DataplaneError::NoSuchInterface(iface.to_owned()));
        }
        let program = self.underlay_program()?;
        let (mode, link) = match program.attach(iface, XdpFlags::DRV_MODE) {
            Ok(link) => (XdpMode::Native, link),
            Err(err) if is_busy(&err) => return Err(DataplaneError::XdpBusy(iface.to_owned())),
            Err(native_err) => {
                warn!(iface, error = %native_err, "native XDP unavailable, using generic mode");
                let link = program
                    .attach(iface, XdpFlags::SKB_MODE)
                    .map_err(|source| DataplaneError::Attach {
                        iface: iface.to_owned(),
                        source,
                    })?;
                (XdpMode::Generic, link)
            }
        };
        info!(
            iface,
            ?mode,
            program = program_names::UNDERLAY_XDP,
            "attached"
        );
        self.underlay = Some((iface.to_owned(), mode, link));
        Ok(mode)
    }

    /// The interface and mode the underlay program is attached with, if any.
    pub fn underlay(&self) -> Option<(&str, XdpMode)> {
        self.underlay
            .as_ref()
            .map(|(iface, mode, _)| (iface.as_str(), *mode))
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

    /// Detaches everything and removes this node's pins: the clean-shutdown path.
    pub fn unpin(self) -> Result<(), DataplaneError> {
        let pin_dir = self.pin_dir.clone();
        drop(self);
        bpffs::remove_pin_dir(&pin_dir)?;
        Ok(())
    }
}
