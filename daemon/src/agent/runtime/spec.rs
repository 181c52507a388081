//! Building a container's OCI runtime spec (`config.json`) from the image and the pod.
//!
//! Pure translation, with Kubernetes' rules for command and args: `command` replaces the
//! image's Entrypoint, `args` replaces its Cmd, and `command` alone drops the Cmd; `$(VAR)`
//! references in the pod's command, args and env values are expanded (`agent::expansion`).
//! Touches no file and no process.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kubelab_proto::v1::{Container, Pod};
use libcontainer::oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, MountBuilder, ProcessBuilder, Spec, UserBuilder,
};

use crate::agent::expansion;
use crate::container::image::ImageConfig;
use crate::container::security;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container {0:?} has no command: the image has no Entrypoint or Cmd, and the pod gives no command")]
    NoCommand(String),
    #[error("image user {0:?} is not numeric; kubelab runs images as a numeric uid[:gid] only")]
    User(String),
    #[error("building the runtime spec: {0}")]
    Build(String),
    #[error(transparent)]
    Security(#[from] security::SecurityError),
}

/// The process's argv, by Kubernetes' rules: the pod's command and args (with their
/// `$(VAR)` references expanded against the container's env), or the image's.
pub fn process_args(
    container: &Container,
    image: &ImageConfig,
    service_env: &[(String, String)],
) -> Vec<String> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    let mut env = service_env.to_vec();
    env.extend(expansion::container_env(&container.env, service_env));
    let command = expansion::expand_list(&container.command, &env);
    let args = expansion::expand_list(&container.args, &env);
    match (command.is_empty(), args.is_empty()) {
        (false, _) => command.into_iter().chain(args).collect(),
        (true, false) => entrypoint.into_iter().chain(args).collect(),
        (true, true) => entrypoint.into_iter().chain(cmd).collect(),
    }
}

/// The environment: the image's, then the service links', then the pod's (each wins over
/// the ones before on the same name), the pod's values with their `$(VAR)` references
/// expanded.
pub fn process_env(
    container: &Container,
    image: &ImageConfig,
    service_env: &[(String, String)],
) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |k: &str, v: &str| {
        if env.insert(k.to_string(), v.to_string()).is_none() {
            order.push(k.to_string());
        }
    };
    for kv in image.env.iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for (name, value) in service_env {
        set(name, value);
    }
    for (name, value) in expansion::container_env(&container.env, service_env) {
        set(&name, &value);
    }
    let mut out: Vec<String> = order.iter().map(|k| format!("{k}={}", env[k])).collect();
    if !env.contains_key("PATH") {
        out.insert(0, kubelab_proto::default_path_env());
    }
    out
}

fn parse_user(user: &str) -> Result<(u32, u32), SpecError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, "0"));
    match (u.parse(), g.parse()) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => Err(SpecError::User(user.to_string())),
    }
}

/// What the pod, not the container, decides: where the container sits and what it shares.
pub struct PodSettings<'a> {
    /// Where the container's limits apply.
    pub cgroups_path: PathBuf,
    /// The pod's pinned namespaces (`net`, `ipc`, `uts` files; see `sandbox.rs`).
    pub sandbox: &'a Path,
    /// Volume name → host path.
    pub volumes: &'a HashMap<String, PathBuf>,
    /// The pod's `hosts` and `resolv.conf`, mounted at `/etc/` when they exist.
    pub etc_dir: &'a Path,
    /// The service links' variables (`WEB_SERVICE_HOST` …).
    pub service_env: &'a [(String, String)],
    /// The node's network namespace when it is a separate host (`hostNetwork` pods' network).
    pub node_netns: Option<&'a Path>,
}

/// The whole spec for one container of a pod.
pub fn build(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    pod_settings: &PodSettings<'_>,
) -> Result<Spec, SpecError> {
    let err = |e: libcontainer::oci_spec::OciSpecError| SpecError::Build(e.to_string());
    let args = process_args(container, image, pod_settings.service_env);
    if args.is_empty() {
        return Err(SpecError::NoCommand(container.name.clone()));
    }
    let cwd = Some(container.working_dir.as_str())
        .filter(|w| !w.is_empty())
        .or(image.working_dir.as_deref().filter(|w| !w.is_empty()))
        .unwrap_or("/");
    let sc = security::effective(pod, container);
    let image_user = image.user.as_deref().unwrap_or("");
    // A user named in the securityContext makes the image's (perhaps a name) irrelevant.
    let image_user = match parse_user(image_user) {
        Err(_) if sc.run_as_user.is_some() => (0, 0),
        parsed => parsed?,
    };
    let (uid, gid) = security::user(&sc, image_user)?;
    let mut spec = Spec::default();
    let defaults = spec.process().clone().unwrap_or_default();
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(process_env(container, image, pod_settings.service_env))
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(err)?,
        )
        .capabilities(security::capabilities(&sc)?)
        .rlimits(defaults.rlimits().clone().unwrap_or_default())
        .no_new_privileges(security::no_new_privileges(&sc))
        .build()
        .map_err(err)?;
    spec.set_process(Some(process));
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(sc.read_only_root_filesystem));
    }
    let pod_name = pod
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    // A hostname is at most 63 bytes; Kubernetes cuts long pod names the same way. The
    // sandbox has set it already; a hostNetwork pod keeps the node's.
    let host_network = pod.spec.as_ref().is_some_and(|s| s.host_network);
    spec.set_hostname((!host_network).then(|| pod_name.chars().take(63).collect()));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &container.volume_mounts {
        let source = pod_settings
            .volumes
            .get(&m.name)
            .ok_or_else(|| SpecError::Build(format!("no volume named {:?}", m.name)))?;
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        if m.read_only {
            options.push("ro".into());
        }
        mounts.push(
            MountBuilder::default()
                .destination(&m.mount_path)
                .typ("bind")
                .source(source)
                .options(options)
                .build()
                .map_err(err)?,
        );
    }
    for name in ["hosts", "resolv.conf"] {
        let source = pod_settings.etc_dir.join(name);
        if source.exists() {
            mounts.push(
                MountBuilder::default()
                    .destination(format!("/etc/{name}"))
                    .typ("bind")
                    .source(source)
                    .options(vec!["rbind".to_string(), "rprivate".to_string()])
                    .build()
                    .map_err(err)?,
            );
        }
    }
    spec.set_mounts(Some(mounts));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(pod_settings.cgroups_path.clone()));
    // Each container has its own mount and pid namespaces; network, IPC and UTS are the
    // pod's. A hostNetwork pod is in the host's network and UTS namespaces: none is made.
    let shared = |t: LinuxNamespaceType| match t {
        LinuxNamespaceType::Network => Some("net"),
        LinuxNamespaceType::Ipc => Some("ipc"),
        LinuxNamespaceType::Uts => Some("uts"),
        _ => None,
    };
    let of_the_host = |t: LinuxNamespaceType| {
        host_network
            && match t {
                LinuxNamespaceType::Network => pod_settings.node_netns.is_none(),
                LinuxNamespaceType::Uts => true,
                _ => false,
            }
    };
    let namespaces = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|ns| !of_the_host(ns.typ()))
        .map(|ns| match shared(ns.typ()) {
            // A hostNetwork pod of a separate host: the node's network, not this host's.
            Some(_) if host_network && ns.typ() == LinuxNamespaceType::Network => {
                LinuxNamespaceBuilder::default()
                    .typ(ns.typ())
                    .path(pod_settings.node_netns.unwrap_or(Path::new("")))
                    .build()
                    .map_err(err)
            }
            Some(file) => LinuxNamespaceBuilder::default()
                .typ(ns.typ())
                .path(pod_settings.sandbox.join(file))
                .build()
                .map_err(err),
            None => Ok(ns),
        })
        .collect::<Result<Vec<_>, _>>()?;
    linux.set_namespaces(Some(namespaces));
    // The default spec masks and write-protects the sensitive /proc and /sys paths; a
    // privileged container sees them all, unfiltered.
    if sc.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    if security::seccomp_filtered(&sc) {
        linux.set_seccomp(Some(security::runtime_default_seccomp()?));
    }
    // The pod's sysctls (Kubernetes' safe set, the apiserver checked), in the pod's
    // namespaces: every container sets the same values.
    let sysctls: HashMap<String, String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .map(|s| {
            s.sysctls
                .iter()
                .map(|s| (s.name.replace('/', "."), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    if !sysctls.is_empty() {
        linux.set_sysctl(Some(sysctls));
    }
    let limits = container.resources.unwrap_or_default();
    let mut resources = LinuxResourcesBuilder::default();
    if limits.memory_limit_bytes > 0 {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limits.memory_limit_bytes)
                .build()
                .map_err(err)?,
        );
    }
    if limits.cpu_limit_millis > 0 || limits.cpu_request_millis > 0 {
        let mut cpu = LinuxCpuBuilder::default();
        if limits.cpu_request_millis > 0 {
            cpu = cpu.shares(cpu_shares(limits.cpu_request_millis));
        }
        if limits.cpu_limit_millis > 0 {
            cpu = cpu
                .quota(cpu_quota(limits.cpu_limit_millis))
                .period(CPU_PERIOD_US);
        }
        resources = resources.cpu(cpu.build().map_err(err)?);
    }
    linux.set_resources(Some(resources.build().map_err(err)?));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The CFS period the quota is counted against, as the kubelet sets it: 100 ms.
const CPU_PERIOD_US: u64 = 100_000;

/// Kubernetes' mapping of a CPU request to cgroup shares: 1 cpu = 1024 shares, within the
/// kernel's range 2–262144 (a request of any size maps to a valid value, never overflows).
fn cpu_shares(request_millis: i64) -> u64 {
    let shares = request_millis.saturating_mul(1024) / 1000;
    shares.clamp(2, 262_144) as u64
}

/// A CPU limit as a CFS quota per `CPU_PERIOD_US`: 1 cpu = one period; at least 1 ms,
/// the kernel's (and the kubelet's) smallest.
fn cpu_quota(limit_millis: i64) -> i64 {
    limit_millis
        .saturating_mul(CPU_PERIOD_US as i64 / 1000)
        .max(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_requests_and_limits_of_any_size_map_to_valid_cgroup_values() {
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_shares(i64::MAX), 262_144);
        assert_eq!(cpu_quota(500), 50_000);
        assert_eq!(cpu_quota(1), 1000);
        assert_eq!(cpu_quota(i64::MAX), i64::MAX);
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: Some(entrypoint.iter().map(|s| s.to_string()).collect()),
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image(&["/bin/sh"], &["-c", "echo hi"]);
        let mut c = Container::default();
        assert_eq!(process_args(&c, &img, &[]), ["/bin/sh", "-c", "echo hi"]);
        c.args = vec!["-c".into(), "exit 3".into()];
        assert_eq!(process_args(&c, &img, &[]), ["/bin/sh", "-c", "exit 3"]);
        c.command = vec!["/bin/true".into()];
        c.args.clear();
        assert_eq!(process_args(&c, &img, &[]), ["/bin/true"]);
    }

    #[test]
    fn pod_env_overrides_image_env() {
        let img = ImageConfig {
            env: Some(vec!["A=1".into(), "PATH=/bin".into()]),
            ..Default::default()
        };
        let c = Container {
            env: vec![kubelab_proto::v1::EnvVar {
                name: "A".into(),
                value: "2".into(),
            }],
            ..Default::default()
        };
        assert_eq!(process_env(&c, &img, &[]), ["A=2", "PATH=/bin"]);
    }

    #[test]
    fn pod_command_args_and_env_are_expanded_but_not_the_image_s() {
        let env = |name: &str, value: &str| kubelab_proto::v1::EnvVar {
            name: name.into(),
            value: value.into(),
        };
        let img = ImageConfig {
            entrypoint: Some(vec!["/bin/echo".into(), "$(G)".into()]),
            env: Some(vec!["IMG=image".into()]),
            ..Default::default()
        };
        let mut c = Container {
            args: vec!["$(G)".into(), "$(IMG)".into()],
            env: vec![env("G", "hi"), env("H", "$(G)-$(IMG)")],
            ..Default::default()
        };
        assert_eq!(
            process_args(&c, &img, &[]),
            ["/bin/echo", "$(G)", "hi", "$(IMG)"]
        );
        assert_eq!(
            process_env(&c, &img, &[]),
            [
                kubelab_proto::default_path_env().as_str(),
                "IMG=image",
                "G=hi",
                "H=hi-$(IMG)"
            ]
        );
        c.command = vec!["$(H)".into()];
        assert_eq!(process_args(&c, &img, &[]), ["hi-$(IMG)", "hi", "$(IMG)"]);
    }
}
