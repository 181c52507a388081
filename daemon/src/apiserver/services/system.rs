//! The Services every cluster starts with, made by the apiserver at start: `kubernetes`
//! in `default` (the apiserver itself, at the range's first address, with its
//! EndpointSlice) and `kube-dns` in `kube-system` (the cluster DNS, at the range's tenth
//! address, as kubeadm makes it; its endpoint is written by `kubelab-dns`).
//! Owns those two objects' first shape only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::{allocate, endpointslices, ServiceConfig, ServiceStrategy};
use crate::apiserver::auth::Identity;
use crate::apiserver::native::{self, NativeRegistry};
use crate::apiserver::registry::Registry;
use crate::apiserver::store::Object;
use crate::apiserver::ApiError;

fn service(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    ip: String,
    ports: Vec<ServicePort>,
) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

fn port(name: &str, port: i32, protocol: &str, target: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(target)),
        ..Default::default()
    }
}

/// The `kubernetes` Service of `default`: the apiserver at the range's first address,
/// port 443 (`https`) to the port it serves on.
pub fn kubernetes_service(config: &ServiceConfig, apiserver_port: u16) -> Service {
    service(
        "default",
        "kubernetes",
        &[("component", "apiserver"), ("provider", "kubernetes")],
        allocate::first_ip(config.range).to_string(),
        vec![port("https", 443, "TCP", i32::from(apiserver_port))],
    )
}

/// `kube-system/kube-dns`: port 53 over UDP (`dns`) and TCP (`dns-tcp`) at the range's
/// tenth address, labelled as kubeadm labels it. Without a selector: kubelab's DNS is no
/// pod, and keeps its EndpointSlice itself.
pub fn kube_dns_service(config: &ServiceConfig) -> Service {
    service(
        "kube-system",
        "kube-dns",
        &[
            ("k8s-app", "kube-dns"),
            ("kubernetes.io/cluster-service", "true"),
            ("kubernetes.io/name", "CoreDNS"),
        ],
        allocate::dns_ip(config.range).to_string(),
        vec![port("dns", 53, "UDP", 53), port("dns-tcp", 53, "TCP", 53)],
    )
}

/// At start: the `kubernetes` and `kube-dns` Services, if missing, and the `kubernetes`
/// EndpointSlice (the apiserver's address and port, written afresh each start).
pub async fn ensure(
    services: &NativeRegistry<ServiceStrategy>,
    slices: &NativeRegistry<endpointslices::EndpointSliceStrategy>,
    config: ServiceConfig,
    apiserver: std::net::SocketAddr,
) -> Result<(), ApiError> {
    let internal = |e: kubelab_proto::k8s::ConvertError| ApiError::Internal(e.0);
    for svc in [
        kubernetes_service(&config, apiserver.port()),
        kube_dns_service(&config),
    ] {
        let svc = native::from_k8s(svc).map_err(internal)?;
        match services.create(&Identity::Admin, svc, false).await {
            Ok(_) | Err(ApiError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let ip = match apiserver.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        ip => ip.to_string(),
    };
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {
            "name": "kubernetes", "namespace": "default",
            "labels": { endpointslices::SERVICE_NAME: "kubernetes" },
        },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [ip], "conditions": { "ready": true } }],
        "ports": [{ "name": "https", "port": apiserver.port(), "protocol": "TCP" }],
    }))
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut object: endpointslices::EndpointSliceObject =
        native::from_k8s(slice).map_err(internal)?;
    match slices.create(&Identity::Admin, object.clone(), false).await {
        Ok(_) => Ok(()),
        Err(ApiError::AlreadyExists(_)) => {
            let stored = slices
                .get(&Identity::Admin, "default", "kubernetes")
                .await?;
            let version = stored.meta().map(|m| m.resource_version).unwrap_or(0);
            object.meta_mut().resource_version = version;
            slices
                .update(&Identity::Admin, object, false)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}
