//! Restricted's own checks, on top of baseline's: no privilege escalation, drop ALL, only
//! emptyDir volumes, non-root, a seccomp profile. Pure functions over a pod spec.

use std::collections::BTreeSet;

use kubelab_proto::v1::{volume, PodSpec};

use super::baseline::{added_beyond, seccomp};
use super::{
    containers, containers_named, plural, pod_sc, quote, sc, setters, violation, Violation,
};

pub(super) fn allow_privilege_escalation(spec: &PodSpec) -> Option<Violation> {
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

pub(super) fn capabilities_restricted(spec: &PodSpec) -> Option<Violation> {
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
pub(super) fn restricted_volumes(spec: &PodSpec) -> Option<Violation> {
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

pub(super) fn run_as_non_root(spec: &PodSpec) -> Option<Violation> {
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

pub(super) fn run_as_user(spec: &PodSpec) -> Option<Violation> {
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

pub(super) fn seccomp_restricted(spec: &PodSpec) -> Option<Violation> {
    seccomp(spec, true)
}
