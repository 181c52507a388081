//! Kubernetes' JSON shapes (`k8s-openapi` types) read into kubelab's messages. Pure: no
//! I/O, no validation beyond what a conversion needs (quantities parsed, named ports
//! refused).

use std::collections::HashMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::time_ms;
use crate::v1 as api;

/// A value that has no place in kubelab's objects (a quantity past i64, a named port...),
/// worded as kube-apiserver words the field's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

impl From<String> for ConvertError {
    fn from(s: String) -> Self {
        ConvertError(s)
    }
}

impl From<&str> for ConvertError {
    fn from(s: &str) -> Self {
        ConvertError(s.to_string())
    }
}

fn map(m: Option<std::collections::BTreeMap<String, String>>) -> HashMap<String, String> {
    m.unwrap_or_default().into_iter().collect()
}

/// Metadata as kubelab keeps it; what the apiserver owns (uid, timestamps, the
/// resource version) is read too, so an update can be checked against it.
pub fn meta_from_k8s(m: ObjectMeta) -> Result<api::ObjectMeta, ConvertError> {
    let resource_version = match m.resource_version.as_deref() {
        None | Some("") => 0,
        Some(v) => v.parse().map_err(|_| {
            ConvertError(format!(
                "metadata.resourceVersion: Invalid value: {v:?}: must be a resource version this server returned"
            ))
        })?,
    };
    Ok(api::ObjectMeta {
        name: m.name.unwrap_or_default(),
        generate_name: m.generate_name.unwrap_or_default(),
        namespace: m.namespace.unwrap_or_default(),
        uid: m.uid.unwrap_or_default(),
        resource_version,
        generation: m.generation.unwrap_or(0),
        creation_timestamp_ms: time_ms(&m.creation_timestamp),
        deletion_timestamp_ms: time_ms(&m.deletion_timestamp),
        deletion_grace_period_seconds: m.deletion_grace_period_seconds.unwrap_or(0),
        labels: map(m.labels),
        annotations: map(m.annotations),
        managed_fields: m
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .map(|e| api::ManagedFieldsEntry {
                manager: e.manager.unwrap_or_default(),
                operation: e.operation.unwrap_or_default(),
                api_version: e.api_version.unwrap_or_default(),
                time_ms: time_ms(&e.time),
                fields_v1: e.fields_v1.map(|f| f.0.to_string()).unwrap_or_default(),
                subresource: e.subresource.unwrap_or_default(),
            })
            .collect(),
        owner_references: m
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .map(|o| api::OwnerReference {
                api_version: o.api_version,
                kind: o.kind,
                name: o.name,
                uid: o.uid,
                controller: o.controller.unwrap_or(false),
                block_owner_deletion: o.block_owner_deletion.unwrap_or(false),
            })
            .collect(),
        finalizers: m.finalizers.unwrap_or_default(),
    })
}

/// A Kubernetes pod as kubelab's; its status is left out (clients do not write it).
pub fn pod_from_k8s(pod: k8s::Pod) -> Result<api::Pod, ConvertError> {
    let metadata = meta_from_k8s(pod.metadata)?;
    let spec = pod_spec_from_k8s(pod.spec.ok_or("spec: Required value")?)?;
    Ok(api::Pod {
        metadata: Some(metadata),
        spec: Some(spec),
        status: None,
    })
}

fn pod_spec_from_k8s(spec: k8s::PodSpec) -> Result<api::PodSpec, ConvertError> {
    let containers = spec
        .containers
        .into_iter()
        .map(container)
        .collect::<Result<_, _>>()?;
    let init_containers = spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .map(container)
        .collect::<Result<_, _>>()?;
    let volumes = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(volume)
        .collect::<Result<_, _>>()?;
    Ok(api::PodSpec {
        containers,
        init_containers,
        volumes,
        host_network: spec.host_network.unwrap_or(false),
        host_pid: spec.host_pid.unwrap_or(false),
        host_ipc: spec.host_ipc.unwrap_or(false),
        dns_policy: spec.dns_policy.unwrap_or_default(),
        dns_config: spec.dns_config.map(|c| api::PodDnsConfig {
            nameservers: c.nameservers.unwrap_or_default(),
            searches: c.searches.unwrap_or_default(),
            options: c
                .options
                .unwrap_or_default()
                .into_iter()
                .map(|o| api::PodDnsConfigOption {
                    name: o.name.unwrap_or_default(),
                    value: o.value,
                })
                .collect(),
        }),
        hostname: spec.hostname.unwrap_or_default(),
        subdomain: spec.subdomain.unwrap_or_default(),
        enable_service_links: spec.enable_service_links,
        security_context: spec.security_context.map(|p| api::SecurityContext {
            run_as_user: p.run_as_user,
            run_as_group: p.run_as_group,
            run_as_non_root: p.run_as_non_root,
            seccomp_profile: p.seccomp_profile.map(seccomp),
            app_armor_profile: p.app_armor_profile.map(app_armor),
            se_linux_options: p.se_linux_options.map(se_linux),
            sysctls: p
                .sysctls
                .unwrap_or_default()
                .into_iter()
                .map(|s| api::Sysctl {
                    name: s.name,
                    value: s.value,
                })
                .collect(),
            ..Default::default()
        }),
        node_name: spec.node_name.unwrap_or_default(),
        restart_policy: spec.restart_policy.unwrap_or_default(),
        termination_grace_period_seconds: spec.termination_grace_period_seconds.unwrap_or(30),
        node_selector: spec.node_selector.unwrap_or_default().into_iter().collect(),
        tolerations: spec
            .tolerations
            .unwrap_or_default()
            .into_iter()
            .map(|t| api::Toleration {
                key: t.key.unwrap_or_default(),
                operator: t.operator.unwrap_or_default(),
                value: t.value.unwrap_or_default(),
                effect: t.effect.unwrap_or_default(),
                toleration_seconds: t.toleration_seconds,
            })
            .collect(),
    })
}

fn container(c: k8s::Container) -> Result<api::Container, ConvertError> {
    let resources = c.resources.unwrap_or_default();
    let get = |m: &Option<std::collections::BTreeMap<String, Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    let field =
        |kind: &str, resource: &str| format!("container {:?}: resources.{kind}.{resource}", c.name);
    let cpu =
        |kind: &str, q: Option<String>| q.map(|q| parse_cpu(&field(kind, "cpu"), &q)).transpose();
    let mem = |kind: &str, q: Option<String>| {
        q.map(|q| parse_memory(&field(kind, "memory"), &q))
            .transpose()
    };
    let mut r = api::ResourceRequirements {
        cpu_request_millis: cpu("requests", get(&resources.requests, "cpu"))?.unwrap_or(0),
        memory_request_bytes: mem("requests", get(&resources.requests, "memory"))?.unwrap_or(0),
        cpu_limit_millis: cpu("limits", get(&resources.limits, "cpu"))?.unwrap_or(0),
        memory_limit_bytes: mem("limits", get(&resources.limits, "memory"))?.unwrap_or(0),
    };
    // As in Kubernetes, a limit without a request makes the request equal to the limit.
    if r.cpu_request_millis == 0 {
        r.cpu_request_millis = r.cpu_limit_millis;
    }
    if r.memory_request_bytes == 0 {
        r.memory_request_bytes = r.memory_limit_bytes;
    }
    let name = c.name;
    let probe = |p: Option<k8s::Probe>, kind: &str| {
        p.map(|p| probe(p).map_err(|e| format!("container {name:?}: {kind}: {e}")))
            .transpose()
    };
    let security_context = c.security_context.map(|s| {
        let caps = s.capabilities.unwrap_or_default();
        api::SecurityContext {
            run_as_user: s.run_as_user,
            run_as_group: s.run_as_group,
            run_as_non_root: s.run_as_non_root,
            read_only_root_filesystem: s.read_only_root_filesystem.unwrap_or(false),
            capabilities_add: caps.add.unwrap_or_default(),
            capabilities_drop: caps.drop.unwrap_or_default(),
            allow_privilege_escalation: s.allow_privilege_escalation,
            privileged: s.privileged.unwrap_or(false),
            seccomp_profile: s.seccomp_profile.map(seccomp),
            app_armor_profile: s.app_armor_profile.map(app_armor),
            se_linux_options: s.se_linux_options.map(se_linux),
            proc_mount: s.proc_mount.unwrap_or_default(),
            sysctls: Vec::new(),
        }
    });
    Ok(api::Container {
        security_context,
        liveness_probe: probe(c.liveness_probe, "livenessProbe")?,
        readiness_probe: probe(c.readiness_probe, "readinessProbe")?,
        startup_probe: probe(c.startup_probe, "startupProbe")?,
        image: c.image.unwrap_or_default(),
        command: c.command.unwrap_or_default(),
        args: c.args.unwrap_or_default(),
        env: c
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|e| api::EnvVar {
                name: e.name,
                value: e.value.unwrap_or_default(),
            })
            .collect(),
        working_dir: c.working_dir.unwrap_or_default(),
        resources: Some(r),
        image_pull_policy: c.image_pull_policy.unwrap_or_default(),
        volume_mounts: c
            .volume_mounts
            .unwrap_or_default()
            .into_iter()
            .map(|m| api::VolumeMount {
                name: m.name,
                mount_path: m.mount_path,
                read_only: m.read_only.unwrap_or(false),
            })
            .collect(),
        ports: c
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| api::ContainerPort {
                name: p.name.unwrap_or_default(),
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                protocol: p.protocol.unwrap_or_default(),
                host_ip: p.host_ip.unwrap_or_default(),
            })
            .collect(),
        name,
    })
}

fn seccomp(p: k8s::SeccompProfile) -> api::SeccompProfile {
    api::SeccompProfile {
        r#type: p.type_,
        localhost_profile: p.localhost_profile.unwrap_or_default(),
    }
}

fn app_armor(p: k8s::AppArmorProfile) -> api::AppArmorProfile {
    api::AppArmorProfile {
        r#type: p.type_,
        localhost_profile: p.localhost_profile.unwrap_or_default(),
    }
}

fn se_linux(o: k8s::SELinuxOptions) -> api::SeLinuxOptions {
    api::SeLinuxOptions {
        user: o.user.unwrap_or_default(),
        role: o.role.unwrap_or_default(),
        r#type: o.type_.unwrap_or_default(),
        level: o.level.unwrap_or_default(),
    }
}

fn volume(v: k8s::Volume) -> Result<api::Volume, ConvertError> {
    use api::volume::Source;
    let source = if let Some(e) = v.empty_dir {
        Source::EmptyDir(api::EmptyDirVolumeSource {
            medium: e.medium.unwrap_or_default(),
            size_limit_bytes: e
                .size_limit
                .map(|q| parse_memory(&format!("volume {:?}: emptyDir.sizeLimit", v.name), &q.0))
                .transpose()?
                .unwrap_or(0),
        })
    } else if let Some(h) = v.host_path {
        Source::HostPath(api::HostPathVolumeSource {
            path: h.path,
            r#type: h.type_.unwrap_or_default(),
        })
    } else {
        return Err(ConvertError(format!(
            "volume {:?}: only emptyDir and hostPath volumes are supported",
            v.name
        )));
    };
    Ok(api::Volume {
        name: v.name,
        source: Some(source),
    })
}

/// A probe's port must be a number here (kubelab does not resolve named ports).
fn port(
    field: &str,
    p: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
) -> Result<i32, ConvertError> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match p {
        IntOrString::Int(n) if (1..=65535).contains(n) => Ok(*n),
        IntOrString::Int(n) => Err(ConvertError(format!(
            "{field}: Invalid value: {n}: must be between 1 and 65535, inclusive"
        ))),
        IntOrString::String(s) => Err(ConvertError(format!(
            "port {s:?}: named ports are not supported; give the port number"
        ))),
    }
}

fn probe(p: k8s::Probe) -> Result<api::Probe, ConvertError> {
    use api::probe::Handler;
    let handler = if let Some(e) = p.exec {
        Handler::Exec(api::ExecAction {
            command: e.command.unwrap_or_default(),
        })
    } else if let Some(h) = p.http_get {
        Handler::HttpGet(api::HttpGetAction {
            path: h.path.unwrap_or_default(),
            port: port("httpGet.port", &h.port)?,
            host: h.host.unwrap_or_default(),
            scheme: h.scheme.unwrap_or_default(),
        })
    } else if let Some(t) = p.tcp_socket {
        Handler::TcpSocket(api::TcpSocketAction {
            port: port("tcpSocket.port", &t.port)?,
            host: t.host.unwrap_or_default(),
        })
    } else {
        return Err("a probe needs exec, httpGet or tcpSocket (grpc is not supported)".into());
    };
    Ok(api::Probe {
        handler: Some(handler),
        initial_delay_seconds: p.initial_delay_seconds.unwrap_or(0),
        period_seconds: p.period_seconds.unwrap_or(0),
        timeout_seconds: p.timeout_seconds.unwrap_or(0),
        success_threshold: p.success_threshold.unwrap_or(0),
        failure_threshold: p.failure_threshold.unwrap_or(0),
    })
}

/// A CPU quantity in millicores (`500m` → 500, `2` → 2000, `0.5` → 500), by Kubernetes'
/// grammar (crate::quantity). `what` names the field in the error.
pub fn parse_cpu(what: &str, q: &str) -> Result<i64, String> {
    quantity_in(what, q, crate::quantity::parse_millis(q))
}

/// A memory quantity in bytes (`64Mi` → 67108864, `1G` → 10^9, `129e6` → 129000000).
pub fn parse_memory(what: &str, q: &str) -> Result<i64, String> {
    quantity_in(what, q, crate::quantity::parse_units(q))
}

fn quantity_in(
    what: &str,
    q: &str,
    parsed: Result<i64, crate::quantity::QuantityError>,
) -> Result<i64, String> {
    match parsed {
        Ok(v) if v < 0 => Err(format!(
            "{what}: Invalid value: {q:?}: must be greater than or equal to 0"
        )),
        Ok(v) => Ok(v),
        Err(e) => Err(format!("{what}: Invalid value: {q:?}: {e}")),
    }
}

fn container_state(s: Option<k8s::ContainerState>) -> Option<api::ContainerState> {
    use api::container_state::State;
    let s = s?;
    let state = if let Some(w) = s.waiting {
        State::Waiting(api::ContainerStateWaiting {
            reason: w.reason.unwrap_or_default(),
            message: w.message.unwrap_or_default(),
        })
    } else if let Some(r) = s.running {
        State::Running(api::ContainerStateRunning {
            started_at_ms: time_ms(&r.started_at),
        })
    } else if let Some(t) = s.terminated {
        State::Terminated(api::ContainerStateTerminated {
            exit_code: t.exit_code,
            signal: t.signal.unwrap_or(0),
            reason: t.reason.unwrap_or_default(),
            message: t.message.unwrap_or_default(),
            started_at_ms: time_ms(&t.started_at),
            finished_at_ms: time_ms(&t.finished_at),
            container_id: strip_runtime(t.container_id),
        })
    } else {
        return None;
    };
    Some(api::ContainerState { state: Some(state) })
}

/// `kubelab://ID` (how container ids read in Kubernetes' shape) back to `ID`.
fn strip_runtime(id: Option<String>) -> String {
    let id = id.unwrap_or_default();
    id.strip_prefix("kubelab://")
        .map(String::from)
        .unwrap_or(id)
}

fn container_status(s: k8s::ContainerStatus) -> api::ContainerStatus {
    api::ContainerStatus {
        name: s.name,
        image: s.image,
        image_id: s.image_id,
        container_id: strip_runtime(s.container_id),
        ready: s.ready,
        restart_count: s.restart_count,
        state: container_state(s.state),
        pid: 0,
        last_state: container_state(s.last_state),
        started: s.started.unwrap_or(false),
    }
}

/// A pod's status in Kubernetes' shape as kubelab's (what a node writes).
pub fn pod_status_from_k8s(status: Option<k8s::PodStatus>) -> Option<api::PodStatus> {
    let s = status?;
    Some(api::PodStatus {
        phase: s.phase.unwrap_or_default(),
        pod_ip: s.pod_ip.unwrap_or_default(),
        host_ip: s.host_ip.unwrap_or_default(),
        start_time_ms: time_ms(&s.start_time),
        reason: s.reason.unwrap_or_default(),
        message: s.message.unwrap_or_default(),
        container_statuses: s
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .map(container_status)
            .collect(),
        init_container_statuses: s
            .init_container_statuses
            .unwrap_or_default()
            .into_iter()
            .map(container_status)
            .collect(),
        conditions: s
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| api::PodCondition {
                r#type: c.type_,
                status: c.status,
                last_transition_time_ms: time_ms(&c.last_transition_time),
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
            })
            .collect(),
    })
}

/// A Kubernetes namespace as kubelab's (metadata only: kubelab keeps no finalizers).
pub fn namespace_from_k8s(ns: k8s::Namespace) -> Result<api::Namespace, ConvertError> {
    Ok(api::Namespace {
        metadata: Some(meta_from_k8s(ns.metadata)?),
        status: None,
    })
}

/// A Kubernetes node as kubelab's: what a client may change (labels, annotations,
/// `unschedulable`, taints); its status comes from its agent only.
pub fn node_from_k8s(node: k8s::Node) -> Result<api::Node, ConvertError> {
    let spec = node.spec.unwrap_or_default();
    Ok(api::Node {
        metadata: Some(meta_from_k8s(node.metadata)?),
        spec: Some(api::NodeSpec {
            pod_cidr: spec.pod_cidr.unwrap_or_default(),
            unschedulable: spec.unschedulable.unwrap_or(false),
            taints: spec
                .taints
                .unwrap_or_default()
                .into_iter()
                .map(|t| api::Taint {
                    key: t.key,
                    value: t.value.unwrap_or_default(),
                    effect: t.effect,
                    time_added_ms: super::time_ms(&t.time_added),
                })
                .collect(),
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_cpu("cpu", "250m"), Ok(250));
        assert_eq!(parse_cpu("cpu", "1.5"), Ok(1500));
        assert_eq!(parse_memory("memory", "64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("memory", "1G"), Ok(1_000_000_000));
        assert!(parse_memory("memory", "lots").is_err());
        assert_eq!(
            parse_memory("memory", "8Ei").unwrap_err(),
            "memory: Invalid value: \"8Ei\": must be less than or equal to 9223372036854775807"
        );
        assert!(parse_cpu("cpu", "-1")
            .unwrap_err()
            .contains("greater than or equal to 0"));
    }
}
