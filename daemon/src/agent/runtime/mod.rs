//! The RuntimeService: turns "run this container of this pod" into a real container.
//!
//! Owns `<agent root>/pods/<uid>/<container>/` (bundle, overlay upper and work dirs, exit
//! record), the pods' log files, and their cgroups. It stacks the image's layer directories
//! with overlayfs, writes the OCI runtime spec, and starts one `kubelabd shim` process per
//! container; the shim calls libcontainer. The agent itself never calls libcontainer: the
//! library forks and `chdir`s its caller, which a multi-threaded tokio process must not
//! suffer (see docs/architecture.md).

mod cgroups;
pub mod spec;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use kubelab_proto::v1::{Container, Pod};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::agent::image::{Image, ImageManager};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("mounting the container's root filesystem at {0}: {1}")]
    Mount(PathBuf, nix::Error),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("starting the shim: {0}")]
    Shim(String),
    #[error("the runtime refused to start the container: {0}")]
    Start(String),
}

/// How a container ended, as its shim recorded it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    /// The signal that killed it (0 when it exited by itself).
    pub signal: i32,
    pub finished_at_ms: i64,
}

/// A container that the shim has started.
#[derive(Debug)]
pub struct Started {
    pub container_id: String,
    pub pid: i32,
    pub started_at_ms: i64,
    /// The shim: it exits right after the container does.
    pub shim: tokio::process::Child,
    pub exit_file: PathBuf,
}

pub struct RuntimeService {
    root: PathBuf,
    node_name: String,
    shim_exe: PathBuf,
}

impl RuntimeService {
    pub fn new(root: PathBuf, node_name: String) -> Result<Self, RuntimeError> {
        for dir in ["pods", "logs", "runtime", "empty"] {
            let d = root.join(dir);
            std::fs::create_dir_all(&d).map_err(|e| RuntimeError::Io(d, e))?;
        }
        let shim_exe = std::env::current_exe()
            .map_err(|e| RuntimeError::Io("current executable".into(), e))?;
        Ok(RuntimeService {
            root,
            node_name,
            shim_exe,
        })
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }

    /// Where a container's output goes: `logs/<namespace>_<pod>_<uid>/<container>.log`,
    /// the kubelet's `/var/log/pods` layout.
    pub fn log_path(&self, pod: &Pod, container: &str) -> PathBuf {
        let m = pod.metadata.clone().unwrap_or_default();
        self.root
            .join("logs")
            .join(format!("{}_{}_{}", m.namespace, m.name, m.uid))
            .join(format!("{container}.log"))
    }

    /// The logs directory of the newest pod with this namespace and name.
    pub fn find_pod_logs(&self, namespace: &str, name: &str) -> Option<PathBuf> {
        let prefix = format!("{namespace}_{name}_");
        std::fs::read_dir(self.root.join("logs"))
            .ok()?
            .flatten()
            .filter(|e| {
                e.file_name().to_str().is_some_and(|n| {
                    // The uid (36 characters) follows the prefix; a longer pod name sharing the prefix does not match.
                    n.strip_prefix(&prefix)
                        .is_some_and(|uid| uid.len() == 36 && !uid.contains('_'))
                })
            })
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
    }

    /// The cgroup of a pod, relative to each hierarchy's root.
    fn pod_cgroup(&self, uid: &str) -> PathBuf {
        PathBuf::from("/kubelab").join(&self.node_name).join(uid)
    }

    /// Builds the container's root filesystem and bundle, then starts it through a shim.
    #[tracing::instrument(name = "runtime", skip_all)]
    pub async fn start_container(
        &self,
        pod: &Pod,
        container: &Container,
        image: &Image,
        images: &ImageManager,
    ) -> Result<Started, RuntimeError> {
        let uid = pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let container_id = format!("{uid}-{}", container.name);
        let dir = self.pod_dir(&uid).join(&container.name);
        // A restart starts from a fresh writable layer, as in Kubernetes.
        self.remove_container_dir(&dir)?;
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        self.mount_rootfs(&dir, &rootfs, image, images)?;
        let started = async {
            let cgroup = self.pod_cgroup(&uid).join(&container.name);
            let spec = spec::build(pod, container, &image.config, cgroup)?;
            let config = bundle.join("config.json");
            spec.save(&config).map_err(|e| {
                RuntimeError::Io(config.clone(), std::io::Error::other(e.to_string()))
            })?;
            tracing::debug!(config = %config.display(), "runtime spec written");
            self.start_shim(
                &container_id,
                &dir,
                &bundle,
                &self.log_path(pod, &container.name),
            )
            .await
        }
        .await;
        if started.is_err() {
            self.unmount(&rootfs);
        }
        started
    }

    /// Stacks the image's layers (read-only) under a fresh writable upper dir at `rootfs`.
    fn mount_rootfs(
        &self,
        dir: &Path,
        rootfs: &Path,
        image: &Image,
        images: &ImageManager,
    ) -> Result<(), RuntimeError> {
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        for d in [rootfs, &upper, &work] {
            std::fs::create_dir_all(d).map_err(|e| RuntimeError::Io(d.to_path_buf(), e))?;
        }
        // overlayfs lists the lower layers top first.
        let mut lower: Vec<String> = image
            .diff_ids
            .iter()
            .rev()
            .map(|d| images.layer_dir(d).display().to_string())
            .collect();
        if lower.is_empty() {
            lower.push(self.root.join("empty").display().to_string());
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| RuntimeError::Mount(rootfs.to_path_buf(), e))?;
        tracing::debug!(layers = image.diff_ids.len(), rootfs = %rootfs.display(), "overlay rootfs mounted");
        Ok(())
    }

    /// Starts `kubelabd shim` for the bundle and waits for its one-line answer.
    async fn start_shim(
        &self,
        container_id: &str,
        dir: &Path,
        bundle: &Path,
        log: &Path,
    ) -> Result<Started, RuntimeError> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RuntimeError::Io(parent.into(), e))?;
        }
        let exit_file = dir.join("exit.json");
        let shim_log_path = dir.join("shim.log");
        let shim_log = std::fs::File::create(&shim_log_path)
            .map_err(|e| RuntimeError::Io(shim_log_path.clone(), e))?;
        let mut shim = tokio::process::Command::new(&self.shim_exe)
            .arg("shim")
            .arg("--id")
            .arg(container_id)
            .arg("--bundle")
            .arg(bundle)
            .arg("--state-root")
            .arg(self.root.join("runtime"))
            .arg("--log")
            .arg(log)
            .arg("--exit-file")
            .arg(&exit_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            // Its own process group: a Ctrl-C meant for the agent's terminal must not reach it.
            .process_group(0)
            .spawn()
            .map_err(|e| RuntimeError::Shim(e.to_string()))?;
        tracing::debug!(shim_pid = shim.id(), "shim started; waiting for its answer");
        // The shim's first line says how the start went: "started PID" or "error MESSAGE".
        let mut line = String::new();
        if let Some(stdout) = shim.stdout.take() {
            tokio::io::BufReader::new(stdout)
                .read_line(&mut line)
                .await
                .map_err(|e| RuntimeError::Shim(e.to_string()))?;
        }
        let started_at_ms = kubelab_proto::now_ms();
        match line.trim().split_once(' ') {
            Some(("started", pid)) => {
                let pid = pid
                    .parse()
                    .map_err(|_| RuntimeError::Shim(format!("bad answer {line:?}")))?;
                tracing::debug!(pid, "the shim started the container");
                Ok(Started {
                    container_id: container_id.to_string(),
                    pid,
                    started_at_ms,
                    shim,
                    exit_file,
                })
            }
            Some(("error", message)) => {
                let _ = shim.wait().await;
                Err(RuntimeError::Start(message.to_string()))
            }
            _ => {
                let _ = shim.wait().await;
                let detail = std::fs::read_to_string(&shim_log_path).unwrap_or_default();
                Err(RuntimeError::Shim(format!(
                    "the shim exited without starting the container: {}",
                    detail.trim()
                )))
            }
        }
    }

    /// Waits for the container to end, then reads how it ended.
    pub async fn wait(mut started: Started) -> ExitRecord {
        let status = started.shim.wait().await;
        match std::fs::read(&started.exit_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok())
        {
            Some(record) => record,
            None => {
                // The shim died without recording the exit (killed by hand?): report it as lost.
                tracing::warn!(?status, "shim ended without an exit record");
                ExitRecord {
                    exit_code: 128 + 9,
                    signal: 9,
                    finished_at_ms: kubelab_proto::now_ms(),
                }
            }
        }
    }

    /// Sends a signal to a container's init process.
    pub fn signal(&self, pid: i32, signal: nix::sys::signal::Signal) {
        // The pid cannot be reused while we hold it: the container's process stays a zombie
        // of its shim until the shim reaps it, and we learn of that from the shim's exit.
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            tracing::debug!(pid, %signal, error = %e, "signal not delivered (already gone?)");
        }
    }

    /// Removes what one stopped container left: its rootfs mount and its directory.
    pub fn remove_container(&self, uid: &str, container: &str) -> Result<(), RuntimeError> {
        self.remove_container_dir(&self.pod_dir(uid).join(container))
    }

    fn remove_container_dir(&self, dir: &Path) -> Result<(), RuntimeError> {
        self.unmount(&dir.join("bundle").join("rootfs"));
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Io(dir.to_path_buf(), e)),
        }
    }

    fn unmount(&self, path: &Path) {
        // Lazy: a process of the container that is still dying must not block the cleanup.
        let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    }

    /// Removes everything a pod left on this node once its containers are gone: container
    /// dirs, its cgroups (and their empty parents), and its logs.
    pub fn remove_pod(&self, pod: &Pod) -> Result<(), RuntimeError> {
        let uid = pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let dir = self.pod_dir(&uid);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                self.remove_container_dir(&entry.path())?;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(logs) = self.log_path(pod, "x").parent() {
            let _ = std::fs::remove_dir_all(logs);
        }
        cgroups::remove(&self.pod_cgroup(&uid));
        Ok(())
    }

    /// Stops and removes what a previous run of this agent left behind when it was killed
    /// (`kill -9`, a crash): its containers, their shims, mounts, cgroups and files.
    /// Re-adopting those containers instead is the next step (see docs/architecture.md);
    /// until then, a clean slate is what keeps two copies of a container from ever running.
    /// Returns how many processes were stopped.
    pub fn clean_up_previous_run(&self) -> usize {
        // With the slash: `/x/node-1/` must not match the files of `/x/node-10`.
        let root = format!("{}/", self.root.display());
        // Only the pods this root directory knows: another lab on this host may use the
        // same node name, and its containers are not ours to stop.
        let pod_cgroups: Vec<PathBuf> = std::fs::read_dir(self.root.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| self.pod_cgroup(&e.file_name().to_string_lossy()))
            .collect();
        // Containers sit in their pods' cgroups; shims name our root directory in their arguments.
        let mut pids: Vec<i32> = pod_cgroups
            .iter()
            .flat_map(|c| cgroups::processes(c))
            .collect();
        pids.extend(processes_mentioning(&root));
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // SIGKILL cannot be refused, but a dying process takes a moment to be reaped; this
        // runs once at start-up, so a short bounded wait is simpler than a pidfd per process.
        for _ in 0..250 {
            if pids
                .iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists())
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for target in mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|t| t.starts_with(&root))
        {
            self.unmount(Path::new(target));
        }
        for dir in ["pods", "runtime"] {
            let d = self.root.join(dir);
            let _ = std::fs::remove_dir_all(&d);
            let _ = std::fs::create_dir_all(&d);
        }
        for cgroup in &pod_cgroups {
            cgroups::remove(cgroup);
        }
        pids.len()
    }

    /// Removes the node's cgroup parents once no pod is left (the agent stopping).
    pub fn remove_node_cgroups(&self) {
        cgroups::remove(&PathBuf::from("/kubelab").join(&self.node_name));
    }
}

/// Processes whose command line contains `needle` (other than this one).
fn processes_mentioning(needle: &str) -> Vec<i32> {
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
