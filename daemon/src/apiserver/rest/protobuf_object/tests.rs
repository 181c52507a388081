//! The bodies under `testdata/` are what kubectl 1.32 posted, recorded by a fake
//! apiserver: `create-<kind>-<name>[-<variant>].pb` for the command in each test.

use prost::encoding::{encode_key, encode_varint, WireType};
use serde_json::json;

use super::*;

const NAMESPACE_TEAM: &[u8] = include_bytes!("testdata/create-namespace-team.pb");
const DEPLOYMENT_WEB: &[u8] = include_bytes!("testdata/create-deployment-web.pb");
const DEPLOYMENT_ZERO: &[u8] = include_bytes!("testdata/create-deployment-zero.pb");
const JOB_PI: &[u8] = include_bytes!("testdata/create-job-pi.pb");
const SERVICE_WEB: &[u8] = include_bytes!("testdata/create-service-web.pb");
const SERVICE_WEB_NODEPORT: &[u8] = include_bytes!("testdata/create-service-web-nodeport.pb");
const SERVICE_WEB_NODEPORT_30080: &[u8] =
    include_bytes!("testdata/create-service-web-nodeport-30080.pb");
const SERVICE_NONE: &[u8] = include_bytes!("testdata/create-service-none.pb");
const SERVICE_EXT: &[u8] = include_bytes!("testdata/create-service-ext.pb");
const REAL: [&[u8]; 9] = [
    NAMESPACE_TEAM,
    DEPLOYMENT_WEB,
    DEPLOYMENT_ZERO,
    JOB_PI,
    SERVICE_WEB,
    SERVICE_WEB_NODEPORT,
    SERVICE_WEB_NODEPORT_30080,
    SERVICE_NONE,
    SERVICE_EXT,
];

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

/// The Service `kubectl create service` posts for `name` with `spec` (its status,
/// sent as `{loadBalancer: {}}`, reads as nothing).
fn created_service(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    })
}

#[test]
fn kubectl_create_service_clusterip_reads_as_its_json() {
    // kubectl create service clusterip web --tcp=80:8080
    let port = json!({"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080});
    let spec = json!({"ports": [port], "selector": {"app": "web"}, "type": "ClusterIP"});
    assert_eq!(to_json(SERVICE_WEB).unwrap(), created_service("web", spec));
}

#[test]
fn kubectl_create_service_nodeport_reads_as_its_json() {
    // kubectl create service nodeport web --tcp=80:8080: nodePort 0 is left out.
    let port = json!({"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080});
    let spec = json!({"ports": [port], "selector": {"app": "web"}, "type": "NodePort"});
    assert_eq!(
        to_json(SERVICE_WEB_NODEPORT).unwrap(),
        created_service("web", spec)
    );

    // kubectl create service nodeport web --tcp=80:8080 --node-port=30080
    let port = json!({
        "name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080,
    });
    let spec = json!({"ports": [port], "selector": {"app": "web"}, "type": "NodePort"});
    assert_eq!(
        to_json(SERVICE_WEB_NODEPORT_30080).unwrap(),
        created_service("web", spec)
    );
}

#[test]
fn kubectl_create_service_headless_reads_as_its_json() {
    // kubectl create service clusterip none --clusterip=None
    let spec = json!({"selector": {"app": "none"}, "clusterIP": "None", "type": "ClusterIP"});
    assert_eq!(
        to_json(SERVICE_NONE).unwrap(),
        created_service("none", spec)
    );
}

#[test]
fn kubectl_create_service_externalname_reads_as_its_json() {
    // kubectl create service externalname ext --external-name=example.com
    let spec = json!({
        "selector": {"app": "ext"}, "type": "ExternalName", "externalName": "example.com",
    });
    assert_eq!(to_json(SERVICE_EXT).unwrap(), created_service("ext", spec));
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
fn service_fields_kubectl_create_leaves_out_read_as_kubernetes_writes_them() {
    let port = message(
        1,
        &[
            bytes(1, b"http"),
            bytes(2, b"TCP"),
            bytes(6, b"kubernetes.io/h2c"),
            varint(3, 80),
            // A named targetPort, and a zero nodePort (left out).
            message(4, &[varint(1, 1), varint(2, 0), bytes(3, b"web")]),
            varint(5, 0),
        ],
    );
    // A zero targetPort means unset, as in Kubernetes' defaulting: left out.
    let bare_port = message(
        1,
        &[varint(3, 81), message(4, &[varint(1, 0), varint(2, 0)])],
    );
    let spec = message(
        2,
        &[
            port,
            bare_port,
            bytes(18, b"10.96.0.10"),
            bytes(4, b"LoadBalancer"),
            bytes(7, b"ClientIP"),
            bytes(11, b"Local"),
            varint(12, 31000),
            varint(13, 1),
            message(14, &[message(1, &[varint(1, 600)])]),
            bytes(19, b"IPv4"),
            bytes(17, b"SingleStack"),
            // Pointers: kept when written, false and empty included.
            varint(20, 0),
            bytes(22, b""),
        ],
    );
    let ingress = message(
        1,
        &[
            bytes(1, b"192.0.2.1"),
            bytes(3, b"VIP"),
            message(4, &[varint(1, 80), bytes(2, b"TCP")]),
        ],
    );
    let condition = message(
        2,
        &[
            bytes(1, b"Ready"),
            bytes(2, b"True"),
            message(4, &[varint(1, 1_700_000_000)]),
            bytes(5, b"Ok"),
            bytes(6, b""),
        ],
    );
    let status = message(3, &[message(1, &[ingress]), condition]);
    let body = body(
        "v1",
        "Service",
        &[message(1, &[bytes(1, b"s")]), spec, status],
    );

    let expected = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {
            "ports": [
                {
                    "name": "http", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c",
                    "port": 80, "targetPort": "web",
                },
                {"port": 81},
            ],
            "clusterIPs": ["10.96.0.10"],
            "type": "LoadBalancer",
            "sessionAffinity": "ClientIP",
            "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 31000,
            "publishNotReadyAddresses": true,
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "allocateLoadBalancerNodePorts": false,
            "internalTrafficPolicy": "",
        },
        "status": {
            "loadBalancer": {
                "ingress": [
                    {"ip": "192.0.2.1", "ipMode": "VIP", "ports": [{"port": 80, "protocol": "TCP"}]},
                ],
            },
            "conditions": [{
                "type": "Ready", "status": "True",
                "lastTransitionTime": "2023-11-14T22:13:20Z", "reason": "Ok", "message": "",
            }],
        },
    });
    assert_eq!(to_json(&body).unwrap(), expected);
}

#[test]
fn what_is_not_a_readable_object_is_an_error() {
    assert!(to_json(b"{\"kind\": \"Namespace\"}").is_err());
    let config_map = body("v1", "ConfigMap", &[message(1, &[bytes(1, b"c")])]);
    assert!(to_json(&config_map)
        .unwrap_err()
        .starts_with("v1 ConfigMap: kubelab does not read"));
    // A string field sent as a varint.
    let wrong = body("v1", "Namespace", &[message(1, &[varint(1, 7)])]);
    assert!(to_json(&wrong).is_err());
}

#[test]
fn damaged_bodies_fail_without_panicking() {
    for real in REAL {
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
