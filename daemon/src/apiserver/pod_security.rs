//! Pod Security admission: the Pod Security Standards (privileged, baseline, restricted)
//! checked against a new pod, as Kubernetes' PodSecurity admission plugin checks them.
//!
//! Owns the levels, the namespace labels that choose them
//! (`pod-security.kubernetes.io/enforce`, `.../warn`), every check of the `latest` policy
//! version, and Kubernetes' wording of a refusal or a warning. Pure functions over API
//! objects: never reads the store, never decides what kubelab supports (that is
//! `validation`, after this has passed).

use std::collections::{BTreeSet, HashMap};

use kubelab_proto::v1::{volume, Container, Pod, PodSpec, Probe, SecurityContext};

use super::ApiError;

pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
pub const WARN_LABEL: &str = "pod-security.kubernetes.io/warn";
/// Accepted and checked on namespaces, not acted on: kubelab has no audit log.
pub const AUDIT_LABEL: &str = "pod-security.kubernetes.io/audit";
const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// A Pod Security Standard, from open to locked down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The levels one namespace's pods are held to: refused below `enforce`, warned below `warn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub enforce: Level,
    pub warn: Level,
}

impl Policy {
    /// A namespace's policy: its labels, else the cluster's default. A value that is not a
    /// level (only possible if the store was written around the API) counts as restricted,
    /// as Kubernetes counts it.
    pub fn from_labels(labels: &HashMap<String, String>, default: Level) -> Policy {
        let level = |key: &str| match labels.get(key) {
            None => default,
            Some(v) => Level::parse(v).unwrap_or(Level::Restricted),
        };
        Policy {
            enforce: level(ENFORCE_LABEL),
            warn: level(WARN_LABEL),
        }
    }
}

/// The Pod Security labels of a namespace being written, checked as Kubernetes checks
/// them: a mode label names a level, a `-version` label is `latest` or `v1.N`.
pub fn check_namespace_labels(labels: &HashMap<String, String>) -> Result<(), ApiError> {
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort();
    for key in keys {
        let Some(rest) = key.strip_prefix(LABEL_PREFIX) else {
            continue;
        };
        let value = &labels[key];
        let (ok, expected) = match rest {
            "enforce" | "warn" | "audit" => (
                Level::parse(value).is_some(),
                "must be one of privileged, baseline, restricted",
            ),
            "enforce-version" | "warn-version" | "audit-version" => {
                let minor = value.strip_prefix("v1.");
                let valid_minor = minor.is_some_and(|m| {
                    !m.is_empty()
                        && m.bytes().all(|b| b.is_ascii_digit())
                        && (m == "0" || !m.starts_with('0'))
                });
                (
                    value == "latest" || valid_minor,
                    "must be \"latest\" or \"v1.x\"",
                )
            }
            _ => continue,
        };
        if !ok {
            return Err(ApiError::Invalid(format!(
                "metadata.labels[{key}]: Invalid value: {value:?}: {expected}"
            )));
        }
    }
    Ok(())
}

/// What a pod may create: refused (enforce), or allowed with a warning (warn) or without.
/// The refusal and the warning are worded as Kubernetes words them.
pub fn admit(policy: Policy, pod: &Pod) -> Result<Option<String>, ApiError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let enforced = check(policy.enforce, &spec);
    if !enforced.is_empty() {
        let name = pod.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
        return Err(ApiError::Forbidden(format!(
            "pods {name:?} is forbidden: violates PodSecurity \"{}:latest\": {}",
            policy.enforce,
            describe(&enforced)
        )));
    }
    let warned = check(policy.warn, &spec);
    Ok((!warned.is_empty()).then(|| {
        format!(
            "would violate PodSecurity \"{}:latest\": {}",
            policy.warn,
            describe(&warned)
        )
    }))
}

/// One failed check: a short reason and, when there is more to say, the details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

/// `reason (detail), reason (detail)`, in the checks' order.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| match v.detail.as_str() {
            "" => v.reason.clone(),
            detail => format!("{} ({detail})", v.reason),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

type Check = fn(&PodSpec) -> Option<Violation>;

/// Baseline's checks, in Kubernetes' order (sorted by check name).
const BASELINE: &[Check] = &[
    app_armor_profile,
    capabilities_baseline,
    host_namespaces,
    host_path_volumes,
    host_ports,
    host_probes,
    privileged,
    proc_mount,
    se_linux_options,
    seccomp_baseline,
    sysctls,
];

/// Restricted's: baseline's less those it replaces with stricter ones, then its own.
const RESTRICTED: &[Check] = &[
    app_armor_profile,
    host_namespaces,
    host_ports,
    host_probes,
    privileged,
    se_linux_options,
    sysctls,
    allow_privilege_escalation,
    capabilities_restricted,
    proc_mount,
    restricted_volumes,
    run_as_non_root,
    run_as_user,
    seccomp_restricted,
];

/// Every check of `level` the pod fails (none for privileged).
pub fn check(level: Level, spec: &PodSpec) -> Vec<Violation> {
    let checks: &[Check] = match level {
        Level::Privileged => &[],
        Level::Baseline => BASELINE,
        Level::Restricted => RESTRICTED,
    };
    checks.iter().filter_map(|c| c(spec)).collect()
}

// ---- helpers ----

/// Init containers first, then containers, as Kubernetes visits them.
fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().chain(&spec.containers)
}

fn sc(c: &Container) -> Option<&SecurityContext> {
    c.security_context.as_ref()
}

fn pod_sc(spec: &PodSpec) -> Option<&SecurityContext> {
    spec.security_context.as_ref()
}

fn quote<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural<'a>(one: &'a str, many: &'a str, n: usize) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// `container "a"` or `containers "a", "b"`.
fn containers_named(names: &[&str]) -> String {
    format!(
        "{} {}",
        plural("container", "containers", names.len()),
        quote(names)
    )
}

fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail: detail.into(),
    })
}

/// The pod (if it sets a bad value) and the containers that do, as "pod and containers ...".
fn setters(pod_bad: bool, bad: &[&str]) -> String {
    let mut out = Vec::new();
    if pod_bad {
        out.push("pod".to_string());
    }
    if !bad.is_empty() {
        out.push(containers_named(bad));
    }
    out.join(" and ")
}

// ---- baseline ----

fn app_armor_profile(spec: &PodSpec) -> Option<Violation> {
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
const BASELINE_CAPABILITIES: &[&str] = &[
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
fn added_beyond(spec: &PodSpec, allowed: &[&str]) -> (Vec<String>, BTreeSet<String>) {
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

fn capabilities_baseline(spec: &PodSpec) -> Option<Violation> {
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

fn host_namespaces(spec: &PodSpec) -> Option<Violation> {
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

fn host_path_volumes(spec: &PodSpec) -> Option<Violation> {
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

fn host_ports(spec: &PodSpec) -> Option<Violation> {
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
fn host_probes(spec: &PodSpec) -> Option<Violation> {
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

fn privileged(spec: &PodSpec) -> Option<Violation> {
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
fn proc_mount(spec: &PodSpec) -> Option<Violation> {
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

fn se_linux_options(spec: &PodSpec) -> Option<Violation> {
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

fn seccomp_type(s: Option<&SecurityContext>) -> Option<&str> {
    s.and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.r#type.as_str())
}

fn valid_seccomp(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

/// Seccomp profiles set to something else than RuntimeDefault or Localhost; with
/// `required`, also containers that set none where the pod sets none.
fn seccomp(spec: &PodSpec, required: bool) -> Option<Violation> {
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

fn seccomp_baseline(spec: &PodSpec) -> Option<Violation> {
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

fn sysctls(spec: &PodSpec) -> Option<Violation> {
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

// ---- restricted ----

fn allow_privilege_escalation(spec: &PodSpec) -> Option<Violation> {
    let bad: Vec<&str> = containers(spec)
        .filter(|c| sc(c).and_then(|s| s.allow_privilege_escalation) != Some(false))
        .map(|c| c.name.as_str())
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_named(&bad)
        ),
    )
}

fn capabilities_restricted(spec: &PodSpec) -> Option<Violation> {
    let no_drop_all: Vec<&str> = containers(spec)
        .filter(|c| !sc(c).is_some_and(|s| s.capabilities_drop.iter().any(|d| d == "ALL")))
        .map(|c| c.name.as_str())
        .collect();
    let (adding, caps) = added_beyond(spec, &["NET_BIND_SERVICE"]);
    let mut details = Vec::new();
    if !no_drop_all.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_named(&no_drop_all)
        ));
    }
    if !adding.is_empty() {
        let adding: Vec<&str> = adding.iter().map(String::as_str).collect();
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_named(&adding),
            quote(&caps)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

/// Restricted allows the volume types that hold no node or network storage; of kubelab's,
/// emptyDir only.
fn restricted_volumes(spec: &PodSpec) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut kinds = BTreeSet::new();
    for v in &spec.volumes {
        match v.source {
            Some(volume::Source::EmptyDir(_)) => {}
            Some(volume::Source::HostPath(_)) => {
                bad.push(v.name.as_str());
                kinds.insert("hostPath");
            }
            None => {
                bad.push(v.name.as_str());
                kinds.insert("unknown");
            }
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            plural("volume", "volumes", bad.len()),
            quote(&bad),
            plural("uses", "use", bad.len()),
            plural(
                "restricted volume type",
                "restricted volume types",
                kinds.len()
            ),
            quote(&kinds)
        ),
    )
}

fn run_as_non_root(spec: &PodSpec) -> Option<Violation> {
    let pod_value = pod_sc(spec).and_then(|s| s.run_as_non_root);
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in containers(spec) {
        match sc(c).and_then(|s| s.run_as_non_root) {
            Some(false) => explicit.push(c.name.as_str()),
            Some(true) => {}
            None if pod_value != Some(true) => implicit.push(c.name.as_str()),
            None => {}
        }
    }
    let pod_bad = pod_value == Some(false);
    if pod_bad || !explicit.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters(pod_bad, &explicit)
            ),
        );
    }
    if !implicit.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_named(&implicit)
            ),
        );
    }
    None
}

fn run_as_user(spec: &PodSpec) -> Option<Violation> {
    let pod_bad = pod_sc(spec).and_then(|s| s.run_as_user) == Some(0);
    let bad: Vec<&str> = containers(spec)
        .filter(|c| sc(c).and_then(|s| s.run_as_user) == Some(0))
        .map(|c| c.name.as_str())
        .collect();
    if !pod_bad && bad.is_empty() {
        return None;
    }
    violation(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters(pod_bad, &bad)),
    )
}

fn seccomp_restricted(spec: &PodSpec) -> Option<Violation> {
    seccomp(spec, true)
}

#[cfg(test)]
#[path = "pod_security_tests.rs"]
mod tests;
