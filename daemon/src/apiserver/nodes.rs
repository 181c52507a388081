//! The Nodes service: agents join (bootstrap credential in, node credential out), register
//! their node and heartbeat, each for its own node only; everyone else reads.
//!
//! Owns Node objects only. Readiness is derived from the last heartbeat
//! (`kubelab_proto::node_is_ready`); nothing here talks to an agent.

use std::sync::Arc;

use kubelab_proto::now_ms;
use kubelab_proto::v1::nodes_server::Nodes;
use kubelab_proto::v1::{
    HeartbeatRequest, JoinRequest, JoinResponse, ListNodesRequest, Node, NodeList, NodeWatchEvent,
    ObjectKey, WatchRequest,
};
use tonic::{Request, Response, Status};

use super::auth::{Authenticator, Identity};
use super::node_ipam::{allocate, Cidr};
use super::store::{key, prefix, Store};
use super::validation::check_dns_subdomain;
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
        let name = request.into_inner().node_name;
        check_dns_subdomain("node name", &name)?;
        let (token, peer_token) = self
            .auth
            .issue_node_token(&name)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(node = %name, "node joined: credential issued");
        Ok(Response::new(JoinResponse { token, peer_token }))
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
        let key = key::<Node>("", &meta.name);
        let _allocating = self.allocating.lock().await;
        let (nodes, _) = self.store.list::<Node>(&prefix::<Node>(""))?;
        let taken: Vec<String> = nodes
            .iter()
            .filter(|n| n.metadata.as_ref().is_some_and(|m| m.name != meta.name))
            .filter_map(|n| n.spec.as_ref().map(|s| s.pod_cidr.clone()))
            .collect();
        let (cluster, node_prefix) = (self.cluster_cidr, self.node_prefix);
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
                        node.spec = old.spec;
                    }
                    None => {
                        meta.uid = uuid::Uuid::new_v4().to_string();
                        meta.creation_timestamp_ms = now;
                    }
                }
                let spec = node.spec.get_or_insert_with(Default::default);
                if spec.pod_cidr.is_empty() {
                    let range = allocate(cluster, node_prefix, &taken).ok_or_else(|| {
                        ApiError::Invalid(format!(
                            "no pod CIDR left for node {:?}: the cluster CIDR {cluster} holds no more /{node_prefix} ranges (start the apiserver with a larger --cluster-cidr)",
                            meta.name
                        ))
                    })?;
                    spec.pod_cidr = range.to_string();
                }
                let status = node.status.get_or_insert_with(Default::default);
                status.ready = true;
                status.last_heartbeat_ms = now;
                Ok(Some(node))
            })
            .await?;
        tracing::info!(node = %key, "registered");
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
        let node = self
            .store
            .update::<Node, _>(&key, |current| {
                let Some(mut node) = current else {
                    return Err(ApiError::NotFound(format!(
                        "node {name:?} (register it first)"
                    )));
                };
                let status = node.status.get_or_insert_with(Default::default);
                status.ready = true;
                status.last_heartbeat_ms = now_ms();
                Ok(Some(node))
            })
            .await?;
        Ok(Response::new(node))
    }

    async fn get(&self, request: Request<ObjectKey>) -> Result<Response<Node>, Status> {
        self.reader(&request)?;
        let name = request.into_inner().name;
        let key = key::<Node>("", &name);
        match self.store.get::<Node>(&key)? {
            Some(node) => Ok(Response::new(node)),
            None => Err(ApiError::NotFound(format!("node {name:?}")).into()),
        }
    }

    async fn list(&self, request: Request<ListNodesRequest>) -> Result<Response<NodeList>, Status> {
        self.reader(&request)?;
        let (items, resource_version) = self.store.list::<Node>(&prefix::<Node>(""))?;
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
            |t, node| {
                Some(NodeWatchEvent {
                    r#type: t as i32,
                    object: Some(node),
                })
            },
        )?;
        Ok(Response::new(stream))
    }
}
