//! Bad input gets a clear one-line error naming the problem, never a panic, and loses nothing.

use kubelab_tests::{bin, free_port, pod_manifest, Lab};

fn one_line(stderr: &str) -> &str {
    let trimmed = stderr.trim_end();
    assert!(!trimmed.is_empty(), "no error message");
    assert!(!trimmed.contains("panicked"), "panic: {stderr}");
    assert_eq!(
        trimmed.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "not one error line: {stderr}"
    );
    trimmed
}

/// Broken YAML is refused with its line number; other kinds and API versions are named.
#[test]
fn broken_manifests_are_refused_with_where_and_why() {
    let lab = Lab::start(1);
    let out =
        lab.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers: [\n");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(one_line(&err).contains("line"), "{err}");

    let err = String::from_utf8_lossy(
        &lab.apply("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n")
            .stderr,
    )
    .into_owned();
    assert!(
        one_line(&err).contains("Deployment") && err.contains("Pod"),
        "{err}"
    );

    let out = lab.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        one_line(&err).contains("Bad_Name") && err.contains("lowercase"),
        "{err}"
    );

    let out = lab.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimage\nspec:\n  containers:\n  - name: c\n");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(one_line(&err).contains("image"), "{err}");

    let out = lab.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: m\nspec:\n  containers:\n  - name: c\n    image: x:1\n    resources:\n      limits:\n        memory: lots\n");
    assert!(!out.status.success());
}

/// A second pod with a taken name is refused and the first is left as it was; applying
/// the same manifest twice says "unchanged".
#[test]
fn a_duplicate_name_is_refused_and_nothing_is_lost() {
    let lab = Lab::start(1);
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: dup\nspec:\n  containers:\n  - name: c\n    image: 127.0.0.1:1/none:1\n";
    lab.apply_ok(manifest);
    let uid = lab.pod_json("dup")["metadata"]["uid"].clone();
    let again = lab.apply(manifest);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"));
    let other = lab.apply(&manifest.replace("none:1", "other:2"));
    let err = String::from_utf8_lossy(&other.stderr).into_owned();
    assert!(!other.status.success());
    assert!(one_line(&err).contains("already exists"), "{err}");
    assert_eq!(
        lab.pod_json("dup")["metadata"]["uid"],
        uid,
        "the first pod was replaced"
    );
}

/// Unsupported fields are named in a warning, and the pod is still created.
#[test]
fn unsupported_fields_are_named_in_warnings() {
    let lab = Lab::start(1);
    let out = lab.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: w\nspec:\n  shareProcessNamespace: true\n  containers:\n  - name: c\n    image: 127.0.0.1:1/x:1\n    stdin: true\n");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.shareProcessNamespace") && err.contains("spec.containers[0].stdin"),
        "{err}"
    );
}

/// With no apiserver, the CLI says so and how to start one.
#[test]
fn a_server_that_is_not_running_gets_a_clear_error() {
    let port = free_port();
    // A credential for an apiserver that is not there.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(r#"{{"server": "127.0.0.1:{port}", "ca": "", "token": "t"}}"#),
    )
    .expect("config");
    let out = std::process::Command::new(bin("kubelab"))
        .args(["get", "pods"])
        .env("KUBELAB_CONFIG", &config)
        .env_remove("KUBELAB_SERVER")
        .output()
        .expect("run kubelab");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        one_line(&err).contains("cannot reach the apiserver"),
        "{err}"
    );
}

/// Unknown commands, resources and pods get errors that name them.
#[test]
fn unknown_things_are_named() {
    let lab = Lab::start(1);
    assert!(one_line(&lab.fails(&["get", "pod", "nope"])).contains("not found"));
    assert!(one_line(&lab.fails(&["get", "deployments"])).contains("deployments"));
    assert!(one_line(&lab.fails(&["delete", "pod", "nope"])).contains("not found"));
    assert!(one_line(&lab.fails(&["logs", "nope"])).contains("not found"));
    let err = lab.fails(&["image", "push", "/nonexistent-dir", "127.0.0.1:1/x:1"]);
    assert!(one_line(&err).contains("not a directory"), "{err}");
}

/// When the agent of a pod's node is dead, `logs` says which node's agent does not answer,
/// and the pod can still be removed with a forced delete, as in Kubernetes.
#[test]
fn logs_from_a_dead_agent_name_the_node() {
    let mut lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("p", &image, "Always", "sleep 3600"));
    lab.wait_for("p", "Running");
    lab.kill_agent(0);
    let err = lab.fails(&["logs", "p"]);
    assert!(one_line(&err).contains(&lab.node_names[0]), "{err}");
    assert!(err.contains("does not answer"), "{err}");
    lab.ok(&["delete", "pod", "p", "--wait=false"]);
    assert!(lab.ok(&["get", "pod", "p"]).contains("Terminating"));
    lab.ok(&["delete", "pod", "p", "--grace-period=0", "--force"]);
    assert!(lab.fails(&["get", "pod", "p"]).contains("not found"));
}

/// Mistakes in volumes, mounts and probes are refused with what is wrong and what is allowed.
#[test]
fn bad_volumes_mounts_and_probes_are_named() {
    let lab = Lab::start(1);
    let pod =
        |body: &str| format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: v\nspec:\n{body}");
    let refused = |manifest: String, expected: &[&str]| {
        let out = lab.apply(&manifest);
        assert!(!out.status.success(), "accepted: {manifest}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = one_line(&err);
        for word in expected {
            assert!(line.contains(word), "{word:?} not in {line:?}");
        }
    };
    refused(
        pod("  containers:\n  - name: c\n    image: x:1\n    volumeMounts: [{name: data, mountPath: /data}]\n"),
        &["no volume named \"data\""],
    );
    refused(
        pod("  volumes: [{name: h, hostPath: {path: relative/dir}}]\n  containers:\n  - name: c\n    image: x:1\n"),
        &["hostPath.path", "absolute"],
    );
    refused(
        pod("  volumes: [{name: s, secret: {secretName: x}}]\n  containers:\n  - name: c\n    image: x:1\n"),
        &["emptyDir and hostPath"],
    );
    refused(
        pod("  containers:\n  - name: c\n    image: x:1\n    livenessProbe: {httpGet: {port: http}}\n"),
        &["livenessProbe", "named ports"],
    );
    refused(
        pod("  containers:\n  - name: c\n    image: x:1\n    livenessProbe: {exec: {command: [ls]}, successThreshold: 2}\n"),
        &["livenessProbe.successThreshold must be 1"],
    );
    refused(
        pod("  initContainers:\n  - name: c\n    image: x:1\n  containers:\n  - name: c\n    image: x:1\n"),
        &["duplicate container name"],
    );
    // Nothing was stored by any of them.
    assert!(!lab.ok(&["get", "pods"]).contains("v "));
}

/// Labels, image references and sizes are checked with what is wrong and what is
/// allowed; a request too large for the API is refused before it is read.
#[test]
fn labels_images_and_sizes_are_checked() {
    let lab = Lab::start(0);
    let refused = |manifest: String| {
        let out = lab.apply(&manifest);
        assert!(!out.status.success(), "accepted");
        one_line(&String::from_utf8_lossy(&out.stderr)).to_string()
    };
    let pod = |labels: &str, image: &str, env: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: v\n  labels: {{{labels}}}\nspec:\n  containers:\n  - name: c\n    image: {image}\n    env: [{env}]\n")
    };
    let err = refused(pod("'bad key!': x", "127.0.0.1:1/x:1", ""));
    assert!(err.contains("label key") && err.contains("1-63"), "{err}");
    let err = refused(pod("", "UPPER/Case::1", ""));
    assert!(err.contains("not a valid reference"), "{err}");
    let big = "x".repeat(2 << 20);
    let err = refused(pod(
        "",
        "127.0.0.1:1/x:1",
        &format!("{{name: BIG, value: {big}}}"),
    ));
    assert!(err.contains("too large") && err.contains("1 MiB"), "{err}");
    assert!(err.len() < 400, "one short line: {err}");
}

/// Numbers from outside are checked against Kubernetes' limits at the API and refused with
/// its words, never saturated or turned into a deadline that overflows: a grace period of
/// i64::MAX, quantities past an i64 (every suffix), ids and ports out of range, a watch
/// from a revision the store has not reached. A pod whose requests sum past an i64 is
/// simply unschedulable, and the scheduler goes on binding other pods.
#[test]
fn hostile_numbers_are_refused_with_kubernetes_limits() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    let refused = |manifest: &str, expected: &str| {
        let out = lab.apply(manifest);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "accepted: {manifest}");
        assert!(
            one_line(&err).contains(expected),
            "{expected:?} not in {err}"
        );
    };
    let with = |body: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: n\nspec:\n  containers:\n  - name: c\n    image: {image}\n{body}")
    };
    refused(
        &with("    resources:\n      limits:\n        memory: 8Ei\n"),
        "resources.limits.memory: Invalid value: \"8Ei\": must be less than or equal to 9223372036854775807",
    );
    refused(
        &with("    resources:\n      requests:\n        cpu: 1e100\n"),
        "must be less than or equal to 9223372036854775807m",
    );
    refused(
        &with("    resources:\n      requests:\n        cpu: 1KiB\n"),
        "quantities must match the regular expression",
    );
    refused(
        &with("    securityContext:\n      runAsUser: -1\n"),
        "runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
    );
    refused(
        &with("    securityContext:\n      runAsGroup: 4294967296\n"),
        "must be between 0 and 2147483647, inclusive",
    );
    refused(
        &with("    livenessProbe:\n      tcpSocket:\n        port: 70000\n"),
        "livenessProbe: tcpSocket.port: Invalid value: 70000: must be between 1 and 65535, inclusive",
    );
    refused(
        &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: n\nspec:\n  terminationGracePeriodSeconds: 9223372036854775807\n  containers:\n  - name: c\n    image: {image}\n"),
        "must be less than or equal to 86400",
    );
    // Every suffix Kubernetes has is read.
    lab.apply_ok(&with(
        "    resources:\n      requests:\n        cpu: 1500u\n        memory: 1Ki\n      limits:\n        cpu: \"0.5\"\n        memory: 1.5Gi\n",
    ));

    lab.apply_ok(&pod_manifest("g", &image, "Never", "sleep 3600"));
    lab.wait_for("g", "Running");
    let err = lab.fails(&[
        "delete",
        "pod",
        "g",
        "--grace-period",
        "9223372036854775807",
    ]);
    assert!(
        one_line(&err).contains("gracePeriodSeconds: Invalid value: 9223372036854775807: must be less than or equal to 86400"),
        "{err}"
    );
    lab.ok(&["delete", "pod", "g", "--grace-period", "1"]);
    assert!(lab
        .ok(&["get", "pods", "-o", "name"])
        .lines()
        .all(|l| l != "pod/g"));

    kubelab_proto::credential::init_tls();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            use futures::StreamExt;
            use kubelab_proto::v1::{
                Container, ObjectMeta, Pod, PodSpec, ResourceRequirements, WatchRequest,
            };
            let mut pods = lab.pods_client();
            let err = match pods
                .watch(WatchRequest {
                    from_revision: u64::MAX,
                    ..Default::default()
                })
                .await
            {
                Err(status) => status.message().to_string(),
                Ok(stream) => match stream.into_inner().next().await {
                    Some(Err(status)) => status.message().to_string(),
                    other => panic!("a watch from the future went on: {other:?}"),
                },
            };
            assert!(
                err.contains("Too large resource version: 18446744073709551615"),
                "{err}"
            );
            // A node may not report negative resources (its own credential, its own name).
            let node = lab.node_names[0].clone();
            let credential = kubelab_proto::credential::Credential::load(
                &lab.agent_root(&node).join("node.conf"),
            )
            .expect("node credential");
            let err = kubelab_proto::v1::nodes_client::NodesClient::new(
                credential.channel().expect("channel"),
            )
            .register(kubelab_proto::v1::Node {
                metadata: Some(ObjectMeta {
                    name: node.clone(),
                    ..Default::default()
                }),
                status: Some(kubelab_proto::v1::NodeStatus {
                    allocatable: Some(kubelab_proto::v1::NodeResources {
                        cpu_millis: -1,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err("negative cpu refused");
            assert!(
                err.message().contains(
                    "status.allocatable.cpu: Invalid value: -1: must be greater than or equal to 0"
                ),
                "{err}"
            );
            // Each request fits an i64; their sum does not.
            let huge = |name: &str| Container {
                name: name.into(),
                image: image.clone(),
                resources: Some(ResourceRequirements {
                    cpu_request_millis: i64::MAX,
                    memory_request_bytes: i64::MAX,
                    ..Default::default()
                }),
                ..Default::default()
            };
            pods.create(Pod {
                metadata: Some(ObjectMeta {
                    name: "huge".into(),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![huge("a"), huge("b")],
                    ..Default::default()
                }),
                status: None,
            })
            .await
            .expect("created");
        });
    kubelab_tests::wait_until(
        "FailedScheduling of huge",
        std::time::Duration::from_secs(10),
        || {
            lab.ok(&["describe", "pod", "huge"])
                .contains("Insufficient cpu")
        },
    );
    lab.apply_ok(&pod_manifest("after", &image, "Never", "true"));
    lab.wait_for("after", "Succeeded");
}

/// A misspelt field is refused, as kubectl's default validation refuses it, and the
/// message names the field meant; nothing is created.
#[test]
fn a_misspelt_field_is_refused_naming_the_field_meant() {
    let lab = Lab::start(1);
    let out = lab.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: typo\nspec:\n  containers:\n  - name: c\n    image: 127.0.0.1:1/x:1\n    comand: [sh]\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.containers[0].comand" (did you mean "command"?)"#),
        "{err}"
    );
    let err = lab.fails(&["get", "pod", "typo"]);
    assert!(err.contains("not found"), "{err}");
}
