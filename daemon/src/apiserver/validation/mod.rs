//! Validation and defaulting of what users send, with Kubernetes' rules and messages.
//!
//! Pure functions over API objects: they never read or write the store.

use kubelab_proto::v1::{probe, volume, Container, Pod, Probe, Volume};

use super::ApiError;

mod dns;
mod security;
pub use security::check_supported;

/// Most containers (and, apart, init containers) a pod may have.
const MAX_CONTAINERS: usize = 32;
const MAX_VOLUMES: usize = 64;
const MAX_ENV: usize = 1024;
/// The longest grace period or probe delay accepted: a day (the agent's own bound).
use crate::deadline::MAX_SECONDS;
/// Linux user and group ids as Kubernetes accepts them (`IsValidUserID`/`IsValidGroupID`).
const MAX_ID: i64 = 2_147_483_647;

/// `field: Invalid value: V: must be between LOW and HIGH, inclusive`, Kubernetes' words.
fn check_range(field: &str, value: i64, low: i64, high: i64) -> Result<(), ApiError> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "{field}: Invalid value: {value}: must be between {low} and {high}, inclusive"
        )))
    }
}

/// The user and group ids of a securityContext (pod or container level).
fn check_security_context(
    field: &str,
    sc: Option<&kubelab_proto::v1::SecurityContext>,
) -> Result<(), ApiError> {
    let Some(sc) = sc else { return Ok(()) };
    if let Some(uid) = sc.run_as_user {
        check_range(&format!("{field}.runAsUser"), uid, 0, MAX_ID)?;
    }
    if let Some(gid) = sc.run_as_group {
        check_range(&format!("{field}.runAsGroup"), gid, 0, MAX_ID)?;
    }
    Ok(())
}

/// A delete's grace period: not negative (Kubernetes' rule) and at most `MAX_SECONDS`.
pub fn check_grace_period(seconds: i64) -> Result<(), ApiError> {
    if seconds < 0 {
        return Err(ApiError::Invalid(format!(
            "gracePeriodSeconds: Invalid value: {seconds}: must be greater than or equal to 0"
        )));
    }
    if seconds > MAX_SECONDS {
        return Err(ApiError::Invalid(format!(
            "gracePeriodSeconds: Invalid value: {seconds}: must be less than or equal to {MAX_SECONDS} (a day; kubelab's limit)"
        )));
    }
    Ok(())
}

/// Labels as Kubernetes allows them: a key is an optional DNS subdomain prefix and `/`,
/// then a name of at most 63 alphanumerics, `-`, `_` or `.` (alphanumeric at both ends);
/// a value is empty or the same as a name.
pub fn check_labels(labels: &std::collections::HashMap<String, String>) -> Result<(), ApiError> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    for (key, value) in labels {
        let (prefix, name) = match key.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, key.as_str()),
        };
        if let Some(prefix) = prefix {
            check_dns_subdomain("label key prefix", prefix)?;
        }
        if !is_name(name) {
            return Err(ApiError::Invalid(format!(
                "label key {key:?}: the name part must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (an optional prefix is a DNS subdomain and '/')"
            )));
        }
        if !value.is_empty() && !is_name(value) {
            return Err(ApiError::Invalid(format!(
                "label {key}={value:?}: a value must be empty or 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            )));
        }
    }
    Ok(())
}

/// Annotations: keys as label keys are, values anything, all of them together at most
/// 256 KiB (Kubernetes' limit: `metadata.annotations: Too long: must have at most 262144 bytes`).
pub fn check_annotations(
    annotations: &std::collections::HashMap<String, String>,
) -> Result<(), ApiError> {
    const MAX_BYTES: usize = 256 * 1024;
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_BYTES {
        return Err(ApiError::Invalid(format!(
            "metadata.annotations: Too long: must have at most {MAX_BYTES} bytes"
        )));
    }
    let keys: std::collections::HashMap<String, String> = annotations
        .keys()
        .map(|k| (k.clone(), String::new()))
        .collect();
    check_labels(&keys).map_err(|e| ApiError::Invalid(format!("metadata.annotations: {e}")))
}

/// Lowercase letters, digits and '-', starting and ending with a letter or digit: a
/// DNS-1123 label's characters (its length is the caller's to check).
pub fn is_dns_label(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-')
}

/// A DNS-1123 label: what Kubernetes requires of container names and namespaces.
pub fn check_dns_label(what: &str, value: &str) -> Result<(), ApiError> {
    let ok = value.len() <= 63 && is_dns_label(value);
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "{what} {value:?}: must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
        )))
    }
}

/// A DNS-1123 subdomain: what Kubernetes requires of pod and node names.
pub fn check_dns_subdomain(what: &str, value: &str) -> Result<(), ApiError> {
    let ok = value.len() <= 253 && value.split('.').all(is_dns_label);
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "{what} {value:?}: must be lowercase letters, digits, '-' or '.', at most 253, starting and ending with a letter or digit"
        )))
    }
}

/// Checks a new pod and fills in Kubernetes' defaults. Returns the pod ready to store.
pub fn validate_and_default_pod(mut pod: Pod) -> Result<Pod, ApiError> {
    let meta = pod.metadata.get_or_insert_with(Default::default);
    if meta.namespace.is_empty() {
        meta.namespace = "default".into();
    }
    check_dns_subdomain("pod name", &meta.name)?;
    check_dns_label("namespace", &meta.namespace)?;
    check_labels(&meta.labels)?;
    let spec = pod.spec.get_or_insert_with(Default::default);
    let counted = [
        ("spec.containers", spec.containers.len(), MAX_CONTAINERS),
        (
            "spec.initContainers",
            spec.init_containers.len(),
            MAX_CONTAINERS,
        ),
        ("spec.volumes", spec.volumes.len(), MAX_VOLUMES),
    ];
    for (what, count, max) in counted {
        if count > max {
            return Err(ApiError::Invalid(format!(
                "{what}: {count} given, at most {max} are allowed"
            )));
        }
    }
    if spec.termination_grace_period_seconds > MAX_SECONDS {
        return Err(ApiError::Invalid(format!(
            "spec.terminationGracePeriodSeconds: Invalid value: {}: must be less than or equal to {MAX_SECONDS} (a day; kubelab's limit)",
            spec.termination_grace_period_seconds
        )));
    }
    check_security_context("spec.securityContext", spec.security_context.as_ref())?;
    if !spec.node_name.is_empty() {
        check_dns_subdomain("spec.nodeName", &spec.node_name)?;
    }
    check_labels(&spec.node_selector)
        .map_err(|e| ApiError::Invalid(format!("spec.nodeSelector: {e}")))?;
    dns::check(spec)?;
    for t in &mut spec.tolerations {
        if t.operator.is_empty() {
            t.operator = "Equal".into();
        }
        match t.operator.as_str() {
            "Exists" if !t.value.is_empty() => {
                return Err(ApiError::Invalid(format!(
                    "spec.tolerations: key {:?}: operator Exists takes no value",
                    t.key
                )))
            }
            "Equal" if t.key.is_empty() => {
                return Err(ApiError::Invalid(
                    "spec.tolerations: operator Equal needs a key (or use operator Exists to tolerate every taint)".into(),
                ))
            }
            "Exists" | "Equal" => {}
            other => {
                return Err(ApiError::Invalid(format!(
                    "spec.tolerations: operator {other:?} must be Equal or Exists"
                )))
            }
        }
        if !matches!(
            t.effect.as_str(),
            "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute"
        ) {
            return Err(ApiError::Invalid(format!(
                "spec.tolerations: effect {:?} must be NoSchedule, PreferNoSchedule or NoExecute",
                t.effect
            )));
        }
    }
    if spec.containers.is_empty() {
        return Err(ApiError::Invalid(
            "spec.containers: a pod needs at least one container".into(),
        ));
    }
    let mut volumes = std::collections::HashSet::new();
    for v in &spec.volumes {
        check_volume(v)?;
        if !volumes.insert(v.name.clone()) {
            return Err(ApiError::Invalid(format!(
                "spec.volumes: duplicate volume name {:?}",
                v.name
            )));
        }
    }
    // Init containers and containers share one set of names, as in Kubernetes.
    let mut names = std::collections::HashSet::new();
    for (list, containers) in [
        ("spec.initContainers", &mut spec.init_containers),
        ("spec.containers", &mut spec.containers),
    ] {
        for c in containers.iter_mut() {
            default_container(c)?;
            check_mounts(c, &volumes)?;
            check_security_context(
                &format!("container {:?}: securityContext", c.name),
                c.security_context.as_ref(),
            )?;
            if !names.insert(c.name.clone()) {
                return Err(ApiError::Invalid(format!(
                    "{list}: duplicate container name {:?}",
                    c.name
                )));
            }
        }
    }
    for c in &spec.init_containers {
        if c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some() {
            return Err(ApiError::Invalid(format!(
                "spec.initContainers: {:?}: init containers may not have probes",
                c.name
            )));
        }
    }
    match spec.restart_policy.as_str() {
        "" => spec.restart_policy = "Always".into(),
        "Always" | "OnFailure" | "Never" => {}
        other => {
            return Err(ApiError::Invalid(format!(
                "spec.restartPolicy {other:?}: must be Always, OnFailure or Never"
            )))
        }
    }
    if spec.termination_grace_period_seconds < 0 {
        return Err(ApiError::Invalid(
            "spec.terminationGracePeriodSeconds: must not be negative".into(),
        ));
    }
    if let Some(sc) = &spec.security_context {
        security::check_context("spec.securityContext", sc)?;
        security::check_sysctls(sc, spec.host_network)?;
    }
    Ok(pod)
}

fn check_volume(v: &Volume) -> Result<(), ApiError> {
    check_dns_label("volume name", &v.name)?;
    match &v.source {
        Some(volume::Source::EmptyDir(e)) => match e.medium.as_str() {
            "" | "Memory" => Ok(()),
            other => Err(ApiError::Invalid(format!(
                "volume {:?}: emptyDir.medium {other:?}: must be \"\" or Memory",
                v.name
            ))),
        },
        Some(volume::Source::HostPath(h)) => {
            if !h.path.starts_with('/') {
                return Err(ApiError::Invalid(format!(
                    "volume {:?}: hostPath.path {:?}: must be an absolute path",
                    v.name, h.path
                )));
            }
            match h.r#type.as_str() {
                "" | "Directory" | "DirectoryOrCreate" | "File" | "FileOrCreate" => Ok(()),
                other => Err(ApiError::Invalid(format!(
                    "volume {:?}: hostPath.type {other:?}: must be Directory, DirectoryOrCreate, File or FileOrCreate",
                    v.name
                ))),
            }
        }
        None => Err(ApiError::Invalid(format!(
            "volume {:?}: needs emptyDir or hostPath",
            v.name
        ))),
    }
}

fn check_mounts(
    c: &Container,
    volumes: &std::collections::HashSet<String>,
) -> Result<(), ApiError> {
    let mut paths = std::collections::HashSet::new();
    for m in &c.volume_mounts {
        if !volumes.contains(&m.name) {
            return Err(ApiError::Invalid(format!(
                "container {:?}: volumeMounts: no volume named {:?} in spec.volumes",
                c.name, m.name
            )));
        }
        if !m.mount_path.starts_with('/') || m.mount_path.split('/').any(|p| p == "..") {
            return Err(ApiError::Invalid(format!(
                "container {:?}: volumeMounts: mountPath {:?} must be an absolute path without '..'",
                c.name, m.mount_path
            )));
        }
        if !paths.insert(m.mount_path.trim_end_matches('/').to_string()) {
            return Err(ApiError::Invalid(format!(
                "container {:?}: volumeMounts: {:?} is mounted twice",
                c.name, m.mount_path
            )));
        }
    }
    Ok(())
}

/// Kubernetes' probe defaults: period 10 s, timeout 1 s, success 1, failure 3.
fn default_probe(container: &str, kind: &str, probe: &mut Option<Probe>) -> Result<(), ApiError> {
    let Some(p) = probe else { return Ok(()) };
    let bad = |what: &str| ApiError::Invalid(format!("container {container:?}: {kind}.{what}"));
    if p.period_seconds == 0 {
        p.period_seconds = 10;
    }
    if p.timeout_seconds == 0 {
        p.timeout_seconds = 1;
    }
    if p.success_threshold == 0 {
        p.success_threshold = 1;
    }
    if p.failure_threshold == 0 {
        p.failure_threshold = 3;
    }
    if p.period_seconds < 1
        || p.timeout_seconds < 1
        || p.failure_threshold < 1
        || p.success_threshold < 1
    {
        return Err(bad(
            "periodSeconds, timeoutSeconds and the thresholds must be at least 1",
        ));
    }
    if p.initial_delay_seconds < 0 {
        return Err(bad("initialDelaySeconds must not be negative"));
    }
    let longest = [p.initial_delay_seconds, p.period_seconds, p.timeout_seconds];
    if longest.iter().any(|s| i64::from(*s) > MAX_SECONDS) {
        return Err(bad(
            "initialDelaySeconds, periodSeconds and timeoutSeconds: at most 86400 (a day; kubelab's limit)",
        ));
    }
    // Kubernetes requires successThreshold 1 for liveness and startup probes.
    if kind != "readinessProbe" && p.success_threshold != 1 {
        return Err(bad("successThreshold must be 1"));
    }
    let port = match &p.handler {
        Some(probe::Handler::HttpGet(h)) => Some(("httpGet.port", h.port)),
        Some(probe::Handler::TcpSocket(t)) => Some(("tcpSocket.port", t.port)),
        _ => None,
    };
    if let Some((what, port)) = port {
        check_range(
            &format!("container {container:?}: {kind}.{what}"),
            i64::from(port),
            1,
            65_535,
        )?;
    }
    match &p.handler {
        Some(probe::Handler::Exec(e)) if e.command.is_empty() => {
            Err(bad("exec.command must not be empty"))
        }
        Some(probe::Handler::HttpGet(h)) if !matches!(h.scheme.as_str(), "" | "HTTP") => {
            Err(bad("httpGet.scheme: only HTTP is supported"))
        }
        Some(_) => Ok(()),
        None => Err(bad("needs exec, httpGet or tcpSocket")),
    }
}

fn default_container(c: &mut Container) -> Result<(), ApiError> {
    security::default_ports(c)?;
    if let Some(sc) = &c.security_context {
        security::check_context(&format!("container {:?}: securityContext", c.name), sc)?;
        if !sc.sysctls.is_empty() {
            return Err(ApiError::Invalid(format!(
                "container {:?}: securityContext.sysctls: sysctls are set on the pod (spec.securityContext.sysctls)",
                c.name
            )));
        }
    }
    default_probe(&c.name, "livenessProbe", &mut c.liveness_probe)?;
    default_probe(&c.name, "readinessProbe", &mut c.readiness_probe)?;
    default_probe(&c.name, "startupProbe", &mut c.startup_probe)?;
    check_dns_label("container name", &c.name)?;
    if c.image.trim().is_empty() {
        return Err(ApiError::Invalid(format!(
            "container {:?}: image is required",
            c.name
        )));
    }
    if let Err(e) = kubelab_proto::image_ref::parse(&c.image) {
        return Err(ApiError::Invalid(format!(
            "container {:?}: image {:?} is not a valid reference ({e}; example: registry.example:5000/app:1.0)",
            c.name, c.image
        )));
    }
    if c.env.len() > MAX_ENV {
        return Err(ApiError::Invalid(format!(
            "container {:?}: env: {} variables given, at most {MAX_ENV} are allowed",
            c.name,
            c.env.len()
        )));
    }
    for e in &c.env {
        let valid = !e.name.is_empty()
            && !e.name.contains('=')
            && !e.name.starts_with(|ch: char| ch.is_ascii_digit())
            && e.name.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(ApiError::Invalid(format!(
                "container {:?}: env name {:?}: must be printable, without '=' or spaces, not starting with a digit",
                c.name, e.name
            )));
        }
    }
    if let Some(r) = &c.resources {
        let over = [
            ("cpu", r.cpu_request_millis, r.cpu_limit_millis),
            ("memory", r.memory_request_bytes, r.memory_limit_bytes),
        ];
        for (what, request, limit) in over {
            if request < 0 || limit < 0 {
                return Err(ApiError::Invalid(format!(
                    "container {:?}: resources: {what} must not be negative",
                    c.name
                )));
            }
            if limit > 0 && request > limit {
                return Err(ApiError::Invalid(format!(
                    "container {:?}: resources.requests.{what}: must be less than or equal to the {what} limit",
                    c.name
                )));
            }
        }
    }
    match c.image_pull_policy.as_str() {
        // Kubernetes' default: Always for `:latest` or no tag, IfNotPresent otherwise.
        "" => {
            let last = c.image.rsplit('/').next().unwrap_or(&c.image);
            let has_digest = c.image.contains('@');
            let tag = last.split_once(':').map(|(_, t)| t);
            c.image_pull_policy = if !has_digest && matches!(tag, None | Some("latest")) {
                "Always".into()
            } else {
                "IfNotPresent".into()
            };
        }
        "Always" | "IfNotPresent" | "Never" => {}
        other => {
            return Err(ApiError::Invalid(format!(
                "container {:?}: imagePullPolicy {other:?}: must be Always, IfNotPresent or Never",
                c.name
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
