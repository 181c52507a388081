//! The Nodes service: agents register their node and heartbeat; everyone else reads.
//!
//! Owns Node objects only. Readiness is derived from the last heartbeat
//! (`kubelab_proto::node_is_ready`); nothing here talks to an agent.

use std::sync::Arc;

use kubelab_proto::now_ms;
use kubelab_proto::v1::nodes_server::Nodes;
use kubelab_proto::v1::{
    HeartbeatRequest, ListNodesRequest, Node, NodeList, NodeWatchEvent, ObjectKey, WatchRequest,
};
use tonic::{Request, Response, Status};

use super::store::{key, prefix, Store};
use super::validation::check_dns_subdomain;
use super::{watch_stream, ApiError, WatchStream};

pub struct NodesService {
    store: Arc<Store>,
}

impl NodesService {
    pub fn new(store: Arc<Store>) -> Self {
        NodesService { store }
    }
}

#[tonic::async_trait]
impl Nodes for NodesService {
    async fn register(&self, request: Request<Node>) -> Result<Response<Node>, Status> {
        let mut node = request.into_inner();
        let meta = node.metadata.get_or_insert_with(Default::default);
        check_dns_subdomain("node name", &meta.name)?;
        meta.namespace.clear();
        let key = key::<Node>("", &meta.name);
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
        let name = request.into_inner().name;
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
        let name = request.into_inner().name;
        let key = key::<Node>("", &name);
        match self.store.get::<Node>(&key)? {
            Some(node) => Ok(Response::new(node)),
            None => Err(ApiError::NotFound(format!("node {name:?}")).into()),
        }
    }

    async fn list(
        &self,
        _request: Request<ListNodesRequest>,
    ) -> Result<Response<NodeList>, Status> {
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
