//! discovery.k8s.io/v1 EndpointSlices in the API: what kube-apiserver checks of one (an
//! address type, at most 1,000 endpoints of 1–100 addresses, at most 100 ports) and
//! `kubectl get endpointslices`' table. The EndpointSlice controller writes them; the
//! agents' service proxy reads them.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubelab_proto::k8s::printers::{self, Column, AGE, NAME};
use serde_json::{json, Value};

use crate::apiserver::auth::Identity;
use crate::apiserver::native::{native, to_k8s, Strategy};
use crate::apiserver::ApiError;

native!(EndpointSliceObject, EndpointSlice, "endpointslices");

/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";

pub struct EndpointSliceStrategy;

impl Strategy for EndpointSliceStrategy {
    type Object = EndpointSliceObject;
    type Config = ();
    const RESOURCE: &'static str = "endpointslices.discovery.k8s.io";
    const NODES_READ: bool = true;

    /// The cluster DNS also keeps its own slice, in kube-system (CoreDNS's pods are
    /// endpoints the EndpointSlice controller finds; kubelab's DNS is no pod).
    fn may_write(who: &Identity, namespace: &str, what: &str) -> Result<(), ApiError> {
        if *who == Identity::ClusterDns && namespace == "kube-system" {
            return Ok(());
        }
        who.require_workloads(what)
    }

    fn default(_slice: &mut EndpointSlice) {}

    fn validate(slice: &EndpointSlice) -> Result<Vec<String>, ApiError> {
        let kind = slice.address_type.as_str();
        if !matches!(kind, "IPv4" | "IPv6" | "FQDN") {
            return Err(ApiError::Invalid(format!(
                "addressType: Unsupported value: {kind:?}: supported values: \"FQDN\", \"IPv4\", \"IPv6\""
            )));
        }
        let endpoints = slice.endpoints.as_deref().unwrap_or(&[]);
        if endpoints.len() > 1000 {
            return Err(ApiError::Invalid(format!(
                "endpoints: Too many: {}: must have at most 1000 items",
                endpoints.len()
            )));
        }
        for (i, e) in endpoints.iter().enumerate() {
            if e.addresses.is_empty() || e.addresses.len() > 100 {
                return Err(ApiError::Invalid(format!(
                    "endpoints[{i}].addresses: Invalid value: {}: must have at least 1 and at most 100 addresses",
                    e.addresses.len()
                )));
            }
        }
        if slice.ports.as_ref().is_some_and(|p| p.len() > 100) {
            return Err(ApiError::Invalid(
                "ports: Too many: must have at most 100 items".into(),
            ));
        }
        Ok(Vec::new())
    }
}

pub const COLUMNS: &[Column] = &[
    NAME,
    printers::column("AddressType", "The address type of the endpoint slice.", 0),
    printers::column("Ports", "The ports of the endpoint slice.", 0),
    printers::column("Endpoints", "The addresses of the endpoints.", 0),
    AGE,
];

/// At most three, then `+ N more...`; `<unset>` when there is none (kubectl's format).
fn some(items: Vec<String>) -> String {
    match items.len() {
        0 => "<unset>".into(),
        n if n > 3 => format!("{} + {} more...", items[..3].join(","), n - 3),
        _ => items.join(","),
    }
}

/// NAME ADDRESSTYPE PORTS ENDPOINTS AGE
pub fn row(object: &EndpointSliceObject, now_ms: i64) -> Vec<Value> {
    let slice = to_k8s(object);
    let ports = slice
        .ports
        .iter()
        .flatten()
        .map(|p| match (p.port, p.name.as_deref()) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".into(),
        })
        .collect();
    let addresses = slice
        .endpoints
        .iter()
        .flatten()
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    let created = kubelab_proto::k8s::time_ms(&slice.metadata.creation_timestamp);
    vec![
        json!(slice.metadata.name.clone().unwrap_or_default()),
        json!(slice.address_type),
        json!(some(ports)),
        json!(some(addresses)),
        json!(printers::age(created, now_ms)),
    ]
}
