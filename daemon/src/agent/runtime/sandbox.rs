//! The pod sandbox: the network, IPC and UTS namespaces a pod's containers share.
//!
//! Kubernetes keeps them alive with a "pause" container; kubelab pins them instead, as
//! `ip netns add` does: a short-lived thread unshares the three namespaces, sets the
//! pod's hostname, and bind-mounts `/proc/thread-self/ns/{net,ipc,uts}` onto files in
//! `pods/<uid>/sandbox/`. A namespace lives as long as something refers to it, so the
//! bind mounts keep them alive with no process at all; every container of the pod joins
//! them by path (see `spec.rs`). Owns those files and mounts; touches no container.

use std::path::{Path, PathBuf};

pub const NAMESPACES: [&str; 3] = ["net", "ipc", "uts"];

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("creating the pod's namespaces: {0}")]
    Unshare(nix::Error),
    #[error("setting the pod's hostname: {0}")]
    Hostname(nix::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("pinning the {0} namespace at {1}: {2}")]
    Pin(&'static str, PathBuf, nix::Error),
    #[error("bringing up the pod's loopback interface: {0}")]
    Loopback(nix::Error),
    #[error("the sandbox thread failed")]
    Thread,
}

/// Whether the sandbox in `dir` is complete (all three namespaces pinned).
fn is_pinned(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    NAMESPACES.iter().all(|ns| {
        let target = dir.join(ns).display().to_string();
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(target.as_str()))
    })
}

/// Makes sure the pod's namespaces exist in `dir` (kept as they are when they already
/// do: an agent restarted while the pod runs finds them there).
pub fn ensure(dir: &Path, hostname: &str) -> Result<(), SandboxError> {
    if is_pinned(dir) {
        return Ok(());
    }
    remove(dir);
    std::fs::create_dir_all(dir).map_err(|e| SandboxError::Io(dir.into(), e))?;
    for ns in NAMESPACES {
        let file = dir.join(ns);
        std::fs::File::create(&file).map_err(|e| SandboxError::Io(file, e))?;
    }
    let (dir_owned, hostname) = (dir.to_path_buf(), hostname.to_string());
    // unshare() applies to the calling thread only: a thread of its own keeps the agent's
    // other threads in the host's namespaces. The thread ends at once; the mounts remain.
    let result = std::thread::spawn(move || pin_new_namespaces(&dir_owned, &hostname))
        .join()
        .map_err(|_| SandboxError::Thread)
        .and_then(|r| r);
    if result.is_err() {
        remove(dir);
    }
    result
}

fn pin_new_namespaces(dir: &Path, hostname: &str) -> Result<(), SandboxError> {
    use nix::sched::CloneFlags;
    nix::sched::unshare(
        CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(SandboxError::Unshare)?;
    nix::unistd::sethostname(hostname).map_err(SandboxError::Hostname)?;
    // The loopback interface of a new network namespace starts down.
    loopback_up()?;
    for ns in NAMESPACES {
        let source = PathBuf::from(format!("/proc/thread-self/ns/{ns}"));
        let target = dir.join(ns);
        nix::mount::mount(
            Some(&source),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| SandboxError::Pin(ns, target, e))?;
    }
    Ok(())
}

/// Brings up `lo` in the calling thread's network namespace with one rtnetlink request
/// (what `ip link set lo up` sends), without starting a process.
fn loopback_up() -> Result<(), SandboxError> {
    use nix::sys::socket::{
        recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };
    use std::os::fd::AsRawFd;
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    const IFF_UP: u32 = 1;
    // In a new network namespace `lo` is always interface 1.
    const LOOPBACK_INDEX: i32 = 1;
    let err = |e| SandboxError::Loopback(e);
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(err)?;
    // struct nlmsghdr (16 bytes), then struct ifinfomsg (16 bytes), native byte order.
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes()); // nlmsg_type
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes()); // nlmsg_flags
    msg.extend_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel assigns it
    msg.extend_from_slice(&[0, 0]); // ifi_family (AF_UNSPEC), padding
    msg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&LOOPBACK_INDEX.to_ne_bytes()); // ifi_index
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change: only this flag
    sendto(
        sock.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(err)?;
    // The answer is an NLMSG_ERROR message whose error field is 0 on success.
    let mut answer = [0u8; 256];
    let n = recv(sock.as_raw_fd(), &mut answer, MsgFlags::empty()).map_err(err)?;
    let kind = (n >= 20).then(|| u16::from_ne_bytes([answer[4], answer[5]]));
    let code = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
    match kind {
        Some(NLMSG_ERROR) if code == 0 => Ok(()),
        Some(NLMSG_ERROR) => Err(err(nix::errno::Errno::from_raw(-code))),
        _ => Err(err(nix::errno::Errno::EPROTO)),
    }
}

/// Unpins the namespaces (they die with their last container) and removes `dir`.
pub fn remove(dir: &Path) {
    for ns in NAMESPACES {
        let _ = nix::mount::umount2(&dir.join(ns), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(dir);
}
