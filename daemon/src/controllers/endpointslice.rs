//! The EndpointSlice controller (kube-controller-manager's `endpointslice-controller`):
//! for each Service with a selector, the pods it selects as endpoints, in slices of at
//! most 100.
//!
//! A sync of one Service, from the informers' caches: every pod of its namespace that
//! the selector matches, has an IP and has not finished becomes an endpoint (`ready`
//! when Ready and not terminating, `serving` when Ready, `terminating` while being
//! deleted; its node and a reference to the pod); each Service port resolves per pod (a
//! named `targetPort` by the pod's container port of that name and protocol; a pod
//! without it has no such port), pods with the same resolved ports share slices. The
//! slices the controller already has for the Service are rewritten in place, the extra
//! created, the surplus deleted; a Service selecting nothing keeps one empty slice, as in
//! Kubernetes. The slices of a Service that is gone are deleted here (Kubernetes leaves
//! that to its garbage collector). Writes only EndpointSlices.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::client::{Api, Client, ClientError};
use super::informer::{key_of, Change, Informer};
use super::pod_control::namespace_of;
use super::pod_state;
use super::queue::WorkQueue;

const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
const HEADLESS: &str = "service.kubernetes.io/headless";
/// `--max-endpoints-per-slice`.
const MAX_ENDPOINTS: usize = 100;

pub struct EndpointSliceController {
    client: Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    slices: Arc<Informer<EndpointSlice>>,
    queue: WorkQueue,
}

/// The Services of the pod's namespace whose selector matches its labels.
fn selecting(services: &Informer<Service>, pod: &Pod) -> Vec<String> {
    let labels = pod_state::labels(&pod.metadata);
    services
        .list_namespace(namespace_of(&pod.metadata))
        .iter()
        .filter(|svc| {
            selector(svc).is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .map(|svc| key_of(&svc.metadata))
        .collect()
}

/// The selector of a Service that has its endpoints kept: none for ExternalName or a
/// Service without one (its endpoints are the user's).
fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref()
}

impl EndpointSliceController {
    pub fn new(
        client: Client,
        services: Arc<Informer<Service>>,
        pods: Arc<Informer<Pod>>,
        slices: Arc<Informer<EndpointSlice>>,
    ) -> Arc<Self> {
        let controller = Arc::new(EndpointSliceController {
            client,
            services: services.clone(),
            pods: pods.clone(),
            slices: slices.clone(),
            queue: WorkQueue::default(),
        });
        let queue = controller.queue.clone();
        services.on_change(move |change| match change {
            Change::Applied { new, .. } => queue.add(key_of(&new.metadata)),
            Change::Deleted(svc) => queue.add(key_of(&svc.metadata)),
        });
        let weak = Arc::downgrade(&controller);
        pods.on_change(move |change| {
            let Some(controller) = weak.upgrade() else {
                return;
            };
            let (old, new) = match change {
                Change::Applied { old, new } => (old.clone(), new.clone()),
                Change::Deleted(pod) => (None, pod.clone()),
            };
            let mut keys = selecting(&controller.services, &new);
            if let Some(old) = old {
                keys.extend(selecting(&controller.services, &old));
            }
            for key in keys {
                controller.queue.add(key);
            }
        });
        let queue = controller.queue.clone();
        slices.on_change(move |change| {
            let slice = match change {
                Change::Applied { new, .. } => new,
                Change::Deleted(slice) => slice,
            };
            if let Some(name) = managed_service(&slice.metadata) {
                queue.add(format!("{}/{name}", namespace_of(&slice.metadata)));
            }
        });
        controller
    }

    pub async fn run(self: Arc<Self>) {
        self.services.wait_synced().await;
        self.pods.wait_synced().await;
        self.slices.wait_synced().await;
        for svc in self.services.list() {
            self.queue.add(key_of(&svc.metadata));
        }
        loop {
            let key = self.queue.next().await;
            let span = tracing::debug_span!("sync_endpoint_slices", service = %key);
            let result = tracing::Instrument::instrument(self.sync(&key), span).await;
            if let Err(e) = result {
                tracing::warn!(service = %key, error = %e, "sync failed; retrying");
                self.queue.add_after(key, Duration::from_secs(1));
            }
        }
    }

    async fn sync(&self, key: &str) -> Result<(), ClientError> {
        let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
        let existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .list_namespace(namespace)
            .into_iter()
            .filter(|s| managed_service(&s.metadata) == Some(name))
            .collect();
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), namespace);
        let svc = self.services.get(key);
        let Some((svc, selector)) = svc.as_ref().and_then(|s| Some((s, selector(s)?))) else {
            for slice in existing {
                let slice_name = slice.metadata.name.clone().unwrap_or_default();
                settle(
                    api.delete(&slice_name, "Background", slice.metadata.uid.as_deref())
                        .await,
                )?;
            }
            return Ok(());
        };
        let mut wanted = self.desired(svc, selector);
        let mut existing = existing;
        existing.sort_by_key(|s| s.metadata.name.clone());
        for (i, slice) in wanted.iter_mut().enumerate() {
            match existing.get(i) {
                Some(old) => {
                    if old.endpoints == slice.endpoints
                        && old.ports == slice.ports
                        && old.metadata.labels == slice.metadata.labels
                    {
                        continue;
                    }
                    let mut updated = (**old).clone();
                    updated.endpoints = slice.endpoints.take();
                    updated.ports = slice.ports.take();
                    updated.metadata.labels = slice.metadata.labels.take();
                    let slice_name = old.metadata.name.clone().unwrap_or_default();
                    settle(api.replace(&slice_name, &updated).await.map(|_| ()))?;
                }
                None => {
                    api.create(slice).await?;
                }
            }
        }
        for old in existing.iter().skip(wanted.len()) {
            let slice_name = old.metadata.name.clone().unwrap_or_default();
            settle(
                api.delete(&slice_name, "Background", old.metadata.uid.as_deref())
                    .await,
            )?;
        }
        Ok(())
    }

    /// The slices the Service should have now, in a stable order.
    fn desired(&self, svc: &Service, selector: &BTreeMap<String, String>) -> Vec<EndpointSlice> {
        let spec = svc.spec.clone().unwrap_or_default();
        let mut pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(namespace_of(&svc.metadata))
            .into_iter()
            .filter(|p| {
                let labels = pod_state::labels(&p.metadata);
                selector.iter().all(|(k, v)| labels.get(k) == Some(v)) && has_address(p)
            })
            .collect();
        pods.sort_by_key(|p| p.metadata.name.clone());
        let publish = spec.publish_not_ready_addresses == Some(true);
        let name = svc.metadata.name.clone().unwrap_or_default();
        let mut groups: BTreeMap<Vec<(String, i32, String)>, Vec<Endpoint>> = BTreeMap::new();
        for pod in &pods {
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                    let number = resolve(pod, p.target_port.as_ref(), p.port, &protocol)?;
                    Some((p.name.clone().unwrap_or_default(), number, protocol))
                })
                .collect();
            groups
                .entry(ports)
                .or_default()
                .push(endpoint(pod, publish, &name));
        }
        let mut slices = Vec::new();
        for (ports, endpoints) in groups {
            for chunk in endpoints.chunks(MAX_ENDPOINTS) {
                slices.push(self.slice(svc, &ports, chunk.to_vec()));
            }
        }
        if slices.is_empty() {
            slices.push(self.slice(svc, &[], Vec::new()));
        }
        slices
    }

    fn slice(
        &self,
        svc: &Service,
        ports: &[(String, i32, String)],
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let mut labels: BTreeMap<String, String> = svc
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k != SERVICE_NAME && k != MANAGED_BY && k != HEADLESS)
            .collect();
        labels.insert(SERVICE_NAME.into(), name.clone());
        labels.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
        let cluster_ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        if matches!(cluster_ip, None | Some("None") | Some("")) {
            labels.insert(HEADLESS.into(), String::new());
        }
        EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: svc.metadata.namespace.clone(),
                labels: Some(labels),
                owner_references: Some(vec![pod_state::owner_ref(svc)]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(endpoints),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: Some(name.clone()),
                        port: Some(*port),
                        protocol: Some(protocol.clone()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        }
    }
}

/// The Service a slice belongs to, when this controller manages it.
fn managed_service(meta: &ObjectMeta) -> Option<&str> {
    let labels = meta.labels.as_ref()?;
    if labels.get(MANAGED_BY).map(String::as_str) != Some(CONTROLLER_NAME) {
        return None;
    }
    labels.get(SERVICE_NAME).map(String::as_str)
}

/// Has an IP and has not finished (a terminating pod stays, marked so).
fn has_address(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let phase = pod_state::phase(pod);
    status
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty())
        && !matches!(phase, "Succeeded" | "Failed")
}

/// One pod's endpoint; it carries the pod's `hostname` when the pod's `subdomain` names
/// this Service (the pod's DNS name under it).
fn endpoint(pod: &Pod, publish_not_ready: bool, service: &str) -> Endpoint {
    let serving = pod_state::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(publish_not_ready || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        hostname: pod
            .spec
            .as_ref()
            .filter(|s| s.subdomain.as_deref() == Some(service))
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's port for a Service port: the number given, or the container port of that
/// name and protocol (none: the pod has no such port).
fn resolve(pod: &Pod, target: Option<&IntOrString>, port: i32, protocol: &str) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|p| p.container_port),
    }
}

/// A 404 or 409: someone else got there first.
fn settle(result: Result<(), ClientError>) -> Result<(), ClientError> {
    match result {
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    #[test]
    fn a_named_target_port_resolves_by_the_pods_container_port() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let named = IntOrString::String("http".into());
        assert_eq!(resolve(&pod, Some(&named), 80, "TCP"), Some(8080));
        assert_eq!(resolve(&pod, Some(&named), 80, "UDP"), None);
        assert_eq!(
            resolve(&pod, Some(&IntOrString::Int(9000)), 80, "TCP"),
            Some(9000)
        );
    }
}
