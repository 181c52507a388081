//! Validation and defaulting with Kubernetes' rules and messages: names, labels, images,
//! requests, counts, pull policies, ports, what kubelab does not support yet.

use super::*;

#[test]
fn names_follow_dns_rules() {
    assert!(check_dns_subdomain("pod name", "web-1.a").is_ok());
    assert!(check_dns_subdomain("pod name", "Web").is_err());
    assert!(check_dns_subdomain("pod name", "-a").is_err());
    assert!(check_dns_label("container name", "a.b").is_err());
}

#[test]
fn labels_follow_kubernetes_rules() {
    let ok: std::collections::HashMap<String, String> = [
        ("app".to_string(), "web".to_string()),
        ("example.com/tier".to_string(), "".to_string()),
    ]
    .into();
    assert!(check_labels(&ok).is_ok());
    for (k, v) in [
        ("-app", "x"),
        ("a/b/c", "x"),
        ("app", "has space"),
        ("Bad_/x", "y"),
    ] {
        let bad: std::collections::HashMap<String, String> =
            [(k.to_string(), v.to_string())].into();
        assert!(check_labels(&bad).is_err(), "{k}={v}");
    }
}

#[test]
fn images_requests_and_counts_are_checked() {
    let pod = |c: Container| Pod {
        metadata: Some(kubelab_proto::v1::ObjectMeta {
            name: "p".into(),
            ..Default::default()
        }),
        spec: Some(kubelab_proto::v1::PodSpec {
            containers: vec![c],
            ..Default::default()
        }),
        status: None,
    };
    let base = Container {
        name: "c".into(),
        image: "127.0.0.1:5000/busybox:1".into(),
        ..Default::default()
    };
    assert!(validate_and_default_pod(pod(base.clone())).is_ok());
    let bad_image = Container {
        image: "UPPER/Case::x".into(),
        ..base.clone()
    };
    let e = validate_and_default_pod(pod(bad_image)).unwrap_err();
    assert!(e.to_string().contains("not a valid reference"), "{e}");
    let over = Container {
        resources: Some(kubelab_proto::v1::ResourceRequirements {
            cpu_request_millis: 2000,
            cpu_limit_millis: 1000,
            ..Default::default()
        }),
        ..base.clone()
    };
    let e = validate_and_default_pod(pod(over)).unwrap_err();
    assert!(e.to_string().contains("less than or equal"), "{e}");
    let many_env = Container {
        env: (0..2000)
            .map(|i| kubelab_proto::v1::EnvVar {
                name: format!("V{i}"),
                value: String::new(),
            })
            .collect(),
        ..base
    };
    let e = validate_and_default_pod(pod(many_env)).unwrap_err();
    assert!(e.to_string().contains("at most 1024"), "{e}");
}

#[test]
fn security_fields_are_checked_and_the_unsupported_refused_after_admission() {
    use kubelab_proto::v1::{ContainerPort, SeccompProfile, SecurityContext};
    let pod = |c: Container, host_pid: bool| Pod {
        metadata: Some(kubelab_proto::v1::ObjectMeta {
            name: "p".into(),
            ..Default::default()
        }),
        spec: Some(kubelab_proto::v1::PodSpec {
            containers: vec![c],
            host_pid,
            ..Default::default()
        }),
        status: None,
    };
    let base = Container {
        name: "c".into(),
        image: "127.0.0.1:5000/busybox:1".into(),
        ..Default::default()
    };
    let seccomp = |t: &str, profile: &str| Container {
        security_context: Some(SecurityContext {
            seccomp_profile: Some(SeccompProfile {
                r#type: t.into(),
                localhost_profile: profile.into(),
            }),
            ..Default::default()
        }),
        ..base.clone()
    };
    let e = validate_and_default_pod(pod(seccomp("Strict", ""), false)).unwrap_err();
    assert!(
        e.to_string().contains("Unsupported value: \"Strict\""),
        "{e}"
    );
    assert!(validate_and_default_pod(pod(seccomp("Localhost", ""), false)).is_err());
    let local = validate_and_default_pod(pod(seccomp("Localhost", "x.json"), false)).unwrap();
    let e = check_supported(&local).unwrap_err();
    assert!(e.to_string().contains("type Localhost"), "{e}");
    let unconfined = validate_and_default_pod(pod(seccomp("Unconfined", ""), false)).unwrap();
    assert!(check_supported(&unconfined).is_ok());
    let host_port = Container {
        ports: vec![ContainerPort {
            container_port: 80,
            host_port: 8080,
            ..Default::default()
        }],
        ..base.clone()
    };
    let checked = validate_and_default_pod(pod(host_port, false)).unwrap();
    let port = &checked.spec.as_ref().unwrap().containers[0].ports[0];
    assert_eq!(port.protocol, "TCP");
    let e = check_supported(&checked).unwrap_err();
    assert!(e.to_string().contains("hostPort 8080"), "{e}");
    let host_pid = validate_and_default_pod(pod(base, true)).unwrap();
    assert!(check_supported(&host_pid).is_err());
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
