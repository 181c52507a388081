//! Pod Security admission: the Pod Security Standards (privileged, baseline, restricted)
//! checked against a new pod, as Kubernetes' PodSecurity admission plugin checks them.
//!
//! Owns the levels, the namespace labels that choose them
//! (`pod-security.kubernetes.io/enforce`, `.../warn`), every check of the `latest` policy
//! version, and Kubernetes' wording of a refusal or a warning. Pure functions over API
//! objects: never reads the store, never decides what kubelab supports (that is
//! `validation`, after this has passed). The checks live in `baseline` and `restricted`.

use std::collections::HashMap;

use kubelab_proto::v1::{Container, Pod, PodSpec, SecurityContext};

use super::ApiError;

mod baseline;
mod restricted;

pub use baseline::SAFE_SYSCTLS;
use baseline::*;
use restricted::*;

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

#[cfg(test)]
mod tests;
