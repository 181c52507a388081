//! `kubelabd reset DIR`: removes what kubelab left on this machine for the labs, agents
//! and builds whose files are under DIR, after a `kill -9`, a crash or a power cut — the
//! idea of `kubeadm reset`, but it also removes the network kubelab made (kubeadm leaves
//! iptables and CNI to the user).
//!
//! It finds agent roots (`agent.lock`) and build roots (`lock` beside `oci/`) up to a few
//! levels below DIR and has each remove its own leftovers with its own code
//! (`agent::reset`, `build::reset`): processes, network, mounts, cgroups, the node's
//! bridge and masquerade rule. Then it detaches any mount still under DIR. It refuses,
//! touching nothing of a root, while an agent or build runs there. It never stops the
//! apiserver and never removes stored objects or images: `rm -rf DIR` does that.

use std::path::{Path, PathBuf};

/// How deep below DIR roots are looked for: `.lab/data/agents/NODE` is 3 below `.lab`.
const MAX_DEPTH: usize = 4;

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// The directory holding the lab's files (`kubelabd up --data-dir`, an agent's
    /// --root-dir, a build's --root, or any directory above them, such as `.lab`).
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("{0}: no such directory")]
    NoDir(PathBuf),
    #[error("nothing was removed for {} part(s) of the lab:\n  {}", .0.len(), .0.join("\n  "))]
    Refused(Vec<String>),
}

/// Removes the leftovers, printing one line per thing removed.
pub async fn run(args: ResetArgs) -> Result<(), ResetError> {
    let dir = std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone());
    if !dir.is_dir() {
        return Err(ResetError::NoDir(dir));
    }
    let (agents, builds) = roots(&dir);
    let mut removed = Vec::new();
    let mut refused = Vec::new();
    for root in &agents {
        match crate::agent::reset::reset(root).await {
            Ok(lines) => removed.extend(lines),
            Err(e) => refused.push(e.to_string()),
        }
    }
    for root in &builds {
        let root = root.clone();
        match crate::blocking::off_thread(move || crate::build::reset(&root)).await {
            Ok(line) => removed.extend(line),
            Err(e) => refused.push(e.to_string()),
        }
    }
    // The service proxy's chains, which a killed agent leaves (only when an agent was
    // here: a kube-proxy of a real cluster on this host is not ours to touch).
    if refused.is_empty() && !agents.is_empty() {
        removed.extend(
            crate::agent::proxy::clean_up(None)
                .await
                .into_iter()
                .map(|r| format!("service proxy rules: {r}")),
        );
        use crate::agent::separate_host::{remove_lan, LAN_BRIDGE, LAN_NETWORK};
        removed.extend(remove_lan(LAN_BRIDGE, LAN_NETWORK).await);
    }
    // Mounts no root claimed (a build or agent moved by hand, say); deepest first.
    if refused.is_empty() {
        let mut mounts = mounts_under(&dir);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for target in mounts {
            if nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH).is_ok() {
                removed.push(format!("mount {target}"));
            }
        }
    }
    for line in &removed {
        println!("removed: {line}");
    }
    if !refused.is_empty() {
        return Err(ResetError::Refused(refused));
    }
    if removed.is_empty() {
        println!(
            "nothing to remove: no process, mount, cgroup, link or rule of kubelab is left for {}",
            dir.display()
        );
    }
    Ok(())
}

/// The agent and build roots at most `MAX_DEPTH` levels below `dir` (symlinks not
/// followed: a root is where its files are).
fn roots(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut agents, mut builds) = (Vec::new(), Vec::new());
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        if crate::agent::reset::is_agent_root(&d) {
            agents.push(d);
            continue;
        }
        if crate::build::is_build_root(&d) {
            builds.push(d);
            continue;
        }
        if depth == MAX_DEPTH {
            continue;
        }
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    agents.sort();
    builds.sort();
    (agents, builds)
}

/// Mount points at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let root = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|t| t.starts_with(&root))
        .map(String::from)
        .collect()
}
