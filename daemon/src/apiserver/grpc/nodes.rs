//! The Nodes gRPC service: join, register and heartbeat (agents), and the registry's
//! get, list, watch and update.

use kubelab_proto::v1::nodes_server::Nodes;
use kubelab_proto::v1::{
    HeartbeatRequest, JoinRequest, JoinResponse, ListNodesRequest, Node, NodeList, NodeWatchEvent,
    ObjectKey, ObjectMeta, UpdateNodeRequest, WatchRequest,
};
use tonic::{Request, Response, Status};

use super::{list_options, respond, watch_response, Grpc, WatchStream};
use crate::apiserver::nodes::NodesService;
use crate::apiserver::registry::Registry;

#[tonic::async_trait]
impl Nodes for Grpc<NodesService> {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let who = self.identify(&request)?;
        Ok(Response::new(
            self.service.join(&who, request.into_inner()).await?,
        ))
    }

    async fn register(&self, request: Request<Node>) -> Result<Response<Node>, Status> {
        let who = self.identify(&request)?;
        Ok(Response::new(
            self.service.register(&who, request.into_inner()).await?,
        ))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<Node>, Status> {
        let who = self.identify(&request)?;
        Ok(Response::new(
            self.service
                .heartbeat(&who, request.into_inner().name)
                .await?,
        ))
    }

    async fn update(&self, request: Request<UpdateNodeRequest>) -> Result<Response<Node>, Status> {
        let who = self.identify(&request)?;
        let r = request.into_inner();
        // The annotations an update does not name stay as they are.
        let current = self.service.get(&who, "", &r.name).await?;
        let annotations = current.metadata.map(|m| m.annotations).unwrap_or_default();
        let node = Node {
            metadata: Some(ObjectMeta {
                name: r.name,
                labels: r.labels,
                annotations,
                resource_version: r.resource_version,
                ..Default::default()
            }),
            spec: r.spec,
            status: None,
        };
        respond(self.service.update(&who, node, false).await?)
    }

    async fn get(&self, request: Request<ObjectKey>) -> Result<Response<Node>, Status> {
        let who = self.identify(&request)?;
        let name = request.into_inner().name;
        Ok(Response::new(self.service.get(&who, "", &name).await?))
    }

    async fn list(&self, request: Request<ListNodesRequest>) -> Result<Response<NodeList>, Status> {
        let who = self.identify(&request)?;
        let options = list_options::<NodesService>(&request.get_ref().label_selector, "")?;
        let (items, resource_version) = self.service.list(&who, "", &options).await?;
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
        let who = self.identify(&request)?;
        let r = request.into_inner();
        let options = list_options::<NodesService>(&r.label_selector, "")?;
        let events = self
            .service
            .watch(&who, "", r.from_revision, options)
            .await?;
        Ok(watch_response(events, |t, node| NodeWatchEvent {
            r#type: t as i32,
            object: Some(node),
        }))
    }
}
