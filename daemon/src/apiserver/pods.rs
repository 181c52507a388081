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
    BindRequest, DeletePodRequest, ExecOutput, ExecRequest, ListPodsRequest, LogChunk, LogsRequest,
    Node, ObjectKey, Pod, PodList, PodStatus, PodWatchEvent, UpdatePodStatusRequest, WatchRequest,
};
use tonic::{Request, Response, Status};

use super::store::{key, prefix, Store};
use super::validation::{validate_and_default_pod, Admission};
use super::{watch_stream, ApiError, WatchStream};

pub struct PodsService {
    store: Arc<Store>,
    admission: Admission,
    /// One lazily connected channel per agent endpoint, reused by every logs call.
    agents: Mutex<HashMap<String, tonic::transport::Channel>>,
}

impl PodsService {
    pub fn new(store: Arc<Store>, admission: Admission) -> Self {
        PodsService {
            store,
            admission,
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
        let mut pod = validate_and_default_pod(request.into_inner(), self.admission)?;
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
        let target = self.container_target(&r.namespace, &r.name, &r.container, "logs")?;
        let forwarded = LogsRequest {
            namespace: target.namespace.clone(),
            container: target.container.clone(),
            ..r
        };
        let mut agent = target.agent.clone();
        let stream = agent
            .logs(forwarded)
            .await
            .map_err(|e| target.agent_error(e))?;
        Ok(Response::new(Box::pin(stream.into_inner())))
    }

    type ExecStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<ExecOutput, Status>> + Send>>;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("exec: no request was sent"))?;
        if first.command.is_empty() {
            return Err(Status::invalid_argument(
                "exec: no command given (kubelab exec POD -- COMMAND ARGS...)",
            ));
        }
        let target =
            self.container_target(&first.namespace, &first.name, &first.container, "exec")?;
        let first = ExecRequest {
            namespace: target.namespace.clone(),
            container: target.container.clone(),
            ..first
        };
        // The user's stdin follows the first message, untouched.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let _ = tx.send(first).await;
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        });
        let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut agent = target.agent.clone();
        let stream = agent
            .exec(outbound)
            .await
            .map_err(|e| target.agent_error(e))?;
        Ok(Response::new(Box::pin(stream.into_inner())))
    }
}

/// A container of a pod, and the agent that runs it: where logs and exec are sent.
struct ContainerTarget {
    namespace: String,
    container: String,
    node_name: String,
    endpoint: String,
    agent: AgentClient<tonic::transport::Channel>,
}

impl ContainerTarget {
    fn agent_error(&self, e: Status) -> Status {
        if e.code() == tonic::Code::Unavailable {
            Status::unavailable(format!(
                "the agent of node {} ({}) does not answer: {}",
                self.node_name,
                self.endpoint,
                e.message()
            ))
        } else {
            e
        }
    }
}

impl PodsService {
    /// Finds the pod's node and agent, and the container meant (the only one when none is named).
    fn container_target(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        what: &str,
    ) -> Result<ContainerTarget, Status> {
        let key = pod_key(namespace, name);
        let pod = self
            .store
            .get::<Pod>(&key)?
            .ok_or_else(|| ApiError::NotFound(key.clone()))?;
        let spec = pod.spec.unwrap_or_default();
        if spec.node_name.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{key} is not scheduled to a node yet: no {what} until it runs"
            )));
        }
        let node = self
            .store
            .get::<Node>(&key_node(&spec.node_name))?
            .ok_or_else(|| ApiError::NotFound(format!("node {:?}", spec.node_name)))?;
        let endpoint = node.status.map(|s| s.agent_endpoint).unwrap_or_default();
        let container = if container.is_empty() {
            if spec.containers.len() > 1 {
                let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
                return Err(Status::invalid_argument(format!(
                    "{key} has several containers: choose one with -c ({})",
                    names.join(", ")
                )));
            }
            spec.containers
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default()
        } else {
            container.to_string()
        };
        Ok(ContainerTarget {
            namespace: namespace_or_default(namespace).to_string(),
            container,
            agent: self.agent(&endpoint)?,
            node_name: spec.node_name,
            endpoint,
        })
    }
}

fn key_node(name: &str) -> String {
    key::<Node>("", name)
}
