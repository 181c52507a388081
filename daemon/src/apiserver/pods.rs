//! The Pods service: create, read, bind, status, graceful delete, watch, and the logs and
//! exec proxy to agents.
//!
//! Owns the rules of a pod's life in the API (who may set what — the admin creates and
//! deletes, the scheduler binds, a node reads and writes only the pods bound to it — and
//! when a pod is really removed). It never runs containers: deleting a bound pod only marks it, and the agent
//! of its node finishes the delete once the containers are stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kubelab_proto::now_ms;
use kubelab_proto::v1::agent_client::AgentClient;
use kubelab_proto::v1::pods_server::Pods;
use kubelab_proto::v1::{
    BindRequest, DeletePodRequest, ExecOutput, ExecRequest, ListPodsRequest, LogChunk, LogsRequest,
    Namespace, Node, ObjectKey, Pod, PodList, PodStatus, PodWatchEvent, UpdatePodStatusRequest,
    WatchRequest,
};
use tonic::{Request, Response, Status};

use super::auth::{Authenticator, Identity};
use super::pod_security::{self, Level, Policy};
use super::selector::LabelSelector;
use super::store::{check_version, key, prefix, Store};
use super::validation::{check_supported, validate_and_default_pod};
use super::{watch_stream, ApiError, WatchStream};
use kubelab_proto::credential::{AuthChannel, Bearer};

pub struct PodsService {
    store: Arc<Store>,
    auth: Arc<Authenticator>,
    /// The Pod Security level of namespaces without the labels (`--pod-security-default`).
    pod_security_default: Level,
    /// Per node: its agent's endpoint and a lazily connected channel to it, reused by
    /// every logs and exec call.
    agents: Mutex<HashMap<String, (String, tonic::transport::Channel)>>,
}

impl PodsService {
    pub fn new(store: Arc<Store>, auth: Arc<Authenticator>, pod_security_default: Level) -> Self {
        PodsService {
            store,
            auth,
            pod_security_default,
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// A client for `node`'s agent at `endpoint`: TLS, the agent's certificate checked
    /// against the cluster CA for the node's name, and that node's own peer token.
    fn agent(&self, node: &str, endpoint: &str) -> Result<AgentClient<AuthChannel>, Status> {
        let peer_token = self.auth.peer_token_of(node).ok_or_else(|| {
            Status::failed_precondition(format!(
                "node {node:?} has no agent credential (it joined before agents had their own): restart its agent"
            ))
        })?;
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match agents.get(node) {
            Some((at, channel)) if at == endpoint => channel.clone(),
            // New, or the agent moved: one entry per node, so the map is as large as the
            // cluster, whatever endpoints nodes report.
            _ => {
                let tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(self.auth.ca()))
                    .domain_name(node);
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("https://{endpoint}"))
                        .and_then(|e| e.tls_config(tls))
                        .map_err(|e| {
                            Status::internal(format!("bad agent endpoint {endpoint:?}: {e}"))
                        })?
                        .connect_timeout(std::time::Duration::from_secs(2))
                        .connect_lazy();
                agents.insert(node.to_string(), (endpoint.to_string(), channel.clone()));
                channel
            }
        };
        Ok(AgentClient::with_interceptor(
            channel,
            Bearer::new(&peer_token),
        ))
    }
}

impl PodsService {
    /// PodSecurity: the pod's namespace's levels (its labels, else the cluster default);
    /// refused below enforce, a warning (returned) below warn. A namespace without an
    /// object (kubelab's implicit namespaces) has the cluster default.
    fn admit(&self, pod: &Pod) -> Result<Option<String>, ApiError> {
        let namespace = pod
            .metadata
            .as_ref()
            .map(|m| namespace_or_default(&m.namespace))
            .unwrap_or("default");
        let labels = self
            .store
            .get::<Namespace>(&key::<Namespace>("", namespace))?
            .and_then(|n| n.metadata)
            .map(|m| m.labels)
            .unwrap_or_default();
        let policy = Policy::from_labels(&labels, self.pod_security_default);
        pod_security::admit(policy, pod)
    }
}

/// A warning as Kubernetes sends it in HTTP: `299 - "text"`, the text quoted (and, for
/// gRPC metadata, anything beyond printable ASCII replaced).
fn warning_header(text: &str) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    let mut quoted = String::from("299 - \"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            ' '..='~' => quoted.push(c),
            _ => quoted.push('?'),
        }
    }
    quoted.push('"');
    tonic::metadata::MetadataValue::try_from(quoted).unwrap_or_else(|_| {
        tonic::metadata::MetadataValue::from_static("299 - \"unprintable warning\"")
    })
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

/// Node restriction: a node reads and writes only the pods bound to it.
fn own_pod(who: &Identity, pod: &Pod, key: &str) -> Result<(), ApiError> {
    let Identity::Node(node) = who else {
        return Ok(());
    };
    let bound_to = pod
        .spec
        .as_ref()
        .map(|s| s.node_name.as_str())
        .unwrap_or("");
    if bound_to == node {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "forbidden: {who} may only act on pods bound to it, and {key} is not"
        )))
    }
}

fn may_see(who: &Identity, pod: &Pod, key: &str) -> Result<(), Status> {
    match who {
        Identity::Admin | Identity::Scheduler => Ok(()),
        Identity::Node(_) => own_pod(who, pod, key).map_err(Status::from),
        Identity::Bootstrap => Err(who.denied("read pods")),
    }
}

/// A node lists and watches only its own pods (`node_name` set to itself).
fn may_list(who: &Identity, node_name: &str) -> Result<(), Status> {
    match who {
        Identity::Admin | Identity::Scheduler => Ok(()),
        Identity::Node(node) if node == node_name => Ok(()),
        Identity::Node(_) => {
            Err(who.denied("list pods other than its own (set node_name to itself)"))
        }
        Identity::Bootstrap => Err(who.denied("list pods")),
    }
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
        self.auth
            .identify(&request)?
            .require(&[Identity::Admin], "create pods")?;
        let mut pod = validate_and_default_pod(request.into_inner())?;
        let warning = self.admit(&pod)?;
        check_supported(&pod)?;
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
        let mut response = Response::new(pod);
        if let Some(warning) = warning {
            response
                .metadata_mut()
                .insert("warning", warning_header(&warning));
        }
        Ok(response)
    }

    async fn get(&self, request: Request<ObjectKey>) -> Result<Response<Pod>, Status> {
        let who = self.auth.identify(&request)?;
        let r = request.into_inner();
        let key = pod_key(&r.namespace, &r.name);
        match self.store.get_durable::<Pod>(&key).await? {
            Some(pod) => {
                may_see(&who, &pod, &key)?;
                Ok(Response::new(pod))
            }
            None => Err(ApiError::NotFound(key).into()),
        }
    }

    async fn list(&self, request: Request<ListPodsRequest>) -> Result<Response<PodList>, Status> {
        let who = self.auth.identify(&request)?;
        let r = request.into_inner();
        may_list(&who, &r.node_name)?;
        let selector = LabelSelector::parse(&r.label_selector)?;
        let (mut items, resource_version) =
            self.store.list::<Pod>(&prefix::<Pod>(&r.namespace)).await?;
        items.retain(|p| {
            (r.node_name.is_empty() || p.spec.as_ref().is_some_and(|s| s.node_name == r.node_name))
                && (selector.is_empty() || selector.matches(super::labels_of(p)))
        });
        Ok(Response::new(PodList {
            items,
            resource_version,
        }))
    }

    async fn delete(&self, request: Request<DeletePodRequest>) -> Result<Response<Pod>, Status> {
        let who = self.auth.identify(&request)?;
        let r = request.into_inner();
        let key = pod_key(&r.namespace, &r.name);
        if let Some(seconds) = r.grace_period_seconds {
            super::validation::check_grace_period(seconds)?;
        }
        // A node only finishes the deletes of its own pods (forced, once they are stopped).
        let finishing = r.force && r.grace_period_seconds == Some(0);
        match &who {
            Identity::Admin => {}
            Identity::Node(_) if finishing => {}
            _ => return Err(who.denied("delete pods")),
        }
        let mut removed = false;
        let pod = self
            .store
            .update::<Pod, _>(&key, |current| {
                let mut pod = existing(current, &key, &r.uid)?;
                own_pod(&who, &pod, &key)?;
                check_version(&pod, r.resource_version, &key)?;
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
        self.auth
            .identify(&request)?
            .require_cluster("bind pods to nodes")?;
        let r = request.into_inner();
        let key = pod_key(&r.namespace, &r.name);
        if self.store.get::<Node>(&key_node(&r.node_name))?.is_none() {
            return Err(ApiError::NotFound(format!("node {:?}", r.node_name)).into());
        }
        let pod = self
            .store
            .update::<Pod, _>(&key, |current| {
                let mut pod = existing(current, &key, &r.uid)?;
                check_version(&pod, r.resource_version, &key)?;
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
        let who = self.auth.identify(&request)?;
        if !matches!(who, Identity::Node(_)) {
            return Err(who.denied("write pod status (only the pod's node does)"));
        }
        let r = request.into_inner();
        let key = pod_key(&r.namespace, &r.name);
        let pod = self
            .store
            .update::<Pod, _>(&key, |current| {
                let mut pod = existing(current, &key, &r.uid)?;
                own_pod(&who, &pod, &key)?;
                check_version(&pod, r.resource_version, &key)?;
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
        let who = self.auth.identify(&request)?;
        let r = request.into_inner();
        may_list(&who, &r.node_name)?;
        let stream = watch_stream::<Pod, _>(
            &self.store,
            r.from_revision,
            prefix::<Pod>(&r.namespace),
            r.node_name,
            &r.label_selector,
            |t, pod| {
                Some(PodWatchEvent {
                    r#type: t as i32,
                    object: Some(pod),
                })
            },
        )
        .await?;
        Ok(Response::new(stream))
    }

    type LogsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogChunk, Status>> + Send>>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        self.auth
            .identify(&request)?
            .require(&[Identity::Admin], "read container logs")?;
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
        self.auth
            .identify(&request)?
            .require(&[Identity::Admin], "run commands in containers")?;
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
    agent: AgentClient<AuthChannel>,
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
            agent: self.agent(&spec.node_name, &endpoint)?,
            node_name: spec.node_name,
            endpoint,
        })
    }
}

fn key_node(name: &str) -> String {
    key::<Node>("", name)
}
