//! `kubelabd shim`: one small single-threaded process per container (containerd-shim's role).
//!
//! It asks libcontainer to create the container with its stdout and stderr going into
//! pipes, and answers the agent `created PID`; on the agent's `start` (one line on stdin)
//! it starts it and answers `started PID` (either answer may be `error MESSAGE`). Between
//! the two, the agent attaches the pod's network: creating a container and running the
//! CNI plugins take about as long, and they overlap (OCI's create/start split). Then it
//! becomes the container's subreaper, copies the output into the log file in the CRI
//! format (`cri_log`), reaps the container, records its exit status in the exit file, and
//! deletes the container (cgroup and runtime state). It never talks to the apiserver, and
//! it outlives an agent restart (the agent re-adopts it).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cri_log::{self, Stream};

use serde::{Deserialize, Serialize};

/// How a container ended, as its shim recorded it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    /// The signal that killed it (0 when it exited by itself).
    pub signal: i32,
    pub finished_at_ms: i64,
    /// The kernel's OOM killer ended a process of the container.
    #[serde(default)]
    pub oom_killed: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShimArgs {
    /// The container id (unique under --state-root).
    #[arg(long)]
    pub id: String,
    /// The OCI bundle: config.json and rootfs/.
    #[arg(long)]
    pub bundle: PathBuf,
    /// libcontainer's state directory.
    #[arg(long)]
    pub state_root: PathBuf,
    /// Where the container's stdout and stderr go (CRI log format).
    #[arg(long)]
    pub log: PathBuf,
    /// The log file is rotated once it reaches this size (the kubelet's containerLogMaxSize).
    #[arg(long, default_value_t = 10 << 20)]
    pub log_max_bytes: u64,
    /// Log files kept per container run, the current one included (containerLogMaxFiles).
    #[arg(long, default_value_t = 5)]
    pub log_max_files: u32,
    /// Where the exit status is written, once the container has ended.
    #[arg(long)]
    pub exit_file: PathBuf,
}

/// Runs the shim to the end. Called before any async runtime exists: this process must
/// stay single-threaded, because libcontainer forks it.
pub fn run(args: ShimArgs) -> i32 {
    // Orphans of the container are re-parented to us, so that we can reap them.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        answer(&format!("error cannot become a subreaper: {e}"));
        return 1;
    }
    let mut log = match cri_log::Writer::open(&args.log, args.log_max_bytes, args.log_max_files) {
        Ok(log) => log,
        Err(e) => {
            answer(&format!(
                "error opening log file {}: {e}",
                args.log.display()
            ));
            return 1;
        }
    };
    let (mut container, stdout, stderr) = match create(&args) {
        Ok(created) => created,
        Err(message) => {
            answer(&format!("error {}", message.replace('\n', " ")));
            return 1;
        }
    };
    let Some(pid) = container.pid() else {
        answer("error the runtime reported no pid for the created container");
        let _ = container.delete(true);
        return 1;
    };
    answer(&format!("created {pid}"));
    // The agent says `start` once the pod is ready for it; anything else (the agent gone,
    // the pod deleted meanwhile) removes the container unstarted.
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    if go.trim() != "start" {
        let _ = container.delete(true);
        return 1;
    }
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        answer(&format!("error {}", e.to_string().replace('\n', " ")));
        return 1;
    }
    answer(&format!("started {pid}"));
    // Nothing more to say: the agent may go away, and a write to a closed pipe must not kill us.
    if let Ok(devnull) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(devnull.as_raw_fd(), 1);
    }
    let mut record = copy_output_until_exit(pid, [stdout, stderr], &mut log);
    record.oom_killed = oom_killed(&args.bundle);
    if let Err(e) = log.finish() {
        eprintln!("shim: writing the log: {e}");
    }
    write_exit(&args.exit_file, &record);
    // Kills whatever is left in the container's cgroup and removes the cgroup and state.
    let _ = container.refresh_status();
    if let Err(e) = container.delete(true) {
        eprintln!("shim: deleting container {}: {e}", args.id);
    }
    0
}

/// Copies the container's output into the log as it comes, until its init process ends.
///
/// One `poll` waits on both pipes and on a signalfd for SIGCHLD: no thread, no timer.
/// Output still in the pipes when the process ends is drained before returning.
fn copy_output_until_exit(pid: Pid, pipes: [OwnedFd; 2], log: &mut cri_log::Writer) -> ExitRecord {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    // Blocked so that it is queued for the signalfd (it was only blocked after the start:
    // the container must not inherit a blocked SIGCHLD). An exit before this line left a
    // zombie, which the first non-blocking reap below finds.
    let signals = mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC));
    for pipe in &pipes {
        let _ = nix::fcntl::fcntl(
            pipe.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let streams = [Stream::Stdout, Stream::Stderr];
    let mut open = [true, true];
    let mut buf = vec![0u8; 64 * 1024];
    let mut drain = |i: usize, open: &mut [bool; 2], log: &mut cri_log::Writer| loop {
        match nix::unistd::read(pipes[i].as_raw_fd(), &mut buf) {
            Ok(0) => {
                open[i] = false;
                return;
            }
            Ok(n) => {
                if let Err(e) = log.write(streams[i], &buf[..n]) {
                    eprintln!("shim: writing the log: {e}");
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return, // EAGAIN: nothing more for now.
        }
    };
    loop {
        if let Some(record) = reap(pid) {
            for i in 0..2 {
                if open[i] {
                    drain(i, &mut open, log);
                }
            }
            return record;
        }
        let signals = match &signals {
            Ok(s) => s,
            Err(e) => {
                eprintln!("shim: no signalfd ({e}); waiting for the exit without copying output");
                return blocking_wait(pid);
            }
        };
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let watched: Vec<usize> = (0..2).filter(|i| open[*i]).collect();
        fds.extend(
            watched
                .iter()
                .map(|i| PollFd::new(pipes[*i].as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                eprintln!("shim: poll failed: {e}");
                return blocking_wait(pid);
            }
        }
        let ready: Vec<usize> = watched
            .iter()
            .zip(&fds[1..])
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| *i)
            .collect();
        drop(fds);
        for i in ready {
            drain(i, &mut open, log);
        }
        // Empty the signalfd; the reap at the top of the loop does the real work.
        while let Ok(Some(_)) = signals.read_signal() {}
    }
}

/// Reaps every exited child; returns the container's exit when its init process was one.
fn reap(pid: Pid) -> Option<ExitRecord> {
    loop {
        let exit = |exit_code, signal| ExitRecord {
            exit_code,
            signal,
            finished_at_ms: kubelab_proto::now_ms(),
            oom_killed: false,
        };
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Some(exit(code, 0)),
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => {
                return Some(exit(128 + signal as i32, signal as i32))
            }
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("shim: waiting for the container failed: {e}");
                return Some(exit(255, 0));
            }
        }
    }
}

fn blocking_wait(pid: Pid) -> ExitRecord {
    loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => {
                if let Some(record) = reap(pid) {
                    return record;
                }
            }
        }
    }
}

/// Whether the OOM killer struck in the container's cgroup (read before it is deleted):
/// `oom_kill` in `memory.events` (v2) or `memory.oom_control` (v1).
fn oom_killed(bundle: &std::path::Path) -> bool {
    let Ok(spec) = libcontainer::oci_spec::runtime::Spec::load(bundle.join("config.json")) else {
        return false;
    };
    let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
        return false;
    };
    let relative = path.strip_prefix("/").unwrap_or(&path).to_path_buf();
    let cgroup = std::path::Path::new("/sys/fs/cgroup");
    [
        cgroup.join(&relative).join("memory.events"),
        cgroup
            .join("memory")
            .join(&relative)
            .join("memory.oom_control"),
    ]
    .iter()
    .filter_map(|f| std::fs::read_to_string(f).ok())
    .flat_map(|text| {
        text.lines()
            .filter_map(|l| l.strip_prefix("oom_kill "))
            .map(|n| n.trim().parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    })
    .any(|n| n > 0)
}

/// Creates the container (its process waits, in all its namespaces, to be started);
/// returns it with the read ends of its stdout and stderr.
fn create(args: &ShimArgs) -> Result<(Container, OwnedFd, OwnedFd), String> {
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    // The container reads from /dev/null, as a Kubernetes container without `stdin: true`
    // does (the shim's own stdin is the agent's line to it).
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let container = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state_root)
        .map_err(|e| e.to_string())?
        .with_stdin(null)
        .with_stdout(stdout_w)
        .with_stderr(stderr_w)
        .validate_id()
        .map_err(|e| e.to_string())?
        .as_init(&args.bundle)
        .with_systemd(false)
        .build()
        .map_err(|e| e.to_string())?;
    // The write ends went to the container and were closed here with the builder: the
    // pipes see end-of-file once every process of the container has closed them.
    Ok((container, stdout_r, stderr_r))
}

fn answer(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Written to a temporary name and renamed, so a reader never sees half a record.
fn write_exit(path: &std::path::Path, record: &ExitRecord) {
    let tmp = path.with_extension("tmp");
    let result = serde_json::to_vec(record)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        eprintln!("shim: writing exit record {}: {e}", path.display());
    }
}
