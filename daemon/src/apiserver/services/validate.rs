//! What kube-apiserver refuses in a Service, in its words (`ValidateService`): the name
//! (a DNS-1035 label), the ports (required unless headless; named when there are
//! several; numbers in 1–65535; TCP, UDP or SCTP; a target port a number or a port
//! name), node ports only where the type has them, the session affinity and the type.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::apiserver::ApiError;

fn invalid(text: String) -> ApiError {
    ApiError::Invalid(text)
}

/// A label of at most 63 lower case letters, digits and inner dashes; DNS-1035 labels
/// also start with a letter.
fn is_label(name: &str, letter_first: bool) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let first = |c: char| c.is_ascii_lowercase() || (!letter_first && c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(first)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || c == '-')
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if is_label(name, true) {
        return Ok(());
    }
    Err(invalid(format!(
        "metadata.name: Invalid value: {name:?}: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    )))
}

/// A port name: an RFC 1123 label.
fn check_port_name(path: &str, name: &str) -> Result<(), ApiError> {
    if is_label(name, false) {
        return Ok(());
    }
    Err(invalid(format!(
        "{path}: Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    )))
}

fn check_port_number(path: &str, port: i32) -> Result<(), ApiError> {
    if (1..=65535).contains(&port) {
        return Ok(());
    }
    Err(invalid(format!(
        "{path}: Invalid value: {port}: must be between 1 and 65535, inclusive"
    )))
}

/// A container port's name (IANA_SVC_NAME): at most 15 characters, lower case letters,
/// digits and single dashes, at least one letter.
fn check_target_name(path: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.contains("--")
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        return Ok(());
    }
    Err(invalid(format!(
        "{path}: Invalid value: {name:?}: must be a port number or a port name of at most 15 lower case letters, digits and '-', with at least one letter"
    )))
}

pub fn service(svc: &Service) -> Result<(), ApiError> {
    check_name(svc.metadata.name.as_deref().unwrap_or(""))?;
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !matches!(
        kind,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        return Err(invalid(format!(
            "spec.type: Unsupported value: {kind:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        )));
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if kind == "ExternalName" {
        if spec.external_name.as_deref().is_none_or(str::is_empty) {
            return Err(invalid("spec.externalName: Required value".into()));
        }
    } else if headless && kind != "ClusterIP" {
        return Err(invalid(format!(
            "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for {kind} services"
        )));
    }
    let ports = spec.ports.clone().unwrap_or_default();
    if ports.is_empty() && !headless && kind != "ExternalName" {
        return Err(invalid("spec.ports: Required value".into()));
    }
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = port.name.clone().unwrap_or_default();
        if name.is_empty() && ports.len() > 1 {
            return Err(invalid(format!("{path}.name: Required value")));
        }
        if !name.is_empty() {
            check_port_name(&format!("{path}.name"), &name)?;
            if !names.insert(name.clone()) {
                return Err(invalid(format!("{path}.name: Duplicate value: {name:?}")));
            }
        }
        check_port_number(&format!("{path}.port"), port.port)?;
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            return Err(invalid(format!(
                "{path}.protocol: Unsupported value: {protocol:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""
            )));
        }
        if !numbers.insert((protocol.to_string(), port.port)) {
            return Err(invalid(format!(
                "{path}: Duplicate value: port {}/{protocol} (each port and protocol once)",
                port.port
            )));
        }
        match &port.target_port {
            Some(IntOrString::Int(n)) => check_port_number(&format!("{path}.targetPort"), *n)?,
            Some(IntOrString::String(s)) => check_target_name(&format!("{path}.targetPort"), s)?,
            None => {}
        }
        if port.node_port.unwrap_or(0) != 0 && !matches!(kind, "NodePort" | "LoadBalancer") {
            return Err(invalid(format!(
                "{path}.nodePort: Forbidden: may not be used when `type` is '{kind}'"
            )));
        }
    }
    match spec.session_affinity.as_deref().unwrap_or("None") {
        "None" | "ClientIP" => {}
        other => {
            return Err(invalid(format!(
                "spec.sessionAffinity: Unsupported value: {other:?}: supported values: \"ClientIP\", \"None\""
            )))
        }
    }
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    if let Some(t) = timeout.filter(|t| !(1..=86_400).contains(t)) {
        return Err(invalid(format!(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: {t}: must be greater than 0 and less than 86400"
        )));
    }
    Ok(())
}
