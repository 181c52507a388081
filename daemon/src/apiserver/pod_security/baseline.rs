//! Baseline's checks: what keeps a pod from reaching the node (host namespaces, hostPath,
//! hostPorts, privileged, added capabilities, AppArmor, SELinux, procMount, seccomp,
//! sysctls). Pure functions over a pod spec, each returning its violation; the order and
//! the wording around them are `pod_security`'s.

use std::collections::BTreeSet;

use kubelab_proto::v1::{volume, PodSpec, Probe, SecurityContext};

use super::{
    containers, containers_named, plural, pod_sc, quote, sc, setters, violation, Violation,
};

pub(super) fn app_armor_profile(spec: &PodSpec) -> Option<Violation> {
    let allowed = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
    let mut values = BTreeSet::new();
    let mut bad_value =
        |s: Option<&SecurityContext>| match s.and_then(|s| s.app_armor_profile.as_ref()) {
            Some(p) if !allowed(&p.r#type) => {
                values.insert(p.r#type.clone());
                true
            }
            _ => false,
        };
    let pod_bad = bad_value(pod_sc(spec));
    let bad: Vec<&str> = containers(spec)
        .filter(|c| bad_value(sc(c)))
        .map(|c| c.name.as_str())
        .collect();
    if !pod_bad && bad.is_empty() {
        return None;
    }
    violation(
        plural(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters(pod_bad, &bad),
            quote(&values)
        ),
    )
}

/// What containerd grants that baseline lets a pod add back (NET_RAW is not among them).
pub(super) const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The containers adding a capability outside `allowed`, and those capabilities.
pub(super) fn added_beyond(spec: &PodSpec, allowed: &[&str]) -> (Vec<String>, BTreeSet<String>) {
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let extra: Vec<&String> = sc(c)
            .map(|s| &s.capabilities_add[..])
            .unwrap_or_default()
            .iter()
            .filter(|cap| !allowed.contains(&cap.as_str()))
            .collect();
        if !extra.is_empty() {
            bad.push(c.name.clone());
            caps.extend(extra.into_iter().cloned());
        }
    }
    (bad, caps)
}

pub(super) fn capabilities_baseline(spec: &PodSpec) -> Option<Violation> {
    let (bad, caps) = added_beyond(spec, BASELINE_CAPABILITIES);
    if bad.is_empty() {
        return None;
    }
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_named(&bad),
            quote(&caps)
        ),
    )
}

pub(super) fn host_namespaces(spec: &PodSpec) -> Option<Violation> {
    let set: Vec<&str> = [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ]
    .into_iter()
    .filter_map(|(on, text)| on.then_some(text))
    .collect();
    if set.is_empty() {
        return None;
    }
    violation("host namespaces", set.join(", "))
}

pub(super) fn host_path_volumes(spec: &PodSpec) -> Option<Violation> {
    let names: Vec<&str> = spec
        .volumes
        .iter()
        .filter(|v| matches!(v.source, Some(volume::Source::HostPath(_))))
        .map(|v| v.name.as_str())
        .collect();
    if names.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!(
            "{} {}",
            plural("volume", "volumes", names.len()),
            quote(&names)
        ),
    )
}

pub(super) fn host_ports(spec: &PodSpec) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut ports = BTreeSet::new();
    for c in containers(spec) {
        let used: Vec<String> = c
            .ports
            .iter()
            .filter(|p| p.host_port != 0)
            .map(|p| p.host_port.to_string())
            .collect();
        if !used.is_empty() {
            bad.push(c.name.as_str());
            ports.extend(used);
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_named(&bad),
            plural("uses", "use", bad.len()),
            plural("hostPort", "hostPorts", ports.len()),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

/// Probes that name a host: a probe could reach past the pod to the node's network.
pub(super) fn host_probes(spec: &PodSpec) -> Option<Violation> {
    use kubelab_proto::v1::probe::Handler;
    let host = |p: &Option<Probe>| match p.as_ref().and_then(|p| p.handler.as_ref()) {
        Some(Handler::HttpGet(h)) if !h.host.is_empty() => Some(h.host.clone()),
        Some(Handler::TcpSocket(t)) if !t.host.is_empty() => Some(t.host.clone()),
        _ => None,
    };
    let mut bad = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    for c in containers(spec) {
        for p in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe] {
            if let Some(h) = host(p) {
                bad.insert(c.name.as_str());
                hosts.insert(h);
            }
        }
    }
    if bad.is_empty() {
        return None;
    }
    let bad: Vec<&str> = bad.into_iter().collect();
    violation(
        "probe or lifecycle host",
        format!(
            "{} {} {} {}",
            containers_named(&bad),
            plural("uses", "use", bad.len()),
            plural(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                hosts.len()
            ),
            quote(&hosts)
        ),
    )
}

pub(super) fn privileged(spec: &PodSpec) -> Option<Violation> {
    let bad: Vec<&str> = containers(spec)
        .filter(|c| sc(c).is_some_and(|s| s.privileged))
        .map(|c| c.name.as_str())
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_named(&bad)
        ),
    )
}

/// Baseline's and restricted's alike (kubelab has no user namespaces to relax it for).
pub(super) fn proc_mount(spec: &PodSpec) -> Option<Violation> {
    let mut kinds = BTreeSet::new();
    let mut bad = Vec::new();
    for c in containers(spec) {
        if let Some(kind) = sc(c)
            .map(|s| s.proc_mount.as_str())
            .filter(|k| !k.is_empty() && *k != "Default")
        {
            bad.push(c.name.as_str());
            kinds.insert(kind);
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_named(&bad),
            quote(&kinds)
        ),
    )
}

const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

pub(super) fn se_linux_options(spec: &PodSpec) -> Option<Violation> {
    let mut types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut bad_options = |s: Option<&SecurityContext>| {
        let Some(o) = s.and_then(|s| s.se_linux_options.as_ref()) else {
            return false;
        };
        let mut bad = false;
        if !SELINUX_TYPES.contains(&o.r#type.as_str()) {
            types.insert(o.r#type.clone());
            bad = true;
        }
        if !o.user.is_empty() {
            user = true;
            bad = true;
        }
        if !o.role.is_empty() {
            role = true;
            bad = true;
        }
        bad
    };
    let pod_bad = bad_options(pod_sc(spec));
    let bad: Vec<&str> = containers(spec)
        .filter(|c| bad_options(sc(c)))
        .map(|c| c.name.as_str())
        .collect();
    if !pod_bad && bad.is_empty() {
        return None;
    }
    let mut what = Vec::new();
    if !types.is_empty() {
        what.push(format!(
            "{} {}",
            plural("type", "types", types.len()),
            quote(&types)
        ));
    }
    if user {
        what.push("user may not be set".into());
    }
    if role {
        what.push("role may not be set".into());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters(pod_bad, &bad),
            what.join("; ")
        ),
    )
}

pub(super) fn seccomp_type(s: Option<&SecurityContext>) -> Option<&str> {
    s.and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.r#type.as_str())
}

pub(super) fn valid_seccomp(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

/// Seccomp profiles set to something else than RuntimeDefault or Localhost; with
/// `required`, also containers that set none where the pod sets none.
pub(super) fn seccomp(spec: &PodSpec, required: bool) -> Option<Violation> {
    let mut values = BTreeSet::new();
    let pod_type = seccomp_type(pod_sc(spec));
    let pod_bad = pod_type.is_some_and(|t| !valid_seccomp(t));
    if pod_bad {
        values.extend(pod_type.map(String::from));
    }
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in containers(spec) {
        match seccomp_type(sc(c)) {
            Some(t) if !valid_seccomp(t) => {
                explicit.push(c.name.as_str());
                values.insert(t.to_string());
            }
            Some(_) => {}
            None if pod_type.is_none_or(|t| !valid_seccomp(t)) => implicit.push(c.name.as_str()),
            None => {}
        }
    }
    if pod_bad || !explicit.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters(pod_bad, &explicit),
                quote(&values)
            ),
        );
    }
    if required && !implicit.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_named(&implicit)
            ),
        );
    }
    None
}

pub(super) fn seccomp_baseline(spec: &PodSpec) -> Option<Violation> {
    seccomp(spec, false)
}

/// Kubernetes' safe sysctls: namespaced, and unable to reach other pods or the node.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
];

pub(super) fn sysctls(spec: &PodSpec) -> Option<Violation> {
    let bad: Vec<&str> = pod_sc(spec)
        .map(|s| &s.sysctls[..])
        .unwrap_or_default()
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation("forbidden sysctls", bad.join(", "))
}
