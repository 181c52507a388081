//! Running a command in a running container (`kubelab exec`, exec probes).
//!
//! Like the shim, a helper process does the libcontainer call: `kubelabd exec-helper`
//! joins the container's namespaces and cgroup (libcontainer's tenant mode) and runs the
//! command with the helper's own stdin, stdout and stderr, which are pipes to the agent.
//! Its exit code is the command's. This module starts helpers; it never touches the
//! container's own processes.

use std::path::PathBuf;
use std::process::Stdio;

use super::{RuntimeError, RuntimeService};

impl RuntimeService {
    /// Starts `command` in the container (of pod `uid`), with piped stdin, stdout and stderr.
    pub fn exec(
        &self,
        uid: &str,
        container: &str,
        command: &[String],
    ) -> Result<tokio::process::Child, RuntimeError> {
        let dir = self.container_dir(uid, container);
        if !dir.join("shim.json").exists() || dir.join("exit.json").exists() {
            return Err(RuntimeError::NotRunning(container.to_string()));
        }
        tokio::process::Command::new(&self.shim_exe)
            .arg("exec-helper")
            .arg("--id")
            .arg(format!("{uid}-{container}"))
            .arg("--state-root")
            .arg(self.root.join("runtime"))
            .arg("--")
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A helper outliving its caller (a dropped exec) must not linger.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::Shim(format!("starting the exec helper: {e}")))
    }

    /// Starts `command` in the container on a terminal of its own: the helper is handed
    /// a console socket, and the terminal's master side comes back through it.
    pub fn exec_tty(
        &self,
        uid: &str,
        container: &str,
        command: &[String],
    ) -> Result<(tokio::process::Child, super::tty::ConsoleSocket), RuntimeError> {
        let dir = self.container_dir(uid, container);
        if !dir.join("shim.json").exists() || dir.join("exit.json").exists() {
            return Err(RuntimeError::NotRunning(container.to_string()));
        }
        let console = super::tty::ConsoleSocket::listen(&self.root.join("tty"))?;
        let child = tokio::process::Command::new(&self.shim_exe)
            .arg("exec-helper")
            .arg("--id")
            .arg(format!("{uid}-{container}"))
            .arg("--state-root")
            .arg(self.root.join("runtime"))
            .arg("--console-socket")
            .arg(console.path())
            .arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::Shim(format!("starting the exec helper: {e}")))?;
        Ok((child, console))
    }
}

/// `kubelabd exec-helper` arguments.
#[derive(Debug, clap::Args)]
pub struct ExecHelperArgs {
    /// The container's id.
    #[arg(long)]
    pub id: String,
    /// libcontainer's state directory.
    #[arg(long)]
    pub state_root: PathBuf,
    /// Run the command on a terminal, sent to this console socket (`exec -t`).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Runs the helper: starts the command in the container and exits with its exit code.
/// Called before any async runtime exists (libcontainer forks this process).
pub fn run_helper(args: ExecHelperArgs) -> i32 {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    use nix::sys::wait::{waitpid, WaitStatus};
    let started = match &args.console_socket {
        Some(socket) => start_on_terminal(&args, socket),
        None => ContainerBuilder::new(args.id.clone(), SyscallType::default())
            .with_root_path(&args.state_root)
            .map(|b| {
                b.as_tenant()
                    .with_container_args(args.command.clone())
                    .with_detach(false)
            })
            .and_then(|b| b.build())
            .map_err(|e| e.to_string()),
    };
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            // One write: the agent forwards stderr as it comes.
            let message = format!("error: cannot run {:?}: {e}\n", args.command);
            let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
            // 126, as a shell says for a command that cannot be run.
            return 126;
        }
    };
    // A detached (terminal) process becomes this helper's child only once libcontainer's
    // intermediate process has exited: until then waitpid says ECHILD.
    let mut not_yet = 0;
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECHILD) if not_yet < 200 => {
                not_yet += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                let message = format!("waiting for the command: {e}\n");
                let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
                return 255;
            }
        }
    }
}

/// Starts the command detached, with `terminal: true`: libcontainer sends the terminal to
/// `socket`, and this helper, a subreaper, inherits the process to wait for it.
fn start_on_terminal(
    args: &ExecHelperArgs,
    socket: &std::path::Path,
) -> Result<nix::unistd::Pid, String> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
    let container_dir = args.state_root.join(&args.id);
    // libcontainer links the socket into the container's state directory; a link left by
    // an earlier terminal would stop this one.
    let _ = std::fs::remove_file(container_dir.join("console-socket"));
    // The process as the container's own (user, env, cwd), with our command, on a terminal.
    let state = libcontainer::container::Container::load(container_dir)
        .map_err(|e| format!("loading the container: {e}"))?;
    let spec = libcontainer::oci_spec::runtime::Spec::load(state.bundle().join("config.json"))
        .map_err(|e| format!("loading its spec: {e}"))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(true));
    let process_file = socket.with_file_name("process.json");
    let text = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
    std::fs::write(&process_file, text).map_err(|e| format!("{}: {e}", process_file.display()))?;
    ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state_root)
        .map(|b| b.with_console_socket(Some(socket)))
        .map(|b| {
            b.as_tenant()
                .with_process(Some(&process_file))
                .with_detach(true)
        })
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())
}
