//! Validation and defaulting of what users send, with Kubernetes' rules and messages.
//!
//! Pure functions over API objects: they never read or write the store.

use kubelab_proto::v1::{Container, Pod};

use super::ApiError;

/// A DNS-1123 label: what Kubernetes requires of container names and namespaces.
pub fn check_dns_label(what: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
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
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
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
    let spec = pod.spec.get_or_insert_with(Default::default);
    if !spec.node_name.is_empty() {
        check_dns_subdomain("spec.nodeName", &spec.node_name)?;
    }
    if spec.containers.is_empty() {
        return Err(ApiError::Invalid(
            "spec.containers: a pod needs at least one container".into(),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for c in &mut spec.containers {
        default_container(c)?;
        if !names.insert(c.name.clone()) {
            return Err(ApiError::Invalid(format!(
                "spec.containers: duplicate container name {:?}",
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
    Ok(pod)
}

fn default_container(c: &mut Container) -> Result<(), ApiError> {
    check_dns_label("container name", &c.name)?;
    if c.image.trim().is_empty() {
        return Err(ApiError::Invalid(format!(
            "container {:?}: image is required",
            c.name
        )));
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
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_rules() {
        assert!(check_dns_subdomain("pod name", "web-1.a").is_ok());
        assert!(check_dns_subdomain("pod name", "Web").is_err());
        assert!(check_dns_subdomain("pod name", "-a").is_err());
        assert!(check_dns_label("container name", "a.b").is_err());
    }

    #[test]
    fn pull_policy_defaults_like_kubernetes() {
        let mut c = Container {
            name: "c".into(),
            image: "127.0.0.1:5000/busybox".into(),
            ..Default::default()
        };
        default_container(&mut c).unwrap();
        assert_eq!(c.image_pull_policy, "Always");
        let mut c = Container {
            name: "c".into(),
            image: "127.0.0.1:5000/busybox:1".into(),
            ..Default::default()
        };
        default_container(&mut c).unwrap();
        assert_eq!(c.image_pull_policy, "IfNotPresent");
    }
}
