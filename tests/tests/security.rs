//! Containers are confined by default as containerd and Kubernetes confine them, and a
//! pod's securityContext changes that only as far as the apiserver allows.

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

/// runAsUser, runAsGroup, readOnlyRootFilesystem, and capabilities drop/add.
#[test]
fn security_context_sets_the_user_the_root_filesystem_and_capabilities() {
    let lab = Lab::start(1);
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

/// Privileged containers and hostPath volumes are refused unless the apiserver allows
/// them; allowed, a privileged container has every capability and no seccomp filter.
#[test]
fn privileged_and_host_path_are_refused_unless_allowed() {
    let privileged = |image: &str| {
        pod(
            "priv",
            &format!("  containers:\n  - name: main\n    image: {image}\n    command: [sh, -c, \"grep -E '^(CapEff|Seccomp):' /proc/self/status\"]\n    securityContext: {{privileged: true}}\n"),
        )
    };
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    let err = refused(&lab, &privileged(&image));
    assert!(
        err.contains("privileged containers are not allowed") && err.contains("--allow-privileged"),
        "{err}"
    );
    let host_path = pod(
        "hp",
        &format!("  volumes: [{{name: h, hostPath: {{path: /etc}}}}]\n  containers:\n  - name: main\n    image: {image}\n    command: [ls, /h]\n    volumeMounts: [{{name: h, mountPath: /h}}]\n"),
    );
    let err = refused(&lab, &host_path);
    assert!(
        err.contains("hostPath volumes are not allowed") && err.contains("--allow-host-path"),
        "{err}"
    );
    assert!(
        !lab.ok(&["get", "pods"]).contains("priv"),
        "nothing was stored"
    );
    drop(lab);

    let lab = Lab::start_with_apiserver_args(1, &["--allow-privileged"]);
    let image = lab.push_busybox("1");
    lab.apply_ok(&privileged(&image));
    lab.wait_for("priv", "Succeeded");
    let out = lab.ok(&["logs", "priv"]);
    assert_eq!(status_field(&out, "Seccomp"), "0", "{out}");
    let caps = u64::from_str_radix(status_field(&out, "CapEff"), 16).unwrap_or(0);
    assert!(caps.count_ones() >= 38, "every capability: {out}");
}
