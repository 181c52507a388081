//! Starting a `kubelabd shim` and speaking its protocol, once for every user (the agent's
//! RuntimeService, the builder's RUN steps).
//!
//! The protocol (see `shim.rs`): the shim creates the container and answers one line on
//! its stdout, `created PID` or `error MESSAGE`; it starts the container when told
//! `start` on its stdin and answers `started PID` or `error MESSAGE`; stdin closed before
//! that means "give up": the shim deletes the container and exits. Whatever the shim
//! says on stderr goes to a file, read back when it ends without an answer. Owns the
//! shim's process handle and pipes; nothing on disk.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("starting the shim: {0}")]
    Spawn(std::io::Error),
    /// The runtime's own refusal (`error MESSAGE`).
    #[error("{0}")]
    Refused(String),
    #[error("the shim exited without {0} the container: {1}")]
    Ended(&'static str, String),
    #[error("talking to the shim: {0}")]
    Pipe(std::io::Error),
}

/// What one shim is started for.
pub struct ShimCommand<'a> {
    /// The `kubelabd` executable (the shim is its hidden `shim` subcommand).
    pub exe: &'a Path,
    /// The container id, unique under `state_root`.
    pub id: &'a str,
    /// The OCI bundle: `config.json` and `rootfs/`.
    pub bundle: &'a Path,
    /// libcontainer's state directory.
    pub state_root: &'a Path,
    /// The container's output, in the CRI log format.
    pub log: &'a Path,
    pub log_max_bytes: u64,
    /// Where the shim writes how the container ended.
    pub exit_file: &'a Path,
    /// The shim's own stderr.
    pub shim_log: &'a Path,
}

/// A shim whose container is created (and, after `start`, running).
pub struct Shim {
    pub child: tokio::process::Child,
    /// The container's init process, as the shim last reported it.
    pub pid: i32,
    answers: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stdin: Option<tokio::process::ChildStdin>,
    shim_log: PathBuf,
}

impl ShimCommand<'_> {
    /// Spawns the shim (in a process group of its own: a Ctrl-C meant for the agent's or
    /// the builder's terminal must not reach it) and waits until the container is created.
    pub async fn create(&self) -> Result<Shim, ShimError> {
        let stderr = std::fs::File::create(self.shim_log).map_err(ShimError::Spawn)?;
        let mut child = tokio::process::Command::new(self.exe)
            .arg("shim")
            .arg("--id")
            .arg(self.id)
            .arg("--bundle")
            .arg(self.bundle)
            .arg("--state-root")
            .arg(self.state_root)
            .arg("--log")
            .arg(self.log)
            .arg("--exit-file")
            .arg(self.exit_file)
            .arg("--log-max-bytes")
            .arg(self.log_max_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(ShimError::Spawn)?;
        tracing::debug!(
            shim_pid = child.id(),
            "shim started; waiting for its answer"
        );
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| ShimError::Pipe(std::io::Error::other("the shim has no stdout")))?;
        let mut shim = Shim {
            stdin: child.stdin.take(),
            child,
            pid: 0,
            answers: tokio::io::BufReader::new(stdout).lines(),
            shim_log: self.shim_log.to_path_buf(),
        };
        shim.pid = shim.expect("created", "creating").await?;
        Ok(shim)
    }
}

impl Shim {
    /// Tells the shim to start the created container; returns its pid.
    pub async fn start(&mut self) -> Result<i32, ShimError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| ShimError::Pipe(std::io::Error::other("the shim's stdin is gone")))?;
        stdin.write_all(b"start\n").await.map_err(ShimError::Pipe)?;
        self.pid = self.expect("started", "starting").await?;
        Ok(self.pid)
    }

    /// Gives up on a created container: stdin closed, the shim deletes it and exits.
    pub async fn abort(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait().await;
    }

    /// The shim's process id (what a later agent waits on through a pidfd).
    pub fn shim_pid(&self) -> i32 {
        self.child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0)
    }

    /// The next answer must be `word PID`; `error MESSAGE` and silence are errors (the
    /// shim is then waited for, so that it leaves no zombie).
    async fn expect(&mut self, word: &str, doing: &'static str) -> Result<i32, ShimError> {
        let line = self.answers.next_line().await.ok().flatten();
        let answer = line.as_deref().map(str::trim).unwrap_or_default();
        let (said, rest) = answer.split_once(' ').unwrap_or((answer, ""));
        if said == word {
            if let Ok(pid) = rest.parse() {
                return Ok(pid);
            }
        }
        let _ = self.child.wait().await;
        if said == "error" {
            return Err(ShimError::Refused(rest.to_string()));
        }
        let detail = std::fs::read_to_string(&self.shim_log).unwrap_or_default();
        Err(ShimError::Ended(doing, detail.trim().to_string()))
    }
}
