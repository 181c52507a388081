//! cgroups of the containers the agent runs: `/kubelab/<node>/<pod-uid>/<container>` in
//! every hierarchy (v1 has one per controller, v2 one for all). libcontainer creates the
//! leaves and removes them with the container; this module lists what is inside a subtree
//! and removes what is left. It never writes a limit.

use std::path::{Path, PathBuf};

/// The mounted hierarchies: `/sys/fs/cgroup` itself (v2) and its directories (v1).
fn hierarchies() -> Vec<PathBuf> {
    let mut hierarchies = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        hierarchies.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    hierarchies
}

fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

/// Every process in the subtree at `path`, in any hierarchy.
pub fn processes(path: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack: Vec<PathBuf> = hierarchies()
        .into_iter()
        .map(|h| h.join(relative(path)))
        .filter(|p| p.is_dir())
        .collect();
    while let Some(dir) = stack.pop() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes the cgroup at `path` in every hierarchy, children first, then its parents up to
/// the root while they are empty (`/kubelab/<node>`, `/kubelab`).
pub fn remove(path: &Path) {
    for hierarchy in hierarchies() {
        let target = hierarchy.join(relative(path));
        if !target.exists() {
            continue;
        }
        remove_tree(&target);
        let mut parent = target.parent();
        while let Some(p) = parent {
            if p == hierarchy || std::fs::remove_dir(p).is_err() {
                break;
            }
            parent = p.parent();
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    // cgroup directories are removed with rmdir even though they list control files.
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::debug!(dir = %dir.display(), error = %e, "cgroup not removed");
    }
}

/// Caps the number of processes in the pod's cgroup (the kubelet's podPidsLimit), on the
/// pod's own cgroup so that all its containers share the limit. Best effort: a host
/// without the pids controller runs pods without the cap (logged).
pub fn set_pids_limit(pod: &Path, limit: i64) {
    if limit <= 0 {
        return;
    }
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let dir = if v2 {
        // On v2 the pids controller must be enabled in every ancestor's subtree.
        let mut at = PathBuf::from("/sys/fs/cgroup");
        for part in relative(pod).components() {
            let _ = std::fs::write(at.join("cgroup.subtree_control"), "+pids");
            at.push(part);
            let _ = std::fs::create_dir(&at);
        }
        at
    } else {
        let dir = Path::new("/sys/fs/cgroup/pids").join(relative(pod));
        let _ = std::fs::create_dir_all(&dir);
        dir
    };
    if let Err(e) = std::fs::write(dir.join("pids.max"), limit.to_string()) {
        tracing::warn!(cgroup = %dir.display(), error = %e, "cannot set the pod's pids limit");
    }
}
