//! The Nodes service: agents join (bootstrap credential in, node credential out), register
//! their node and heartbeat, each for its own node only; everyone else reads.
//!
//! Owns Node objects only. A heartbeat makes a node Ready; the node lifecycle controller
//! (`node_lifecycle`) makes a silent one NotReady. Nothing here talks to an agent.

use std::sync::Arc;

use kubelab_proto::now_ms;
use kubelab_proto::v1::nodes_server::Nodes;
use kubelab_proto::v1::{
    HeartbeatRequest, JoinRequest, JoinResponse, ListNodesRequest, Node, NodeList, NodeWatchEvent,
    ObjectKey, Taint, UpdateNodeRequest, WatchRequest,
};
use tonic::{Request, Response, Status};

use super::auth::{Authenticator, Identity};
use super::node_ipam::{allocate, Cidr};
use super::node_lifecycle::{announce_ready, mark_ready};
use super::selector::LabelSelector;
use super::store::{check_version, key, prefix, Store};
use super::validation::{check_dns_subdomain, check_labels};
use super::{watch_stream, ApiError, WatchStream};

pub struct NodesService {
    store: Arc<Store>,
    auth: Arc<Authenticator>,
    cluster_cidr: Cidr,
    node_prefix: u8,
    /// One registration at a time picks a pod CIDR, so that two never get the same.
    allocating: tokio::sync::Mutex<()>,
}

impl NodesService {
    /// Nodes are read by everyone in the cluster (not by the bootstrap credential).
    fn reader<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let who = self.auth.identify(request)?;
        if who == Identity::Bootstrap {
            return Err(who.denied("read nodes"));
        }
        Ok(who)
    }

    pub fn new(
        store: Arc<Store>,
        auth: Arc<Authenticator>,
        cluster_cidr: Cidr,
        node_prefix: u8,
    ) -> Self {
        NodesService {
            store,
            auth,
            cluster_cidr,
            node_prefix,
            allocating: tokio::sync::Mutex::new(()),
        }
    }
}

#[tonic::async_trait]
impl Nodes for NodesService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let who = self.auth.identify(&request)?;
        who.require(
            &[Identity::Bootstrap],
            "join nodes (that takes the bootstrap credential)",
        )?;
        let r = request.into_inner();
        let name = r.node_name;
        check_dns_subdomain("node name", &name)?;
        let issued = self
            .auth
            .issue_node_credential(&name, !r.without_serving_certificate)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(node = %name, "node joined: credential issued");
        Ok(Response::new(JoinResponse {
            token: issued.token,
            peer_token: issued.peer_token,
            serving_cert: issued.serving_cert,
            serving_key: issued.serving_key,
        }))
    }

    async fn register(&self, request: Request<Node>) -> Result<Response<Node>, Status> {
        let who = self.auth.identify(&request)?;
        let mut node = request.into_inner();
        let meta = node.metadata.get_or_insert_with(Default::default);
        check_dns_subdomain("node name", &meta.name)?;
        if who != Identity::Node(meta.name.clone()) {
            return Err(who.denied(&format!(
                "register node {:?} (only that node may)",
                meta.name
            )));
        }
        meta.namespace.clear();
        check_labels(&meta.labels)?;
        for taint in node.spec.iter().flat_map(|s| &s.taints) {
            check_taint(taint)?;
        }
        check_resources(node.status.as_ref())?;
        let meta = node.metadata.get_or_insert_with(Default::default);
        let key = key::<Node>("", &meta.name);
        let _allocating = self.allocating.lock().await;
        let (nodes, _) = self.store.list::<Node>(&prefix::<Node>("")).await?;
        let taken: Vec<String> = nodes
            .iter()
            .filter(|n| n.metadata.as_ref().is_some_and(|m| m.name != meta.name))
            .filter_map(|n| n.spec.as_ref().map(|s| s.pod_cidr.clone()))
            .collect();
        let (cluster, node_prefix) = (self.cluster_cidr, self.node_prefix);
        let mut came_back = false;
        let mut no_cidr = false;
        let node = self
            .store
            .update::<Node, _>(&key, |current| {
                let now = now_ms();
                let meta = node.metadata.get_or_insert_with(Default::default);
                match current {
                    // An agent restarting keeps its node's identity, age and spec (what the
                    // cluster decided about the node is not the agent's to reset).
                    Some(old) => {
                        let old_meta = old.metadata.unwrap_or_default();
                        meta.uid = old_meta.uid;
                        meta.creation_timestamp_ms = old_meta.creation_timestamp_ms;
                        // Labels an admin set stay; the agent's own are added.
                        for (k, v) in old_meta.labels {
                            meta.labels.entry(k).or_insert(v);
                        }
                        node.spec = old.spec;
                        let old_status = old.status.unwrap_or_default();
                        came_back = !old_status.ready;
                        node.status.get_or_insert_with(Default::default).conditions =
                            old_status.conditions;
                    }
                    None => {
                        meta.uid = uuid::Uuid::new_v4().to_string();
                        meta.creation_timestamp_ms = now;
                        // The pod CIDR is the apiserver's to give, never a node's to claim
                        // (it could otherwise take another node's range).
                        if let Some(spec) = node.spec.as_mut() {
                            spec.pod_cidr.clear();
                        }
                    }
                }
                let spec = node.spec.get_or_insert_with(Default::default);
                if spec.pod_cidr.is_empty() {
                    // Out of ranges, the node still registers, without a pod CIDR, as in
                    // Kubernetes (hollow nodes need none; a real agent's pods then say
                    // the node has no pod CIDR).
                    match allocate(cluster, node_prefix, &taken) {
                        Some(range) => spec.pod_cidr = range.to_string(),
                        None => no_cidr = true,
                    }
                }
                mark_ready(&mut node, now);
                Ok(Some(node))
            })
            .await?;
        tracing::info!(node = %key, "registered");
        if no_cidr {
            tracing::warn!(node = %key, %cluster, node_prefix, "no pod CIDR left for the node: start the apiserver with a larger --cluster-cidr or --node-cidr-mask-size");
            super::node_lifecycle::announce_cidr_not_available(&self.store, &node).await;
        }
        if came_back {
            announce_ready(&self.store, &node).await;
        }
        Ok(Response::new(node))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<Node>, Status> {
        let who = self.auth.identify(&request)?;
        let name = request.into_inner().name;
        if who != Identity::Node(name.clone()) {
            return Err(who.denied(&format!("heartbeat for node {name:?} (only that node may)")));
        }
        let key = key::<Node>("", &name);
        let mut came_back = false;
        let node = self
            .store
            .update::<Node, _>(&key, |current| {
                let Some(mut node) = current else {
                    return Err(ApiError::NotFound(format!(
                        "node {name:?} (register it first)"
                    )));
                };
                came_back = mark_ready(&mut node, now_ms());
                Ok(Some(node))
            })
            .await?;
        if came_back {
            tracing::info!(node = %name, "heartbeat again: node is Ready");
            announce_ready(&self.store, &node).await;
        }
        Ok(Response::new(node))
    }

    async fn update(&self, request: Request<UpdateNodeRequest>) -> Result<Response<Node>, Status> {
        self.auth
            .identify(&request)?
            .require(&[Identity::Admin], "change nodes (cordon, labels, taints)")?;
        let r = request.into_inner();
        check_labels(&r.labels)?;
        let spec = r.spec.unwrap_or_default();
        for taint in &spec.taints {
            check_taint(taint)?;
        }
        let key = key::<Node>("", &r.name);
        let node = self
            .store
            .update::<Node, _>(&key, |current| {
                let Some(mut node) = current else {
                    return Err(ApiError::NotFound(format!("node {:?}", r.name)));
                };
                check_version(&node, r.resource_version, &format!("nodes {:?}", r.name))?;
                node.metadata.get_or_insert_with(Default::default).labels = r.labels;
                let current = node.spec.get_or_insert_with(Default::default);
                current.unschedulable = spec.unschedulable;
                current.taints = spec.taints;
                Ok(Some(node))
            })
            .await?;
        tracing::info!(node = %r.name, "updated by the admin");
        Ok(Response::new(node))
    }

    async fn get(&self, request: Request<ObjectKey>) -> Result<Response<Node>, Status> {
        self.reader(&request)?;
        let name = request.into_inner().name;
        let key = key::<Node>("", &name);
        match self.store.get_durable::<Node>(&key).await? {
            Some(node) => Ok(Response::new(node)),
            None => Err(ApiError::NotFound(format!("node {name:?}")).into()),
        }
    }

    async fn list(&self, request: Request<ListNodesRequest>) -> Result<Response<NodeList>, Status> {
        self.reader(&request)?;
        let selector = LabelSelector::parse(&request.get_ref().label_selector)?;
        let (mut items, resource_version) = self.store.list::<Node>(&prefix::<Node>("")).await?;
        items.retain(|n| selector.is_empty() || selector.matches(super::labels_of(n)));
        Ok(Response::new(NodeList {
            items,
            resource_version,
        }))
    }

    type WatchStream = WatchStream<NodeWatchEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.reader(&request)?;
        let r = request.into_inner();
        let stream = watch_stream::<Node, _>(
            &self.store,
            r.from_revision,
            prefix::<Node>(""),
            String::new(),
            &r.label_selector,
            |t, node| {
                Some(NodeWatchEvent {
                    r#type: t as i32,
                    object: Some(node),
                })
            },
        )
        .await?;
        Ok(Response::new(stream))
    }
}

/// A taint as Kubernetes accepts it; kubelab has no eviction, so NoExecute is refused.
fn check_taint(taint: &Taint) -> Result<(), ApiError> {
    let one = std::collections::HashMap::from([(taint.key.clone(), taint.value.clone())]);
    check_labels(&one).map_err(|e| ApiError::Invalid(format!("taint: {e}")))?;
    match taint.effect.as_str() {
        "NoSchedule" | "PreferNoSchedule" => Ok(()),
        "NoExecute" => Err(ApiError::Invalid(format!(
            "taint {}: effect NoExecute is not supported (kubelab does not evict running pods): use NoSchedule",
            taint.key
        ))),
        other => Err(ApiError::Invalid(format!(
            "taint {}: effect {other:?} must be NoSchedule or PreferNoSchedule",
            taint.key
        ))),
    }
}

/// What a node reports it has: no negative amounts (Kubernetes' "must be greater than or
/// equal to 0"); the scheduler adds them up in i128, so any i64 is safe beyond that.
fn check_resources(status: Option<&kubelab_proto::v1::NodeStatus>) -> Result<(), ApiError> {
    let Some(status) = status else { return Ok(()) };
    for (what, r) in [
        ("status.capacity", status.capacity.as_ref()),
        ("status.allocatable", status.allocatable.as_ref()),
    ] {
        let Some(r) = r else { continue };
        for (name, value) in [
            ("cpu", r.cpu_millis),
            ("memory", r.memory_bytes),
            ("pods", r.pods),
        ] {
            if value < 0 {
                return Err(ApiError::Invalid(format!(
                    "{what}.{name}: Invalid value: {value}: must be greater than or equal to 0"
                )));
            }
        }
    }
    Ok(())
}
