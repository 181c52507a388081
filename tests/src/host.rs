//! What tests look for on the host, and what a lab's teardown removes there: processes
//! by command line, mounts under a directory, the cgroups of a node or a pod. Reads
//! `/proc` and `/sys/fs/cgroup`; knows nothing of the lab's processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lab's cgroups: `/kubelab/<node>` in every hierarchy (one per controller on v1).
fn node_cgroups(node: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    roots
        .into_iter()
        .map(|r| r.join("kubelab").join(node))
        .filter(|p| p.is_dir())
        .collect()
}

/// SIGKILLs every process in the node's cgroups (its shims and containers).
pub(crate) fn kill_cgroup_processes(node: &str) {
    for dir in node_cgroups(node) {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
    }
}

/// Processes (other than this one) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then(|| name.parse().ok())
                .flatten()
        })
        .collect()
}

/// SIGKILLs processes whose command line names `dir` (the shims of the lab's agents).
pub(crate) fn kill_processes_mentioning(dir: &Path) {
    for pid in processes_mentioning(&format!("{}/", dir.display())) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes the node's cgroup trees (children first) and `/kubelab` when it is left empty.
pub(crate) fn remove_cgroups(node: &str) {
    for dir in node_cgroups(node) {
        // Killed processes take a moment to leave their cgroup.
        for _ in 0..50 {
            let mut dirs = Vec::new();
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                if let Ok(entries) = std::fs::read_dir(&d) {
                    stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
                dirs.push(d);
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            if !dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Mount points under `dir` (overlay rootfs of containers).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let root = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .filter(|t| t.starts_with(&root))
        .collect()
}

/// The processes in the cgroups whose path mentions `needle` (a pod uid, say).
pub fn processes_in_cgroups(needle: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = cgroups_matching(needle)
        .iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// cgroup directories (in any hierarchy) whose path mentions `needle`.
pub fn cgroups_matching(needle: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, needle: &str, depth: usize, out: &mut Vec<PathBuf>) {
        if depth == 0 {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let p = e.path();
                    if p.to_string_lossy().contains(needle) {
                        out.push(p.clone());
                    }
                    walk(&p, needle, depth - 1, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), needle, 6, &mut out);
    out
}

/// Holds the host's service proxy for one test: one lab at a time programs the `KUBE-*`
/// chains (the other tests' agents run `--proxy-mode none`).
pub fn proxy_lock() -> nix::fcntl::Flock<std::fs::File> {
    std::fs::create_dir_all("/run/kubelab-tests").expect("lock dir");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/kubelab-tests/proxy.lock")
        .expect("lock file");
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).expect("proxy lock")
}

/// The `KUBE-` lines iptables holds now.
pub fn kube_rules() -> Vec<String> {
    ["nat", "filter"]
        .iter()
        .flat_map(|table| {
            let out = std::process::Command::new("iptables-save")
                .args(["-t", table])
                .output()
                .expect("iptables-save");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("KUBE-"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}
