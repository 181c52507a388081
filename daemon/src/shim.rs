//! `kubelabd shim`: one small single-threaded process per container (containerd-shim's role).
//!
//! It asks libcontainer to create and start the container, with the container's stdout
//! and stderr going to the log file, becomes the container's subreaper, reaps it, records
//! its exit status in the exit file, and deletes the container (cgroup and runtime state).
//! It answers the agent with one line on stdout: `started PID` or `error MESSAGE`.
//! It never talks to the apiserver, and it outlives an agent restart.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitStatus};

use crate::agent::runtime::ExitRecord;

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
    /// Where the container's stdout and stderr go.
    #[arg(long)]
    pub log: PathBuf,
    /// Where the exit status is written, once the container has ended.
    #[arg(long)]
    pub exit_file: PathBuf,
}

/// Runs the shim to the end. Called before any async runtime exists: this process must
/// stay single-threaded, because libcontainer forks it.
pub fn run(args: ShimArgs) -> i32 {
    // Orphans of the container (its init process once libcontainer's intermediate process
    // exits) are re-parented to us, so that we can reap them and learn the exit status.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        answer(&format!("error cannot become a subreaper: {e}"));
        return 1;
    }
    let mut container = match create_and_start(&args) {
        Ok(c) => c,
        Err(message) => {
            answer(&format!("error {}", message.replace('\n', " ")));
            return 1;
        }
    };
    let Some(pid) = container.pid() else {
        answer("error the runtime reported no pid for the started container");
        let _ = container.delete(true);
        return 1;
    };
    answer(&format!("started {pid}"));
    // Nothing more to say: the agent may go away, and a write to a closed pipe must not kill us.
    if let Ok(devnull) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(devnull.as_raw_fd(), 1);
    }
    let record = loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => {
                break ExitRecord {
                    exit_code: code,
                    signal: 0,
                    finished_at_ms: kubelab_proto::now_ms(),
                }
            }
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => {
                break ExitRecord {
                    exit_code: 128 + signal as i32,
                    signal: signal as i32,
                    finished_at_ms: kubelab_proto::now_ms(),
                }
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("shim: waiting for the container failed: {e}");
                break ExitRecord {
                    exit_code: 255,
                    signal: 0,
                    finished_at_ms: kubelab_proto::now_ms(),
                };
            }
        }
    };
    write_exit(&args.exit_file, &record);
    // Kills whatever is left in the container's cgroup and removes the cgroup and state.
    let _ = container.refresh_status();
    if let Err(e) = container.delete(true) {
        eprintln!("shim: deleting container {}: {e}", args.id);
    }
    0
}

fn create_and_start(args: &ShimArgs) -> Result<Container, String> {
    let open_log = || -> Result<OwnedFd, String> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.log)
            .map(OwnedFd::from)
            .map_err(|e| format!("opening log file {}: {e}", args.log.display()))
    };
    let mut container = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state_root)
        .map_err(|e| e.to_string())?
        .with_stdout(open_log()?)
        .with_stderr(open_log()?)
        .validate_id()
        .map_err(|e| e.to_string())?
        .as_init(&args.bundle)
        .with_systemd(false)
        .build()
        .map_err(|e| e.to_string())?;
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(e.to_string());
    }
    Ok(container)
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
