//! A task's root: an overlayfs mount of its image's layers (read-only) with
//! an upper and a work directory of the task's own, so tasks share every
//! layer and write only their own copy.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Where a task's root and its writable layer live, under its task dir.
pub struct RootfsPaths {
    pub root: PathBuf,
    upper: PathBuf,
    work: PathBuf,
}

impl RootfsPaths {
    pub fn under(task_dir: &Path) -> Self {
        Self {
            root: task_dir.join("rootfs"),
            upper: task_dir.join("overlay").join("upper"),
            work: task_dir.join("overlay").join("work"),
        }
    }

    /// Mounts `layers` (bottom first) at the root; a root mounted already
    /// (the task was prepared before a daemon restart) is kept.
    pub fn mount(&self, layers: &[PathBuf]) -> io::Result<()> {
        if is_mount_point(&self.root)? {
            return Ok(());
        }
        for dir in [&self.root, &self.upper, &self.work] {
            fs::create_dir_all(dir)?;
        }
        // overlayfs lists the top layer first.
        let lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|layer| escape(&layer.to_string_lossy()))
            .collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            escape(&self.upper.to_string_lossy()),
            escape(&self.work.to_string_lossy()),
        );
        mount(
            Some("overlay"),
            &self.root,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(io::Error::from)
    }

    /// Unmounts the root, if mounted, so the task dir can go.
    pub fn unmount(&self) -> io::Result<()> {
        if !is_mount_point(&self.root)? {
            return Ok(());
        }
        umount2(&self.root, MntFlags::MNT_DETACH).map_err(io::Error::from)
    }
}

/// overlayfs splits its options at commas and layers at colons.
fn escape(path: &str) -> String {
    path.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mount_point(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let Some(parent) = path.parent() else {
        return Ok(true);
    };
    match (fs::metadata(path), fs::metadata(parent)) {
        (Ok(own), Ok(parent)) => Ok(own.dev() != parent.dev()),
        (Err(e), _) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}
