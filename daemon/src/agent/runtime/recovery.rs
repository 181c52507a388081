//! What a previous run of the agent left on this node: its containers found again (to be
//! re-adopted by their pods' workers), and the pods the API no longer has, stopped and
//! removed (processes in their cgroups, shims naming their directory, mounts, files).
//! Starts nothing.

use super::*;

impl RuntimeService {
    /// The containers of a pod that a previous run of this agent started: running ones
    /// (their shims still alive) and ones that ended meanwhile, by container name.
    pub fn recover(&self, uid: &str) -> HashMap<String, Recovered> {
        let mut found = HashMap::new();
        let dirs = std::fs::read_dir(self.pod_dir(uid).join("containers"));
        for entry in dirs.into_iter().flatten().flatten() {
            let dir = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(started) = std::fs::read(dir.join("shim.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Started>(&b).ok())
            else {
                continue;
            };
            if let Some(exit) = read_exit(&dir.join("exit.json")) {
                found.insert(name, Recovered::Exited(started, exit));
            } else if is_shim_of(started.shim_pid, &started.container_id) {
                found.insert(name, Recovered::Running(started));
            } else {
                // Its shim died with it (a kill -9, a reboot): libcontainer's state of the
                // container is stale, and would refuse the container's next start.
                let _ =
                    std::fs::remove_dir_all(self.root.join("runtime").join(&started.container_id));
                let lost = ExitRecord {
                    exit_code: 128 + 9,
                    signal: 9,
                    finished_at_ms: kubelab_proto::now_ms(),
                    oom_killed: false,
                };
                found.insert(name, Recovered::Exited(started, lost));
            }
        }
        found
    }

    /// The pods a previous run of this agent left files for (their uids).
    pub fn pods_on_disk(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Stops and removes what a previous run of this agent left for a pod that is no
    /// longer ours (deleted while the agent was away): its containers, their shims,
    /// mounts, cgroups and files. Returns how many processes were stopped.
    pub fn remove_orphan(&self, uid: &str) -> usize {
        // With the slash: `/x/pods/a/` must not match the files of `/x/pods/ab`.
        let dir = format!("{}/", self.pod_dir(uid).display());
        let pod_cgroup = self.pod_cgroup(uid);
        // Containers sit in their pod's cgroup; shims name their bundle in their arguments.
        let mut pids: Vec<i32> = cgroups::processes(&pod_cgroup);
        pids.extend(processes_mentioning(&dir));
        kill_and_wait(&pids);
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for target in mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|t| t.starts_with(&dir))
        {
            unmount(Path::new(target));
        }
        // libcontainer's state of the pod's containers (`<uid>-<name>`), which the shims
        // remove only when they see their container end.
        for state in std::fs::read_dir(self.root.join("runtime"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if state
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{uid}-"))
            {
                let _ = std::fs::remove_dir_all(state.path());
            }
        }
        if let Err(e) = self.remove_pod_dir(uid) {
            tracing::warn!(uid, error = %e, "could not remove an orphaned pod's files");
        }
        cgroups::remove(&pod_cgroup);
        for logs in std::fs::read_dir(self.root.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if logs
                .file_name()
                .to_string_lossy()
                .ends_with(&format!("_{uid}"))
            {
                let _ = std::fs::remove_dir_all(logs.path());
            }
        }
        pids.len()
    }

    /// Removes the node's cgroup parents once no pod is left (the agent stopping).
    pub fn remove_node_cgroups(&self) {
        cgroups::remove(&PathBuf::from("/kubelab").join(&self.node_name));
    }
}

/// SIGKILLs `pids` and waits (at most 5 s) until they are gone. SIGKILL cannot be
/// refused, but a dying process takes a moment to be reaped and to leave its cgroup; this
/// runs only at start-up and in `kubelabd reset`, so a short bounded wait is simpler than a
/// pidfd per process.
pub fn kill_and_wait(pids: &[i32]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for _ in 0..250 {
        if pids
            .iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Processes whose command line contains `needle` (other than this one).
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

/// Whether `pid` is the shim of `container_id` (and not a process that reused the pid).
fn is_shim_of(pid: i32, container_id: &str) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"--id" && w[1] == container_id.as_bytes())
        && args.iter().any(|a| *a == b"shim")
}
