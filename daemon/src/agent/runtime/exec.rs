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
    let started = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state_root)
        .map(|b| {
            b.as_tenant()
                .with_container_args(args.command.clone())
                .with_detach(false)
        })
        .and_then(|b| b.build());
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
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                let message = format!("waiting for the command: {e}\n");
                let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
                return 255;
            }
        }
    }
}
