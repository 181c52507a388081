//! Reading Kubernetes Pod manifests (YAML) into kubelab's API objects.
//!
//! Parsing uses the ecosystem's own types (`k8s-openapi` core/v1), so a manifest that
//! works here works on a real cluster. Fields kubelab does not act on yet are named in
//! warnings rather than silently dropped. Owns no I/O beyond the text it is given.

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubelab_proto::v1 as api;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Yaml(String),
    #[error("document {0}: kind {1:?} is not supported: kubelab runs Pods only (apiVersion: v1, kind: Pod)")]
    Kind(usize, String),
    #[error("document {0}: apiVersion {1:?} is not supported for Pods: use apiVersion: v1")]
    ApiVersion(usize, String),
    #[error("document {0}: {1}")]
    Field(usize, String),
    #[error("no Pod found in the file (is it empty?)")]
    Empty,
}

/// The pods in a (possibly multi-document) YAML file, with warnings for ignored fields.
pub fn parse_pods(text: &str) -> Result<(Vec<api::Pod>, Vec<String>), ManifestError> {
    let mut pods = Vec::new();
    let mut warnings = Vec::new();
    for (i, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = yaml_serde::Value::deserialize(document)
            .map_err(|e| ManifestError::Yaml(yaml_error(&e)))?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        if kind != "Pod" {
            return Err(ManifestError::Kind(
                n,
                if kind.is_empty() {
                    "(missing)".into()
                } else {
                    kind
                },
            ));
        }
        let version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if version != "v1" {
            return Err(ManifestError::ApiVersion(n, version.to_string()));
        }
        let pod: k8s::Pod = yaml_serde::from_value(value.clone())
            .map_err(|e| ManifestError::Field(n, e.to_string()))?;
        warnings.extend(unsupported_fields(&value));
        pods.push(to_api(pod).map_err(|e| ManifestError::Field(n, e))?);
    }
    if pods.is_empty() {
        return Err(ManifestError::Empty);
    }
    Ok((pods, warnings))
}

fn yaml_error(e: &yaml_serde::Error) -> String {
    match e.location() {
        Some(l) => format!(
            "invalid YAML at line {} column {}: {}",
            l.line(),
            l.column(),
            e.to_string().split(" at line").next().unwrap_or_default()
        ),
        None => format!("invalid YAML: {e}"),
    }
}

const POD_FIELDS: &[&str] = &[
    "containers",
    "initContainers",
    "volumes",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "securityContext",
    "nodeName",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "nodeSelector",
    "tolerations",
];
const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "env",
    "workingDir",
    "resources",
    "imagePullPolicy",
    "volumeMounts",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "securityContext",
    "ports",
];
const META_FIELDS: &[&str] = &["name", "namespace", "labels"];
const POD_SECURITY_FIELDS: &[&str] = &[
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "seccompProfile",
    "appArmorProfile",
    "seLinuxOptions",
    "sysctls",
];
const SECURITY_FIELDS: &[&str] = &[
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "capabilities",
    "allowPrivilegeEscalation",
    "privileged",
    "seccompProfile",
    "appArmorProfile",
    "seLinuxOptions",
    "procMount",
];

/// The fields present in the manifest that kubelab ignores for now.
fn unsupported_fields(value: &yaml_serde::Value) -> Vec<String> {
    let mut out = Vec::new();
    let keys = |v: Option<&yaml_serde::Value>| -> Vec<String> {
        v.and_then(|v| v.as_mapping())
            .map(|m| {
                m.keys()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    for k in keys(value.get("metadata")) {
        if !META_FIELDS.contains(&k.as_str()) {
            out.push(format!("metadata.{k}"));
        }
    }
    let spec = value.get("spec");
    for k in keys(spec) {
        if !POD_FIELDS.contains(&k.as_str()) {
            out.push(format!("spec.{k}"));
        }
    }
    for k in keys(spec.and_then(|s| s.get("securityContext"))) {
        if !POD_SECURITY_FIELDS.contains(&k.as_str()) {
            out.push(format!("spec.securityContext.{k}"));
        }
    }
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.and_then(|s| s.get(list)).and_then(|c| c.as_sequence()) else {
            continue;
        };
        for (i, c) in containers.iter().enumerate() {
            for k in keys(Some(c)) {
                if !CONTAINER_FIELDS.contains(&k.as_str()) {
                    out.push(format!("spec.{list}[{i}].{k}"));
                }
            }
            for k in keys(c.get("securityContext")) {
                if !SECURITY_FIELDS.contains(&k.as_str()) {
                    out.push(format!("spec.{list}[{i}].securityContext.{k}"));
                }
            }
            for e in c
                .get("env")
                .and_then(|e| e.as_sequence())
                .into_iter()
                .flatten()
            {
                if e.get("valueFrom").is_some() {
                    out.push(format!("spec.{list}[{i}].env.valueFrom"));
                }
            }
        }
    }
    out
}

fn to_api(pod: k8s::Pod) -> Result<api::Pod, String> {
    let meta = pod.metadata;
    let spec = pod.spec.ok_or("spec is required")?;
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
    Ok(api::Pod {
        metadata: Some(api::ObjectMeta {
            name: meta.name.unwrap_or_default(),
            namespace: meta.namespace.unwrap_or_default(),
            labels: meta.labels.unwrap_or_default().into_iter().collect(),
            ..Default::default()
        }),
        spec: Some(api::PodSpec {
            containers,
            init_containers,
            volumes,
            host_network: spec.host_network.unwrap_or(false),
            host_pid: spec.host_pid.unwrap_or(false),
            host_ipc: spec.host_ipc.unwrap_or(false),
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
                })
                .collect(),
        }),
        status: None,
    })
}

fn container(c: k8s::Container) -> Result<api::Container, String> {
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

fn volume(v: k8s::Volume) -> Result<api::Volume, String> {
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
        return Err(format!(
            "volume {:?}: only emptyDir and hostPath volumes are supported",
            v.name
        ));
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
) -> Result<i32, String> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match p {
        IntOrString::Int(n) if (1..=65535).contains(n) => Ok(*n),
        IntOrString::Int(n) => Err(format!(
            "{field}: Invalid value: {n}: must be between 1 and 65535, inclusive"
        )),
        IntOrString::String(s) => Err(format!(
            "port {s:?}: named ports are not supported; give the port number"
        )),
    }
}

fn probe(p: k8s::Probe) -> Result<api::Probe, String> {
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
/// grammar (kubelab_proto::quantity). `what` names the field in the error.
pub fn parse_cpu(what: &str, q: &str) -> Result<i64, String> {
    quantity_in(what, q, kubelab_proto::quantity::parse_millis(q))
}

/// A memory quantity in bytes (`64Mi` → 67108864, `1G` → 10^9, `129e6` → 129000000).
pub fn parse_memory(what: &str, q: &str) -> Result<i64, String> {
    quantity_in(what, q, kubelab_proto::quantity::parse_units(q))
}

fn quantity_in(
    what: &str,
    q: &str,
    parsed: Result<i64, kubelab_proto::quantity::QuantityError>,
) -> Result<i64, String> {
    match parsed {
        Ok(v) if v < 0 => Err(format!(
            "{what}: Invalid value: {q:?}: must be greater than or equal to 0"
        )),
        Ok(v) => Ok(v),
        Err(e) => Err(format!("{what}: Invalid value: {q:?}: {e}")),
    }
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

    #[test]
    fn a_pod_manifest_converts_and_unknown_fields_are_named() {
        let (pods, warnings) = parse_pods(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  hostIPC: true\n  dnsPolicy: None\n  securityContext:\n    seccompProfile: {type: RuntimeDefault}\n    sysctls: [{name: net.ipv4.tcp_syncookies, value: '1'}]\n  containers:\n  - name: c\n    image: busybox:1\n    args: [sleep, '1']\n    ports: [{containerPort: 80, hostPort: 8080}]\n    stdin: true\n    securityContext: {procMount: Unmasked, appArmorProfile: {type: Unconfined}}\n",
        )
        .unwrap();
        let spec = pods[0].spec.as_ref().unwrap();
        assert_eq!(spec.containers[0].args, ["sleep", "1"]);
        assert!(spec.host_ipc);
        assert_eq!(spec.containers[0].ports[0].host_port, 8080);
        let pod_sc = spec.security_context.as_ref().unwrap();
        assert_eq!(
            pod_sc.seccomp_profile.as_ref().unwrap().r#type,
            "RuntimeDefault"
        );
        assert_eq!(pod_sc.sysctls[0].name, "net.ipv4.tcp_syncookies");
        let sc = spec.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.proc_mount, "Unmasked");
        assert_eq!(sc.app_armor_profile.as_ref().unwrap().r#type, "Unconfined");
        assert_eq!(warnings, ["spec.dnsPolicy", "spec.containers[0].stdin"]);
    }

    /// What `make fuzz` found worth keeping replays here: every input parses or is
    /// refused, none panics.
    #[test]
    fn the_fuzz_corpus_replays_without_panics() {
        for text in kubelab_proto::fuzz_corpus_texts("manifest") {
            let _ = parse_pods(&text);
        }
    }

    #[test]
    fn broken_yaml_names_the_line() {
        let e = parse_pods("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "{e}");
        let e = parse_pods("apiVersion: apps/v1\nkind: Deployment\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Deployment"), "{e}");
    }
}
