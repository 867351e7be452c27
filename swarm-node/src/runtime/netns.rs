//! Named network namespaces, made and deleted the way `ip netns add` and
//! `ip netns del` do, without changing any daemon thread's namespace.

use std::{fs, io, path::Path};

use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
    sys::statfs::{NSFS_MAGIC, statfs},
};

use crate::dataplane::netlink::Netlink;

use super::NETNS_DIR;

/// Whether a namespace is bound at `path` (not just the empty file).
pub(crate) fn is_bound(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Binds a new, empty network namespace at `path` with `lo` up. On failure
/// nothing is left at `path`.
pub(crate) fn create(path: &Path) -> Result<(), (String, io::Error)> {
    mount_point(path)?;
    let target = path.to_owned();
    // unshare moves only the calling thread: a thread of its own, which ends
    // here, so that no daemon thread ever changes namespace.
    let made = std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || -> Result<(), (String, io::Error)> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| ("unsharing a network namespace".to_owned(), e.into()))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                (
                    format!("binding the namespace at {}", target.display()),
                    e.into(),
                )
            })?;
            // Still inside: the netlink socket opens in the new namespace.
            let lo_up = || -> Result<(), crate::dataplane::netlink::NetlinkError> {
                let netlink = Netlink::open()?;
                let lo = netlink.require_link("lo")?;
                netlink.set_up(lo)
            };
            lo_up().map_err(|e| ("bringing lo up".to_owned(), io::Error::other(e)))
        })
        .map_err(|e| ("starting a thread".to_owned(), e))?
        .join()
        .unwrap_or_else(|_| {
            Err((
                "creating the namespace".to_owned(),
                io::Error::other("the thread panicked"),
            ))
        });
    if made.is_err() {
        let _ = remove(path);
    }
    made
}

/// Binds the network namespace of process `pid` at `path` (`ip netns
/// attach`), so it outlives the process's view of it and `ip netns` sees it.
pub(crate) fn bind_process(pid: i32, path: &Path) -> Result<(), (String, io::Error)> {
    if is_bound(path) {
        return Ok(());
    }
    mount_point(path)?;
    let source = format!("/proc/{pid}/ns/net");
    let bound = mount(
        Some(source.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    );
    if let Err(err) = bound {
        let _ = fs::remove_file(path);
        return Err((
            format!("binding {source} at {}", path.display()),
            err.into(),
        ));
    }
    Ok(())
}

/// The empty file under the shared NETNS_DIR a namespace is bound on.
fn mount_point(path: &Path) -> Result<(), (String, io::Error)> {
    ensure_netns_dir().map_err(|e| (format!("making {NETNS_DIR} a shared mount point"), e))?;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
        .map_err(|e| (format!("creating {}", path.display()), e))
}

/// Unbinds and deletes the namespace at `path`; gone already is fine.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: the file is there but nothing is bound on it.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(err) => return Err(err.into()),
    }
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Makes NETNS_DIR a shared mount point, as `ip netns add` does, so that an
/// unmount there reaches other mount namespaces and frees the namespace.
fn ensure_netns_dir() -> io::Result<()> {
    let dir = Path::new(NETNS_DIR);
    fs::create_dir_all(dir)?;
    let make_shared = || {
        mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it on itself first.
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            Ok(make_shared()?)
        }
        Err(err) => Err(err.into()),
    }
}
