//! The bodies under `testdata/` are what kubectl 1.32 posted, recorded by a fake
//! apiserver: `create-<kind>-<name>.pb` for the command in each test.

use prost::encoding::{encode_key, encode_varint, WireType};
use serde_json::json;

use super::*;

const NAMESPACE_TEAM: &[u8] = include_bytes!("testdata/create-namespace-team.pb");
const DEPLOYMENT_WEB: &[u8] = include_bytes!("testdata/create-deployment-web.pb");
const DEPLOYMENT_ZERO: &[u8] = include_bytes!("testdata/create-deployment-zero.pb");
const JOB_PI: &[u8] = include_bytes!("testdata/create-job-pi.pb");

#[test]
fn kubectl_create_namespace_reads_as_its_json() {
    // kubectl create namespace team
    let expected = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    assert_eq!(to_json(NAMESPACE_TEAM).unwrap(), expected);
}

#[test]
fn kubectl_create_deployment_reads_as_its_json() {
    // kubectl create deployment web --image=127.0.0.1:5000/web:1 --replicas=3 --port=8080
    let labels = json!({"app": "web"});
    let container = json!({
        "name": "web", "image": "127.0.0.1:5000/web:1", "ports": [{"containerPort": 8080}],
    });
    let expected = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    });
    assert_eq!(to_json(DEPLOYMENT_WEB).unwrap(), expected);
}

#[test]
fn kubectl_create_deployment_keeps_zero_replicas_and_the_command() {
    // kubectl create deployment zero --image=busybox --replicas=0 -- sleep 3600
    let json = to_json(DEPLOYMENT_ZERO).unwrap();
    assert_eq!(json["spec"]["replicas"], 0);
    let container = &json["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"], json!(["sleep", "3600"]));
    assert_eq!(container["name"], "busybox");
}

#[test]
fn kubectl_create_job_reads_as_its_json() {
    // kubectl create job pi --image=busybox -- sh -c 'echo hi'
    let container = json!({"name": "pi", "image": "busybox", "command": ["sh", "-c", "echo hi"]});
    let expected = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi"},
        "spec": {"template": {"spec": {"containers": [container], "restartPolicy": "Never"}}},
    });
    assert_eq!(to_json(JOB_PI).unwrap(), expected);
}

// Hand-made bodies, for what kubectl's create commands do not send.

fn varint(number: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(number, WireType::Varint, &mut out);
    encode_varint(value, &mut out);
    out
}

fn bytes(number: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(number, WireType::LengthDelimited, &mut out);
    encode_varint(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

fn message(number: u32, fields: &[Vec<u8>]) -> Vec<u8> {
    bytes(number, &fields.concat())
}

/// `k8s\0` + `Unknown{typeMeta, raw}` around an object's fields.
fn body(api_version: &str, kind: &str, fields: &[Vec<u8>]) -> Vec<u8> {
    let type_meta = message(
        1,
        &[bytes(1, api_version.as_bytes()), bytes(2, kind.as_bytes())],
    );
    [MAGIC.to_vec(), type_meta, message(2, fields)].concat()
}

/// A Deployment whose pod spec has `pod_spec_fields` besides one container.
fn deployment_with_pod_spec(pod_spec_fields: &[Vec<u8>]) -> Vec<u8> {
    let container = message(2, &[bytes(1, b"c"), bytes(2, b"busybox")]);
    let pod_spec = message(2, &[pod_spec_fields.concat(), container]);
    let spec = message(2, &[message(3, &[pod_spec])]);
    body("apps/v1", "Deployment", &[spec])
}

#[test]
fn a_field_kubelab_does_not_read_is_refused_by_name() {
    // spec.template.spec.securityContext (14) = {runAsUser (2): 1000}
    let body = deployment_with_pod_spec(&[message(14, &[varint(2, 1000)])]);
    let error = to_json(&body).unwrap_err();
    assert!(
        error.starts_with(
            "Deployment.spec.template.spec (PodSpec): protobuf field 14 is not read by kubelab;"
        ),
        "{error}"
    );
    assert!(error.contains("kubectl apply -f -"), "{error}");
}

#[test]
fn a_zero_field_kubelab_does_not_read_is_skipped() {
    // A zero varint (40), an empty string (41), a message of zeros (42).
    let zeros = [
        varint(40, 0),
        bytes(41, b""),
        message(42, &[varint(1, 0), bytes(2, b"")]),
    ];
    let json = to_json(&deployment_with_pod_spec(&zeros)).unwrap();
    assert_eq!(
        json["spec"]["template"]["spec"]["containers"][0]["name"],
        "c"
    );
}

#[test]
fn special_types_read_as_kubernetes_writes_them_in_json() {
    let metadata = message(
        1,
        &[
            bytes(1, b"d"),
            message(8, &[varint(1, 1_700_000_000)]),
            message(9, &[varint(1, ZERO_TIME_SECONDS as u64)]),
        ],
    );
    let max_surge = message(2, &[varint(1, 1), varint(2, 0), bytes(3, b"25%")]);
    let max_unavailable = message(1, &[varint(1, 0), varint(2, 0), bytes(3, b"")]);
    let strategy = message(
        4,
        &[
            bytes(1, b"RollingUpdate"),
            message(2, &[max_unavailable, max_surge]),
        ],
    );
    let cpu = message(1, &[bytes(1, b"cpu"), message(2, &[bytes(1, b"500m")])]);
    let container = message(2, &[bytes(1, b"c"), message(8, &[cpu])]);
    let template = message(3, &[message(2, &[container])]);
    let history = varint(6, -1i64 as u64);
    let body = body(
        "apps/v1",
        "Deployment",
        &[metadata, message(2, &[strategy, template, history])],
    );

    let json = to_json(&body).unwrap();
    assert_eq!(
        json["metadata"],
        json!({"name": "d", "creationTimestamp": "2023-11-14T22:13:20Z"})
    );
    let rolling = json!({"maxUnavailable": 0, "maxSurge": "25%"});
    assert_eq!(
        json["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": rolling})
    );
    let resources = &json["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(*resources, json!({"limits": {"cpu": "500m"}}));
    assert_eq!(json["spec"]["revisionHistoryLimit"], -1);
}

#[test]
fn what_is_not_a_readable_object_is_an_error() {
    assert!(to_json(b"{\"kind\": \"Namespace\"}").is_err());
    let service = body("v1", "Service", &[message(1, &[bytes(1, b"s")])]);
    assert!(to_json(&service)
        .unwrap_err()
        .starts_with("v1 Service: kubelab does not read"));
    // A string field sent as a varint.
    let wrong = body("v1", "Namespace", &[message(1, &[varint(1, 7)])]);
    assert!(to_json(&wrong).is_err());
}

#[test]
fn damaged_bodies_fail_without_panicking() {
    for real in [NAMESPACE_TEAM, DEPLOYMENT_WEB, DEPLOYMENT_ZERO, JOB_PI] {
        for end in 0..real.len() {
            let _ = to_json(&real[..end]);
        }
        for at in MAGIC.len()..real.len() {
            let mut damaged = real.to_vec();
            damaged[at] ^= 0xff;
            let _ = to_json(&damaged);
        }
    }
    // A length far past the end, and one past usize on 32-bit targets.
    assert!(to_json(&[MAGIC, &[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]].concat()).is_err());
}
