//! The Pods service: create, read, bind, status, graceful delete, watch, and the logs proxy.
//!
//! Owns the rules of a pod's life in the API (who may set what, and when it is really
//! removed). It never runs containers: deleting a bound pod only marks it, and the agent
//! of its node finishes the delete once the containers are stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kubelab_proto::now_ms;
use kubelab_proto::v1::agent_client::AgentClient;
use kubelab_proto::v1::pods_server::Pods;
use kubelab_proto::v1::{
    BindRequest, DeletePodRequest, ListPodsRequest, LogChunk, LogsRequest, Node, ObjectKey, Pod,
    PodList, PodStatus, PodWatchEvent, UpdatePodStatusRequest, WatchRequest,
};
use tonic::{Request, Response, Status};

use super::store::{key, prefix, Store};
use super::validation::validate_and_default_pod;
use super::{watch_stream, ApiError, WatchStream};

pub struct PodsService {
    store: Arc<Store>,
    /// One lazily connected channel per agent endpoint, reused by every logs call.
    agents: Mutex<HashMap<String, tonic::transport::Channel>>,
}

impl PodsService {
    pub fn new(store: Arc<Store>) -> Self {
        PodsService {
            store,
            agents: Mutex::new(HashMap::new()),
        }
    }

    fn agent(&self, endpoint: &str) -> Result<AgentClient<tonic::transport::Channel>, Status> {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = agents.get(endpoint) {
            return Ok(AgentClient::new(channel.clone()));
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| Status::internal(format!("bad agent endpoint {endpoint:?}: {e}")))?
            .connect_lazy();
        agents.insert(endpoint.to_string(), channel.clone());
        Ok(AgentClient::new(channel))
    }
}

fn namespace_or_default(ns: &str) -> &str {
    if ns.is_empty() {
        "default"
    } else {
        ns
    }
}

fn pod_key(namespace: &str, name: &str) -> String {
    key::<Pod>(namespace_or_default(namespace), name)
}

/// The pod a write applies to: it must exist and, when the caller names a uid, be that
/// pod and not a newer one of the same name.
fn existing(current: Option<Pod>, key: &str, uid: &str) -> Result<Pod, ApiError> {
    let pod = current.ok_or_else(|| ApiError::NotFound(key.to_string()))?;
    let current_uid = pod
        .metadata
        .as_ref()
        .map(|m| m.uid.as_str())
        .unwrap_or_default();
    if !uid.is_empty() && uid != current_uid {
        return Err(ApiError::Conflict(format!(
            "{key} was replaced (uid {current_uid}, expected {uid})"
        )));
    }
    Ok(pod)
}

#[tonic::async_trait]
impl Pods for PodsService {
    async fn create(&self, request: Request<Pod>) -> Result<Response<Pod>, Status> {
        let mut pod = validate_and_default_pod(request.into_inner())?;
        let meta = pod.metadata.get_or_insert_with(Default::default);
        let key = pod_key(&meta.namespace, &meta.name);
        meta.uid = uuid::Uuid::new_v4().to_string();
        meta.creation_timestamp_ms = now_ms();
        meta.deletion_timestamp_ms = 0;
        pod.status = Some(PodStatus {
            phase: "Pending".into(),
            ..Default::default()
        });
        let pod = self
            .store
            .update::<Pod, _>(&key, |current| match current {
                Some(_) => Err(ApiError::AlreadyExists(key.clone())),
                None => Ok(Some(pod)),
            })
            .await?;
        tracing::info!(pod = %key, "created");
        Ok(Response::new(pod))
    }

    async fn get(&self, request: Request<ObjectKey>) -> Result<Response<Pod>, Status> {
        let r = request.into_inner();
        let key = pod_key(&r.namespace, &r.name);
        match self.store.get::<Pod>(&key)? {
            Some(pod) => Ok(Response::new(pod)),
            None => Err(ApiError::NotFound(key).into()),
        }
    }

    async fn list(&self, request: Request<ListPodsRequest>) -> Result<Response<PodList>, Status> {
        let r = request.into_inner();
        let (mut items, resource_version) = self.store.list::<Pod>(&prefix::<Pod>(&r.namespace))?;
        if !r.node_name.is_empty() {
            items.retain(|p| p.spec.as_ref().is_some_and(|s| s.node_name == r.node_name));
        }
        Ok(Response::new(PodList {
            items,
            resource_version,
        }))
    }

    async fn delete(&self, request: Request<DeletePodRequest>) -> Result<Response<Pod>, Status> {
        let r = request.into_inner();
        let key = pod_key(&r.namespace, &r.name);
        let mut removed = false;
        let pod = self
            .store
            .update::<Pod, _>(&key, |current| {
                let mut pod = existing(current, &key, &r.uid)?;
                let bound = pod.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
                // An unbound pod has no containers to stop; a forced delete skips the wait.
                if !bound || (r.force && r.grace_period_seconds == Some(0)) {
                    removed = true;
                    return Ok(None);
                }
                let grace = r
                    .grace_period_seconds
                    .unwrap_or_else(|| {
                        pod.spec
                            .as_ref()
                            .map(|s| s.termination_grace_period_seconds)
                            .unwrap_or(30)
                    })
                    .max(0);
                let meta = pod.metadata.get_or_insert_with(Default::default);
                if meta.deletion_timestamp_ms == 0 || grace < meta.deletion_grace_period_seconds {
                    // As in Kubernetes, a second delete may shorten the grace period, never lengthen it.
                    meta.deletion_timestamp_ms = now_ms();
                    meta.deletion_grace_period_seconds = grace;
                }
                Ok(Some(pod))
            })
            .await?;
        if removed {
            tracing::info!(pod = %key, "removed");
        } else {
            tracing::info!(pod = %key, "marked for deletion: the agent stops its containers");
        }
        Ok(Response::new(pod))
    }

    async fn bind(&self, request: Request<BindRequest>) -> Result<Response<Pod>, Status> {
        let r = request.into_inner();
        let key = pod_key(&r.namespace, &r.name);
        if self.store.get::<Node>(&key_node(&r.node_name))?.is_none() {
            return Err(ApiError::NotFound(format!("node {:?}", r.node_name)).into());
        }
        let pod = self
            .store
            .update::<Pod, _>(&key, |current| {
                let mut pod = existing(current, &key, &r.uid)?;
                let spec = pod.spec.get_or_insert_with(Default::default);
                if !spec.node_name.is_empty() {
                    return Err(ApiError::Conflict(format!(
                        "{key} is already bound to node {}",
                        spec.node_name
                    )));
                }
                if pod
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.deletion_timestamp_ms != 0)
                {
                    return Err(ApiError::FailedPrecondition(format!(
                        "{key} is being deleted"
                    )));
                }
                spec.node_name = r.node_name.clone();
                Ok(Some(pod))
            })
            .await?;
        Ok(Response::new(pod))
    }

    async fn update_status(
        &self,
        request: Request<UpdatePodStatusRequest>,
    ) -> Result<Response<Pod>, Status> {
        let r = request.into_inner();
        let key = pod_key(&r.namespace, &r.name);
        let pod = self
            .store
            .update::<Pod, _>(&key, |current| {
                let mut pod = existing(current, &key, &r.uid)?;
                pod.status = r.status;
                Ok(Some(pod))
            })
            .await?;
        Ok(Response::new(pod))
    }

    type WatchStream = WatchStream<PodWatchEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.into_inner();
        let node = r.node_name;
        let stream = watch_stream::<Pod, _>(
            &self.store,
            r.from_revision,
            prefix::<Pod>(&r.namespace),
            move |t, pod| {
                if !node.is_empty() && pod.spec.as_ref().is_none_or(|s| s.node_name != node) {
                    return None;
                }
                Some(PodWatchEvent {
                    r#type: t as i32,
                    object: Some(pod),
                })
            },
        )?;
        Ok(Response::new(stream))
    }

    type LogsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogChunk, Status>> + Send>>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = request.into_inner();
        let key = pod_key(&r.namespace, &r.name);
        let pod = self
            .store
            .get::<Pod>(&key)?
            .ok_or_else(|| ApiError::NotFound(key.clone()))?;
        let node_name = pod
            .spec
            .as_ref()
            .map(|s| s.node_name.clone())
            .unwrap_or_default();
        if node_name.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{key} is not scheduled to a node yet, so it has no logs"
            )));
        }
        let node = self
            .store
            .get::<Node>(&key_node(&node_name))?
            .ok_or_else(|| ApiError::NotFound(format!("node {node_name:?}")))?;
        let endpoint = node.status.map(|s| s.agent_endpoint).unwrap_or_default();
        let mut agent = self.agent(&endpoint)?;
        let mut forwarded = LogsRequest {
            namespace: namespace_or_default(&r.namespace).to_string(),
            ..r
        };
        if forwarded.container.is_empty() {
            let containers = pod.spec.map(|s| s.containers).unwrap_or_default();
            if containers.len() > 1 {
                let names: Vec<_> = containers.iter().map(|c| c.name.as_str()).collect();
                return Err(Status::invalid_argument(format!(
                    "{key} has several containers: choose one with -c ({})",
                    names.join(", ")
                )));
            }
            forwarded.container = containers
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default();
        }
        let stream = agent.logs(forwarded).await.map_err(|e| {
            if e.code() == tonic::Code::Unavailable {
                Status::unavailable(format!(
                    "the agent of node {node_name} ({endpoint}) does not answer: {}",
                    e.message()
                ))
            } else {
                e
            }
        })?;
        Ok(Response::new(Box::pin(stream.into_inner())))
    }
}

fn key_node(name: &str) -> String {
    key::<Node>("", name)
}
