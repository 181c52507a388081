//! RUN: a command in a container of the build's current rootfs.
//!
//! The same path a pod's container takes: an OCI runtime spec written into a bundle,
//! then `kubelabd shim`, which creates and starts the container through libcontainer,
//! copies its output into a CRI-format log and records how it ended. The container runs
//! in the host's network (a build fetches things) with the host's `resolv.conf` and
//! `hosts` mounted (read-only) over the image's or where it has none, the default
//! capabilities and seccomp profile, its
//! own mount, pid, IPC and UTS namespaces, and a cgroup of its own. Its output is
//! shown as it comes. Owns the bundle in the step's scratch directory; the rootfs is
//! `rootfs.rs`'s.

use std::path::{Path, PathBuf};

use crate::container::security;
use crate::container::shim_client::ShimCommand;
use crate::container::ExitRecord;
use libcontainer::oci_spec::runtime::{
    LinuxNamespaceType, MountBuilder, ProcessBuilder, Spec, UserBuilder,
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("building the runtime spec: {0}")]
    Spec(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the shim: {0}")]
    Shim(String),
    #[error("interrupted (Ctrl-C): the container was killed")]
    Interrupted,
}

/// What runs, as whom, where.
pub struct RunStep {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: (u32, u32),
    /// The build's own cgroup (`build_cgroup`), the container's parent.
    pub cgroup_parent: PathBuf,
}

/// Runs the command to its end in the rootfs at `merged`; returns how it ended.
/// `scratch` holds the bundle and the log; `state_root` is libcontainer's. When
/// `interrupted` turns true (Ctrl-C), the container is killed and its shim left to clean
/// up after it, as after any exit.
pub async fn run(
    merged: &Path,
    scratch: &Path,
    state_root: &Path,
    step: &RunStep,
    interrupted: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<ExitRecord, RunError> {
    let id = format!("build-{}", uuid::Uuid::new_v4().simple());
    let bundle = scratch.join("bundle");
    std::fs::create_dir_all(&bundle).map_err(|e| RunError::Io(bundle.clone(), e))?;
    let spec = spec(merged, &id, step)?;
    spec.save(bundle.join("config.json"))
        .map_err(|e| RunError::Spec(e.to_string()))?;
    let (log, exit_file, shim_log) = (
        scratch.join("run.log"),
        scratch.join("exit.json"),
        scratch.join("shim.log"),
    );
    let shim_exe = std::env::current_exe().map_err(|e| RunError::Shim(e.to_string()))?;
    let why_not = |shim_log: &Path| {
        std::fs::read_to_string(shim_log)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    // The same shim, and protocol, as a pod's container: created, then started.
    let mut shim = ShimCommand {
        exe: &shim_exe,
        id: &id,
        bundle: &bundle,
        state_root,
        log: &log,
        // One file, never rotated: it is read as it grows.
        log_max_bytes: 1u64 << 40,
        exit_file: &exit_file,
        shim_log: &shim_log,
    }
    .create()
    .await
    .map_err(|e| RunError::Shim(e.to_string()))?;
    let pid = shim
        .start()
        .await
        .map_err(|e| RunError::Shim(e.to_string()))?;
    tracing::debug!(pid, "container started");
    let mut shim = shim.child;
    // The container runs; show its output as the shim writes it, until the shim is done.
    let mut shown = 0u64;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut killed = *interrupted.borrow();
    if killed {
        kill(pid);
    }
    loop {
        tokio::select! {
            _ = shim.wait() => break,
            _ = tick.tick() => shown = show_output(&log, shown),
            changed = interrupted.changed(), if !killed => {
                if changed.is_err() || *interrupted.borrow() {
                    killed = true;
                    kill(pid);
                }
            }
        }
    }
    show_output(&log, shown);
    if killed {
        return Err(RunError::Interrupted);
    }
    let record = std::fs::read(&exit_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok())
        .ok_or_else(|| RunError::Shim(format!("no exit record: {}", why_not(&shim_log))))?;
    Ok(record)
}

/// What the runtime makes in the rootfs for a RUN when the image lacks it: mount points
/// (`/proc`, `/sys`, `/dev`, `/etc/resolv.conf`, `/etc/hosts`) and `/etc` for them. They
/// are not the command's doing; those still empty afterwards are taken out of the layer.
/// Deepest first.
pub fn scaffolding(merged: &Path) -> Vec<PathBuf> {
    ["etc/resolv.conf", "etc/hosts", "etc", "proc", "sys", "dev"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| merged.join(p).symlink_metadata().is_err())
        .collect()
}

/// Removes, from the step's upper directory, the scaffolding that is still empty.
pub fn remove_scaffolding(upper: &Path, scaffolding: &[PathBuf]) {
    for relative in scaffolding {
        let path = upper.join(relative);
        match path.symlink_metadata() {
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(&path);
            }
            // Fails, as it should, when the command put something in it.
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&path);
            }
            _ => {}
        }
    }
}

/// SIGKILL to the container's first process: the rest of its pid namespace goes with it.
fn kill(pid: i32) {
    if pid > 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Prints the log's records from byte `from` on (whole lines only); returns where it stopped.
fn show_output(log: &Path, from: u64) -> u64 {
    use std::io::{Read, Seek, Write};
    let Ok(mut file) = std::fs::File::open(log) else {
        return from;
    };
    if file.seek(std::io::SeekFrom::Start(from)).is_err() {
        return from;
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return from;
    }
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return from;
    };
    let mut out = std::io::stdout().lock();
    for line in bytes[..end].split(|b| *b == b'\n') {
        if let Some(record) = crate::cri_log::parse(line) {
            let _ = out.write_all(record.text);
            if record.full {
                let _ = out.write_all(b"\n");
            }
        }
    }
    let _ = out.flush();
    from + end as u64 + 1
}

fn spec(merged: &Path, id: &str, step: &RunStep) -> Result<Spec, RunError> {
    let err = |e: libcontainer::oci_spec::OciSpecError| RunError::Spec(e.to_string());
    let mut spec = Spec::default();
    let defaults = spec.process().clone().unwrap_or_default();
    let sc = kubelab_proto::v1::SecurityContext::default();
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(step.argv.clone())
        .env(step.env.clone())
        .cwd(&step.cwd)
        .user(
            UserBuilder::default()
                .uid(step.user.0)
                .gid(step.user.1)
                .build()
                .map_err(err)?,
        )
        .capabilities(security::capabilities(&sc).map_err(|e| RunError::Spec(e.to_string()))?)
        .rlimits(defaults.rlimits().clone().unwrap_or_default())
        // As a pod's default. (libcontainer loads the seccomp filter after dropping
        // capabilities, which the kernel allows only with no_new_privs.)
        .no_new_privileges(true)
        .build()
        .map_err(err)?;
    spec.set_process(Some(process));
    if let Some(root) = spec.root_mut() {
        root.set_path(merged.to_path_buf());
        root.set_readonly(Some(false));
    }
    spec.set_hostname(Some("kubelab-build".into()));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for name in ["resolv.conf", "hosts"] {
        let (host, image) = (Path::new("/etc").join(name), merged.join("etc").join(name));
        // Over the image's file, or where it has none (the mount point is taken out of
        // the layer afterwards: `remove_scaffolding`); never through a symlink.
        let target_ok = match (
            image.symlink_metadata(),
            merged.join("etc").symlink_metadata(),
        ) {
            (Ok(file), _) => file.is_file(),
            // None there: fine where /etc is a directory, or is missing too.
            (Err(_), Ok(etc)) => etc.is_dir(),
            (Err(_), Err(_)) => true,
        };
        if host.is_file() && target_ok {
            mounts.push(
                MountBuilder::default()
                    .destination(format!("/etc/{name}"))
                    .typ("bind")
                    .source(host)
                    .options(vec!["rbind".into(), "rprivate".into(), "ro".into()])
                    .build()
                    .map_err(err)?,
            );
        }
    }
    spec.set_mounts(Some(mounts));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(step.cgroup_parent.join(id)));
    let namespaces = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|ns| ns.typ() != LinuxNamespaceType::Network)
        .collect();
    linux.set_namespaces(Some(namespaces));
    linux.set_seccomp(Some(
        security::runtime_default_seccomp().map_err(|e| RunError::Spec(e.to_string()))?,
    ));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The cgroup a build root's RUN containers sit in: `/kubelab-build/` and 12 hex digits
/// of a hash of the root. Builds of different roots run at once (one per root: its
/// lock), and each must clean up only its own: a fresh container's cgroup has no process
/// yet, so removing another build's subtree would take it from under its runtime.
pub fn build_cgroup(root: &Path) -> PathBuf {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    PathBuf::from("/kubelab-build").join(&hex::encode(hash)[..12])
}

/// Removes what is left of the root's build cgroup (each shim removes its container's
/// own), and `/kubelab-build` once no other build uses it. Called with the root's lock.
pub fn remove_build_cgroups(root: &Path) {
    crate::container::cgroups::remove(&build_cgroup(root));
}
