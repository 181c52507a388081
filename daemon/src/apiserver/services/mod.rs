//! core/v1 Services and discovery.k8s.io/v1 EndpointSlices in the API, kept natively
//! (`native.rs`): Kubernetes' defaults and validation for a Service, its cluster IP and
//! node ports (`allocate.rs`), its table, and the Services every cluster starts with
//! (`system.rs`: `kubernetes`, `kube-dns`). The EndpointSlice controller (controller manager) keeps the slices; the
//! agents' service proxy routes by them. This module only decides what may be stored.

pub mod allocate;
pub mod endpointslices;
pub mod system;
mod validate;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerStatus, Service, ServiceSpec, ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubelab_proto::k8s::printers::{self, Column, AGE, NAME};
use serde_json::{json, Value};

use super::native::{native, to_k8s, Strategy};
use super::node_ipam::Cidr;
use super::ApiError;

native!(ServiceObject, Service, "services");

/// The Service range and what it is checked against (kube-apiserver's
/// `--service-cluster-ip-range`).
#[derive(Clone, Copy, Debug)]
pub struct ServiceConfig {
    pub range: Cidr,
}

pub struct ServiceStrategy;

/// Reachable from outside the cluster: it has node ports.
fn external(spec: &ServiceSpec) -> bool {
    matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
}

impl Strategy for ServiceStrategy {
    type Object = ServiceObject;
    type Config = ServiceConfig;
    const RESOURCE: &'static str = "services";
    const ALLOCATES: bool = true;
    const NODES_READ: bool = true;

    fn default(svc: &mut Service) {
        let spec = svc.spec.get_or_insert_with(Default::default);
        let affinity = spec
            .session_affinity
            .get_or_insert_with(|| "None".into())
            .clone();
        if affinity == "None" {
            spec.session_affinity_config = None;
        } else if affinity == "ClientIP" {
            let config = spec
                .session_affinity_config
                .get_or_insert_with(SessionAffinityConfig::default)
                .client_ip
                .get_or_insert_with(ClientIPConfig::default);
            config.timeout_seconds.get_or_insert(10800);
        }
        let kind = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
        for port in spec.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".into());
            let unset = match &port.target_port {
                None => true,
                Some(IntOrString::Int(0)) => true,
                Some(IntOrString::String(s)) => s.is_empty(),
                Some(_) => false,
            };
            if unset {
                port.target_port = Some(IntOrString::Int(port.port));
            }
        }
        if external(spec) {
            spec.external_traffic_policy
                .get_or_insert_with(|| "Cluster".into());
        }
        if kind != "ExternalName" {
            spec.internal_traffic_policy
                .get_or_insert_with(|| "Cluster".into());
        }
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus::default()),
            ..Default::default()
        });
    }

    fn allocate(
        config: &ServiceConfig,
        svc: &mut Service,
        old: Option<&Service>,
        others: &[Service],
    ) -> Result<(), ApiError> {
        let spec = svc.spec.get_or_insert_with(Default::default);
        if spec.type_.as_deref() == Some("ExternalName") {
            return Ok(());
        }
        let old_spec = old.and_then(|o| o.spec.clone()).unwrap_or_default();
        keep_allocated(spec, &old_spec);
        assign_cluster_ip(config, spec, &old_spec, others)?;
        if external(spec) {
            assign_node_ports(spec, others)?;
        }
        Ok(())
    }

    fn validate(svc: &Service) -> Result<Vec<String>, ApiError> {
        validate::service(svc)?;
        Ok(Vec::new())
    }
}

/// A manifest sent again without its cluster IP or node ports keeps those it was given
/// (kube-apiserver's `patchAllocatedValues`): `kubectl apply` and `replace` work.
fn keep_allocated(spec: &mut ServiceSpec, old: &ServiceSpec) {
    let unset = spec.cluster_ip.as_deref().is_none_or(str::is_empty)
        && spec.cluster_ips.as_ref().is_none_or(Vec::is_empty);
    if unset && old.cluster_ip.is_some() {
        spec.cluster_ip = old.cluster_ip.clone();
        spec.cluster_ips = old.cluster_ips.clone();
    }
    if !external(spec) {
        return;
    }
    let old_ports = old.ports.clone().unwrap_or_default();
    for port in spec.ports.iter_mut().flatten() {
        if port.node_port.unwrap_or(0) != 0 {
            continue;
        }
        port.node_port = old_ports
            .iter()
            .find(|o| o.name == port.name && o.port == port.port)
            .and_then(|o| o.node_port);
    }
}

fn taken_ips(others: &[Service]) -> HashSet<Ipv4Addr> {
    others
        .iter()
        .filter_map(|s| s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok())
        .collect()
}

fn assign_cluster_ip(
    config: &ServiceConfig,
    spec: &mut ServiceSpec,
    old: &ServiceSpec,
    others: &[Service],
) -> Result<(), ApiError> {
    if spec.cluster_ip.as_deref().is_none_or(str::is_empty) {
        spec.cluster_ip = spec
            .cluster_ips
            .as_ref()
            .and_then(|ips| ips.first().cloned());
    }
    let wanted = spec.cluster_ip.clone().filter(|ip| !ip.is_empty());
    if let (Some(before), Some(now)) = (old.cluster_ip.as_deref(), wanted.as_deref()) {
        if before != now {
            return Err(ApiError::Invalid(format!(
                "spec.clusterIPs[0]: Invalid value: []string{{{now:?}}}: may not change once set"
            )));
        }
    }
    let ip = match wanted.as_deref() {
        Some("None") => "None".to_string(),
        Some(text) => {
            let ip: Ipv4Addr = text.parse().map_err(|_| {
                ApiError::Invalid(format!(
                    "spec.clusterIPs[0]: Invalid value: {text:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                ))
            })?;
            let failed = |why: String| {
                ApiError::Invalid(format!(
                    "spec.clusterIPs: Invalid value: []string{{{text:?}}}: failed to allocate IP {text}: {why}"
                ))
            };
            if !allocate::contains(config.range, ip) {
                return Err(failed(format!(
                    "the provided IP ({text}) is not in the valid range. The range of valid IPs is {}",
                    config.range
                )));
            }
            if old.cluster_ip.as_deref() != Some(text) && taken_ips(others).contains(&ip) {
                return Err(failed("provided IP is already allocated".into()));
            }
            text.to_string()
        }
        None => allocate::next_ip(config.range, &taken_ips(others), allocate::random())
            .ok_or_else(|| {
                ApiError::Internal(format!(
                    "failed to allocate a serviceIP: range is full (--service-cluster-ip-range {})",
                    config.range
                ))
            })?
            .to_string(),
    };
    spec.cluster_ip = Some(ip.clone());
    spec.cluster_ips = Some(vec![ip]);
    spec.ip_families = Some(vec!["IPv4".into()]);
    spec.ip_family_policy
        .get_or_insert_with(|| "SingleStack".into());
    Ok(())
}

fn assign_node_ports(spec: &mut ServiceSpec, others: &[Service]) -> Result<(), ApiError> {
    let mut taken: HashSet<i32> = others
        .iter()
        .flat_map(|s| s.spec.iter().flat_map(|s| s.ports.iter().flatten()))
        .filter_map(|p| p.node_port)
        .collect();
    for (i, port) in spec.ports.iter_mut().flatten().enumerate() {
        match port.node_port.filter(|p| *p != 0) {
            Some(p) if !allocate::NODE_PORTS.contains(&p) => {
                return Err(ApiError::Invalid(format!(
                    "spec.ports[{i}].nodePort: Invalid value: {p}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                )))
            }
            Some(p) if taken.contains(&p) => {
                return Err(ApiError::Invalid(format!(
                    "spec.ports[{i}].nodePort: Invalid value: {p}: provided port is already allocated"
                )))
            }
            Some(p) => {
                taken.insert(p);
            }
            None => {
                let p = allocate::next_node_port(&taken, allocate::random()).ok_or_else(|| {
                    ApiError::Internal("failed to allocate a nodePort: range is full".into())
                })?;
                taken.insert(p);
                port.node_port = Some(p);
            }
        }
    }
    Ok(())
}

pub const COLUMNS: &[Column] = &[
    NAME,
    printers::column("Type", "The type of service.", 0),
    printers::column("Cluster-IP", "The cluster IP of the service.", 0),
    printers::column(
        "External-IP",
        "The external IP addresses of the service.",
        0,
    ),
    printers::column("Port(s)", "The ports of the service.", 0),
    AGE,
    printers::column("Selector", "The label selector of the service.", 1),
];

/// NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE | SELECTOR, as kube-apiserver prints them.
pub fn row(object: &ServiceObject, now_ms: i64) -> Vec<Value> {
    let svc = to_k8s(object);
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let cluster_ip = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first().cloned())
        .unwrap_or_else(|| "<none>".into());
    let external = match kind.as_str() {
        "ExternalName" => spec.external_name.clone().unwrap_or_default(),
        "LoadBalancer" => "<pending>".into(),
        _ => spec
            .external_ips
            .as_ref()
            .filter(|ips| !ips.is_empty())
            .map(|ips| ips.join(","))
            .unwrap_or_else(|| "<none>".into()),
    };
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port.filter(|n| *n > 0) {
                Some(n) => format!("{}:{n}/{protocol}", p.port),
                None => format!("{}/{protocol}", p.port),
            }
        })
        .collect();
    let selector: Vec<String> = spec
        .selector
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let created = kubelab_proto::k8s::time_ms(&svc.metadata.creation_timestamp);
    vec![
        json!(svc.metadata.name.clone().unwrap_or_default()),
        json!(kind),
        json!(cluster_ip),
        json!(external),
        json!(if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(",")
        }),
        json!(printers::age(created, now_ms)),
        json!(if selector.is_empty() {
            "<none>".into()
        } else {
            selector.join(",")
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServiceConfig {
        ServiceConfig {
            range: "10.96.0.0/16".parse().unwrap(),
        }
    }

    fn service(json: Value) -> Service {
        let mut svc: Service = serde_json::from_value(json).unwrap();
        ServiceStrategy::default(&mut svc);
        svc
    }

    #[test]
    fn a_service_gets_kubernetes_defaults_and_an_address_of_the_range() {
        let mut svc = service(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        }));
        ServiceStrategy::allocate(&config(), &mut svc, None, &[]).unwrap();
        let spec = svc.spec.clone().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!(port.target_port, Some(IntOrString::Int(80)));
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        let ip: Ipv4Addr = spec.cluster_ip.clone().unwrap().parse().unwrap();
        assert!(allocate::contains(config().range, ip));
        assert_eq!(spec.cluster_ips, Some(vec![ip.to_string()]));
        // Sent again without it, it keeps its address; a new one is refused.
        let mut again = service(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        }));
        ServiceStrategy::allocate(&config(), &mut again, Some(&svc), &[]).unwrap();
        assert_eq!(again.spec.unwrap().cluster_ip, spec.cluster_ip);
        let mut moved = service(json!({
            "metadata": {"name": "web"},
            "spec": {"clusterIP": "10.96.3.3", "ports": [{"port": 80}]},
        }));
        let err = ServiceStrategy::allocate(&config(), &mut moved, Some(&svc), &[]);
        assert!(format!("{err:?}").contains("may not change once set"));
    }

    #[test]
    fn addresses_and_node_ports_taken_or_outside_are_refused() {
        let mut first = service(json!({
            "metadata": {"name": "a"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080}]},
        }));
        ServiceStrategy::allocate(&config(), &mut first, None, &[]).unwrap();
        let taken = [first];
        for (spec, said) in [
            (
                json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
                "provided IP is already allocated",
            ),
            (
                json!({"clusterIP": "10.1.0.10", "ports": [{"port": 80}]}),
                "The range of valid IPs is 10.96.0.0/16",
            ),
            (
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
                "provided port is already allocated",
            ),
            (
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
                "The range of valid ports is 30000-32767",
            ),
        ] {
            let mut svc = service(json!({"metadata": {"name": "b"}, "spec": spec}));
            let err = ServiceStrategy::allocate(&config(), &mut svc, None, &taken);
            assert!(format!("{err:?}").contains(said), "{err:?}");
        }
    }
}
