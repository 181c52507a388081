//! The security fields of a pod: their own validity (before admission), and what kubelab
//! does not support (after PodSecurity admission, so that its Forbidden comes first).
//!
//! Pure functions over API objects, part of `validation`; the Pod Security levels
//! themselves are `pod_security`'s, not this file's.

use kubelab_proto::v1::{Container, Pod, SecurityContext};

use super::super::pod_security::SAFE_SYSCTLS;
use super::ApiError;

/// The profile types Kubernetes knows, for seccomp and AppArmor alike.
const PROFILE_TYPES: &[&str] = &["RuntimeDefault", "Unconfined", "Localhost"];

/// A securityContext's own rules (pod or container): known profile types, a localhost
/// profile exactly when the type is Localhost, a known procMount.
pub fn check_context(what: &str, sc: &SecurityContext) -> Result<(), ApiError> {
    let profiles = [
        (
            "seccompProfile",
            sc.seccomp_profile
                .as_ref()
                .map(|p| (&p.r#type, &p.localhost_profile)),
        ),
        (
            "appArmorProfile",
            sc.app_armor_profile
                .as_ref()
                .map(|p| (&p.r#type, &p.localhost_profile)),
        ),
    ];
    for (field, profile) in profiles {
        let Some((kind, localhost)) = profile else {
            continue;
        };
        if !PROFILE_TYPES.contains(&kind.as_str()) {
            return Err(ApiError::Invalid(format!(
                "{what}.{field}.type: Unsupported value: {kind:?}: supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\""
            )));
        }
        if (kind == "Localhost") == localhost.is_empty() {
            return Err(ApiError::Invalid(format!(
                "{what}.{field}.localhostProfile: must be set when the type is Localhost, and only then"
            )));
        }
    }
    if !matches!(sc.proc_mount.as_str(), "" | "Default" | "Unmasked") {
        return Err(ApiError::Invalid(format!(
            "{what}.procMount: Unsupported value: {:?}: supported values: \"Default\", \"Unmasked\"",
            sc.proc_mount
        )));
    }
    Ok(())
}

/// Sysctl names as Kubernetes accepts them, each once; none of the network's with
/// hostNetwork (they would change the node's).
pub fn check_sysctls(sc: &SecurityContext, host_network: bool) -> Result<(), ApiError> {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let mut seen = std::collections::HashSet::new();
    for (i, s) in sc.sysctls.iter().enumerate() {
        let field = format!("spec.securityContext.sysctls[{i}].name");
        if s.name.len() > 253 || !s.name.split(['.', '/']).all(part) {
            return Err(ApiError::Invalid(format!(
                "{field}: Invalid value: {:?}: must have at most 253 characters and match the regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
                s.name
            )));
        }
        if !seen.insert(s.name.replace('/', ".")) {
            return Err(ApiError::Invalid(format!(
                "{field}: Duplicate value: {:?}",
                s.name
            )));
        }
        if host_network && s.name.starts_with("net.") {
            return Err(ApiError::Invalid(format!(
                "{field}: Invalid value: {:?}: may not be specified when 'hostNetwork' is true",
                s.name
            )));
        }
    }
    Ok(())
}

/// Ports as Kubernetes checks and defaults them (protocol TCP).
pub fn default_ports(c: &mut Container) -> Result<(), ApiError> {
    for p in &mut c.ports {
        super::check_range(
            &format!("container {:?}: ports.containerPort", c.name),
            i64::from(p.container_port),
            1,
            65_535,
        )?;
        if p.host_port != 0 {
            super::check_range(
                &format!("container {:?}: ports.hostPort", c.name),
                i64::from(p.host_port),
                1,
                65_535,
            )?;
        }
        if p.protocol.is_empty() {
            p.protocol = "TCP".into();
        }
        if !matches!(p.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            return Err(ApiError::Invalid(format!(
                "container {:?}: ports: protocol {:?}: supported values: \"SCTP\", \"TCP\", \"UDP\"",
                c.name, p.protocol
            )));
        }
        let name_ok = p.name.len() <= 15
            && p.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && (p.name.is_empty() || p.name.bytes().any(|b| b.is_ascii_lowercase()));
        if !name_ok {
            return Err(ApiError::Invalid(format!(
                "container {:?}: ports: name {:?}: at most 15 lowercase letters, digits or '-', with a letter",
                c.name, p.name
            )));
        }
    }
    Ok(())
}

fn unsupported(what: String) -> ApiError {
    ApiError::Invalid(format!("{what}: not supported by kubelab yet"))
}

/// What an admitted pod may still not ask of kubelab: checked after PodSecurity, so that
/// a pod the namespace forbids hears that first.
pub fn check_supported(pod: &Pod) -> Result<(), ApiError> {
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    if spec.host_pid {
        return Err(unsupported(
            "spec.hostPID: the node's process namespace".into(),
        ));
    }
    if spec.host_ipc {
        return Err(unsupported("spec.hostIPC: the node's IPC namespace".into()));
    }
    if let Some(sc) = &spec.security_context {
        check_context_supported("spec.securityContext", sc)?;
        if let Some(s) = sc
            .sysctls
            .iter()
            .find(|s| !SAFE_SYSCTLS.contains(&s.name.as_str()))
        {
            return Err(ApiError::Invalid(format!(
                "spec.securityContext.sysctls: {:?} is not one of Kubernetes' safe sysctls, the only ones kubelab's agents set (as a kubelet without --allowed-unsafe-sysctls)",
                s.name
            )));
        }
    }
    for c in spec.init_containers.iter().chain(&spec.containers) {
        if let Some(p) = c.ports.iter().find(|p| p.host_port != 0) {
            return Err(unsupported(format!(
                "container {:?}: ports: hostPort {} (kubelab does not publish ports on the node; reach the pod at its IP)",
                c.name, p.host_port
            )));
        }
        if let Some(sc) = &c.security_context {
            check_context_supported(&format!("container {:?}: securityContext", c.name), sc)?;
            if sc.proc_mount == "Unmasked" {
                return Err(unsupported(format!(
                    "container {:?}: securityContext.procMount Unmasked",
                    c.name
                )));
            }
        }
    }
    Ok(())
}

/// Localhost seccomp profiles, AppArmor profiles other than the default, SELinux labels.
fn check_context_supported(what: &str, sc: &SecurityContext) -> Result<(), ApiError> {
    if sc
        .seccomp_profile
        .as_ref()
        .is_some_and(|p| p.r#type == "Localhost")
    {
        return Err(unsupported(format!(
            "{what}.seccompProfile type Localhost (use RuntimeDefault, kubelab's filter)"
        )));
    }
    if let Some(p) = sc
        .app_armor_profile
        .as_ref()
        .filter(|p| p.r#type != "RuntimeDefault")
    {
        return Err(unsupported(format!(
            "{what}.appArmorProfile type {} (kubelab applies no AppArmor profile)",
            p.r#type
        )));
    }
    if sc.se_linux_options.as_ref().is_some_and(|o| {
        !o.user.is_empty() || !o.role.is_empty() || !o.r#type.is_empty() || !o.level.is_empty()
    }) {
        return Err(unsupported(format!(
            "{what}.seLinuxOptions (kubelab labels nothing for SELinux)"
        )));
    }
    Ok(())
}
