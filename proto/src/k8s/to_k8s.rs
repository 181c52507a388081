//! kubelab's objects in Kubernetes' shape, as kube-apiserver returns them: every field
//! kubelab keeps, and the defaults Kubernetes fills in for the fields kubelab fixes
//! (`dnsPolicy: ClusterFirst`, `schedulerName: default-scheduler`, ...), so that what a
//! client reads back is what it would read from a real cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{defaults, memory_quantity, non_empty, time};
use crate::v1 as api;
use crate::v1::container_state::State;

fn map(m: &std::collections::HashMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn list<T, U>(items: &[T], f: impl Fn(&T) -> U) -> Option<Vec<U>> {
    (!items.is_empty()).then(|| items.iter().map(f).collect())
}

pub fn meta(m: &api::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: Some(m.name.clone()),
        generate_name: non_empty(&m.generate_name),
        namespace: non_empty(&m.namespace),
        uid: non_empty(&m.uid),
        resource_version: (m.resource_version > 0).then(|| m.resource_version.to_string()),
        generation: (m.generation > 0).then_some(m.generation),
        creation_timestamp: time(m.creation_timestamp_ms),
        deletion_timestamp: time(m.deletion_timestamp_ms),
        deletion_grace_period_seconds: (m.deletion_timestamp_ms > 0)
            .then_some(m.deletion_grace_period_seconds),
        labels: map(&m.labels),
        annotations: map(&m.annotations),
        managed_fields: list(&m.managed_fields, |e| ManagedFieldsEntry {
            api_version: Some(e.api_version.clone()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: serde_json::from_str(&e.fields_v1).ok().map(FieldsV1),
            manager: Some(e.manager.clone()),
            operation: Some(e.operation.clone()),
            subresource: non_empty(&e.subresource),
            time: time(e.time_ms),
        }),
        owner_references: list(&m.owner_references, |o| OwnerReference {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
            controller: o.controller.then_some(true),
            block_owner_deletion: o.block_owner_deletion.then_some(true),
        }),
        finalizers: list(&m.finalizers, Clone::clone),
        ..Default::default()
    }
}

fn quantities(cpu_millis: i64, memory: i64) -> Option<BTreeMap<String, Quantity>> {
    let mut m = BTreeMap::new();
    if cpu_millis > 0 {
        let cpu = if cpu_millis % 1000 == 0 {
            (cpu_millis / 1000).to_string()
        } else {
            format!("{cpu_millis}m")
        };
        m.insert("cpu".into(), Quantity(cpu));
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
                reason: non_empty(&w.reason),
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
                container_id: container_id(&t.container_id),
            }),
            ..Default::default()
        },
    })
}

fn container_id(id: &str) -> Option<String> {
    (!id.is_empty()).then(|| format!("kubelab://{id}"))
}

fn security_context(s: &api::SecurityContext) -> k8s::SecurityContext {
    let capabilities =
        (!s.capabilities_add.is_empty() || !s.capabilities_drop.is_empty()).then(|| {
            k8s::Capabilities {
                add: (!s.capabilities_add.is_empty()).then(|| s.capabilities_add.clone()),
                drop: (!s.capabilities_drop.is_empty()).then(|| s.capabilities_drop.clone()),
            }
        });
    k8s::SecurityContext {
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        run_as_non_root: s.run_as_non_root,
        read_only_root_filesystem: s.read_only_root_filesystem.then_some(true),
        capabilities,
        allow_privilege_escalation: s.allow_privilege_escalation,
        privileged: s.privileged.then_some(true),
        seccomp_profile: s.seccomp_profile.as_ref().map(seccomp),
        app_armor_profile: s.app_armor_profile.as_ref().map(|p| k8s::AppArmorProfile {
            type_: p.r#type.clone(),
            localhost_profile: non_empty(&p.localhost_profile),
        }),
        se_linux_options: s.se_linux_options.as_ref().map(se_linux),
        proc_mount: non_empty(&s.proc_mount),
        ..Default::default()
    }
}

fn seccomp(p: &api::SeccompProfile) -> k8s::SeccompProfile {
    k8s::SeccompProfile {
        type_: p.r#type.clone(),
        localhost_profile: non_empty(&p.localhost_profile),
    }
}

fn se_linux(o: &api::SeLinuxOptions) -> k8s::SELinuxOptions {
    k8s::SELinuxOptions {
        user: non_empty(&o.user),
        role: non_empty(&o.role),
        type_: non_empty(&o.r#type),
        level: non_empty(&o.level),
    }
}

fn pod_security_context(s: &api::SecurityContext) -> k8s::PodSecurityContext {
    k8s::PodSecurityContext {
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        run_as_non_root: s.run_as_non_root,
        seccomp_profile: s.seccomp_profile.as_ref().map(seccomp),
        app_armor_profile: s.app_armor_profile.as_ref().map(|p| k8s::AppArmorProfile {
            type_: p.r#type.clone(),
            localhost_profile: non_empty(&p.localhost_profile),
        }),
        se_linux_options: s.se_linux_options.as_ref().map(se_linux),
        sysctls: list(&s.sysctls, |s| k8s::Sysctl {
            name: s.name.clone(),
            value: s.value.clone(),
        }),
        ..Default::default()
    }
}

/// A container of our pod spec in Kubernetes' shape.
fn container(c: &api::Container) -> k8s::Container {
    let r = c.resources.unwrap_or_default();
    k8s::Container {
        name: c.name.clone(),
        image: Some(c.image.clone()),
        command: (!c.command.is_empty()).then(|| c.command.clone()),
        args: (!c.args.is_empty()).then(|| c.args.clone()),
        env: list(&c.env, |e| k8s::EnvVar {
            name: e.name.clone(),
            value: non_empty(&e.value),
            ..Default::default()
        }),
        working_dir: non_empty(&c.working_dir),
        image_pull_policy: non_empty(&c.image_pull_policy),
        resources: Some(k8s::ResourceRequirements {
            requests: quantities(r.cpu_request_millis, r.memory_request_bytes),
            limits: quantities(r.cpu_limit_millis, r.memory_limit_bytes),
            ..Default::default()
        }),
        volume_mounts: list(&c.volume_mounts, |m| k8s::VolumeMount {
            name: m.name.clone(),
            mount_path: m.mount_path.clone(),
            read_only: m.read_only.then_some(true),
            ..Default::default()
        }),
        ports: list(&c.ports, |p| k8s::ContainerPort {
            name: non_empty(&p.name),
            container_port: p.container_port,
            host_port: (p.host_port != 0).then_some(p.host_port),
            protocol: Some(if p.protocol.is_empty() {
                "TCP".into()
            } else {
                p.protocol.clone()
            }),
            host_ip: non_empty(&p.host_ip),
        }),
        liveness_probe: c.liveness_probe.as_ref().map(probe),
        readiness_probe: c.readiness_probe.as_ref().map(probe),
        startup_probe: c.startup_probe.as_ref().map(probe),
        security_context: c.security_context.as_ref().map(security_context),
        termination_message_path: Some(defaults::TERMINATION_MESSAGE_PATH.into()),
        termination_message_policy: Some(defaults::TERMINATION_MESSAGE_POLICY.into()),
        ..Default::default()
    }
}

/// A probe, with Kubernetes' defaults for the numbers left at zero.
fn probe(p: &api::Probe) -> k8s::Probe {
    use api::probe::Handler;
    let or = |v: i32, default: i32| Some(if v > 0 { v } else { default });
    let mut probe = k8s::Probe {
        initial_delay_seconds: (p.initial_delay_seconds > 0).then_some(p.initial_delay_seconds),
        period_seconds: or(p.period_seconds, 10),
        timeout_seconds: or(p.timeout_seconds, 1),
        success_threshold: or(p.success_threshold, 1),
        failure_threshold: or(p.failure_threshold, 3),
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
                path: non_empty(&h.path),
                port: IntOrString::Int(h.port),
                host: non_empty(&h.host),
                scheme: Some(if h.scheme.is_empty() {
                    "HTTP".into()
                } else {
                    h.scheme.clone()
                }),
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

fn volume(v: &api::Volume) -> k8s::Volume {
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
                type_: Some(h.r#type.clone()),
            })
        }
        None => {}
    }
    volume
}

fn container_status(s: &api::ContainerStatus) -> k8s::ContainerStatus {
    k8s::ContainerStatus {
        name: s.name.clone(),
        image: s.image.clone(),
        image_id: s.image_id.clone(),
        container_id: container_id(&s.container_id),
        ready: s.ready,
        restart_count: s.restart_count,
        state: state(&s.state).or_else(|| {
            Some(k8s::ContainerState {
                waiting: Some(k8s::ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: None,
                }),
                ..Default::default()
            })
        }),
        last_state: state(&s.last_state).or_else(|| Some(Default::default())),
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

fn toleration(t: &api::Toleration) -> k8s::Toleration {
    k8s::Toleration {
        key: non_empty(&t.key),
        operator: non_empty(&t.operator),
        value: non_empty(&t.value),
        effect: non_empty(&t.effect),
        toleration_seconds: t.toleration_seconds,
    }
}

/// The spec in Kubernetes' shape, with the defaults of the fields kubelab fixes.
pub fn pod_spec(spec: &api::PodSpec) -> k8s::PodSpec {
    k8s::PodSpec {
        containers: spec.containers.iter().map(container).collect(),
        init_containers: list(&spec.init_containers, container),
        volumes: list(&spec.volumes, volume),
        node_name: non_empty(&spec.node_name),
        host_network: spec.host_network.then_some(true),
        host_pid: spec.host_pid.then_some(true),
        host_ipc: spec.host_ipc.then_some(true),
        restart_policy: non_empty(&spec.restart_policy),
        termination_grace_period_seconds: Some(spec.termination_grace_period_seconds),
        security_context: Some(
            spec.security_context
                .as_ref()
                .map(pod_security_context)
                .unwrap_or_default(),
        ),
        node_selector: map(&spec.node_selector),
        tolerations: Some(
            spec.tolerations
                .iter()
                .map(toleration)
                .chain(defaults::tolerations(&spec.tolerations))
                .collect(),
        ),
        dns_policy: Some(non_empty(&spec.dns_policy).unwrap_or(defaults::DNS_POLICY.into())),
        dns_config: spec.dns_config.as_ref().map(|c| k8s::PodDNSConfig {
            nameservers: (!c.nameservers.is_empty()).then(|| c.nameservers.clone()),
            searches: (!c.searches.is_empty()).then(|| c.searches.clone()),
            options: (!c.options.is_empty()).then(|| {
                c.options
                    .iter()
                    .map(|o| k8s::PodDNSConfigOption {
                        name: non_empty(&o.name),
                        value: o.value.clone(),
                    })
                    .collect()
            }),
        }),
        hostname: non_empty(&spec.hostname),
        subdomain: non_empty(&spec.subdomain),
        scheduler_name: Some(defaults::SCHEDULER_NAME.into()),
        enable_service_links: Some(spec.enable_service_links.unwrap_or(true)),
        priority: Some(0),
        preemption_policy: Some(defaults::PREEMPTION_POLICY.into()),
        ..Default::default()
    }
}

/// Our pod in Kubernetes' shape.
pub fn pod(pod: &api::Pod) -> k8s::Pod {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    k8s::Pod {
        metadata: meta(&pod.metadata.clone().unwrap_or_default()),
        status: Some(k8s::PodStatus {
            phase: non_empty(&status.phase),
            pod_ip: non_empty(&status.pod_ip),
            pod_ips: (!status.pod_ip.is_empty()).then(|| {
                vec![k8s::PodIP {
                    ip: status.pod_ip.clone(),
                }]
            }),
            host_ip: non_empty(&status.host_ip),
            host_ips: (!status.host_ip.is_empty()).then(|| {
                vec![k8s::HostIP {
                    ip: status.host_ip.clone(),
                }]
            }),
            start_time: time(status.start_time_ms),
            reason: non_empty(&status.reason),
            message: non_empty(&status.message),
            container_statuses: list(&status.container_statuses, container_status),
            init_container_statuses: list(&status.init_container_statuses, container_status),
            conditions: list(&status.conditions, |c| k8s::PodCondition {
                type_: c.r#type.clone(),
                status: c.status.clone(),
                last_transition_time: time(c.last_transition_time_ms),
                last_probe_time: None,
                reason: non_empty(&c.reason),
                message: non_empty(&c.message),
                ..Default::default()
            }),
            qos_class: Some(qos_class(&spec).into()),
            ..Default::default()
        }),
        spec: Some(pod_spec(&spec)),
    }
}

/// Kubernetes' QoS class: Guaranteed when every container's requests equal its limits
/// for cpu and memory, BestEffort when none sets any, else Burstable.
pub fn qos_class(spec: &api::PodSpec) -> &'static str {
    let all = || spec.init_containers.iter().chain(&spec.containers);
    let none = all().all(|c| {
        c.resources.is_none_or(|r| {
            r.cpu_request_millis == 0
                && r.memory_request_bytes == 0
                && r.cpu_limit_millis == 0
                && r.memory_limit_bytes == 0
        })
    });
    if none {
        return "BestEffort";
    }
    let guaranteed = all().all(|c| {
        c.resources.is_some_and(|r| {
            r.cpu_limit_millis > 0
                && r.memory_limit_bytes > 0
                && r.cpu_request_millis == r.cpu_limit_millis
                && r.memory_request_bytes == r.memory_limit_bytes
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Our node in Kubernetes' shape.
pub fn node(node: &api::Node) -> k8s::Node {
    let status = node.status.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    let res = |r: Option<api::NodeResources>| {
        let r = r.unwrap_or_default();
        let mut m = quantities(r.cpu_millis, r.memory_bytes).unwrap_or_default();
        m.insert("pods".into(), Quantity(r.pods.to_string()));
        Some(m)
    };
    let conditions = if status.conditions.is_empty() {
        let ready = crate::node_is_ready(node);
        vec![k8s::NodeCondition {
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
        }]
    } else {
        status
            .conditions
            .iter()
            .map(|c| k8s::NodeCondition {
                type_: c.r#type.clone(),
                status: c.status.clone(),
                last_heartbeat_time: time(c.last_heartbeat_time_ms),
                last_transition_time: time(c.last_transition_time_ms),
                reason: non_empty(&c.reason),
                message: non_empty(&c.message),
            })
            .collect()
    };
    let host_ip = if status.internal_ip.is_empty() {
        status.agent_endpoint.rsplit_once(':').map(|(host, _)| host)
    } else {
        Some(status.internal_ip.as_str())
    };
    k8s::Node {
        metadata: meta(&node.metadata.clone().unwrap_or_default()),
        spec: Some(k8s::NodeSpec {
            pod_cidr: non_empty(&spec.pod_cidr),
            pod_cidrs: (!spec.pod_cidr.is_empty()).then(|| vec![spec.pod_cidr.clone()]),
            unschedulable: spec.unschedulable.then_some(true),
            taints: list(&spec.taints, |t| k8s::Taint {
                key: t.key.clone(),
                value: non_empty(&t.value),
                effect: t.effect.clone(),
                time_added: super::time(t.time_added_ms),
            }),
            ..Default::default()
        }),
        status: Some(k8s::NodeStatus {
            capacity: res(status.capacity),
            allocatable: res(status.allocatable),
            conditions: Some(conditions),
            addresses: Some(
                host_ip
                    .map(|ip| k8s::NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.trim_matches(['[', ']']).to_string(),
                    })
                    .into_iter()
                    .chain(std::iter::once(k8s::NodeAddress {
                        type_: "Hostname".into(),
                        address: node
                            .metadata
                            .as_ref()
                            .map(|m| m.name.clone())
                            .unwrap_or_default(),
                    }))
                    .collect(),
            ),
            node_info: Some(k8s::NodeSystemInfo {
                kernel_version: status.kernel_version.clone(),
                os_image: status.os_image.clone(),
                operating_system: "linux".into(),
                architecture: defaults::architecture().into(),
                kubelet_version: defaults::kubelet_version(),
                kube_proxy_version: String::new(),
                container_runtime_version: "kubelab://libcontainer".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Our namespace in Kubernetes' shape.
pub fn namespace(ns: &api::Namespace) -> k8s::Namespace {
    k8s::Namespace {
        metadata: meta(&ns.metadata.clone().unwrap_or_default()),
        spec: Some(k8s::NamespaceSpec {
            finalizers: Some(vec!["kubernetes".into()]),
        }),
        status: Some(k8s::NamespaceStatus {
            phase: Some(
                ns.status
                    .as_ref()
                    .map(|s| s.phase.clone())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "Active".into()),
            ),
            ..Default::default()
        }),
    }
}

/// When an object was made, as Kubernetes' `Time` (for the tables' AGE).
pub fn created(m: &Option<api::ObjectMeta>) -> Option<Time> {
    m.as_ref().and_then(|m| time(m.creation_timestamp_ms))
}
