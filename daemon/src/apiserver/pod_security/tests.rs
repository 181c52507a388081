//! Every Pod Security check, passing and failing, at baseline and restricted, with
//! Kubernetes' wording.

use super::*;
use kubelab_proto::v1::{
    probe, volume, AppArmorProfile, ContainerPort, EmptyDirVolumeSource, HostPathVolumeSource,
    HttpGetAction, ObjectMeta, Probe, SeLinuxOptions, SeccompProfile, Sysctl, TcpSocketAction,
    Volume,
};

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: "127.0.0.1:5000/busybox:1".into(),
        ..Default::default()
    }
}

/// A container that passes restricted.
fn compliant(name: &str) -> Container {
    Container {
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities_drop: vec!["ALL".into()],
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                r#type: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..container(name)
    }
}

fn spec_of(containers: Vec<Container>) -> PodSpec {
    PodSpec {
        containers,
        ..Default::default()
    }
}

/// The spec with `change` made to its only (compliant) container's securityContext.
fn with_sc(change: impl FnOnce(&mut SecurityContext)) -> PodSpec {
    let mut c = compliant("c");
    change(c.security_context.as_mut().expect("set"));
    spec_of(vec![c])
}

fn text(level: Level, spec: &PodSpec) -> String {
    describe(&check(level, spec))
}

#[test]
fn a_plain_pod_passes_baseline_and_a_compliant_one_restricted() {
    let plain = spec_of(vec![container("c")]);
    assert_eq!(text(Level::Baseline, &plain), "");
    assert_eq!(text(Level::Privileged, &plain), "");
    let good = spec_of(vec![compliant("a"), compliant("b")]);
    assert_eq!(text(Level::Restricted, &good), "");
}

#[test]
fn privileged_is_refused_from_baseline_up() {
    let spec = with_sc(|s| s.privileged = true);
    let want = "privileged (container \"c\" must not set securityContext.privileged=true)";
    assert_eq!(text(Level::Baseline, &spec), want);
    assert_eq!(text(Level::Restricted, &spec), want);
    assert_eq!(text(Level::Privileged, &spec), "");
}

#[test]
fn capabilities_beyond_the_default_set_are_refused() {
    let spec = with_sc(|s| s.capabilities_add = vec!["SYS_ADMIN".into(), "CHOWN".into()]);
    assert_eq!(
        text(Level::Baseline, &spec),
        "non-default capabilities (container \"c\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)"
    );
    // Restricted allows NET_BIND_SERVICE alone, and wants ALL dropped.
    assert_eq!(
        text(Level::Restricted, &spec),
        "unrestricted capabilities (container \"c\" must not include \"CHOWN\", \"SYS_ADMIN\" in securityContext.capabilities.add)"
    );
    let fine = with_sc(|s| s.capabilities_add = vec!["NET_BIND_SERVICE".into()]);
    assert_eq!(text(Level::Baseline, &fine), "");
    assert_eq!(text(Level::Restricted, &fine), "");
    let chown = with_sc(|s| s.capabilities_add = vec!["CHOWN".into()]);
    assert_eq!(text(Level::Baseline, &chown), "");
    let no_drop = spec_of(vec![container("a"), compliant("b")]);
    assert!(text(Level::Restricted, &no_drop).contains(
        "unrestricted capabilities (container \"a\" must set securityContext.capabilities.drop=[\"ALL\"])"
    ));
}

#[test]
fn host_namespaces_are_refused() {
    let mut spec = spec_of(vec![compliant("c")]);
    spec.host_network = true;
    spec.host_ipc = true;
    let want = "host namespaces (hostNetwork=true, hostIPC=true)";
    assert_eq!(text(Level::Baseline, &spec), want);
    assert_eq!(text(Level::Restricted, &spec), want);
    spec.host_network = false;
    spec.host_ipc = false;
    spec.host_pid = true;
    assert_eq!(
        text(Level::Baseline, &spec),
        "host namespaces (hostPID=true)"
    );
}

#[test]
fn host_path_volumes_are_refused_and_restricted_allows_only_empty_dir() {
    let mut spec = spec_of(vec![compliant("c")]);
    spec.volumes = vec![
        Volume {
            name: "data".into(),
            source: Some(volume::Source::HostPath(HostPathVolumeSource {
                path: "/etc".into(),
                ..Default::default()
            })),
        },
        Volume {
            name: "scratch".into(),
            source: Some(volume::Source::EmptyDir(EmptyDirVolumeSource::default())),
        },
    ];
    assert_eq!(
        text(Level::Baseline, &spec),
        "hostPath volumes (volume \"data\")"
    );
    assert_eq!(
        text(Level::Restricted, &spec),
        "restricted volume types (volume \"data\" uses restricted volume type \"hostPath\")"
    );
    spec.volumes.remove(0);
    assert_eq!(text(Level::Baseline, &spec), "");
    assert_eq!(text(Level::Restricted, &spec), "");
}

#[test]
fn host_ports_are_refused() {
    let mut a = compliant("a");
    a.ports = vec![
        ContainerPort {
            container_port: 80,
            host_port: 8080,
            ..Default::default()
        },
        ContainerPort {
            container_port: 81,
            host_port: 8081,
            ..Default::default()
        },
    ];
    let spec = spec_of(vec![a.clone()]);
    let want = "hostPort (container \"a\" uses hostPorts 8080, 8081)";
    assert_eq!(text(Level::Baseline, &spec), want);
    assert_eq!(text(Level::Restricted, &spec), want);
    a.ports.iter_mut().for_each(|p| p.host_port = 0);
    assert_eq!(text(Level::Restricted, &spec_of(vec![a])), "");
}

#[test]
fn probes_naming_a_host_are_refused() {
    let mut c = compliant("c");
    c.liveness_probe = Some(Probe {
        handler: Some(probe::Handler::HttpGet(HttpGetAction {
            port: 80,
            host: "10.0.0.1".into(),
            ..Default::default()
        })),
        ..Default::default()
    });
    c.readiness_probe = Some(Probe {
        handler: Some(probe::Handler::TcpSocket(TcpSocketAction {
            port: 80,
            host: String::new(),
        })),
        ..Default::default()
    });
    let spec = spec_of(vec![c.clone()]);
    let want =
        "probe or lifecycle host (container \"c\" uses probe or lifecycle host \"10.0.0.1\")";
    assert_eq!(text(Level::Baseline, &spec), want);
    assert_eq!(text(Level::Restricted, &spec), want);
    c.liveness_probe = None;
    assert_eq!(text(Level::Baseline, &spec_of(vec![c])), "");
}

#[test]
fn app_armor_unconfined_is_refused() {
    let profile = |t: &str| {
        Some(AppArmorProfile {
            r#type: t.into(),
            ..Default::default()
        })
    };
    let mut spec = with_sc(|s| s.app_armor_profile = profile("Unconfined"));
    let want = "forbidden AppArmor profile (container \"c\" must not set AppArmor profile type to \"Unconfined\")";
    assert_eq!(text(Level::Baseline, &spec), want);
    assert_eq!(text(Level::Restricted, &spec), want);
    spec.security_context = Some(SecurityContext {
        app_armor_profile: profile("Unconfined"),
        ..Default::default()
    });
    assert!(text(Level::Baseline, &spec).contains("(pod and container \"c\" must not"));
    let fine = with_sc(|s| s.app_armor_profile = profile("RuntimeDefault"));
    assert_eq!(text(Level::Baseline, &fine), "");
    assert_eq!(text(Level::Restricted, &fine), "");
}

#[test]
fn se_linux_type_user_and_role_are_refused() {
    let spec = with_sc(|s| {
        s.se_linux_options = Some(SeLinuxOptions {
            r#type: "spc_t".into(),
            user: "system_u".into(),
            ..Default::default()
        })
    });
    let want = "seLinuxOptions (container \"c\" set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set)";
    assert_eq!(text(Level::Baseline, &spec), want);
    assert_eq!(text(Level::Restricted, &spec), want);
    let mut pod_role = spec_of(vec![compliant("c")]);
    pod_role.security_context = Some(SecurityContext {
        se_linux_options: Some(SeLinuxOptions {
            role: "r".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(
        text(Level::Baseline, &pod_role),
        "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: role may not be set)"
    );
    let fine = with_sc(|s| {
        s.se_linux_options = Some(SeLinuxOptions {
            r#type: "container_t".into(),
            level: "s0:c1".into(),
            ..Default::default()
        })
    });
    assert_eq!(text(Level::Restricted, &fine), "");
}

#[test]
fn proc_mount_other_than_default_is_refused() {
    let spec = with_sc(|s| s.proc_mount = "Unmasked".into());
    let want = "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")";
    assert_eq!(text(Level::Baseline, &spec), want);
    assert_eq!(text(Level::Restricted, &spec), want);
    let fine = with_sc(|s| s.proc_mount = "Default".into());
    assert_eq!(text(Level::Restricted, &fine), "");
}

#[test]
fn seccomp_unconfined_is_refused_and_restricted_requires_a_profile() {
    let profile = |t: &str| {
        Some(SeccompProfile {
            r#type: t.into(),
            ..Default::default()
        })
    };
    let spec = with_sc(|s| s.seccomp_profile = profile("Unconfined"));
    let want = "seccompProfile (container \"c\" must not set securityContext.seccompProfile.type to \"Unconfined\")";
    assert_eq!(text(Level::Baseline, &spec), want);
    assert_eq!(text(Level::Restricted, &spec), want);
    // Unset passes baseline; restricted wants it on the pod or every container.
    let unset = with_sc(|s| s.seccomp_profile = None);
    assert_eq!(text(Level::Baseline, &unset), "");
    assert_eq!(
        text(Level::Restricted, &unset),
        "seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
    );
    let mut on_pod = unset.clone();
    on_pod.security_context = Some(SecurityContext {
        seccomp_profile: profile("Localhost"),
        ..Default::default()
    });
    assert_eq!(text(Level::Restricted, &on_pod), "");
}

#[test]
fn only_safe_sysctls_pass() {
    let mut spec = spec_of(vec![compliant("c")]);
    let sysctl = |name: &str| Sysctl {
        name: name.into(),
        value: "1".into(),
    };
    spec.security_context = Some(SecurityContext {
        sysctls: vec![
            sysctl("net.ipv4.tcp_syncookies"),
            sysctl("kernel.msgmax"),
            sysctl("net.core.somaxconn"),
        ],
        ..Default::default()
    });
    let want = "forbidden sysctls (kernel.msgmax, net.core.somaxconn)";
    assert_eq!(text(Level::Baseline, &spec), want);
    // The pod's runAsNonRoot etc. are on the container: the sysctls are all restricted sees.
    assert_eq!(text(Level::Restricted, &spec), want);
    spec.security_context = Some(SecurityContext {
        sysctls: vec![sysctl("net.ipv4.ip_unprivileged_port_start")],
        ..Default::default()
    });
    assert_eq!(text(Level::Restricted, &spec), "");
}

#[test]
fn restricted_wants_no_privilege_escalation() {
    let spec = with_sc(|s| s.allow_privilege_escalation = None);
    assert_eq!(text(Level::Baseline, &spec), "");
    assert_eq!(
        text(Level::Restricted, &spec),
        "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"
    );
    let on = with_sc(|s| s.allow_privilege_escalation = Some(true));
    assert!(text(Level::Restricted, &on).starts_with("allowPrivilegeEscalation != false"));
}

#[test]
fn restricted_wants_run_as_non_root_on_the_pod_or_every_container() {
    let unset = with_sc(|s| s.run_as_non_root = None);
    assert_eq!(text(Level::Baseline, &unset), "");
    assert_eq!(
        text(Level::Restricted, &unset),
        "runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true)"
    );
    let mut on_pod = unset.clone();
    on_pod.security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    assert_eq!(text(Level::Restricted, &on_pod), "");
    let off = with_sc(|s| s.run_as_non_root = Some(false));
    assert_eq!(
        text(Level::Restricted, &off),
        "runAsNonRoot != true (container \"c\" must not set securityContext.runAsNonRoot=false)"
    );
}

#[test]
fn restricted_refuses_run_as_user_zero() {
    let root = with_sc(|s| s.run_as_user = Some(0));
    assert_eq!(text(Level::Baseline, &root), "");
    assert_eq!(
        text(Level::Restricted, &root),
        "runAsUser=0 (container \"c\" must not set runAsUser=0)"
    );
    let user = with_sc(|s| s.run_as_user = Some(1000));
    assert_eq!(text(Level::Restricted, &user), "");
}

#[test]
fn init_containers_are_checked_first_and_names_are_listed() {
    let mut spec = spec_of(vec![container("main"), container("side")]);
    spec.init_containers = vec![container("setup")];
    for c in spec.init_containers.iter_mut().chain(&mut spec.containers) {
        c.security_context = Some(SecurityContext {
            privileged: c.name != "side",
            ..Default::default()
        });
    }
    assert_eq!(
        text(Level::Baseline, &spec),
        "privileged (containers \"setup\", \"main\" must not set securityContext.privileged=true)"
    );
}

#[test]
fn a_bare_pod_under_restricted_gets_every_reason_in_kubernetes_order() {
    let spec = spec_of(vec![container("c")]);
    assert_eq!(
        text(Level::Restricted, &spec),
        "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
         unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
         runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
         seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
    );
}

#[test]
fn admit_refuses_on_enforce_and_warns_on_warn() {
    let pod = |spec: PodSpec| Pod {
        metadata: Some(ObjectMeta {
            name: "web".into(),
            ..Default::default()
        }),
        spec: Some(spec),
        status: None,
    };
    let privileged = pod(with_sc(|s| s.privileged = true));
    let baseline = Policy {
        enforce: Level::Baseline,
        warn: Level::Baseline,
    };
    let e = admit(baseline, &privileged).unwrap_err();
    assert!(matches!(e, ApiError::Forbidden(_)));
    assert_eq!(
        e.to_string(),
        "pods \"web\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
    );
    let warn = Policy {
        enforce: Level::Baseline,
        warn: Level::Restricted,
    };
    let plain = pod(spec_of(vec![container("c")]));
    let warning = admit(warn, &plain).unwrap().unwrap_or_default();
    assert!(
        warning.starts_with(
            "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"
        ),
        "{warning}"
    );
    assert_eq!(admit(baseline, &plain).unwrap(), None);
}

#[test]
fn namespace_labels_choose_the_policy_and_are_checked() {
    let labels: HashMap<String, String> =
        [(ENFORCE_LABEL.to_string(), "privileged".to_string())].into();
    assert_eq!(
        Policy::from_labels(&labels, Level::Baseline),
        Policy {
            enforce: Level::Privileged,
            warn: Level::Baseline
        }
    );
    assert!(check_namespace_labels(&labels).is_ok());
    let ok: HashMap<String, String> = [
        (WARN_LABEL.to_string(), "restricted".to_string()),
        (format!("{ENFORCE_LABEL}-version"), "v1.30".to_string()),
        (format!("{WARN_LABEL}-version"), "latest".to_string()),
        ("app".to_string(), "x".to_string()),
    ]
    .into();
    assert!(check_namespace_labels(&ok).is_ok());
    let bad: HashMap<String, String> = [(ENFORCE_LABEL.to_string(), "strict".to_string())].into();
    let e = check_namespace_labels(&bad).unwrap_err().to_string();
    assert!(
        e.contains("Invalid value: \"strict\": must be one of privileged, baseline, restricted"),
        "{e}"
    );
    let bad: HashMap<String, String> =
        [(format!("{AUDIT_LABEL}-version"), "1.30".to_string())].into();
    assert!(check_namespace_labels(&bad).is_err());
    let odd: HashMap<String, String> = [(ENFORCE_LABEL.to_string(), "strict".to_string())].into();
    assert_eq!(
        Policy::from_labels(&odd, Level::Privileged).enforce,
        Level::Restricted
    );
}
