//! `exec -t`: a command on a terminal of its own, as `kubectl exec -it POD -- sh` wants.
//!
//! The OCI way, as containerd does it with runc: the agent listens on a console socket,
//! the exec helper asks libcontainer for a process with `terminal: true`, and
//! libcontainer, inside the container, opens a pseudo-terminal, makes it the process's
//! controlling terminal and sends its master side to that socket. The agent then owns
//! the master: what it reads is the command's output, what it writes is typed input,
//! and a resize is one `TIOCSWINSZ` on it.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use super::RuntimeError;

/// How long the agent waits for libcontainer to send the terminal.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A console socket in its own directory (removed on drop).
pub struct ConsoleSocket {
    pub dir: tempfile::TempDir,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens in a new directory under `parent`.
    pub fn listen(parent: &std::path::Path) -> Result<ConsoleSocket, RuntimeError> {
        let io = |e: std::io::Error| RuntimeError::Shim(format!("console socket: {e}"));
        std::fs::create_dir_all(parent).map_err(io)?;
        let dir = tempfile::Builder::new()
            .prefix("tty-")
            .tempdir_in(parent)
            .map_err(io)?;
        let listener = UnixListener::bind(dir.path().join("console.sock")).map_err(io)?;
        Ok(ConsoleSocket { dir, listener })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("console.sock")
    }

    /// Waits (blocking) for libcontainer to send the terminal's master side.
    pub fn receive(self) -> Result<OwnedFd, RuntimeError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let err = |what: &str, e: &dyn std::fmt::Display| {
            RuntimeError::Shim(format!("receiving the terminal ({what}): {e}"))
        };
        let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        let timeout =
            PollTimeout::try_from(CONSOLE_TIMEOUT.as_millis() as i32).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout).map_err(|e| err("poll", &e))? == 0 {
            return Err(RuntimeError::Shim(
                "the command's terminal was not sent in time (does the container have /dev/pts?)"
                    .into(),
            ));
        }
        let (stream, _) = self.listener.accept().map_err(|e| err("accept", &e))?;
        use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let mut name = [0u8; 64];
        recvmsg(
            &stream,
            &mut [std::io::IoSliceMut::new(&mut name)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| err("recvmsg", &e))?;
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = message {
                if let Some(fd) = fds.next() {
                    return Ok(fd);
                }
            }
        }
        Err(RuntimeError::Shim(
            "the console socket sent no terminal".into(),
        ))
    }
}

/// Sets the terminal's size (what a resize of the user's window asks).
pub fn resize(master: &OwnedFd, width: u16, height: u16) {
    let size = rustix::termios::Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let _ = rustix::termios::tcsetwinsize(master, size);
}
