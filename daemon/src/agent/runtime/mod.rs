//! The RuntimeService: turns "run this container of this pod" into a real container.
//!
//! Owns `<agent root>/pods/<uid>/` (`containers/<name>/`: bundle, overlay upper and work
//! dirs, the shim record and exit record; `sandbox/`: the pod's pinned namespaces;
//! `volumes/`: its emptyDirs), the pods' log files, and their cgroups. It stacks the
//! image's layer directories with overlayfs, writes the OCI runtime spec, and starts one
//! `kubelabd shim` process per container; the shim calls libcontainer. The agent itself
//! never calls libcontainer: the library forks and `chdir`s its caller, which a
//! multi-threaded tokio process must not suffer (see docs/architecture.md).

pub mod exec;
mod recovery;
pub mod sandbox;
pub mod spec;
pub mod tty;
pub mod volumes;

use crate::container::cgroups;
use crate::container::shim_client::{Shim, ShimCommand, ShimError};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kubelab_proto::v1::{Container, Pod};
use serde::{Deserialize, Serialize};

use crate::container::image::{Image, ImageManager};

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
    #[error("container {0:?} is not running")]
    NotRunning(String),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
}

pub use crate::container::ExitRecord;
pub use recovery::{kill_and_wait, processes_mentioning};

/// A container that its shim has started. Saved as `shim.json` beside the bundle, so that
/// an agent started again finds and re-adopts it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Started {
    pub container_id: String,
    pub pid: i32,
    pub started_at_ms: i64,
    /// The shim: it exits right after the container does.
    pub shim_pid: i32,
    pub restart_count: i32,
    pub image_id: String,
}

/// A container a previous run of the agent started, as found again.
#[derive(Debug)]
pub enum Recovered {
    /// Still running: its shim is alive.
    Running(Started),
    /// Ended while the agent was away; the shim left its exit record.
    Exited(Started, ExitRecord),
}

/// A container its shim has created and not yet started.
pub struct Created {
    container_id: String,
    dir: PathBuf,
    shim: Shim,
    restart_count: i32,
    image_id: String,
}

impl Created {
    /// Starts a created container; records its shim (`shim.json`) for a later agent.
    pub async fn start(mut self) -> Result<Started, RuntimeError> {
        let pid = match self.shim.start().await {
            Ok(pid) => pid,
            Err(e) => return Err(self.abort(e.to_string()).await),
        };
        let started = Started {
            container_id: self.container_id.clone(),
            pid,
            started_at_ms: kubelab_proto::now_ms(),
            // The shim stays ours to reap (tokio reaps a dropped child); we wait for it
            // through a pidfd, which works the same for a re-adopted shim.
            shim_pid: self.shim.shim_pid(),
            restart_count: self.restart_count,
            image_id: self.image_id.clone(),
        };
        tracing::debug!(pid = started.pid, "the shim started the container");
        let record = self.dir.join("shim.json");
        let bytes = serde_json::to_vec(&started).map_err(std::io::Error::other);
        bytes
            .and_then(|b| std::fs::write(&record, b))
            .map_err(|e| RuntimeError::Io(record, e))?;
        Ok(started)
    }

    /// Gives up on a created container (the pod could not be made ready, or its start
    /// failed): the shim, its stdin closed, deletes the container; the rootfs is unmounted.
    /// Returns the error to report.
    pub async fn abort(self, why: String) -> RuntimeError {
        self.shim.abort().await;
        unmount(&self.dir.join("bundle").join("rootfs"));
        RuntimeError::Start(why)
    }
}

/// What the pod gives every container it starts: its sandbox and volumes.
pub struct PodContext<'a> {
    pub restart_count: i32,
    /// The directory with the pod's pinned `net`, `ipc` and `uts` namespaces.
    pub sandbox: &'a Path,
    /// Volume name → the host directory or file it is.
    pub volumes: &'a HashMap<String, PathBuf>,
    /// The service links' variables for the pod's namespace.
    pub service_env: &'a [(String, String)],
}

pub struct RuntimeService {
    root: PathBuf,
    node_name: String,
    shim_exe: PathBuf,
    /// Size at which a container's log file is rotated.
    log_max_bytes: u64,
    /// The node's network namespace when it is a separate host: `hostNetwork` pods join it.
    node_netns: Option<PathBuf>,
}

impl RuntimeService {
    /// `hostNetwork` pods join `netns` (a separate host's network) rather than this host's.
    pub fn with_node_netns(mut self, netns: Option<PathBuf>) -> Self {
        self.node_netns = netns;
        self
    }

    pub fn new(root: PathBuf, node_name: String, log_max_bytes: u64) -> Result<Self, RuntimeError> {
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
            log_max_bytes,
            node_netns: None,
        })
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }

    fn container_dir(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid).join("containers").join(container)
    }

    /// The pod's pinned namespaces (see `sandbox.rs`).
    pub fn sandbox_dir(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("sandbox")
    }

    /// What the network manager attached to the pod (see `network/mod.rs`).
    pub fn network_record(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("network.json")
    }

    pub fn sandbox_exists(&self, uid: &str) -> bool {
        self.sandbox_dir(uid).exists()
    }

    /// Makes the pod's sandbox (shared namespaces), its cgroup's process limit and its
    /// volumes; returns the volumes' host paths by name. Done once per pod, before its
    /// first container; safe to call again: what exists is kept.
    pub fn prepare_pod(
        &self,
        pod: &Pod,
        pids_limit: i64,
    ) -> Result<HashMap<String, PathBuf>, RuntimeError> {
        let meta = pod.metadata.clone().unwrap_or_default();
        cgroups::set_pids_limit(&self.pod_cgroup(&meta.uid), pids_limit);
        let hostname = pod_hostname(pod);
        let host_network = pod.spec.as_ref().is_some_and(|s| s.host_network);
        sandbox::ensure(&self.sandbox_dir(&meta.uid), &hostname, host_network)?;
        let volumes = pod
            .spec
            .as_ref()
            .map(|s| s.volumes.as_slice())
            .unwrap_or(&[]);
        Ok(volumes::prepare(
            &self.pod_dir(&meta.uid).join("volumes"),
            volumes,
        )?)
    }

    /// Writes the pod's `/etc/hosts` (its hostname and IP, once known, as the kubelet
    /// manages it: with its DNS name `<hostname>.<subdomain>.<ns>.svc.<domain>` first when
    /// it has a subdomain) and its `/etc/resolv.conf` (`resolv`, from `dns_config`) into
    /// `pods/<uid>/etc/`; every container mounts them. A `hostNetwork` pod gets the node's
    /// hosts file.
    pub fn write_etc_files(
        &self,
        pod: &Pod,
        pod_ip: &str,
        resolv: &str,
        cluster_domain: &str,
    ) -> Result<(), RuntimeError> {
        let meta = pod.metadata.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let dir = self.etc_dir(&meta.uid);
        let io = |p: &Path, e| RuntimeError::Io(p.to_path_buf(), e);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let hosts = if spec.host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            let hostname = pod_hostname(pod);
            let mut hosts = "# Kubernetes-managed hosts file (kubelab).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n".to_string();
            if !pod_ip.is_empty() && !spec.subdomain.is_empty() && !cluster_domain.is_empty() {
                let fqdn = format!(
                    "{hostname}.{}.{}.svc.{cluster_domain}",
                    spec.subdomain, meta.namespace
                );
                hosts.push_str(&format!("{pod_ip}\t{fqdn}\t{hostname}\n"));
            } else if !pod_ip.is_empty() {
                hosts.push_str(&format!("{pod_ip}\t{hostname}\n"));
            }
            hosts
        };
        for (name, text) in [("hosts", hosts.as_str()), ("resolv.conf", resolv)] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        }
        Ok(())
    }

    fn etc_dir(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("etc")
    }

    /// The pod's logs: `logs/<namespace>_<pod>_<uid>/`, the kubelet's `/var/log/pods` layout.
    fn pod_log_dir(&self, pod: &Pod) -> PathBuf {
        let m = pod.metadata.clone().unwrap_or_default();
        self.root
            .join("logs")
            .join(format!("{}_{}_{}", m.namespace, m.name, m.uid))
    }

    /// Where a container's output goes: `<pod log dir>/<container>/<restart count>.log`.
    pub fn log_path(&self, pod: &Pod, container: &str, restart_count: i32) -> PathBuf {
        self.pod_log_dir(pod)
            .join(container)
            .join(format!("{restart_count}.log"))
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

    /// Builds the container's root filesystem and bundle, and has a shim create the
    /// container: its process waits, in all its namespaces, until `start_created`.
    #[tracing::instrument(name = "runtime", skip_all)]
    pub async fn create_container(
        &self,
        pod: &Pod,
        container: &Container,
        image: &Image,
        images: &ImageManager,
        ctx: &PodContext<'_>,
    ) -> Result<Created, RuntimeError> {
        let uid = pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let container_id = format!("{uid}-{}", container.name);
        let dir = self.container_dir(&uid, &container.name);
        // A restart starts from a fresh writable layer, as in Kubernetes.
        self.remove_container_dir(&dir)?;
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        self.mount_rootfs(&dir, &rootfs, image, images)?;
        let created = async {
            let pod_cgroup = self.pod_cgroup(&uid);
            let spec = spec::build(
                pod,
                container,
                &image.config,
                &spec::PodSettings {
                    cgroups_path: pod_cgroup.join(&container.name),
                    sandbox: ctx.sandbox,
                    volumes: ctx.volumes,
                    etc_dir: &self.etc_dir(&uid),
                    service_env: ctx.service_env,
                    node_netns: self.node_netns.as_deref(),
                },
            )?;
            let config = bundle.join("config.json");
            spec.save(&config).map_err(|e| {
                RuntimeError::Io(config.clone(), std::io::Error::other(e.to_string()))
            })?;
            tracing::debug!(config = %config.display(), "runtime spec written");
            let log = self.log_path(pod, &container.name, ctx.restart_count);
            // The kubelet keeps the logs of the current and the previous run only.
            if ctx.restart_count >= 2 {
                remove_log_files(&self.log_path(pod, &container.name, ctx.restart_count - 2));
            }
            self.spawn_shim(&container_id, &dir, &bundle, &log).await
        }
        .await;
        match created {
            Ok(mut created) => {
                created.restart_count = ctx.restart_count;
                created.image_id = image.digest.clone();
                Ok(created)
            }
            Err(e) => {
                unmount(&rootfs);
                Err(e)
            }
        }
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

    /// Starts `kubelabd shim` for the bundle and waits for its first answer: the
    /// container is created (`created PID`) or could not be (`error MESSAGE`).
    async fn spawn_shim(
        &self,
        container_id: &str,
        dir: &Path,
        bundle: &Path,
        log: &Path,
    ) -> Result<Created, RuntimeError> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RuntimeError::Io(parent.into(), e))?;
        }
        let exit_file = dir.join("exit.json");
        let _ = std::fs::remove_file(&exit_file);
        let state_root = self.root.join("runtime");
        let shim = ShimCommand {
            exe: &self.shim_exe,
            id: container_id,
            bundle,
            state_root: &state_root,
            log,
            log_max_bytes: self.log_max_bytes,
            exit_file: &exit_file,
            shim_log: &dir.join("shim.log"),
        }
        .create()
        .await
        .map_err(|e| match e {
            ShimError::Refused(message) => RuntimeError::Start(message),
            other => RuntimeError::Shim(other.to_string()),
        })?;
        Ok(Created {
            container_id: container_id.to_string(),
            dir: dir.to_path_buf(),
            shim,
            restart_count: 0,
            image_id: String::new(),
        })
    }

    /// Waits for the container to end (its shim exits right after), then reads how it ended.
    pub async fn wait(&self, uid: &str, container: &str, started: &Started) -> ExitRecord {
        let exit_file = self.container_dir(uid, container).join("exit.json");
        if let Err(e) = wait_for_process(started.shim_pid).await {
            tracing::warn!(shim_pid = started.shim_pid, error = %e, "cannot watch the shim");
        }
        match read_exit(&exit_file) {
            Some(record) => record,
            None => {
                // The shim died without recording the exit (killed by hand?): report it as lost.
                tracing::warn!(
                    shim_pid = started.shim_pid,
                    "shim ended without an exit record"
                );
                ExitRecord {
                    exit_code: 128 + 9,
                    signal: 9,
                    finished_at_ms: kubelab_proto::now_ms(),
                    oom_killed: false,
                }
            }
        }
    }

    /// Whether run `restart_count` of the container is the one running now (its shim has
    /// not recorded an exit).
    pub fn is_running(&self, uid: &str, container: &str, restart_count: i32) -> bool {
        let dir = self.container_dir(uid, container);
        let current = std::fs::read(dir.join("shim.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Started>(&b).ok());
        current.is_some_and(|s| s.restart_count == restart_count) && !dir.join("exit.json").exists()
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
        self.remove_container_dir(&self.container_dir(uid, container))
    }

    fn remove_container_dir(&self, dir: &Path) -> Result<(), RuntimeError> {
        unmount(&dir.join("bundle").join("rootfs"));
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Io(dir.to_path_buf(), e)),
        }
    }

    /// Removes everything a pod left on this node once its containers are gone: container
    /// dirs, its cgroups (and their empty parents), and its logs.
    pub fn remove_pod(&self, pod: &Pod) -> Result<(), RuntimeError> {
        let uid = pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        self.remove_pod_dir(&uid)?;
        let _ = std::fs::remove_dir_all(self.pod_log_dir(pod));
        cgroups::remove(&self.pod_cgroup(&uid));
        Ok(())
    }

    /// Unmounts and removes `pods/<uid>/`: container rootfs, sandbox namespaces, volumes.
    fn remove_pod_dir(&self, uid: &str) -> Result<(), RuntimeError> {
        let dir = self.pod_dir(uid);
        if let Ok(entries) = std::fs::read_dir(dir.join("containers")) {
            for entry in entries.flatten() {
                self.remove_container_dir(&entry.path())?;
            }
        }
        sandbox::remove(&dir.join("sandbox"));
        volumes::remove(&dir.join("volumes"));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Io(dir, e)),
        }
    }
}

fn read_exit(path: &Path) -> Option<ExitRecord> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok())
}

fn remove_log_files(current: &Path) {
    let _ = std::fs::remove_file(current);
    for n in 1.. {
        if std::fs::remove_file(format!("{}.{n}", current.display())).is_err() {
            break;
        }
    }
}

/// Waits until a process exits, through a pidfd: no polling, and it needs no parent-child
/// link (a re-adopted shim is not our child).
async fn wait_for_process(pid: i32) -> std::io::Result<()> {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return Ok(());
    };
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK) {
        Ok(fd) => fd,
        // Already gone.
        Err(rustix::io::Errno::SRCH) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // Deprecated for fds that may be closed while registered; this one is owned by the
    // AsyncFd and closed only when it is dropped, which is the safe use.
    #[allow(deprecated)]
    let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
    // A pidfd becomes readable once the process has exited.
    let _ = fd.readable().await?;
    Ok(())
}

/// Lazy: a process of the container that is still dying must not block the cleanup.
fn unmount(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
}

/// The pod's hostname: `spec.hostname`, else its name cut to 63 bytes (as Kubernetes cuts
/// long pod names).
pub fn pod_hostname(pod: &Pod) -> String {
    let spec_hostname = pod.spec.as_ref().map(|s| s.hostname.as_str()).unwrap_or("");
    if !spec_hostname.is_empty() {
        return spec_hostname.to_string();
    }
    let name = pod.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
    name.chars().take(63).collect()
}
