//! Our API objects in Kubernetes' own shape (`k8s-openapi` types), for `-o json|yaml`:
//! what scripts written against kubectl's output read. Owns the conversion only; it
//! prints nothing and must not reach the API.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubelab_proto::v1 as api;
use kubelab_proto::v1::container_state::State;

use super::values::memory_quantity;

pub fn time(ms: i64) -> Option<Time> {
    (ms > 0)
        .then(|| {
            k8s_openapi::jiff::Timestamp::from_millisecond(ms)
                .ok()
                .map(Time)
        })
        .flatten()
}

/// A string Kubernetes leaves out when it is empty.
fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

pub fn meta(m: &api::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: Some(m.name.clone()),
        namespace: non_empty(&m.namespace),
        uid: Some(m.uid.clone()),
        resource_version: Some(m.resource_version.to_string()),
        creation_timestamp: time(m.creation_timestamp_ms),
        deletion_timestamp: time(m.deletion_timestamp_ms),
        deletion_grace_period_seconds: (m.deletion_timestamp_ms > 0)
            .then_some(m.deletion_grace_period_seconds),
        labels: (!m.labels.is_empty()).then(|| m.labels.clone().into_iter().collect()),
        ..Default::default()
    }
}

fn quantities(cpu_millis: i64, memory: i64) -> Option<BTreeMap<String, Quantity>> {
    let mut m = BTreeMap::new();
    if cpu_millis > 0 {
        m.insert("cpu".into(), Quantity(format!("{cpu_millis}m")));
    }
    if memory > 0 {
        m.insert("memory".into(), Quantity(memory_quantity(memory)));
    }
    (!m.is_empty()).then_some(m)
}

fn state(s: &Option<api::ContainerState>) -> Option<k8s::ContainerState> {
    let s = s.as_ref()?.state.as_ref()?;
    Some(match s {
        State::Waiting(w) => k8s::ContainerState {
            waiting: Some(k8s::ContainerStateWaiting {
                reason: Some(w.reason.clone()),
                message: non_empty(&w.message),
            }),
            ..Default::default()
        },
        State::Running(r) => k8s::ContainerState {
            running: Some(k8s::ContainerStateRunning {
                started_at: time(r.started_at_ms),
            }),
            ..Default::default()
        },
        State::Terminated(t) => k8s::ContainerState {
            terminated: Some(k8s::ContainerStateTerminated {
                exit_code: t.exit_code,
                signal: (t.signal != 0).then_some(t.signal),
                reason: non_empty(&t.reason),
                message: non_empty(&t.message),
                started_at: time(t.started_at_ms),
                finished_at: time(t.finished_at_ms),
                container_id: (!t.container_id.is_empty())
                    .then(|| format!("kubelab://{}", t.container_id)),
            }),
            ..Default::default()
        },
    })
}

/// A container of our pod spec in Kubernetes' shape.
fn k8s_container(c: &api::Container) -> k8s::Container {
    let r = c.resources.unwrap_or_default();
    k8s::Container {
        name: c.name.clone(),
        image: Some(c.image.clone()),
        command: (!c.command.is_empty()).then(|| c.command.clone()),
        args: (!c.args.is_empty()).then(|| c.args.clone()),
        env: (!c.env.is_empty()).then(|| {
            c.env
                .iter()
                .map(|e| k8s::EnvVar {
                    name: e.name.clone(),
                    value: Some(e.value.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        working_dir: non_empty(&c.working_dir),
        image_pull_policy: Some(c.image_pull_policy.clone()),
        resources: Some(k8s::ResourceRequirements {
            requests: quantities(r.cpu_request_millis, r.memory_request_bytes),
            limits: quantities(r.cpu_limit_millis, r.memory_limit_bytes),
            ..Default::default()
        }),
        volume_mounts: (!c.volume_mounts.is_empty()).then(|| {
            c.volume_mounts
                .iter()
                .map(|m| k8s::VolumeMount {
                    name: m.name.clone(),
                    mount_path: m.mount_path.clone(),
                    read_only: m.read_only.then_some(true),
                    ..Default::default()
                })
                .collect()
        }),
        liveness_probe: c.liveness_probe.as_ref().map(k8s_probe),
        readiness_probe: c.readiness_probe.as_ref().map(k8s_probe),
        startup_probe: c.startup_probe.as_ref().map(k8s_probe),
        ..Default::default()
    }
}

fn k8s_probe(p: &api::Probe) -> k8s::Probe {
    use api::probe::Handler;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut probe = k8s::Probe {
        initial_delay_seconds: Some(p.initial_delay_seconds),
        period_seconds: Some(p.period_seconds),
        timeout_seconds: Some(p.timeout_seconds),
        success_threshold: Some(p.success_threshold),
        failure_threshold: Some(p.failure_threshold),
        ..Default::default()
    };
    match &p.handler {
        Some(Handler::Exec(e)) => {
            probe.exec = Some(k8s::ExecAction {
                command: Some(e.command.clone()),
            })
        }
        Some(Handler::HttpGet(h)) => {
            probe.http_get = Some(k8s::HTTPGetAction {
                path: Some(h.path.clone()),
                port: IntOrString::Int(h.port),
                host: non_empty(&h.host),
                scheme: Some("HTTP".into()),
                ..Default::default()
            })
        }
        Some(Handler::TcpSocket(t)) => {
            probe.tcp_socket = Some(k8s::TCPSocketAction {
                port: IntOrString::Int(t.port),
                host: non_empty(&t.host),
            })
        }
        None => {}
    }
    probe
}

fn k8s_volume(v: &api::Volume) -> k8s::Volume {
    use api::volume::Source;
    let mut volume = k8s::Volume {
        name: v.name.clone(),
        ..Default::default()
    };
    match &v.source {
        Some(Source::EmptyDir(e)) => {
            volume.empty_dir = Some(k8s::EmptyDirVolumeSource {
                medium: non_empty(&e.medium),
                size_limit: (e.size_limit_bytes > 0)
                    .then(|| Quantity(memory_quantity(e.size_limit_bytes))),
                ..Default::default()
            })
        }
        Some(Source::HostPath(h)) => {
            volume.host_path = Some(k8s::HostPathVolumeSource {
                path: h.path.clone(),
                type_: non_empty(&h.r#type),
            })
        }
        None => {}
    }
    volume
}

fn k8s_container_status(s: &api::ContainerStatus) -> k8s::ContainerStatus {
    k8s::ContainerStatus {
        name: s.name.clone(),
        image: s.image.clone(),
        image_id: s.image_id.clone(),
        container_id: (!s.container_id.is_empty()).then(|| format!("kubelab://{}", s.container_id)),
        ready: s.ready,
        restart_count: s.restart_count,
        state: state(&s.state),
        last_state: state(&s.last_state),
        started: Some(
            s.started
                && matches!(
                    s.state.as_ref().and_then(|s| s.state.as_ref()),
                    Some(State::Running(_))
                ),
        ),
        ..Default::default()
    }
}

/// Our pod in Kubernetes' shape.
pub fn to_k8s_pod(pod: &api::Pod) -> k8s::Pod {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let statuses = |list: &[api::ContainerStatus]| {
        (!list.is_empty()).then(|| list.iter().map(k8s_container_status).collect())
    };
    k8s::Pod {
        metadata: meta(&pod.metadata.clone().unwrap_or_default()),
        spec: Some(k8s::PodSpec {
            containers: spec.containers.iter().map(k8s_container).collect(),
            init_containers: (!spec.init_containers.is_empty())
                .then(|| spec.init_containers.iter().map(k8s_container).collect()),
            volumes: (!spec.volumes.is_empty())
                .then(|| spec.volumes.iter().map(k8s_volume).collect()),
            node_name: non_empty(&spec.node_name),
            host_network: spec.host_network.then_some(true),
            restart_policy: Some(spec.restart_policy.clone()),
            termination_grace_period_seconds: Some(spec.termination_grace_period_seconds),
            ..Default::default()
        }),
        status: Some(k8s::PodStatus {
            phase: Some(status.phase.clone()),
            pod_ip: non_empty(&status.pod_ip),
            host_ip: non_empty(&status.host_ip),
            start_time: time(status.start_time_ms),
            reason: non_empty(&status.reason),
            message: non_empty(&status.message),
            container_statuses: statuses(&status.container_statuses),
            init_container_statuses: statuses(&status.init_container_statuses),
            conditions: (!status.conditions.is_empty()).then(|| {
                status
                    .conditions
                    .iter()
                    .map(|c| k8s::PodCondition {
                        type_: c.r#type.clone(),
                        status: c.status.clone(),
                        last_transition_time: time(c.last_transition_time_ms),
                        reason: non_empty(&c.reason),
                        message: non_empty(&c.message),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }),
    }
}

/// Our node in Kubernetes' shape.
pub fn to_k8s_node(node: &api::Node) -> k8s::Node {
    let status = node.status.clone().unwrap_or_default();
    let res = |r: Option<api::NodeResources>| {
        let r = r.unwrap_or_default();
        let mut m = quantities(r.cpu_millis, r.memory_bytes).unwrap_or_default();
        m.insert("pods".into(), Quantity(r.pods.to_string()));
        Some(m)
    };
    let ready = kubelab_proto::node_is_ready(node);
    k8s::Node {
        metadata: meta(&node.metadata.clone().unwrap_or_default()),
        spec: Some(k8s::NodeSpec {
            pod_cidr: node
                .spec
                .as_ref()
                .map(|s| s.pod_cidr.clone())
                .filter(|c| !c.is_empty()),
            unschedulable: node.spec.as_ref().map(|s| s.unschedulable).filter(|u| *u),
            ..Default::default()
        }),
        status: Some(k8s::NodeStatus {
            capacity: res(status.capacity),
            allocatable: res(status.allocatable),
            conditions: Some(vec![k8s::NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "Unknown" }.into(),
                last_heartbeat_time: time(status.last_heartbeat_ms),
                reason: Some(
                    if ready {
                        "KubeletReady"
                    } else {
                        "NodeStatusUnknown"
                    }
                    .into(),
                ),
                ..Default::default()
            }]),
            node_info: Some(k8s::NodeSystemInfo {
                kernel_version: status.kernel_version.clone(),
                os_image: status.os_image.clone(),
                operating_system: "linux".into(),
                architecture: std::env::consts::ARCH.into(),
                kubelet_version: format!("kubelab-{}", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Our namespace in Kubernetes' shape.
pub fn to_k8s_namespace(ns: &api::Namespace) -> k8s::Namespace {
    k8s::Namespace {
        metadata: meta(&ns.metadata.clone().unwrap_or_default()),
        status: ns.status.as_ref().map(|s| k8s::NamespaceStatus {
            phase: Some(s.phase.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}
