//! Containers are confined by default as containerd and Kubernetes confine them, and a
//! pod's securityContext changes that only as far as Pod Security admission allows: the
//! namespace's pod-security.kubernetes.io labels, else the cluster default (baseline).

use std::time::Duration;

use kubelab_tests::{pod_manifest, Lab};

/// A pod manifest with `body` under `spec:`.
fn pod(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n{body}")
}

/// The line of /proc/self/status named `field`, as the container printed it.
fn status_field<'a>(out: &'a str, field: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(str::trim)
        .unwrap_or("")
}

/// By default: containerd's capability set, no_new_privs, the seccomp filter; the
/// container cannot write /proc/sysrq-trigger, load a kernel module, or make namespaces.
#[test]
fn a_default_container_cannot_reach_the_host_kernel() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest(
        "boxed",
        &image,
        "Never",
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
         echo b > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written; \
         echo x > /tmp/m.ko; insmod /tmp/m.ko 2>&1; \
         unshare -n true 2>&1 || echo unshare-refused",
    ));
    lab.wait_for("boxed", "Succeeded");
    let out = lab.ok(&["logs", "boxed"]);
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
    // SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP, as a bit mask.
    assert_eq!(status_field(&out, "CapEff"), "00000000a80425fb", "{out}");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out}");
    assert_eq!(status_field(&out, "Seccomp"), "2", "{out}");
    assert!(!out.contains("sysrq-written"), "{out}");
    assert!(
        out.contains("Operation not permitted"),
        "insmod refused: {out}"
    );
    assert!(out.contains("unshare-refused"), "{out}");
}

/// runAsNonRoot with an image that runs as root is refused with Kubernetes' reason.
#[test]
fn run_as_non_root_with_a_root_image_is_refused() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod(
        "nonroot",
        &format!("  securityContext: {{runAsNonRoot: true}}\n  containers:\n  - name: main\n    image: {image}\n    command: [id]\n"),
    ));
    lab.wait_status(
        "nonroot",
        "CreateContainerConfigError",
        Duration::from_secs(20),
    );
    let describe = lab.ok(&["describe", "pod", "nonroot"]);
    assert!(
        describe.contains("runAsNonRoot and image will run as root"),
        "{describe}"
    );
}

/// runAsUser, runAsGroup, readOnlyRootFilesystem, and capabilities drop/add (NET_ADMIN is
/// beyond baseline: this lab's PodSecurity default is privileged).
#[test]
fn security_context_sets_the_user_the_root_filesystem_and_capabilities() {
    let lab = Lab::start_with_apiserver_args(1, &["--pod-security-default", "privileged"]);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod(
        "confined",
        &format!(
            "  containers:\n  - name: main\n    image: {image}\n    command: [sh, -c, 'id -u; id -g; touch /new 2>/dev/null && echo wrote-root; grep CapBnd /proc/self/status']\n    securityContext:\n      runAsUser: 1000\n      runAsGroup: 3000\n      readOnlyRootFilesystem: true\n      capabilities: {{drop: [ALL], add: [NET_ADMIN]}}\n"
        ),
    ));
    lab.wait_for("confined", "Succeeded");
    let out = lab.ok(&["logs", "confined"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1000", "3000"], "{out}");
    assert!(!out.contains("wrote-root"), "{out}");
    // NET_ADMIN alone: bit 12.
    assert_eq!(status_field(&out, "CapBnd"), "0000000000001000", "{out}");
}

/// `kubelab apply` that must fail; returns its error.
fn refused(lab: &Lab, manifest: &str) -> String {
    let out = lab.apply(manifest);
    assert!(!out.status.success(), "accepted: {manifest}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A pod manifest in namespace `ns` with `body` under `spec:`.
fn pod_in(ns: &str, name: &str, body: &str) -> String {
    pod(name, body).replacen(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  namespace: {ns}\n"),
        1,
    )
}

/// Creates namespace `ns` with these labels (`kubelab create namespace`, `label namespace`).
fn namespace(lab: &Lab, ns: &str, labels: &[&str]) {
    assert!(lab
        .ok(&["create", "namespace", ns])
        .contains(&format!("namespace/{ns} created")));
    let mut args = vec!["label", "namespace", ns];
    args.extend(labels);
    lab.ok(&args);
    let listed = lab.ok(&["get", "namespaces"]);
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(ns) && l.contains("Active")),
        "{listed}"
    );
}

/// Under the cluster's default level (baseline) a container adding SYS_ADMIN is refused
/// with Kubernetes' words, and nothing is stored; so it is in a namespace that has no
/// Namespace object.
#[test]
fn added_capabilities_are_refused_under_the_baseline_default() {
    let lab = Lab::start(1);
    let err = refused(
        &lab,
        &pod(
            "capadd",
            "  containers:\n  - name: main\n    image: 127.0.0.1:1/busybox:1\n    securityContext:\n      capabilities: {add: [SYS_ADMIN]}\n",
        ),
    );
    assert!(
        err.contains(r#"pods "capadd" is forbidden: violates PodSecurity "baseline:latest": non-default capabilities (container "main" must not include "SYS_ADMIN" in securityContext.capabilities.add)"#),
        "{err}"
    );
    assert!(!lab.ok(&["get", "pods"]).contains("capadd"), "stored");
    // A namespace with no object (kubelab's implicit namespaces) has the default too.
    let body = "  containers:\n  - name: main\n    image: 127.0.0.1:1/busybox:1\n";
    let err = refused(
        &lab,
        &pod_in(
            "pss-implicit",
            "capadd",
            &format!("{body}    securityContext:\n      capabilities: {{add: [SYS_ADMIN]}}\n"),
        ),
    );
    assert!(
        err.contains("violates PodSecurity \"baseline:latest\""),
        "{err}"
    );
    lab.apply_ok(&pod_in("pss-implicit", "plain", body));
}

/// hostPath and privileged pods are refused by default; in a namespace labelled
/// `enforce: privileged` they run: a privileged container has every capability and no
/// seccomp filter, and seccompProfile Unconfined lifts the filter alone.
#[test]
fn host_path_is_refused_by_default_and_accepted_in_a_privileged_namespace() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    let host_path = |ns: &str| {
        pod_in(
            ns,
            "hp",
            &format!("  volumes: [{{name: h, hostPath: {{path: /etc}}}}]\n  containers:\n  - name: main\n    image: {image}\n    command: [ls, /h/hostname]\n    volumeMounts: [{{name: h, mountPath: /h}}]\n"),
        )
    };
    let err = refused(&lab, &host_path("default"));
    assert!(
        err.contains(r#"pods "hp" is forbidden: violates PodSecurity "baseline:latest": hostPath volumes (volume "h")"#),
        "{err}"
    );
    let privileged = format!("  containers:\n  - name: main\n    image: {image}\n    command: [sh, -c, \"grep -E '^(CapEff|Seccomp):' /proc/self/status\"]\n    securityContext: {{privileged: true}}\n");
    let err = refused(&lab, &pod("priv", &privileged));
    assert!(
        err.contains(
            r#"privileged (container "main" must not set securityContext.privileged=true)"#
        ),
        "{err}"
    );

    let ns = "pss-open";
    namespace(&lab, ns, &["pod-security.kubernetes.io/enforce=privileged"]);
    lab.apply_ok(&host_path(ns));
    lab.ok(&[
        "wait",
        "-n",
        ns,
        "pod",
        "hp",
        "--for",
        "Succeeded",
        "--timeout",
        "60",
    ]);
    lab.apply_ok(&pod_in(ns, "priv", &privileged));
    lab.apply_ok(&pod_in(
        ns,
        "unconfined",
        &format!("  containers:\n  - name: main\n    image: {image}\n    command: [grep, 'Seccomp:', /proc/self/status]\n    securityContext: {{seccompProfile: {{type: Unconfined}}}}\n"),
    ));
    for name in ["priv", "unconfined"] {
        lab.ok(&[
            "wait",
            "-n",
            ns,
            "pod",
            name,
            "--for",
            "Succeeded",
            "--timeout",
            "60",
        ]);
    }
    let out = lab.ok(&["logs", "-n", ns, "priv"]);
    assert_eq!(status_field(&out, "Seccomp"), "0", "{out}");
    let caps = u64::from_str_radix(status_field(&out, "CapEff"), 16).unwrap_or(0);
    assert!(caps.count_ones() >= 38, "every capability: {out}");
    let out = lab.ok(&["logs", "-n", ns, "unconfined"]);
    assert_eq!(status_field(&out, "Seccomp"), "0", "{out}");
}

/// A namespace labelled `enforce: restricted` refuses a plain pod with every reason
/// Kubernetes gives, and runs a pod that is non-root, drops ALL, cannot escalate and
/// keeps the RuntimeDefault seccomp filter (and sets a safe sysctl).
#[test]
fn a_restricted_namespace_lists_every_reason_and_runs_a_compliant_pod() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    let ns = "pss-strict";
    namespace(&lab, ns, &["pod-security.kubernetes.io/enforce=restricted"]);
    let err = refused(
        &lab,
        &pod_in(
            ns,
            "plain",
            &format!("  containers:\n  - name: main\n    image: {image}\n    command: [id]\n"),
        ),
    );
    assert!(
        err.contains(concat!(
            r#"pods "plain" is forbidden: violates PodSecurity "restricted:latest": "#,
            r#"allowPrivilegeEscalation != false (container "main" must set securityContext.allowPrivilegeEscalation=false), "#,
            r#"unrestricted capabilities (container "main" must set securityContext.capabilities.drop=["ALL"]), "#,
            r#"runAsNonRoot != true (pod or container "main" must set securityContext.runAsNonRoot=true), "#,
            r#"seccompProfile (pod or container "main" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#
        )),
        "{err}"
    );
    lab.apply_ok(&pod_in(
        ns,
        "good",
        &format!(
            "  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n    seccompProfile: {{type: RuntimeDefault}}\n    sysctls: [{{name: net.ipv4.ip_unprivileged_port_start, value: '80'}}]\n  containers:\n  - name: main\n    image: {image}\n    command: [sh, -c, 'id -u; grep -E \"^(CapEff|NoNewPrivs|Seccomp):\" /proc/self/status; echo port-start $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start)']\n    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities: {{drop: [ALL]}}\n"
        ),
    ));
    lab.ok(&[
        "wait",
        "-n",
        ns,
        "pod",
        "good",
        "--for",
        "Succeeded",
        "--timeout",
        "60",
    ]);
    let out = lab.ok(&["logs", "-n", ns, "good"]);
    assert_eq!(out.lines().next(), Some("1000"), "{out}");
    assert_eq!(status_field(&out, "CapEff"), "0000000000000000", "{out}");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out}");
    assert_eq!(status_field(&out, "Seccomp"), "2", "{out}");
    // The pod's (safe) sysctl is set in its own network namespace.
    assert!(out.contains("port-start 80"), "{out}");
}

/// A namespace labelled `warn: restricted` accepts a pod that meets baseline only, and
/// `kubelab apply` prints Kubernetes' warning on stderr, as kubectl does.
#[test]
fn a_warn_namespace_accepts_a_baseline_pod_and_apply_prints_the_warning() {
    let lab = Lab::start(1);
    let ns = "pss-warn";
    namespace(&lab, ns, &["pod-security.kubernetes.io/warn=restricted"]);
    let out = lab.apply(&pod_in(
        ns,
        "loose",
        "  containers:\n  - name: main\n    image: 127.0.0.1:1/busybox:1\n",
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(r#"Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "main" must set securityContext.allowPrivilegeEscalation=false)"#),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pod/loose created"));
    // A value that is not a level is refused, with Kubernetes' words.
    let err = lab.fails(&[
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=strict",
    ]);
    assert!(
        err.contains("Invalid value: \"strict\": must be one of privileged, baseline, restricted"),
        "{err}"
    );
}
