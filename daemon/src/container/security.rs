//! A container's confinement: the default capability set, the RuntimeDefault seccomp
//! profile, and the pod's `securityContext`, turned into OCI spec settings.
//!
//! The defaults are containerd's (what a Kubernetes pod gets): a short list of
//! capabilities rather than all of them, `no_new_privs`, the masked and read-only `/proc`
//! and `/sys` paths of the default spec, a seccomp filter refusing the system calls that
//! reach past the container (modules, kexec, mounts, namespaces, keyrings, tracing other
//! processes, the clock...). Pure translation; touches no file or process.

use kubelab_proto::v1::{Container, Pod, SecurityContext};
use libcontainer::oci_spec::runtime::{
    Arch, Capability, LinuxCapabilitiesBuilder, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompBuilder, LinuxSyscallBuilder,
};

/// The capabilities a container gets unless its securityContext says otherwise (the set
/// containerd gives Kubernetes pods).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// System calls the RuntimeDefault profile refuses (with EPERM): they act on the host's
/// kernel or on things outside the container, which no capability in the default set
/// grants either — the filter is the second wall, for a process that finds a way past the
/// first. Names unknown to this kernel are skipped by libcontainer.
const REFUSED_SYSCALLS: &[&str] = &[
    // Kernel modules and replacing the kernel.
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    // Mounts and namespaces (the container's own are made before the filter applies).
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "move_mount",
    "open_tree",
    "unshare",
    "setns",
    // Other processes' memory, and the kernel's.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    // Host-wide state: clock, swap, accounting, quotas, keyrings, I/O ports.
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "add_key",
    "request_key",
    "keyctl",
    "iopl",
    "ioperm",
    // Files by handle (reaches past the container's root), and old interfaces.
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
];

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("container has runAsNonRoot and image will run as root (set runAsUser, or use an image with a non-root USER)")]
    RunAsNonRoot,
    #[error("unknown capability {0:?} (names as in Kubernetes: NET_ADMIN, SYS_TIME, ...)")]
    Capability(String),
    #[error("building the security settings: {0}")]
    Build(String),
    #[error("{0} {1} is not a valid Linux id (0 to 2147483647)")]
    Id(&'static str, i64),
}

/// The container's effective securityContext: its own fields, else the pod's.
pub fn effective(pod: &Pod, container: &Container) -> SecurityContext {
    let pod_level = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let mut c = container.security_context.clone().unwrap_or_default();
    c.run_as_user = c.run_as_user.or(pod_level.run_as_user);
    c.run_as_group = c.run_as_group.or(pod_level.run_as_group);
    c.run_as_non_root = c.run_as_non_root.or(pod_level.run_as_non_root);
    c.seccomp_profile = c.seccomp_profile.or(pod_level.seccomp_profile);
    c
}

/// Whether the container gets the RuntimeDefault seccomp filter: unless privileged or
/// its (effective) profile is Unconfined. Localhost profiles never reach an agent (the
/// apiserver refuses them).
pub fn seccomp_filtered(sc: &SecurityContext) -> bool {
    !sc.privileged
        && sc
            .seccomp_profile
            .as_ref()
            .is_none_or(|p| p.r#type != "Unconfined")
}

/// The user the container runs as: the securityContext's, else the image's.
pub fn user(sc: &SecurityContext, image_user: (u32, u32)) -> Result<(u32, u32), SecurityError> {
    // The apiserver refuses ids out of range; an object stored before it did is refused here
    // rather than truncated to some other user.
    let id = |what: &'static str, v: Option<i64>, image: u32| match v {
        None => Ok(image),
        Some(v) => u32::try_from(v)
            .ok()
            .filter(|v| *v <= i32::MAX as u32)
            .ok_or(SecurityError::Id(what, v)),
    };
    let uid = id("runAsUser", sc.run_as_user, image_user.0)?;
    let gid = id("runAsGroup", sc.run_as_group, image_user.1)?;
    if sc.run_as_non_root == Some(true) && uid == 0 {
        return Err(SecurityError::RunAsNonRoot);
    }
    Ok((uid, gid))
}

/// The capability set: the default one, less `drop` (`ALL` drops every one), plus `add`;
/// every capability the host has when privileged.
pub fn capabilities(
    sc: &SecurityContext,
) -> Result<libcontainer::oci_spec::runtime::LinuxCapabilities, SecurityError> {
    // oci-spec parses Kubernetes' spelling (`NET_ADMIN`); `CAP_NET_ADMIN` is accepted too.
    let parse = |name: &str| -> Result<Capability, SecurityError> {
        name.trim_start_matches("CAP_")
            .parse::<Capability>()
            .map_err(|_| SecurityError::Capability(name.to_string()))
    };
    let mut set: std::collections::HashSet<Capability> = if sc.privileged {
        host_capabilities()
            .iter()
            .map(|c| parse(c))
            .collect::<Result<_, _>>()?
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| parse(c))
            .collect::<Result<_, _>>()?
    };
    if !sc.privileged {
        for name in &sc.capabilities_drop {
            if name == "ALL" {
                set.clear();
            } else {
                set.remove(&parse(name)?);
            }
        }
        for name in &sc.capabilities_add {
            set.insert(parse(name)?);
        }
    }
    LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()
        .map_err(|e| SecurityError::Build(e.to_string()))
}

/// Whether `no_new_privs` is set: unless privilege escalation is allowed (or privileged).
pub fn no_new_privileges(sc: &SecurityContext) -> bool {
    !sc.privileged && sc.allow_privilege_escalation != Some(true)
}

/// The RuntimeDefault profile: everything allowed but `REFUSED_SYSCALLS`.
pub fn runtime_default_seccomp() -> Result<LinuxSeccomp, SecurityError> {
    let err = |e: libcontainer::oci_spec::OciSpecError| SecurityError::Build(e.to_string());
    let refused = LinuxSyscallBuilder::default()
        .names(
            REFUSED_SYSCALLS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(nix::errno::Errno::EPERM as u32)
        .build()
        .map_err(err)?;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchAarch64,
        ])
        .syscalls(vec![refused])
        .build()
        .map_err(err)
}

/// Every capability, in the kernel's numbering (the index is the capability's bit).
const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// What a privileged container gets: every capability this agent itself holds (its
/// bounding set; a host can withhold some, and no one can hand out more than they have).
fn host_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_start_from_the_default_set() {
        let sc = SecurityContext {
            capabilities_drop: vec!["NET_RAW".into()],
            capabilities_add: vec!["NET_ADMIN".into()],
            ..Default::default()
        };
        let caps = capabilities(&sc).unwrap();
        let bounding = caps.bounding().clone().unwrap();
        assert!(bounding.contains(&Capability::NetAdmin));
        assert!(!bounding.contains(&Capability::NetRaw));
        assert!(bounding.contains(&Capability::Chown));
        assert!(!bounding.contains(&Capability::SysAdmin));
        let none = SecurityContext {
            capabilities_drop: vec!["ALL".into()],
            ..Default::default()
        };
        assert!(capabilities(&none)
            .unwrap()
            .bounding()
            .clone()
            .unwrap()
            .is_empty());
        let bad = SecurityContext {
            capabilities_add: vec!["FLY".into()],
            ..Default::default()
        };
        assert!(capabilities(&bad).is_err());
        let privileged = SecurityContext {
            privileged: true,
            ..Default::default()
        };
        let all = capabilities(&privileged)
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        assert_eq!(all.len(), host_capabilities().len());
        assert!(all.len() >= 38, "{all:?}");
    }

    #[test]
    fn seccomp_is_filtered_unless_unconfined_or_privileged() {
        let profile = |t: &str| SecurityContext {
            seccomp_profile: Some(kubelab_proto::v1::SeccompProfile {
                r#type: t.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(seccomp_filtered(&SecurityContext::default()));
        assert!(seccomp_filtered(&profile("RuntimeDefault")));
        assert!(!seccomp_filtered(&profile("Unconfined")));
        let privileged = SecurityContext {
            privileged: true,
            ..Default::default()
        };
        assert!(!seccomp_filtered(&privileged));
    }

    #[test]
    fn run_as_non_root_refuses_root() {
        let sc = SecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        };
        assert!(user(&sc, (0, 0)).is_err());
        assert_eq!(user(&sc, (1000, 1000)).unwrap(), (1000, 1000));
        let as_user = SecurityContext {
            run_as_user: Some(65534),
            ..sc
        };
        assert_eq!(user(&as_user, (0, 0)).unwrap(), (65534, 0));
    }
}
