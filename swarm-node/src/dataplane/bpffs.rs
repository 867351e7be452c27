//! The BPF filesystem where maps are pinned so they outlive the daemon process.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use tracing::info;

pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// Every swarm daemon on this host pins under here, in a directory named by its node ID.
pub const SWARM_PIN_ROOT: &str = "/sys/fs/bpf/swarm";

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error(
        "{BPFFS_ROOT} is not a BPF filesystem and mounting one there failed ({0}); mount it with `mount -t bpf bpf {BPFFS_ROOT}`"
    )]
    Mount(nix::Error),
    #[error("cannot create pin dir {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot remove pin dir {path}: {source}")]
    RemoveDir { path: PathBuf, source: io::Error },
}

/// Makes sure bpffs is mounted at /sys/fs/bpf (mounting it if not, as in a
/// fresh mount namespace) and creates `pin_dir`.
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<(), BpffsError> {
    let mounted = statfs(BPFFS_ROOT).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC);
    if !mounted {
        mount(
            Some("bpf"),
            BPFFS_ROOT,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(BpffsError::Mount)?;
        info!(path = BPFFS_ROOT, "mounted bpffs");
    }
    fs::create_dir_all(pin_dir).map_err(|source| BpffsError::CreateDir {
        path: pin_dir.to_owned(),
        source,
    })
}

/// Unpins everything under `pin_dir` and removes it, and the shared swarm
/// directory too once no other daemon pins there.
pub fn remove_pin_dir(pin_dir: &Path) -> Result<(), BpffsError> {
    match fs::remove_dir_all(pin_dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BpffsError::RemoveDir {
                path: pin_dir.to_owned(),
                source,
            });
        }
    }
    if let Some(parent) = pin_dir.parent().filter(|p| *p == Path::new(SWARM_PIN_ROOT)) {
        // Fails with ENOTEMPTY while other daemons on this host pin there: fine.
        let _ = fs::remove_dir(parent);
    }
    Ok(())
}
