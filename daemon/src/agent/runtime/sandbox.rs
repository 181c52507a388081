//! The pod sandbox: the network, IPC and UTS namespaces a pod's containers share.
//!
//! Kubernetes keeps them alive with a "pause" container; kubelab pins them instead, as
//! `ip netns add` does: a short-lived thread unshares the namespaces, sets the pod's
//! hostname, and bind-mounts `/proc/thread-self/ns/{net,ipc,uts}` onto files in
//! `pods/<uid>/sandbox/`. A namespace lives as long as something refers to it, so the
//! bind mounts keep them alive with no process at all; every container of the pod joins
//! them by path (see `spec.rs`). A `hostNetwork` pod keeps the host's network and
//! hostname: only its IPC namespace is its own. The network namespace starts empty (even
//! `lo` is down): the CNI plugins wire it (`agent/network`). Owns those files and mounts;
//! touches no container.

use std::path::{Path, PathBuf};

pub const NAMESPACES: [&str; 3] = ["net", "ipc", "uts"];

/// The namespaces a pod gets of its own.
fn own_namespaces(host_network: bool) -> &'static [&'static str] {
    if host_network {
        &["ipc"]
    } else {
        &NAMESPACES
    }
}

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
    #[error("the sandbox thread failed")]
    Thread,
}

/// Whether the sandbox in `dir` is complete (each of its namespaces pinned).
fn is_pinned(dir: &Path, host_network: bool) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    own_namespaces(host_network).iter().all(|ns| {
        let target = dir.join(ns).display().to_string();
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(target.as_str()))
    })
}

/// Makes sure the pod's namespaces exist in `dir` (kept as they are when they already
/// do: an agent restarted while the pod runs finds them there).
pub fn ensure(dir: &Path, hostname: &str, host_network: bool) -> Result<(), SandboxError> {
    if is_pinned(dir, host_network) {
        return Ok(());
    }
    remove(dir);
    std::fs::create_dir_all(dir).map_err(|e| SandboxError::Io(dir.into(), e))?;
    for ns in own_namespaces(host_network) {
        let file = dir.join(ns);
        std::fs::File::create(&file).map_err(|e| SandboxError::Io(file, e))?;
    }
    let (dir_owned, hostname) = (dir.to_path_buf(), hostname.to_string());
    // unshare() applies to the calling thread only: a thread of its own keeps the agent's
    // other threads in the host's namespaces. The thread ends at once; the mounts remain.
    let result =
        std::thread::spawn(move || pin_new_namespaces(&dir_owned, &hostname, host_network))
            .join()
            .map_err(|_| SandboxError::Thread)
            .and_then(|r| r);
    if result.is_err() {
        remove(dir);
    }
    result
}

fn pin_new_namespaces(dir: &Path, hostname: &str, host_network: bool) -> Result<(), SandboxError> {
    use nix::sched::CloneFlags;
    if host_network {
        nix::sched::unshare(CloneFlags::CLONE_NEWIPC).map_err(SandboxError::Unshare)?;
    } else {
        let flags = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
        nix::sched::unshare(flags).map_err(SandboxError::Unshare)?;
        nix::unistd::sethostname(hostname).map_err(SandboxError::Hostname)?;
    }
    for &ns in own_namespaces(host_network) {
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

/// Unpins the namespaces (they die with their last container) and removes `dir`.
pub fn remove(dir: &Path) {
    for ns in NAMESPACES {
        let _ = nix::mount::umount2(&dir.join(ns), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(dir);
}
