//! The native runtime: a task is a process tree in network, mount, UTS and
//! PID namespaces and a cgroup of its own, on the host's filesystem (image
//! `host`) or chrooted into a directory (image `/abs/path`).
//!
//! What a task is lives in files under `<state dir>/<task id>/` (log, exit
//! code, init's PID, hosts, resolv.conf, hostname), its cgroup and its
//! namespace, never only in the daemon's memory: a daemon killed and started
//! again on the same state dir finds its running tasks with `list` and
//! `state`, and can stop and remove them.

mod cgroup;
mod health;
mod launch;
mod stamp;
mod user;

use std::{
    ffi::CString,
    fs::{self, File, OpenOptions},
    io,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use libc::c_ulong;
use nix::{
    errno::Errno,
    sys::{
        signal::{Signal, kill},
        wait::waitpid,
    },
    unistd::Pid,
};
use oci_client::Reference;
use tracing::{debug, info, warn};

use self::user::User;
use self::{
    cgroup::CgroupLayout,
    launch::{LaunchError, Plan, Step},
};
use super::{
    Health, RunState, Runtime, RuntimeError, TaskSpec, log_lines,
    mounts::{self, Volumes},
    netns, netns_path,
};
use crate::{
    api::{assignments::LogLine, mounts::MountKind},
    image::{Image as PulledImage, ImageSource, ImageStore, rootfs::RootfsPaths},
};

/// The task's output, stamped line by line by its shim.
const LOG_FILE: &str = "output.log";
/// The output of a task started before swarm stamped lines, without times;
/// read before [`LOG_FILE`] (a task started again goes on there).
const UNSTAMPED_LOG_FILE: &str = "log";
/// Written by the task's shim when its init exits; present means exited.
const EXIT_FILE: &str = "exit";
/// Init's PID as the host sees it; present means started.
const INIT_PID_FILE: &str = "init.pid";
const HOSTS_FILE: &str = "hosts";
const RESOLV_CONF_FILE: &str = "resolv.conf";
const HOSTNAME_FILE: &str = "hostname";
/// The signal `stop` sends first, by number, when it is not SIGTERM.
const STOP_SIGNAL_FILE: &str = "stop-signal";

pub use crate::image::HOST_IMAGE;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The exit code recorded when a task ended and nothing recorded how (its
/// shim was killed, or the host rebooted), as Docker reports such a case.
const EXIT_UNKNOWN: i32 = 255;
/// How long the shim may take to record the code once the cgroup is empty.
const SHIM_RECORD_WAIT: Duration = Duration::from_secs(2);
/// How long SIGKILLed processes may take to leave the cgroup.
const KILL_WAIT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The longest hostname the kernel takes.
const HOSTNAME_MAX: usize = 64;
/// What `RuntimeError` names as the task when an error concerns no task.
const NO_TASK: &str = "*";
/// The pulled image a task runs, recorded when it is prepared.
const IMAGE_FILE: &str = "image.json";

/// Runs tasks as namespaced, cgrouped process trees on this host.
pub struct NativeRuntime {
    state_dir: PathBuf,
    /// Where images from registries are pulled to; without one, only
    /// `host` and root directories run.
    images: Option<Arc<ImageStore>>,
    /// Where named volumes live; without it, volume mounts are refused.
    volumes: Option<Volumes>,
    cgroups: CgroupLayout,
    /// The highest capability this kernel knows (`cap_last_cap`).
    last_capability: u32,
    /// Held while a task starts, so that two starts cannot race.
    starting: Mutex<()>,
    health: health::HealthChecks,
}

/// Where a task's filesystem comes from.
enum Image {
    Host,
    Root(PathBuf),
    /// Pulled into the image store, mounted as the task's own overlay.
    Registry(Reference),
}

/// What the task's program is, and where and as whom it runs.
struct Process {
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: Option<User>,
    /// `--group`, resolved in the root it runs in.
    groups: Vec<u32>,
}

impl NativeRuntime {
    /// A runtime keeping its tasks under `state_dir` (e.g. `<data dir>/tasks`),
    /// which it creates; the tasks already there are its own.
    pub fn new(state_dir: PathBuf) -> Result<Self, RuntimeError> {
        fs::create_dir_all(&state_dir).map_err(io_error(
            NO_TASK,
            format!("creating the state dir {}", state_dir.display()),
        ))?;
        let cgroups =
            CgroupLayout::detect().map_err(io_error(NO_TASK, "finding the cgroup hierarchies"))?;
        // 40 (CAP_CHECKPOINT_RESTORE) on the kernels of 2020 on.
        let last_capability = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(40)
            .min(63);
        debug!(state_dir = %state_dir.display(), ?cgroups, "native runtime ready");
        Ok(Self {
            state_dir,
            images: None,
            volumes: None,
            cgroups,
            last_capability,
            starting: Mutex::new(()),
            health: health::HealthChecks::default(),
        })
    }

    /// Runs images from registries too, pulled into `images`.
    pub fn with_images(mut self, images: Arc<ImageStore>) -> Self {
        self.images = Some(images);
        self
    }

    /// Mounts named volumes kept in `volumes`.
    pub fn with_volumes(mut self, volumes: Volumes) -> Self {
        self.volumes = Some(volumes);
        self
    }

    /// The root a task's mounts go under, once its image is in place.
    fn task_root(&self, task: &str, image: &Image) -> PathBuf {
        match image {
            Image::Host => PathBuf::from("/"),
            Image::Root(root) => root.clone(),
            Image::Registry(_) => RootfsPaths::under(&self.task_dir(task)).root,
        }
    }

    /// Makes the task's named volumes (seeded from the image at their
    /// target unless `volume-nocopy`) and holds them for the task.
    fn prepare_volumes(&self, spec: &TaskSpec, image: &Image) -> Result<(), RuntimeError> {
        let task = spec.task_id.as_str();
        for (n, mount) in spec.mounts.iter().enumerate() {
            if mount.kind != MountKind::Volume {
                continue;
            }
            let volumes = self
                .volumes
                .as_ref()
                .ok_or_else(|| invalid(task, "this runtime keeps no volumes"))?;
            let name = volume_name(task, n, mount);
            let (data, created) = volumes
                .acquire(&name, &mount.volume_labels, task)
                .map_err(|e| invalid(task, e.to_string()))?;
            if created && !mount.volume_nocopy {
                let seed = self
                    .task_root(task, image)
                    .join(mount.target.trim_start_matches('/'));
                mounts::seed_volume(&seed, &data)
                    .map_err(io_error(task, format!("seeding volume {name}")))?;
            }
        }
        Ok(())
    }

    /// Binds the task's secrets, configs and mounts into `root` (a task's
    /// private mount namespace: the host sees none of it).
    fn mount_steps(
        &self,
        spec: &TaskSpec,
        root: &Path,
        host: bool,
        steps: &mut Vec<Step>,
    ) -> Result<(), RuntimeError> {
        let task = spec.task_id.as_str();
        let dir = self.task_dir(task);
        let inside = |path: &str| root.join(path.trim_start_matches('/'));
        let read_only = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        for (n, file) in spec.files.iter().enumerate() {
            let target = inside(&file.path);
            mount_target(task, &target, false, host)?;
            steps.push(bind_step(
                task,
                &mounts::task_file_path(&dir, n),
                &target,
                0,
            )?);
            steps.push(mount_step(task, None, &target, None, read_only, None)?);
        }
        for (n, mount) in spec.mounts.iter().enumerate() {
            let target = inside(&mount.target);
            let source = match mount.kind {
                MountKind::Tmpfs => {
                    mount_target(task, &target, true, host)?;
                    let mut options = format!("mode={:o}", mount.tmpfs_mode.unwrap_or(0o1777));
                    if let Some(size) = mount.tmpfs_size {
                        options.push_str(&format!(",size={size}"));
                    }
                    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
                    if mount.readonly {
                        flags |= libc::MS_RDONLY;
                    }
                    steps.push(mount_step(
                        task,
                        Some("tmpfs"),
                        &target,
                        Some("tmpfs"),
                        flags,
                        Some(&options),
                    )?);
                    continue;
                }
                MountKind::Bind => PathBuf::from(&mount.source),
                MountKind::Volume => self
                    .volumes
                    .as_ref()
                    .ok_or_else(|| invalid(task, "this runtime keeps no volumes"))?
                    .data_dir(&volume_name(task, n, mount)),
            };
            mount_target(task, &target, source.is_dir(), host)?;
            steps.push(bind_step(task, &source, &target, libc::MS_REC)?);
            if mount.readonly {
                steps.push(mount_step(
                    task,
                    None,
                    &target,
                    None,
                    read_only | libc::MS_REC,
                    None,
                )?);
            }
        }
        Ok(())
    }

    /// The task's cgroup directories (one per hierarchy in use, on cgroup v1).
    pub fn cgroup_dirs(&self, task_id: &str) -> Vec<PathBuf> {
        self.cgroups.task_dirs(task_id)
    }

    /// Whether the task runs a pulled image, whose config may hold a
    /// HEALTHCHECK.
    fn image_has_config(&self, spec: &TaskSpec) -> bool {
        matches!(
            ImageSource::parse(&spec.image),
            Ok(ImageSource::Registry(_))
        )
    }

    fn task_dir(&self, task_id: &str) -> PathBuf {
        self.state_dir.join(task_id)
    }

    /// Pulls the task's image (what the store holds is not fetched again)
    /// and mounts the task's root over its layers; records the image for
    /// the start.
    fn prepare_image(
        &self,
        task: &str,
        reference: &Reference,
        spec_auth: Option<&crate::api::tasks::RegistryAuth>,
    ) -> Result<(), RuntimeError> {
        let dir = self.task_dir(task);
        let record = dir.join(IMAGE_FILE);
        let rootfs = RootfsPaths::under(&dir);
        if record.is_file() && rootfs.root.is_dir() {
            // Prepared before a restart: the mount is still there.
            return rootfs
                .mount(&read_image(task, &record)?.layers)
                .map_err(io_error(task, "mounting the task's root"));
        }
        let images = self
            .images
            .as_ref()
            .ok_or_else(|| invalid(task, "this runtime has no image store"))?;
        let image = images
            .pull(reference, spec_auth)
            .map_err(|source| RuntimeError::Image {
                task: task.to_owned(),
                source,
            })?;
        rootfs
            .mount(&image.layers)
            .map_err(io_error(task, "mounting the task's root"))?;
        images
            .hold(task, &image.digest)
            .map_err(|source| RuntimeError::Image {
                task: task.to_owned(),
                source,
            })?;
        let json = serde_json::to_vec(&image).expect("plain data serializes");
        write_atomically(&record, &json)
            .map_err(io_error(task, format!("writing {}", record.display())))?;
        info!(task, image = %image.reference, digest = %image.digest, "image mounted");
        Ok(())
    }

    /// The task's program as its spec and its image say, and the root it
    /// runs in.
    fn process(&self, spec: &TaskSpec, image: Image) -> Result<(Image, Process), RuntimeError> {
        let task = spec.task_id.as_str();
        let Image::Registry(_) = image else {
            let root = match &image {
                Image::Root(root) => root.clone(),
                _ => PathBuf::from("/"),
            };
            let mut args = spec.entrypoint.clone().unwrap_or_default();
            args.extend(spec.args.iter().cloned());
            let user = match &spec.user {
                Some(user) => {
                    Some(User::resolve(user, &root).map_err(|message| invalid(task, message))?)
                }
                None => None,
            };
            let own = Process {
                args,
                env: task_env(spec, &[]),
                cwd: spec.workdir.clone().unwrap_or_else(|| "/".into()),
                user,
                groups: groups(spec, &root)?,
            };
            return Ok((image, own));
        };
        let dir = self.task_dir(task);
        let pulled = read_image(task, &dir.join(IMAGE_FILE))?;
        let root = RootfsPaths::under(&dir).root;
        let config = &pulled.config;
        let cwd = match (&spec.workdir, config.config.working_dir.as_str()) {
            (Some(dir), _) => dir.clone(),
            (None, "") => "/".to_owned(),
            (None, dir) => dir.to_owned(),
        };
        let user = match spec.user.as_deref().unwrap_or(&config.config.user) {
            "" => None,
            user => Some(User::resolve(user, &root).map_err(|message| invalid(task, message))?),
        };
        let process = Process {
            args: config.command(spec.entrypoint.as_deref(), &spec.args),
            env: task_env(spec, &config.env(&[])),
            cwd,
            user,
            groups: groups(spec, &root)?,
        };
        Ok((Image::Root(root), process))
    }

    /// Builds what the task's children need, before the fork.
    fn plan(
        &self,
        spec: &TaskSpec,
        image: &Image,
        process: &Process,
        cgroup_procs: &[PathBuf],
    ) -> Result<Plan, RuntimeError> {
        let task = spec.task_id.as_str();
        let dir = self.task_dir(task);
        let open =
            |path: &Path, options: &OpenOptions, what: &str| -> Result<OwnedFd, RuntimeError> {
                let file = options
                    .open(path)
                    .map_err(io_error(task, format!("opening {what} {}", path.display())))?;
                launch::above_stdio(file.into()).map_err(io_error(task, "moving an fd above stdio"))
            };
        let read = OpenOptions::new().read(true).clone();
        let write = OpenOptions::new().write(true).clone();
        let append = OpenOptions::new().append(true).create(true).clone();

        let mut steps = Vec::new();
        for procs in cgroup_procs {
            steps.push(Step::JoinCgroup {
                procs: open(procs, &write, "the cgroup's process list")?,
                label: procs.parent().unwrap_or(procs).display().to_string(),
            });
        }
        steps.push(Step::EnterNetns(open(
            &netns_path(task),
            &read,
            "the network namespace",
        )?));
        // Through the host's /proc, which shows the namespace just entered.
        for (key, value) in &spec.container.sysctls {
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            if !path.exists() {
                return Err(invalid(
                    task,
                    format!("--sysctl {key}: this kernel has no such setting"),
                ));
            }
            steps.push(Step::WriteFile {
                path: path_c_string(task, &path)?,
                value: value.clone().into_bytes(),
            });
        }
        steps.push(Step::Unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS));
        // Before any mount: nothing the task mounts may reach the host.
        steps.push(mount_step(
            task,
            None,
            "/",
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        )?);
        steps.push(Step::SetHostname(c_string(
            task,
            hostname(spec),
            "the hostname",
        )?));
        // Other tasks' namespaces are none of this one's business.
        steps.push(Step::Detach(c_string(task, super::NETNS_DIR, "a path")?));

        let root = match image {
            Image::Host => PathBuf::from("/"),
            Image::Registry(_) => {
                return Err(invalid(task, "an image's root is mounted before its plan"));
            }
            Image::Root(root) => {
                prepare_rootfs(task, root)?;
                // A mount point of its own, as a container root is.
                steps.push(bind_step(task, root, root, libc::MS_REC)?);
                root.clone()
            }
        };
        // Before the tmpfs on /tmp, which could hide the task dir.
        let etc = root.join("etc");
        if etc.is_dir() {
            for name in [HOSTS_FILE, RESOLV_CONF_FILE, HOSTNAME_FILE] {
                let target = etc.join(name);
                let bindable = match image {
                    // A host without /etc/hostname keeps none.
                    Image::Host => target.exists(),
                    Image::Root(_) | Image::Registry(_) => ensure_bind_target(task, &target)?,
                };
                if bindable {
                    steps.push(bind_step(task, &dir.join(name), &target, 0)?);
                }
            }
        }
        // The user's mounts go over the task's own /tmp and /dev, as in
        // Docker; on the host's root, before its /tmp hides their sources.
        let host = matches!(image, Image::Host);
        if host {
            self.mount_steps(spec, &root, true, &mut steps)?;
        }
        let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
        steps.push(mount_step(
            task,
            Some("proc"),
            root.join("proc"),
            Some("proc"),
            nosuid_nodev | libc::MS_NOEXEC,
            None,
        )?);
        steps.push(mount_step(
            task,
            Some("tmpfs"),
            root.join("tmp"),
            Some("tmpfs"),
            nosuid_nodev,
            Some("mode=1777"),
        )?);
        if matches!(image, Image::Root(_)) && root.join("dev").is_dir() {
            dev_steps(task, &root.join("dev"), &mut steps)?;
        }
        if !host {
            self.mount_steps(spec, &root, false, &mut steps)?;
        }
        if matches!(image, Image::Root(_)) {
            if spec.container.read_only {
                // Only the root's own mount: /tmp, /dev, /proc, /etc's
                // files and the user's mounts stay as they are, as in Docker.
                steps.push(Step::RemountReadOnly(path_c_string(task, &root)?));
            }
            steps.push(Step::Chroot(path_c_string(task, &root)?));
        }
        steps.push(Step::Chdir(c_string(task, process.cwd.as_str(), "a path")?));

        let env = &process.env;
        let Some(program) = process.args.first() else {
            return Err(invalid(
                task,
                "the image has no Entrypoint or Cmd: give a command after the image",
            ));
        };
        let program_paths = if program.contains('/') {
            vec![program.clone()]
        } else {
            let path = env
                .iter()
                .find_map(|var| var.strip_prefix("PATH="))
                .unwrap_or(DEFAULT_PATH);
            path.split(':')
                .filter(|dir| !dir.is_empty())
                .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
                .collect()
        };
        let c_strings = |strings: &[String], what: &str| -> Result<Vec<CString>, RuntimeError> {
            strings
                .iter()
                .map(|s| c_string(task, s.as_str(), what))
                .collect()
        };
        Ok(Plan {
            program_paths: c_strings(&program_paths, "the program")?,
            argv: c_strings(&process.args, "an argument")?,
            env: c_strings(env, "an environment variable")?,
            user: process.user,
            groups: process.groups.clone(),
            capabilities: spec
                .container
                .capabilities()
                .into_iter()
                .filter(|cap| *cap <= self.last_capability)
                .fold(0u64, |mask, cap| mask | 1 << cap),
            last_capability: self.last_capability,
            rlimits: spec
                .container
                .ulimits
                .iter()
                .map(|limit| rlimit(task, limit))
                .collect::<Result<_, _>>()?,
            steps,
            log: open(&dir.join(LOG_FILE), &append, "the log")?,
            stdin: open(Path::new("/dev/null"), &read, "stdin")?,
            task_dir: open(&dir, &read, "the task dir")?,
        })
    }

    /// Undoes a start that failed half-way: nothing of it keeps running and
    /// the task is back to created.
    fn clean_failed_start(&self, task_id: &str, error: &LaunchError) {
        if !self.cgroups.kill_all(task_id, KILL_WAIT) {
            warn!(
                task = task_id,
                "processes of a failed start survive SIGKILL"
            );
        }
        if let Some(shim) = error.shim() {
            if matches!(error, LaunchError::Timeout { .. }) {
                let _ = kill(shim, Signal::SIGKILL);
            }
            reap(shim);
        }
        let dir = self.task_dir(task_id);
        for name in [EXIT_FILE, INIT_PID_FILE] {
            let _ = fs::remove_file(dir.join(name));
        }
    }

    /// Waits up to `timeout` for the shim to record the exit code.
    fn wait_for_exit_code(&self, task_id: &str, timeout: Duration) -> Option<i32> {
        let dir = self.task_dir(task_id);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = read_exit_code(&dir) {
                return Some(code);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn wait_until_empty(&self, task_id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.cgroups.is_empty(task_id) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Runtime for NativeRuntime {
    fn name(&self) -> &'static str {
        "native"
    }

    fn prepare(&self, spec: &TaskSpec) -> Result<PathBuf, RuntimeError> {
        let task = spec.task_id.as_str();
        check_task_id(task)?;
        let image = check_spec(spec)?;
        if matches!(image, Image::Registry(_)) && self.images.is_none() {
            return Err(invalid(
                task,
                format!(
                    "image {:?}: this runtime has no image store, so it runs `{HOST_IMAGE}` or an existing absolute directory only",
                    spec.image
                ),
            ));
        }
        let dir = self.task_dir(task);
        fs::create_dir_all(&dir).map_err(io_error(task, format!("creating {}", dir.display())))?;
        mounts::check_bind_sources(task, &spec.mounts)?;
        if let Image::Registry(reference) = &image {
            self.prepare_image(task, reference, spec.registry_auth.as_ref())?;
        }
        self.prepare_volumes(spec, &image)?;
        // The agent's resolver answers there, in the task's namespace, and
        // forwards what is not the swarm's to the host's resolvers.
        let resolv_conf = resolv_conf(spec).into_bytes();
        for (name, contents) in [
            (HOSTS_FILE, hosts_file(spec).into_bytes()),
            (RESOLV_CONF_FILE, resolv_conf),
            (HOSTNAME_FILE, format!("{}\n", hostname(spec)).into_bytes()),
        ] {
            let path = dir.join(name);
            fs::write(&path, contents)
                .map_err(io_error(task, format!("writing {}", path.display())))?;
        }
        let netns = netns_path(task);
        if !netns::is_bound(&netns) {
            netns::create(&netns).map_err(|(what, source)| RuntimeError::Io {
                task: task.to_owned(),
                what,
                source,
            })?;
        }
        info!(task, netns = %netns.display(), "task prepared");
        Ok(netns)
    }

    fn start(&self, spec: &TaskSpec) -> Result<(), RuntimeError> {
        let task = spec.task_id.as_str();
        check_task_id(task)?;
        let image = check_spec(spec)?;
        let _one_start = self
            .starting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match self.state(task)? {
            RunState::Missing => return Err(RuntimeError::NoSuchTask(task.to_owned())),
            RunState::Running => return Ok(()),
            // Started again, as `docker start` does: the log goes on.
            RunState::Exited { .. } => {
                for name in [EXIT_FILE, INIT_PID_FILE] {
                    let path = self.task_dir(task).join(name);
                    fs::remove_file(&path)
                        .map_err(io_error(task, format!("removing {}", path.display())))?;
                }
            }
            RunState::Created => {}
        }
        if !netns::is_bound(&netns_path(task)) {
            return Err(RuntimeError::Invalid {
                task: task.to_owned(),
                message: format!(
                    "no network namespace at {}: prepare the task first",
                    netns_path(task).display()
                ),
            });
        }
        let (image, process) = self.process(spec, image)?;
        mounts::write_task_files(task, &self.task_dir(task), &spec.files)?;
        let stop_signal_file = self.task_dir(task).join(STOP_SIGNAL_FILE);
        match &spec.container.stop_signal {
            Some(signal) => {
                let number = crate::api::specs::signal_number(signal)
                    .map_err(|message| invalid(task, message))?;
                write_atomically(&stop_signal_file, format!("{number}\n").as_bytes())
            }
            None => fs::remove_file(&stop_signal_file).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            }),
        }
        .map_err(io_error(
            task,
            format!("writing {}", stop_signal_file.display()),
        ))?;
        let cgroup_procs = self.cgroups.create(task, &spec.resources)?;
        let plan = self.plan(spec, &image, &process, &cgroup_procs)?;
        let launched = match launch::launch(&plan) {
            Ok(launched) => launched,
            Err(error) => {
                self.clean_failed_start(task, &error);
                let (what, source) = match error {
                    LaunchError::Daemon { what, source } => (what.to_owned(), source),
                    LaunchError::Child { what, errno, .. } => (what, io::Error::from(errno)),
                    timeout @ LaunchError::Timeout { .. } => (
                        "starting the task".to_owned(),
                        io::Error::new(io::ErrorKind::TimedOut, timeout.to_string()),
                    ),
                };
                return Err(RuntimeError::Io {
                    task: task.to_owned(),
                    what,
                    source,
                });
            }
        };
        reap_in_background(launched.shim);
        let init_pid_file = self.task_dir(task).join(INIT_PID_FILE);
        write_atomically(&init_pid_file, format!("{}\n", launched.init).as_bytes()).map_err(
            io_error(task, format!("writing {}", init_pid_file.display())),
        )?;
        info!(task, init = %launched.init, shim = %launched.shim, program = %process.args[0], "task started");
        Ok(())
    }

    fn state(&self, task_id: &str) -> Result<RunState, RuntimeError> {
        check_task_id(task_id)?;
        let dir = self.task_dir(task_id);
        if !dir.is_dir() {
            return Ok(RunState::Missing);
        }
        if let Some(code) = read_exit_code(&dir) {
            return Ok(RunState::Exited { code });
        }
        if !dir.join(INIT_PID_FILE).exists() {
            return Ok(RunState::Created);
        }
        if !self.cgroups.is_empty(task_id) {
            return Ok(RunState::Running);
        }
        // Init is gone: its shim is about to record the code, unless it was
        // killed too (or the host rebooted); then nobody will.
        if let Some(code) = self.wait_for_exit_code(task_id, SHIM_RECORD_WAIT) {
            return Ok(RunState::Exited { code });
        }
        warn!(
            task = task_id,
            code = EXIT_UNKNOWN,
            "the task ended and nothing recorded its exit code"
        );
        let exit_file = dir.join(EXIT_FILE);
        write_atomically(&exit_file, format!("{EXIT_UNKNOWN}\n").as_bytes()).map_err(io_error(
            task_id,
            format!("writing {}", exit_file.display()),
        ))?;
        Ok(RunState::Exited { code: EXIT_UNKNOWN })
    }

    fn stop(&self, task_id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.health.forget(task_id);
        if self.state(task_id)? != RunState::Running {
            return Ok(());
        }
        if !grace.is_zero() {
            let init = fs::read_to_string(self.task_dir(task_id).join(INIT_PID_FILE))
                .ok()
                .and_then(|pid| pid.trim().parse().ok())
                .map(Pid::from_raw);
            let signal = fs::read_to_string(self.task_dir(task_id).join(STOP_SIGNAL_FILE))
                .ok()
                .and_then(|n| Signal::try_from(n.trim().parse::<i32>().ok()?).ok())
                .unwrap_or(Signal::SIGTERM);
            // Init forwards the signal to the program. Only a PID still in
            // the cgroup is signalled: a recorded one may have been reused.
            match init.filter(|pid| self.cgroups.pids(task_id).contains(pid)) {
                Some(init) => {
                    if let Err(err) = kill(init, signal) {
                        debug!(task = task_id, %init, %err, ?signal, "cannot signal the task's init");
                    }
                }
                None => self.cgroups.signal_all(task_id, signal),
            }
        }
        if !self.wait_until_empty(task_id, grace) {
            info!(
                task = task_id,
                ?grace,
                "task still running after its grace period: killing it"
            );
            if !self.cgroups.kill_all(task_id, KILL_WAIT) {
                return Err(RuntimeError::Io {
                    task: task_id.to_owned(),
                    what: "killing the task's processes".into(),
                    source: io::Error::other(format!("some survive SIGKILL for {KILL_WAIT:?}")),
                });
            }
        }
        // So that `state` right after says how it ended.
        let code = self.wait_for_exit_code(task_id, SHIM_RECORD_WAIT);
        // Its secrets go with it.
        mounts::remove_task_files(task_id, &self.task_dir(task_id))?;
        info!(task = task_id, ?code, "task stopped");
        Ok(())
    }

    fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        check_task_id(task_id)?;
        self.stop(task_id, Duration::ZERO)?;
        // Whatever a crashed start may have left in the cgroup.
        if !self.cgroups.kill_all(task_id, KILL_WAIT) {
            warn!(
                task = task_id,
                "processes survive SIGKILL; the cgroup may stay"
            );
        }
        self.cgroups.remove(task_id)?;
        let netns = netns_path(task_id);
        netns::remove(&netns)
            .map_err(io_error(task_id, format!("deleting {}", netns.display())))?;
        let dir = self.task_dir(task_id);
        RootfsPaths::under(&dir)
            .unmount()
            .map_err(io_error(task_id, "unmounting the task's root"))?;
        if let Some(images) = &self.images {
            images.release(task_id);
        }
        if let Some(volumes) = &self.volumes {
            volumes.release(task_id);
        }
        match fs::remove_dir_all(&dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(io_error(task_id, format!("deleting {}", dir.display()))(
                    err,
                ));
            }
            _ => {}
        }
        info!(task = task_id, "task removed");
        Ok(())
    }

    /// The spec's check, else the image's HEALTHCHECK (as Docker runs it)
    /// unless `--no-healthcheck`.
    fn health(&self, spec: &TaskSpec) -> Result<Option<Health>, RuntimeError> {
        let task = spec.task_id.as_str();
        check_task_id(task)?;
        if spec.healthcheck.is_none() && (spec.no_healthcheck || !self.image_has_config(spec)) {
            return Ok(None);
        }
        if self.state(task)? != RunState::Running {
            self.health.forget(task);
            return Ok(Some(Health::Starting));
        }
        let dir = self.task_dir(task);
        let find_check = || match &spec.healthcheck {
            Some(check) => Some(check.clone()),
            None => match read_image(task, &dir.join(IMAGE_FILE)) {
                Ok(image) => image.config.healthcheck(),
                Err(err) => {
                    warn!(task, error = %err, "reading the image's health check failed");
                    None
                }
            },
        };
        Ok(self
            .health
            .verdict(task, find_check, dir.join(INIT_PID_FILE)))
    }

    fn logs(&self, task_id: &str) -> Result<Vec<LogLine>, RuntimeError> {
        check_task_id(task_id)?;
        let dir = self.task_dir(task_id);
        if !dir.is_dir() {
            return Err(RuntimeError::NoSuchTask(task_id.to_owned()));
        }
        let read = |name: &str| match fs::read(dir.join(name)) {
            Ok(log) => Ok(log),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(io_error(task_id, "reading the log")(source)),
        };
        let mut lines = log_lines::unstamped(&read(UNSTAMPED_LOG_FILE)?);
        lines.extend(log_lines::stamped(&read(LOG_FILE)?));
        Ok(lines)
    }

    fn usage(&self, task_id: &str) -> Option<super::TaskUsage> {
        self.cgroups.usage(task_id)
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let entries = fs::read_dir(&self.state_dir).map_err(io_error(
            NO_TASK,
            format!("listing {}", self.state_dir.display()),
        ))?;
        let mut tasks = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(
                NO_TASK,
                format!("listing {}", self.state_dir.display()),
            ))?;
            if entry.file_type().is_ok_and(|kind| kind.is_dir())
                && let Some(name) = entry.file_name().to_str()
            {
                tasks.push(name.to_owned());
            }
        }
        tasks.sort();
        Ok(tasks)
    }
}

fn io_error(task: &str, what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let task = task.to_owned();
    let what = what.into();
    move |source| RuntimeError::Io { task, what, source }
}

fn invalid(task: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid {
        task: task.to_owned(),
        message: message.into(),
    }
}

/// Task IDs name directories, a cgroup and a namespace: no path tricks.
fn check_task_id(task_id: &str) -> Result<(), RuntimeError> {
    let fine = !task_id.is_empty()
        && task_id.len() <= 128
        && !task_id.starts_with('.')
        && task_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fine {
        Ok(())
    } else {
        Err(invalid(
            task_id,
            "a task ID is 1 to 128 ASCII letters, digits, '-', '_' or '.', not starting with '.'",
        ))
    }
}

/// What the native runtime refuses before doing anything.
fn check_spec(spec: &TaskSpec) -> Result<Image, RuntimeError> {
    let task = spec.task_id.as_str();
    if hostname(spec).len() > HOSTNAME_MAX {
        return Err(invalid(
            task,
            format!(
                "hostname {:?} is longer than {HOSTNAME_MAX} bytes",
                spec.hostname
            ),
        ));
    }
    let source = ImageSource::parse(&spec.image).map_err(|e| invalid(task, e.to_string()))?;
    if !matches!(source, ImageSource::Registry(_)) && spec.args.is_empty() {
        return Err(invalid(
            task,
            format!(
                "the native runtime needs a command for `{HOST_IMAGE}` and root directories: give it after the image"
            ),
        ));
    }
    if spec.container.read_only && matches!(source, ImageSource::Host) {
        return Err(invalid(
            task,
            format!(
                "--read-only makes an image's root read-only; `{HOST_IMAGE}` is the host's own filesystem: use an image, or leave --read-only out"
            ),
        ));
    }
    match source {
        ImageSource::Host => Ok(Image::Host),
        ImageSource::Registry(reference) => Ok(Image::Registry(reference)),
        ImageSource::Directory(path) => {
            let root = Path::new(&path);
            if !root.is_dir() {
                return Err(invalid(
                    task,
                    format!("root directory {path:?} does not exist on this node"),
                ));
            }
            // Symlinks resolved now: the children chroot where this points.
            let root = root
                .canonicalize()
                .map_err(io_error(task, format!("resolving {}", root.display())))?;
            Ok(Image::Root(root))
        }
    }
}

/// The task's hostname: its own, or the first 12 characters of its ID, as
/// Docker names containers.
fn hostname(spec: &TaskSpec) -> &str {
    if spec.hostname.is_empty() {
        &spec.task_id[..spec.task_id.len().min(12)]
    } else {
        &spec.hostname
    }
}

fn hosts_file(spec: &TaskSpec) -> String {
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (address, name) in &spec.hosts {
        hosts.push_str(&format!("{address}\t{name}\n"));
    }
    for extra in &spec.container.extra_hosts {
        hosts.push_str(&format!("{}\t{}\n", extra.ip, extra.host));
    }
    hosts
}

/// The agent's resolver answers at 127.0.0.11 in the task's namespace, and
/// forwards what is not the swarm's (to `--dns` servers when given, as
/// Docker's embedded DNS does); search domains and options as asked.
fn resolv_conf(spec: &TaskSpec) -> String {
    let mut conf = format!("nameserver {}\n", crate::dns::RESOLVER_ADDR);
    let container = &spec.container;
    if !container.dns_search.is_empty() {
        conf.push_str(&format!("search {}\n", container.dns_search.join(" ")));
    }
    let mut options = vec!["ndots:0".to_owned()];
    for option in &container.dns_options {
        // A user's ndots replaces the default one.
        if option.starts_with("ndots:") {
            options.retain(|o| !o.starts_with("ndots:"));
        }
        options.push(option.clone());
    }
    conf.push_str(&format!("options {}\n", options.join(" ")));
    conf
}

/// `--group`s as numbers, looked up in the root the task runs in.
fn groups(spec: &TaskSpec, root: &Path) -> Result<Vec<u32>, RuntimeError> {
    spec.container
        .groups
        .iter()
        .map(|group| user::resolve_group(group, root).map_err(|m| invalid(&spec.task_id, m)))
        .collect()
}

/// One `--ulimit` as setrlimit takes it (-1: unlimited).
fn rlimit(
    task: &str,
    limit: &crate::api::specs::Ulimit,
) -> Result<(libc::c_int, libc::rlim_t, libc::rlim_t), RuntimeError> {
    let resource = match limit.name.as_str() {
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        "as" => libc::RLIMIT_AS,
        other => return Err(invalid(task, format!("--ulimit: unknown limit {other:?}"))),
    };
    let value = |v: i64| u64::try_from(v).unwrap_or(libc::RLIM_INFINITY);
    Ok((
        resource as libc::c_int,
        value(limit.soft),
        value(limit.hard),
    ))
}

/// The task's environment: its own, with PATH and HOSTNAME when it lacks them.
/// The task's environment: the image's, the spec's on top, then PATH and
/// HOSTNAME unless set.
fn task_env(spec: &TaskSpec, image_env: &[String]) -> Vec<String> {
    let key = |var: &str| var.split('=').next().unwrap_or(var).to_owned();
    let mut env: Vec<String> = image_env
        .iter()
        .filter(|var| !spec.env.iter().any(|own| key(own) == key(var)))
        .cloned()
        .collect();
    env.extend(spec.env.iter().cloned());
    let has = |env: &[String], name: &str| {
        env.iter()
            .any(|var| var.split_once('=').is_some_and(|(key, _)| key == name))
    };
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={}", hostname(spec)));
    }
    env
}

fn c_string(task: &str, bytes: impl Into<Vec<u8>>, what: &str) -> Result<CString, RuntimeError> {
    CString::new(bytes).map_err(|_| invalid(task, format!("{what} holds a NUL byte")))
}

fn path_c_string(task: &str, path: impl AsRef<Path>) -> Result<CString, RuntimeError> {
    c_string(task, path.as_ref().as_os_str().as_encoded_bytes(), "a path")
}

fn mount_step(
    task: &str,
    source: Option<&str>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: c_ulong,
    data: Option<&str>,
) -> Result<Step, RuntimeError> {
    let optional_c = |s: Option<&str>| s.map(|s| c_string(task, s, "a mount option")).transpose();
    Ok(Step::Mount {
        source: optional_c(source)?,
        target: path_c_string(task, target)?,
        fstype: optional_c(fstype)?,
        flags,
        data: optional_c(data)?,
    })
}

fn bind_step(
    task: &str,
    source: &Path,
    target: &Path,
    flags: c_ulong,
) -> Result<Step, RuntimeError> {
    Ok(Step::Mount {
        source: Some(path_c_string(task, source)?),
        target: path_c_string(task, target)?,
        fstype: None,
        flags: libc::MS_BIND | flags,
        data: None,
    })
}

/// A named volume's name, or an anonymous one's: random as the task's ID,
/// the same at prepare and start.
fn volume_name(task: &str, index: usize, mount: &crate::api::mounts::Mount) -> String {
    if !mount.source.is_empty() {
        return mount.source.clone();
    }
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(format!("{task}/{index}/{}", mount.target));
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A mount point at `target`: a directory or an empty file, made in the
/// task's root when missing; on the host's own root it must exist.
fn mount_target(task: &str, target: &Path, dir: bool, host: bool) -> Result<(), RuntimeError> {
    if target.exists() {
        return Ok(());
    }
    if host {
        return Err(invalid(
            task,
            format!(
                "{} does not exist on the host: the `{HOST_IMAGE}` image mounts only on what is there",
                target.display()
            ),
        ));
    }
    let made = if dir {
        fs::create_dir_all(target)
    } else {
        target
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| File::create(target).map(drop))
    };
    made.map_err(io_error(task, format!("creating {}", target.display())))
}

/// Gives a root directory the mount points a task needs (made once, kept).
fn prepare_rootfs(task: &str, root: &Path) -> Result<(), RuntimeError> {
    for (name, mode) in [("proc", 0o555), ("tmp", 0o1777)] {
        let dir = root.join(name);
        if dir.is_dir() {
            continue;
        }
        fs::create_dir(&dir).map_err(io_error(task, format!("creating {}", dir.display())))?;
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(io_error(
            task,
            format!("setting the mode of {}", dir.display()),
        ))?;
    }
    Ok(())
}

/// Whether a file of the task may be bound on `target` in a root directory:
/// made empty if missing; not through a symlink, which would resolve
/// against the host's root before the chroot.
fn ensure_bind_target(task: &str, target: &Path) -> Result<bool, RuntimeError> {
    match fs::symlink_metadata(target) {
        Ok(meta) => Ok(meta.is_file()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            File::create(target)
                .map_err(io_error(task, format!("creating {}", target.display())))?;
            Ok(true)
        }
        Err(source) => Err(io_error(task, format!("inspecting {}", target.display()))(
            source,
        )),
    }
}

/// A minimal /dev in a root directory: a tmpfs with the usual devices.
fn dev_steps(task: &str, dev: &Path, steps: &mut Vec<Step>) -> Result<(), RuntimeError> {
    steps.push(mount_step(
        task,
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        libc::MS_NOSUID,
        Some("mode=755"),
    )?);
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        steps.push(Step::Mknod {
            path: path_c_string(task, dev.join(name))?,
            major,
            minor,
        });
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            target: c_string(task, target, "a path")?,
            link: path_c_string(task, dev.join(name))?,
        });
    }
    Ok(())
}

fn read_exit_code(task_dir: &Path) -> Option<i32> {
    let recorded = fs::read_to_string(task_dir.join(EXIT_FILE)).ok()?;
    Some(recorded.trim().parse().unwrap_or_else(|_| {
        warn!(dir = %task_dir.display(), recorded, "unreadable exit code");
        EXIT_UNKNOWN
    }))
}

/// Written under a temporary name and renamed: readers see all or nothing.
/// The image recorded for a task when it was prepared.
fn read_image(task: &str, record: &Path) -> Result<PulledImage, RuntimeError> {
    let bytes =
        fs::read(record).map_err(io_error(task, format!("reading {}", record.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        invalid(
            task,
            format!("{} is not an image record: {e}", record.display()),
        )
    })
}

fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    fs::write(&temporary, contents)?;
    fs::rename(&temporary, path)
}

/// Waits for the shim, the daemon's child, to exit.
fn reap(shim: Pid) {
    loop {
        match waitpid(shim, None) {
            Err(Errno::EINTR) => continue,
            Ok(_) | Err(_) => return,
        }
    }
}

/// A thread that reaps the shim when the task ends, so no zombie stays.
/// Small: it only waits.
fn reap_in_background(shim: Pid) {
    let spawned = thread::Builder::new()
        .name(format!("reap-{shim}"))
        .stack_size(64 * 1024)
        .spawn(move || reap(shim));
    if let Err(err) = spawned {
        warn!(%shim, %err, "cannot start a thread to reap the task's shim; it stays a zombie once the task ends");
    }
}
