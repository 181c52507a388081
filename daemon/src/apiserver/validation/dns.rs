//! A pod's DNS fields, checked as Kubernetes checks them (`validateDNSPolicy`,
//! `validatePodDNSConfig`, the hostname and subdomain labels), in its words. Owns those
//! checks only; the agent turns the fields into the pod's `resolv.conf`.

use kubelab_proto::v1::PodSpec;

use super::is_dns_label;
use crate::apiserver::ApiError;

/// The most name servers a pod's resolv.conf may list (glibc reads three).
pub const MAX_NAMESERVERS: usize = 3;
/// Kubernetes' limits on a pod's search list (the expanded ones, GA since 1.28).
pub const MAX_SEARCH_PATHS: usize = 32;
pub const MAX_SEARCH_CHARS: usize = 2048;

const POLICIES: &str = r#""ClusterFirstWithHostNet", "ClusterFirst", "Default", "None""#;

fn invalid(message: String) -> ApiError {
    ApiError::Invalid(message)
}

/// A list as Go's `%#v` prints it in Kubernetes' messages: `[]string{"a", "b"}`.
fn go_strings(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// `spec.hostname` and `spec.subdomain`: DNS-1123 labels, in Kubernetes' words.
fn check_label(path: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > 63 {
        return Err(invalid(format!(
            "{path}: Invalid value: {value:?}: must be no more than 63 characters"
        )));
    }
    if is_dns_label(value) {
        return Ok(());
    }
    let why = if value.split('.').all(is_dns_label) {
        "must not contain dots".to_string()
    } else {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()
    };
    Err(invalid(format!("{path}: Invalid value: {value:?}: {why}")))
}

/// A search domain: a DNS-1123 subdomain, in Kubernetes' words.
fn check_subdomain(path: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > 253 {
        return Err(invalid(format!(
            "{path}: Invalid value: {value:?}: must be no more than 253 characters"
        )));
    }
    if value.split('.').all(is_dns_label) {
        return Ok(());
    }
    Err(invalid(format!("{path}: Invalid value: {value:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")))
}

pub fn check(spec: &PodSpec) -> Result<(), ApiError> {
    if !spec.hostname.is_empty() {
        check_label("spec.hostname", &spec.hostname)?;
    }
    if !spec.subdomain.is_empty() {
        check_label("spec.subdomain", &spec.subdomain)?;
    }
    let none = match spec.dns_policy.as_str() {
        "" | "ClusterFirst" | "ClusterFirstWithHostNet" | "Default" => false,
        "None" => true,
        other => {
            return Err(invalid(format!(
                "spec.dnsPolicy: Unsupported value: {other:?}: supported values: {POLICIES}"
            )))
        }
    };
    let Some(config) = &spec.dns_config else {
        if none {
            return Err(invalid(
                "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"
                    .into(),
            ));
        }
        return Ok(());
    };
    if none && config.nameservers.is_empty() {
        return Err(invalid("spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None".into()));
    }
    if config.nameservers.len() > MAX_NAMESERVERS {
        return Err(invalid(format!(
            "spec.dnsConfig.nameservers: Invalid value: {}: must not have more than {MAX_NAMESERVERS} nameservers",
            go_strings(&config.nameservers)
        )));
    }
    for (i, server) in config.nameservers.iter().enumerate() {
        if server.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!(
                "spec.dnsConfig.nameservers[{i}]: Invalid value: {server:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            )));
        }
    }
    if config.searches.len() > MAX_SEARCH_PATHS {
        return Err(invalid(format!(
            "spec.dnsConfig.searches: Invalid value: {}: must not have more than {MAX_SEARCH_PATHS} search paths",
            go_strings(&config.searches)
        )));
    }
    if config.searches.join(" ").len() > MAX_SEARCH_CHARS {
        return Err(invalid(format!(
            "spec.dnsConfig.searches: Invalid value: {}: must not have more than {MAX_SEARCH_CHARS} characters (including spaces) in the search list",
            go_strings(&config.searches)
        )));
    }
    for (i, search) in config.searches.iter().enumerate() {
        // A trailing dot is allowed (a fully qualified domain).
        let domain = search.strip_suffix('.').unwrap_or(search);
        check_subdomain(&format!("spec.dnsConfig.searches[{i}]"), domain)?;
    }
    for (i, option) in config.options.iter().enumerate() {
        if option.name.is_empty() {
            return Err(invalid(format!(
                "spec.dnsConfig.options[{i}]: Required value: must not be empty"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelab_proto::v1::{PodDnsConfig, PodDnsConfigOption};

    fn spec(policy: &str, config: Option<PodDnsConfig>) -> PodSpec {
        PodSpec {
            dns_policy: policy.into(),
            dns_config: config,
            ..Default::default()
        }
    }

    fn error(spec: &PodSpec) -> String {
        match check(spec) {
            Err(ApiError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn policies_and_their_configs_are_checked_in_kubernetes_words() {
        assert!(check(&spec("", None)).is_ok());
        assert!(check(&spec("Default", None)).is_ok());
        assert_eq!(
            error(&spec("Cluster", None)),
            r#"spec.dnsPolicy: Unsupported value: "Cluster": supported values: "ClusterFirstWithHostNet", "ClusterFirst", "Default", "None""#
        );
        assert!(error(&spec("None", None)).starts_with("spec.dnsConfig: Required value"));
        let empty = PodDnsConfig::default();
        assert!(error(&spec("None", Some(empty)))
            .starts_with("spec.dnsConfig.nameservers: Required value"));
        let config = |servers: &[&str], searches: &[&str]| PodDnsConfig {
            nameservers: servers.iter().map(|s| s.to_string()).collect(),
            searches: searches.iter().map(|s| s.to_string()).collect(),
            options: vec![PodDnsConfigOption {
                name: "ndots".into(),
                value: Some("2".into()),
            }],
        };
        assert!(check(&spec("None", Some(config(&["1.1.1.1"], &["example.com."])))).is_ok());
        assert!(error(&spec(
            "None",
            Some(config(&["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"], &[]))
        ))
        .ends_with("must not have more than 3 nameservers"));
        assert_eq!(
            error(&spec("", Some(config(&["one"], &[])))),
            r#"spec.dnsConfig.nameservers[0]: Invalid value: "one": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"#
        );
        assert!(error(&spec("", Some(config(&[], &["Bad_Domain"]))))
            .starts_with("spec.dnsConfig.searches[0]"));
        let many: Vec<String> = (0..33).map(|i| format!("d{i}.example")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(error(&spec("", Some(config(&[], &many)))).ends_with("more than 32 search paths"));
    }

    #[test]
    fn hostname_and_subdomain_are_labels() {
        let mut s = spec("", None);
        s.hostname = "web-0".into();
        s.subdomain = "web".into();
        assert!(check(&s).is_ok());
        s.subdomain = "web.sub".into();
        assert_eq!(
            error(&s),
            r#"spec.subdomain: Invalid value: "web.sub": must not contain dots"#
        );
        s.subdomain = "Web".into();
        assert!(error(&s).contains("a lowercase RFC 1123 label must consist of"));
    }
}
