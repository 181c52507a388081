//! The apiserver's client of the agents: a pod's logs and exec are served by the agent of
//! its node, and the apiserver forwards them, as kube-apiserver does to the kubelet.
//!
//! Owns the connections to agents (TLS, each agent's certificate checked for its node's
//! name, that node's own peer token) and finding which agent and container a request
//! means. Decides nothing about who may ask: the callers check that first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kubelab_proto::credential::{AuthChannel, Bearer};
use kubelab_proto::v1::agent_client::AgentClient;
use kubelab_proto::v1::{ExecOutput, ExecRequest, LogChunk, LogsRequest, Node, Pod};
use tonic::Status;

use super::auth::Authenticator;
use super::pods::{namespace_or_default, pod_key, pod_ref};
use super::store::{key, Store};
use super::ApiError;

pub struct AgentProxy {
    store: Arc<Store>,
    auth: Arc<Authenticator>,
    /// Per node: its agent's endpoint and a lazily connected channel to it, reused by
    /// every logs and exec call.
    agents: Mutex<HashMap<String, (String, tonic::transport::Channel)>>,
}

/// A stream of log bytes or exec output, as the agent sends it.
pub type AgentStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// A container of a pod, and the agent that runs it: where logs and exec are sent.
struct ContainerTarget {
    namespace: String,
    container: String,
    node_name: String,
    endpoint: String,
    agent: AgentClient<AuthChannel>,
}

impl ContainerTarget {
    fn agent_error(&self, e: Status) -> ApiError {
        if e.code() == tonic::Code::Unavailable {
            ApiError::Unavailable(format!(
                "the agent of node {} ({}) does not answer: {}",
                self.node_name,
                self.endpoint,
                e.message()
            ))
        } else {
            ApiError::from_status(e)
        }
    }
}

impl AgentProxy {
    pub fn new(store: Arc<Store>, auth: Arc<Authenticator>) -> Self {
        AgentProxy {
            store,
            auth,
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// The container's log, from its agent (`request` names the pod and container).
    pub async fn logs(&self, request: LogsRequest) -> Result<AgentStream<LogChunk>, ApiError> {
        let target = self.container_target(
            &request.namespace,
            &request.name,
            &request.container,
            "logs",
        )?;
        let forwarded = LogsRequest {
            namespace: target.namespace.clone(),
            container: target.container.clone(),
            ..request
        };
        let mut agent = target.agent.clone();
        let stream = agent
            .logs(forwarded)
            .await
            .map_err(|e| target.agent_error(e))?;
        Ok(Box::pin(stream.into_inner()))
    }

    /// Runs `first.command` in the container; `stdin` follows, untouched.
    pub async fn exec(
        &self,
        first: ExecRequest,
        stdin: impl futures::Stream<Item = ExecRequest> + Send + 'static,
    ) -> Result<AgentStream<ExecOutput>, ApiError> {
        if first.command.is_empty() {
            return Err(ApiError::BadRequest(
                "you must specify at least 1 command (exec POD -- COMMAND ARGS...)".into(),
            ));
        }
        let target =
            self.container_target(&first.namespace, &first.name, &first.container, "exec")?;
        let first = ExecRequest {
            namespace: target.namespace.clone(),
            container: target.container.clone(),
            ..first
        };
        use futures::StreamExt;
        let outbound = futures::stream::once(async move { first }).chain(stdin);
        let mut agent = target.agent.clone();
        let stream = agent
            .exec(outbound)
            .await
            .map_err(|e| target.agent_error(e))?;
        Ok(Box::pin(stream.into_inner()))
    }

    /// Whether logs or exec of this pod and container could be served (the pod is bound,
    /// the container is one of its own).
    pub fn check(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        what: &str,
    ) -> Result<(), ApiError> {
        self.container_target(namespace, name, container, what)
            .map(|_| ())
    }

    /// A client for `node`'s agent at `endpoint`: TLS, the agent's certificate checked
    /// against the cluster CA for the node's name, and that node's own peer token.
    fn agent(&self, node: &str, endpoint: &str) -> Result<AgentClient<AuthChannel>, ApiError> {
        let peer_token = self.auth.peer_token_of(node).ok_or_else(|| {
            ApiError::FailedPrecondition(format!(
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
                            ApiError::Internal(format!("bad agent endpoint {endpoint:?}: {e}"))
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

    /// Finds the pod's node and agent, and the container meant (the only one when none
    /// is named; Kubernetes' default-container annotation, else the first, otherwise).
    fn container_target(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        what: &str,
    ) -> Result<ContainerTarget, ApiError> {
        let pod = self
            .store
            .get::<Pod>(&pod_key(namespace, name))?
            .ok_or_else(|| ApiError::NotFound(pod_ref(name)))?;
        let default_container = pod
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.get("kubectl.kubernetes.io/default-container"))
            .cloned();
        let spec = pod.spec.unwrap_or_default();
        if spec.node_name.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "pod {name} is not scheduled to a node yet: no {what} until it runs"
            )));
        }
        let node = self
            .store
            .get::<Node>(&key::<Node>("", &spec.node_name))?
            .ok_or_else(|| ApiError::NotFound(format!("nodes {:?}", spec.node_name)))?;
        let endpoint = node.status.map(|s| s.agent_endpoint).unwrap_or_default();
        let names: Vec<_> = spec
            .init_containers
            .iter()
            .chain(&spec.containers)
            .map(|c| c.name.as_str())
            .collect();
        let container = if container.is_empty() {
            match default_container {
                Some(c) => c,
                None if spec.containers.len() > 1 => {
                    return Err(ApiError::BadRequest(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        names.join(" ")
                    )));
                }
                None => spec
                    .containers
                    .first()
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
            }
        } else if names.contains(&container) {
            container.to_string()
        } else {
            return Err(ApiError::BadRequest(format!(
                "container {container} is not valid for pod {name}"
            )));
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
