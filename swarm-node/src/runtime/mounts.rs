//! What both runtimes do for a task's secrets, configs and mounts on the
//! node: the files live on a tmpfs of the task's own (never on a disk),
//! bind sources are checked as Docker checks them, and named volumes are
//! directories under the data dir that outlive their tasks.

use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
};

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use super::RuntimeError;
use crate::api::mounts::{Mount, MountKind, TaskFile};

/// Under a task's directory: the tmpfs its secrets and configs are on.
const FILES_DIR: &str = "files";
/// Room on that tmpfs beyond the files themselves.
const FILES_SLACK: usize = 64 * 1024;

/// Writes `files` onto a fresh tmpfs under `task_dir`, each as `<n>` (its
/// place in `files`) with its owner and mode; returns the tmpfs's path.
/// Nothing when there are no files.
pub fn write_task_files(
    task: &str,
    task_dir: &Path,
    files: &[TaskFile],
) -> Result<Option<PathBuf>, RuntimeError> {
    if files.is_empty() {
        return Ok(None);
    }
    let dir = task_dir.join(FILES_DIR);
    let failed = |what: String| {
        let task = task.to_owned();
        move |source: io::Error| RuntimeError::Io { task, what, source }
    };
    fs::create_dir_all(&dir).map_err(failed(format!("creating {}", dir.display())))?;
    if !is_mount_point(&dir) {
        let size = files.iter().map(|f| f.data.0.len()).sum::<usize>() + FILES_SLACK;
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=0755,size={size}").as_str()),
        )
        .map_err(|errno| RuntimeError::Io {
            task: task.to_owned(),
            what: format!("mounting a tmpfs on {}", dir.display()),
            source: errno.into(),
        })?;
    }
    for (n, file) in files.iter().enumerate() {
        let path = dir.join(n.to_string());
        fs::write(&path, &file.data.0)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(file.mode)))
            .and_then(|()| chown(&path, Some(file.uid), Some(file.gid)))
            .map_err(failed(format!("writing {}", path.display())))?;
    }
    Ok(Some(dir))
}

/// The file `write_task_files` wrote for `files[n]`.
pub fn task_file_path(task_dir: &Path, n: usize) -> PathBuf {
    task_dir.join(FILES_DIR).join(n.to_string())
}

/// Unmounts the task's files tmpfs: its bytes are gone with it.
pub fn remove_task_files(task: &str, task_dir: &Path) -> Result<(), RuntimeError> {
    let dir = task_dir.join(FILES_DIR);
    if !is_mount_point(&dir) {
        return Ok(());
    }
    nix::mount::umount2(&dir, MntFlags::MNT_DETACH).map_err(|errno| RuntimeError::Io {
        task: task.to_owned(),
        what: format!("unmounting {}", dir.display()),
        source: errno.into(),
    })
}

/// Refuses a task whose bind source is missing on this node, in Docker's
/// words.
pub fn check_bind_sources(task: &str, mounts: &[Mount]) -> Result<(), RuntimeError> {
    for mount in mounts.iter().filter(|m| m.kind == MountKind::Bind) {
        if !Path::new(&mount.source).exists() {
            return Err(RuntimeError::Invalid {
                task: task.to_owned(),
                message: format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {}",
                    mount.source
                ),
            });
        }
    }
    Ok(())
}

fn is_mount_point(dir: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = dir.to_string_lossy();
    mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| point == wanted)
}

/// A named volume as `volume ls|inspect` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// The directory tasks see.
    pub mountpoint: PathBuf,
    /// Tasks of this node that use it.
    pub tasks: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("remove {name}: volume is in use - [{}]", .tasks.join(", "))]
    InUse { name: String, tasks: Vec<String> },
    #[error("invalid volume name {0:?}: a name is letters, digits, '_', '.' or '-'")]
    BadName(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The node's local volumes: `<root>/<name>/_data`, with its labels in
/// `<root>/<name>/volume.json` and a file per task using it in
/// `<root>/<name>/tasks/`.
#[derive(Clone, Debug)]
pub struct Volumes {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct VolumeRecord {
    labels: BTreeMap<String, String>,
    created_at: u64,
}

impl Volumes {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Volume `name`'s data directory, made with `labels` if it is new;
    /// whether it was made now. Task `task` holds it until released.
    pub fn acquire(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        task: &str,
    ) -> Result<(PathBuf, bool), VolumeError> {
        check_name(name)?;
        let dir = self.root.join(name);
        let data = dir.join("_data");
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| VolumeError::Io { path, source }
        };
        let created = !data.is_dir();
        if created {
            fs::create_dir_all(&data).map_err(io_error(&data))?;
            let record = VolumeRecord {
                labels: labels.clone(),
                created_at: crate::clock::now_secs(),
            };
            let json = serde_json::to_vec(&record).expect("plain data serializes");
            let path = dir.join("volume.json");
            fs::write(&path, json).map_err(io_error(&path))?;
        }
        let holds = dir.join("tasks");
        fs::create_dir_all(&holds).map_err(io_error(&holds))?;
        fs::write(holds.join(task), b"").map_err(io_error(&holds))?;
        Ok((data, created))
    }

    /// Where volume `name`'s data is (made by `acquire`).
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    /// Task `task` no longer uses any volume.
    pub fn release(&self, task: &str) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path().join("tasks").join(task));
        }
    }

    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(VolumeError::Io {
                    path: self.root.clone(),
                    source,
                });
            }
        };
        let mut volumes: Vec<VolumeInfo> = entries
            .flatten()
            .filter_map(|entry| self.inspect(&entry.file_name().to_string_lossy()).ok())
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    pub fn inspect(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        check_name(name).map_err(|_| VolumeError::NotFound(name.to_owned()))?;
        let dir = self.root.join(name);
        let record: VolumeRecord = fs::read(dir.join("volume.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| VolumeError::NotFound(name.to_owned()))?;
        let mut tasks: Vec<String> = fs::read_dir(dir.join("tasks"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        tasks.sort();
        Ok(VolumeInfo {
            name: name.to_owned(),
            labels: record.labels,
            created_at: record.created_at,
            mountpoint: dir.join("_data"),
            tasks,
        })
    }

    /// Removes volume `name` and its data, unless a task uses it.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        let volume = self.inspect(name)?;
        if !volume.tasks.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_owned(),
                tasks: volume.tasks,
            });
        }
        let dir = self.root.join(name);
        fs::remove_dir_all(&dir).map_err(|source| VolumeError::Io { path: dir, source })
    }

    /// Removes every volume no task uses; returns their names.
    pub fn prune(&self) -> Result<Vec<String>, VolumeError> {
        let mut removed = Vec::new();
        for volume in self.list()? {
            if volume.tasks.is_empty() {
                self.remove(&volume.name)?;
                removed.push(volume.name);
            }
        }
        Ok(removed)
    }
}

fn check_name(name: &str) -> Result<(), VolumeError> {
    let fine = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if fine {
        Ok(())
    } else {
        Err(VolumeError::BadName(name.to_owned()))
    }
}

/// Copies what `from` holds into the empty `to`, as Docker seeds a new
/// volume from the image (owners, modes and links kept).
pub fn seed_volume(from: &Path, to: &Path) -> io::Result<()> {
    if !from.is_dir() {
        return Ok(());
    }
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "cp -a {} {} failed ({status})",
            from.display(),
            to.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_outlives_its_task_and_is_not_removed_while_used() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(dir.path().join("volumes"));
        let labels = BTreeMap::from([("app".to_owned(), "db".to_owned())]);
        let (data, created) = volumes.acquire("db", &labels, "task1").unwrap();
        assert!(created && data.is_dir());
        fs::write(data.join("row"), b"1").unwrap();
        let err = volumes.remove("db").unwrap_err();
        assert_eq!(err.to_string(), "remove db: volume is in use - [task1]");
        volumes.release("task1");
        let (again, created) = volumes.acquire("db", &BTreeMap::new(), "task2").unwrap();
        assert!(!created);
        assert_eq!(fs::read(again.join("row")).unwrap(), b"1");
        assert_eq!(volumes.inspect("db").unwrap().labels, labels);
        volumes.release("task2");
        assert_eq!(volumes.prune().unwrap(), vec!["db".to_owned()]);
        assert!(matches!(
            volumes.inspect("db"),
            Err(VolumeError::NotFound(_))
        ));
        assert!(matches!(
            volumes.acquire("../x", &BTreeMap::new(), "t"),
            Err(VolumeError::BadName(_))
        ));
    }
}
