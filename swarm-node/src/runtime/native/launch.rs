//! Starting a task's process tree with a raw fork:
//!
//! ```text
//! daemon ─fork─▶ shim ─(unshare PID)─fork─▶ init (PID 1) ─fork─▶ program
//! ```
//!
//! The shim stays outside the task's PID namespace and cgroup: it reads
//! the task's stdout and stderr from a pipe and appends each line to the
//! log with the time it was written (see [`super::stamp`]), then waits for
//! init and records its exit code in the task's `exit` file, so lines and
//! code survive a SIGKILL of the whole cgroup and a restart of the daemon.
//! The pipe ends when the task's PID namespace dies with init. Init
//! joins the cgroup, enters the namespaces, mounts, then forks the program
//! and acts as Docker's `--init`: it forwards signals, reaps orphans and
//! exits with the program's code.
//!
//! Why a raw fork and not `Command::pre_exec`: the shim and init never exec,
//! and `Command::spawn` blocks until its child execs or exits. The cost:
//! they keep a copy-on-write image of the daemon's memory, so pages the
//! daemon writes later are copied for them; a small helper binary exec'd as
//! shim and init would not pin that memory.
//!
//! The daemon is multi-threaded, so after `fork` the children run only
//! async-signal-safe code: raw syscalls on what [`Plan`] prepared before the
//! fork, no allocation, no locks, no panics. Children report failures and
//! init's PID to the daemon over a close-on-exec pipe; it reads until EOF,
//! which comes once the program has exec'd (or everything has exited).

use std::{
    ffi::{CStr, CString},
    fs::File,
    io::{self, Read as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    ptr,
    time::{Duration, Instant},
};

use libc::{c_char, c_int, c_ulong};
use nix::{errno::Errno, fcntl::OFlag, unistd::Pid};

use super::stamp;

/// How long the daemon waits for the program to exec before it gives up.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Signals init resets to their default before it forks the program (the
/// usual stop signals); it passes every signal but SIGCHLD on, as tini does,
/// so any `--stop-signal` reaches the program.
const FORWARDED_SIGNALS: [c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// How long the shim waits on the task's output before it checks whether
/// init exited anyway (a write end of the pipe that outlives the task).
const OUTPUT_POLL_MS: c_int = 1_000;

/// Exit codes of init and the program when they fail before the program
/// runs, as a shell reports them.
const EXIT_SETUP_FAILED: c_int = 126;
const EXIT_EXEC_FAILED: c_int = 127;

/// One thing init does to build the task's world, in order, before it forks
/// the program. Everything is prepared by the daemon: running a step
/// allocates nothing.
pub(super) enum Step {
    /// Writes `0` to a `cgroup.procs` file: init moves itself there.
    JoinCgroup {
        procs: OwnedFd,
        label: String,
    },
    EnterNetns(OwnedFd),
    Unshare(c_int),
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
    },
    /// A lazy unmount whose failure is ignored (nothing mounted there).
    Detach(CString),
    /// A character device node.
    Mknod {
        path: CString,
        major: u32,
        minor: u32,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    SetHostname(CString),
    /// Writes `value` to an existing file: a `/proc/sys/net` setting,
    /// which is the task's own once its network namespace is entered.
    WriteFile {
        path: CString,
        value: Vec<u8>,
    },
    /// Makes the mount at this path read-only (`--read-only` on the root).
    RemountReadOnly(CString),
    Chroot(CString),
    Chdir(CString),
}

impl Step {
    fn describe(&self) -> String {
        let show = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Self::JoinCgroup { label, .. } => format!("joining cgroup {label}"),
            Self::EnterNetns(_) => "entering the task's network namespace".into(),
            Self::Unshare(_) => "unsharing the mount and UTS namespaces".into(),
            Self::Mount {
                source,
                target,
                fstype,
                ..
            } => match (source, fstype) {
                (None, None) => format!("changing the propagation of {}", show(target)),
                (Some(source), None) => format!("binding {} on {}", show(source), show(target)),
                (_, Some(fstype)) => format!("mounting {} on {}", show(fstype), show(target)),
            },
            Self::Detach(target) => format!("unmounting {}", show(target)),
            Self::Mknod { path, .. } => format!("creating device {}", show(path)),
            Self::Symlink { link, .. } => format!("creating symlink {}", show(link)),
            Self::SetHostname(name) => format!("setting the hostname to {}", show(name)),
            Self::WriteFile { path, value } => format!(
                "writing {} to {}",
                String::from_utf8_lossy(value),
                show(path)
            ),
            Self::RemountReadOnly(target) => format!("making {} read-only", show(target)),
            Self::Chroot(root) => format!("changing root to {}", show(root)),
            Self::Chdir(dir) => format!("changing directory to {}", show(dir)),
        }
    }

    /// Runs after fork: async-signal-safe only.
    fn run(&self) -> Result<(), Errno> {
        let opt_ptr = |c: &Option<CString>| c.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        // SAFETY: every pointer is a NUL-terminated string or fd the plan owns.
        let result = unsafe {
            match self {
                Self::JoinCgroup { procs, .. } => {
                    libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) as c_int
                }
                Self::EnterNetns(netns) => libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET),
                Self::Unshare(flags) => libc::unshare(*flags),
                Self::Mount {
                    source,
                    target,
                    fstype,
                    flags,
                    data,
                } => libc::mount(
                    opt_ptr(source),
                    target.as_ptr(),
                    opt_ptr(fstype),
                    *flags,
                    opt_ptr(data).cast(),
                ),
                Self::Detach(target) => {
                    libc::umount2(target.as_ptr(), libc::MNT_DETACH);
                    0
                }
                Self::Mknod { path, major, minor } => libc::mknod(
                    path.as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(*major, *minor),
                ),
                Self::Symlink { target, link } => libc::symlink(target.as_ptr(), link.as_ptr()),
                Self::SetHostname(name) => libc::sethostname(name.as_ptr(), name.as_bytes().len()),
                Self::WriteFile { path, value } => {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        -1
                    } else {
                        let written = libc::write(fd, value.as_ptr().cast(), value.len());
                        libc::close(fd);
                        if written == value.len() as isize {
                            0
                        } else {
                            -1
                        }
                    }
                }
                Self::RemountReadOnly(target) => libc::mount(
                    ptr::null(),
                    target.as_ptr(),
                    ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                    ptr::null(),
                ),
                Self::Chroot(root) => libc::chroot(root.as_ptr()),
                Self::Chdir(dir) => libc::chdir(dir.as_ptr()),
            }
        };
        Errno::result(result).map(drop)
    }

    fn fd(&self) -> Option<RawFd> {
        match self {
            Self::JoinCgroup { procs: fd, .. } | Self::EnterNetns(fd) => Some(fd.as_raw_fd()),
            _ => None,
        }
    }
}

/// Everything the children need, made before the fork.
pub(super) struct Plan {
    /// Candidate paths for the program: argv[0] itself when it holds a `/`,
    /// else argv[0] in each directory of the task's PATH.
    pub program_paths: Vec<CString>,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// Who the program runs as (init stays root); `None`: root.
    pub user: Option<super::user::User>,
    /// Supplementary groups of the program (`--group`).
    pub groups: Vec<libc::gid_t>,
    /// Capabilities the program keeps, one bit per capability; the rest
    /// leave its bounding set (and, for root, every other set).
    pub capabilities: u64,
    /// The highest capability this kernel knows.
    pub last_capability: u32,
    /// `--ulimit`s: (resource, soft, hard).
    pub rlimits: Vec<(c_int, libc::rlim_t, libc::rlim_t)>,
    pub steps: Vec<Step>,
    /// The log (opened for appending), where the shim writes the task's
    /// stdout and stderr, stamped line by line.
    pub log: OwnedFd,
    /// Becomes stdin (/dev/null).
    pub stdin: OwnedFd,
    /// The task's directory, where the shim writes the exit code.
    pub task_dir: OwnedFd,
}

/// A started task: the shim (the daemon's child) and the task's init.
#[derive(Clone, Copy, Debug)]
pub(super) struct Launched {
    pub shim: Pid,
    pub init: Pid,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum LaunchError {
    #[error("{what}: {source}")]
    Daemon {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// A child failed; the shim was forked and must be reaped.
    #[error("{what}: {errno}")]
    Child {
        shim: Pid,
        what: String,
        errno: Errno,
    },
    #[error("the task's program did not start within {EXEC_TIMEOUT:?}")]
    Timeout { shim: Pid },
}

impl LaunchError {
    /// The shim to reap, if it was forked.
    pub(super) fn shim(&self) -> Option<Pid> {
        match self {
            Self::Daemon { .. } => None,
            Self::Child { shim, .. } | Self::Timeout { shim } => Some(*shim),
        }
    }
}

/// Where a child failed: a step's index, or one of these.
const AT_SHIM_STDIO: i32 = -1;
const AT_SHIM_UNSHARE_PID: i32 = -2;
const AT_SHIM_FORK_INIT: i32 = -3;
const AT_INIT_FORK_PROGRAM: i32 = -4;
const AT_PROGRAM_EXEC: i32 = -5;
const AT_PROGRAM_USER: i32 = -6;
const AT_PROGRAM_RLIMIT: i32 = -7;
const AT_PROGRAM_CAPABILITIES: i32 = -8;

/// Report kinds on the pipe: `[kind, value, errno]` as three native i32.
const REPORT_INIT_PID: i32 = 1;
const REPORT_FAILED: i32 = 2;
const REPORT_LEN: usize = 12;

/// Forks the task's process tree and waits until its program has exec'd.
pub(super) fn launch(plan: &Plan) -> Result<Launched, LaunchError> {
    let daemon_err = |what| move |source| LaunchError::Daemon { what, source };
    let (report_read, report_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| daemon_err("creating a pipe")(e.into()))?;
    let report_write = above_stdio(report_write).map_err(daemon_err("moving a pipe fd"))?;
    // The task's stdout and stderr, which the shim reads.
    let (output_read, output_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| daemon_err("creating a pipe")(e.into()))?;
    let output_read = above_stdio(output_read).map_err(daemon_err("moving a pipe fd"))?;
    let output_write = above_stdio(output_write).map_err(daemon_err("moving a pipe fd"))?;
    // Made before the fork: the shim may not allocate.
    let mut line_buffer = vec![0u8; stamp::LINE_MAX];
    let argv = null_terminated(&plan.argv);
    let env = null_terminated(&plan.env);
    // The fds the shim keeps besides stdio; it closes every other one, so
    // that no fd of the daemon (another task's pipe, a socket) leaks into it.
    let mut keep: Vec<RawFd> = plan.steps.iter().filter_map(Step::fd).collect();
    keep.extend([
        report_write.as_raw_fd(),
        plan.task_dir.as_raw_fd(),
        plan.log.as_raw_fd(),
        output_read.as_raw_fd(),
    ]);
    keep.sort_unstable();
    let child = Children {
        plan,
        argv: &argv,
        env: &env,
        report: report_write.as_raw_fd(),
        output_read: output_read.as_raw_fd(),
        output_write: output_write.as_raw_fd(),
        keep: &keep,
    };

    // SAFETY: the child runs only async-signal-safe code (see the module doc)
    // and never returns.
    let shim = unsafe { libc::fork() };
    if shim < 0 {
        return Err(daemon_err("forking")(io::Error::last_os_error()));
    }
    if shim == 0 {
        // SAFETY: in the forked child, as `shim` requires.
        unsafe { child.shim(&mut line_buffer) }
    }
    let shim = Pid::from_raw(shim);
    // Only the task may hold the write end: its end is the end of output.
    drop((report_write, output_read, output_write));
    read_reports(File::from(report_read), shim, plan)
}

/// Reads the children's reports until EOF: init's PID, or a failure.
fn read_reports(mut pipe: File, shim: Pid, plan: &Plan) -> Result<Launched, LaunchError> {
    let deadline = Instant::now() + EXEC_TIMEOUT;
    let mut received = Vec::with_capacity(2 * REPORT_LEN);
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut poll = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = c_int::try_from(left.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(LaunchError::Daemon {
                what: "waiting for the task to start",
                source: err,
            });
        }
        if ready == 0 {
            return Err(LaunchError::Timeout { shim });
        }
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(LaunchError::Daemon {
                    what: "reading the task's start report",
                    source,
                });
            }
        }
    }
    let mut init = None;
    for report in received.chunks_exact(REPORT_LEN) {
        let field =
            |i: usize| i32::from_ne_bytes([report[i], report[i + 1], report[i + 2], report[i + 3]]);
        match field(0) {
            REPORT_INIT_PID => init = Some(Pid::from_raw(field(4))),
            REPORT_FAILED => {
                let at = field(4);
                let what = match at {
                    AT_SHIM_STDIO => "redirecting stdio to the log".to_owned(),
                    AT_SHIM_UNSHARE_PID => "unsharing the PID namespace".to_owned(),
                    AT_SHIM_FORK_INIT => "forking the task's init".to_owned(),
                    AT_INIT_FORK_PROGRAM => "forking the task's program".to_owned(),
                    AT_PROGRAM_USER => "switching to the task's user and groups".to_owned(),
                    AT_PROGRAM_RLIMIT => "setting the task's ulimits".to_owned(),
                    AT_PROGRAM_CAPABILITIES => "dropping capabilities".to_owned(),
                    AT_PROGRAM_EXEC => format!(
                        "executing {}",
                        plan.argv
                            .first()
                            .map_or("?".into(), |a| a.to_string_lossy())
                    ),
                    step => usize::try_from(step)
                        .ok()
                        .and_then(|i| plan.steps.get(i))
                        .map_or_else(|| format!("step {step}"), Step::describe),
                };
                return Err(LaunchError::Child {
                    shim,
                    what,
                    errno: Errno::from_raw(field(8)),
                });
            }
            _ => {}
        }
    }
    match init {
        Some(init) => Ok(Launched { shim, init }),
        None => Err(LaunchError::Child {
            shim,
            what: "starting the task's init (it exited without a report)".into(),
            errno: Errno::UnknownErrno,
        }),
    }
}

/// An fd numbered 3 or above, so that making stdio in the shim cannot
/// overwrite it (a daemon started with stdio closed gets low fds).
pub(super) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl on an fd we own; the result is a new fd we then own.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `moved` is a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// What the forked children run. Every method runs after fork and may only
/// use async-signal-safe calls on data prepared before it.
struct Children<'a> {
    plan: &'a Plan,
    argv: &'a [*const c_char],
    env: &'a [*const c_char],
    report: RawFd,
    /// The pipe of the task's stdout and stderr.
    output_read: RawFd,
    output_write: RawFd,
    keep: &'a [RawFd],
}

impl Children<'_> {
    /// The shim: makes stdio, forks init into a new PID namespace, writes
    /// the task's output to the log until the namespace dies, waits for
    /// init and records its exit code.
    unsafe fn shim(&self, line_buffer: &mut [u8]) -> ! {
        // SAFETY: raw syscalls on fds and buffers that stay valid.
        unsafe {
            // Signals wait until init's loop takes them; the program unblocks them.
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_SETMASK, &all, ptr::null_mut());
            // Its own session: the daemon's terminal or process group signals
            // do not reach the task.
            libc::setsid();
            set_name(c"swarm-shim");
            if libc::dup2(self.plan.stdin.as_raw_fd(), 0) < 0
                || libc::dup2(self.output_write, 1) < 0
                || libc::dup2(self.output_write, 2) < 0
            {
                self.fail(AT_SHIM_STDIO, Errno::last(), 1);
            }
            close_all_but(self.keep);
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                self.fail(AT_SHIM_UNSHARE_PID, Errno::last(), 1);
            }
            let init = libc::fork();
            if init < 0 {
                self.fail(AT_SHIM_FORK_INIT, Errno::last(), 1);
            }
            if init == 0 {
                self.init();
            }
            self.send(REPORT_INIT_PID, init, 0);
            // Only the task's files and output are needed from here on; the
            // shim's stdout and stderr go, so that only the task holds the
            // pipe's write end.
            let log = self.plan.log.as_raw_fd();
            for &fd in self.keep {
                if fd != self.plan.task_dir.as_raw_fd() && fd != log && fd != self.output_read {
                    libc::close(fd);
                }
            }
            libc::dup2(0, 1);
            libc::dup2(0, 2);
            let code = copy_output(self.output_read, log, line_buffer, init);
            write_exit_code(self.plan.task_dir.as_raw_fd(), code);
            libc::_exit(0)
        }
    }

    /// PID 1 of the task: builds its world, forks the program and acts as
    /// its init until it exits.
    unsafe fn init(&self) -> ! {
        // SAFETY: raw syscalls on data that stays valid.
        unsafe {
            set_name(c"swarm-init");
            // The shim's: the log is written by the shim alone.
            libc::close(self.output_read);
            libc::close(self.plan.log.as_raw_fd());
            for (index, step) in self.plan.steps.iter().enumerate() {
                if let Err(errno) = step.run() {
                    self.fail(index as i32, errno, EXIT_SETUP_FAILED);
                }
            }
            // Default dispositions: an inherited SIG_IGN on SIGCHLD would make
            // the kernel reap the program itself.
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            for signal in FORWARDED_SIGNALS.iter().chain(&[libc::SIGCHLD]) {
                libc::sigaction(*signal, &default, ptr::null_mut());
            }
            let program = libc::fork();
            if program < 0 {
                self.fail(AT_INIT_FORK_PROGRAM, Errno::last(), EXIT_SETUP_FAILED);
            }
            if program == 0 {
                self.exec_program();
            }
            libc::close(self.report);
            supervise(program)
        }
    }

    unsafe fn exec_program(&self) -> ! {
        // SAFETY: raw syscalls; argv and env are NUL-terminated arrays of
        // NUL-terminated strings the plan owns.
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            for signal in 1..=64 {
                // Fails for SIGKILL, SIGSTOP and libc's reserved ones: fine.
                libc::sigaction(signal, &default, ptr::null_mut());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
            for (resource, soft, hard) in &self.plan.rlimits {
                let limit = libc::rlimit {
                    rlim_cur: *soft,
                    rlim_max: *hard,
                };
                // The resource is a c_int constant; glibc's prototype wants
                // its own enum type.
                #[allow(clippy::useless_conversion)]
                if libc::setrlimit((*resource).try_into().unwrap_or_default(), &limit) != 0 {
                    self.fail(AT_PROGRAM_RLIMIT, Errno::last(), EXIT_SETUP_FAILED);
                }
            }
            // Out of the bounding set first: it needs CAP_SETPCAP, which
            // the program may not keep.
            for cap in 0..=self.plan.last_capability {
                if self.plan.capabilities & (1 << cap) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                {
                    self.fail(AT_PROGRAM_CAPABILITIES, Errno::last(), EXIT_SETUP_FAILED);
                }
            }
            let groups = &self.plan.groups;
            // The groups first: once the uid is not root, they cannot change.
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                self.fail(AT_PROGRAM_USER, Errno::last(), EXIT_SETUP_FAILED);
            }
            if let Some(user) = self.plan.user {
                let dropped = libc::setgid(user.gid) == 0 && libc::setuid(user.uid) == 0;
                if !dropped {
                    self.fail(AT_PROGRAM_USER, Errno::last(), EXIT_SETUP_FAILED);
                }
            }
            // A program that is still root keeps only its capabilities (for
            // another user, setuid has emptied its sets already).
            if self.plan.user.is_none_or(|user| user.uid == 0)
                && set_capabilities(self.plan.capabilities) != 0
            {
                self.fail(AT_PROGRAM_CAPABILITIES, Errno::last(), EXIT_SETUP_FAILED);
            }
            // As execvp: a permission error wins over a later "not found".
            let mut errno = Errno::ENOENT;
            for path in &self.plan.program_paths {
                libc::execve(path.as_ptr(), self.argv.as_ptr(), self.env.as_ptr());
                let failed = Errno::last();
                if errno != Errno::EACCES {
                    errno = failed;
                }
            }
            self.fail(AT_PROGRAM_EXEC, errno, EXIT_EXEC_FAILED)
        }
    }

    unsafe fn send(&self, kind: i32, value: i32, errno: i32) {
        let mut report = [0u8; REPORT_LEN];
        report[0..4].copy_from_slice(&kind.to_ne_bytes());
        report[4..8].copy_from_slice(&value.to_ne_bytes());
        report[8..12].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: writes a stack buffer; up to PIPE_BUF the write is atomic.
        unsafe { libc::write(self.report, report.as_ptr().cast(), REPORT_LEN) };
    }

    unsafe fn fail(&self, at: i32, errno: Errno, exit: c_int) -> ! {
        // SAFETY: see `send`; _exit skips the daemon's atexit handlers.
        unsafe {
            self.send(REPORT_FAILED, at, errno as i32);
            libc::_exit(exit)
        }
    }
}

/// The shim's loop: writes what the task prints to `log`, one stamped line
/// at a time, until the pipe ends (every process of the task is gone), then
/// returns init's exit code. Should a write end outlive the task (passed
/// out of it), the shim stops reading once init has exited and the pipe
/// is drained.
unsafe fn copy_output(
    output: RawFd,
    log: RawFd,
    line_buffer: &mut [u8],
    init: libc::pid_t,
) -> c_int {
    let mut lines = stamp::LineSplitter::new(line_buffer);
    let mut exited: Option<c_int> = None;
    // SAFETY: raw syscalls on fds the shim holds and on its own buffers.
    unsafe {
        loop {
            let mut poll = libc::pollfd {
                fd: output,
                events: libc::POLLIN,
                revents: 0,
            };
            // Once init is gone, what is left in the pipe is all there is.
            let timeout = if exited.is_some() { 0 } else { OUTPUT_POLL_MS };
            let ready = libc::poll(&mut poll, 1, timeout);
            if ready > 0 {
                let spare = lines.spare();
                let read = libc::read(output, spare.as_mut_ptr().cast(), spare.len());
                if read > 0 {
                    lines.take(read as usize, |line| write_stamped_line(log, line));
                    continue;
                }
                if read == 0 || Errno::last() != Errno::EINTR {
                    break;
                }
                continue;
            }
            if ready < 0 && Errno::last() == Errno::EINTR {
                continue;
            }
            if exited.is_some() || ready < 0 {
                break;
            }
            let mut status = 0;
            if libc::waitpid(init, &mut status, libc::WNOHANG) == init {
                exited = Some(exit_code(status));
            }
        }
        lines.finish(|line| write_stamped_line(log, line));
        libc::close(output);
        if let Some(code) = exited {
            return code;
        }
        loop {
            let mut status = 0;
            let waited = libc::waitpid(init, &mut status, 0);
            if waited == init {
                return exit_code(status);
            }
            if waited < 0 && Errno::last() != Errno::EINTR {
                return 255;
            }
        }
    }
}

/// Appends `<now> <line>\n` to `log` in one write, so that a reader never
/// sees half a line (short of a full disk).
fn write_stamped_line(log: RawFd, line: &[u8]) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a timespec on the stack.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let mut prefix = [b' '; stamp::STAMP_LEN + 1];
    let stamp = stamp::format_stamp(now.tv_sec, now.tv_nsec.clamp(0, 999_999_999) as u32);
    prefix[..stamp::STAMP_LEN].copy_from_slice(&stamp);
    let mut parts: [&[u8]; 3] = [&prefix, line, b"\n"];
    let mut first = 0;
    while first < parts.len() {
        let iovecs = [0, 1, 2].map(|i| {
            let part = parts.get(i).copied().unwrap_or_default();
            libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            }
        });
        let pending = iovecs.get(first..).unwrap_or_default();
        // SAFETY: the iovecs point into live buffers of their length.
        let written = unsafe { libc::writev(log, pending.as_ptr(), pending.len() as c_int) };
        if written < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return; // A full disk loses the line, not the task.
        }
        // A short write: go on after what was written.
        let mut left = written as usize;
        while first < parts.len() {
            let part = parts.get(first).copied().unwrap_or_default();
            if left < part.len() {
                if let Some(slot) = parts.get_mut(first) {
                    *slot = part.get(left..).unwrap_or_default();
                }
                break;
            }
            left -= part.len();
            first += 1;
        }
        if written == 0 && first < parts.len() {
            return;
        }
    }
}

/// Init's loop, after tini: all signals are blocked and taken here; the
/// forwarded ones go to the program, SIGCHLD reaps whatever exited, and
/// init exits with the program's code once it is gone (the kernel then
/// kills what is left in the namespace). Blocked, not ignored: signals from
/// outside reach a namespace's init only if it does not ignore them.
unsafe fn supervise(program: libc::pid_t) -> ! {
    // SAFETY: raw syscalls on stack data.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let signal = libc::sigwaitinfo(&all, &mut info);
            if signal == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let reaped = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if reaped <= 0 {
                        break;
                    }
                    if reaped == program {
                        libc::_exit(exit_code(status));
                    }
                }
            } else if signal > 0 {
                libc::kill(program, signal);
            }
        }
    }
}

/// A shell's exit code for a wait status: the code, or 128 + the signal.
fn exit_code(status: c_int) -> c_int {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Writes `code` to `exit` in `dir`, atomically (a temporary file renamed).
unsafe fn write_exit_code(dir: RawFd, code: c_int) {
    const TEMPORARY: &CStr = c"exit.tmp";
    const FINAL: &CStr = c"exit";
    let mut digits = [0u8; 12];
    let mut at = digits.len() - 1;
    digits[at] = b'\n';
    let mut left = code.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (left % 10) as u8;
        left /= 10;
        if left == 0 {
            break;
        }
    }
    if code < 0 {
        at -= 1;
        digits[at] = b'-';
    }
    // SAFETY: raw syscalls on a stack buffer and static strings.
    unsafe {
        let fd = libc::openat(
            dir,
            TEMPORARY.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            return;
        }
        libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
        libc::close(fd);
        libc::renameat(dir, TEMPORARY.as_ptr(), dir, FINAL.as_ptr());
    }
}

/// Closes every fd from 3 up except those in `keep` (sorted, all above 2).
unsafe fn close_all_but(keep: &[RawFd]) {
    let close_range = |first: u32, last: u32| {
        if first > last {
            return;
        }
        // SAFETY: closes fds of this process only.
        let closed = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        if closed != 0 {
            // Kernels before 5.9: one by one, as far as fds usually go.
            for fd in first..=last.min(65_535) {
                // SAFETY: as above.
                unsafe { libc::close(fd as c_int) };
            }
        }
    };
    let mut next = 3u32;
    for &fd in keep {
        let fd = fd as u32;
        if fd > next {
            close_range(next, fd - 1);
        }
        next = next.max(fd + 1);
    }
    close_range(next, u32::MAX);
}

/// The kernel's capability header and one of its two data words (capset(2),
/// version 3: 64 capabilities in two 32-bit halves).
#[repr(C)]
struct CapabilityHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapabilityData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the effective, permitted and inheritable capabilities of this
/// process to `mask`; returns the syscall's result.
fn set_capabilities(mask: u64) -> libc::c_long {
    let mut header = CapabilityHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |bits: u32| CapabilityData {
        effective: bits,
        permitted: bits,
        inheritable: bits,
    };
    let data = [half(mask as u32), half((mask >> 32) as u32)];
    // SAFETY: capset reads a header and two data words that live on the stack.
    unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) }
}

/// The name `ps` shows for the current process (its `comm`).
unsafe fn set_name(name: &CStr) {
    // SAFETY: prctl with a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        // Wait statuses as the kernel encodes them.
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGTERM), 143);
        assert_eq!(exit_code(libc::SIGKILL), 137);
    }
}
