//! The Namespaces gRPC service: the registry's create, get, list and update.

use kubelab_proto::v1::namespaces_server::Namespaces;
use kubelab_proto::v1::{
    ListNamespacesRequest, Namespace, NamespaceList, ObjectKey, ObjectMeta, UpdateNamespaceRequest,
};
use tonic::{Request, Response, Status};

use super::{list_options, respond, Grpc};
use crate::apiserver::namespaces::NamespacesService;
use crate::apiserver::registry::Registry;

#[tonic::async_trait]
impl Namespaces for Grpc<NamespacesService> {
    async fn create(&self, request: Request<Namespace>) -> Result<Response<Namespace>, Status> {
        let who = self.identify(&request)?;
        respond(
            self.service
                .create(&who, request.into_inner(), false)
                .await?,
        )
    }

    async fn get(&self, request: Request<ObjectKey>) -> Result<Response<Namespace>, Status> {
        let who = self.identify(&request)?;
        let name = request.into_inner().name;
        Ok(Response::new(self.service.get(&who, "", &name).await?))
    }

    async fn list(
        &self,
        request: Request<ListNamespacesRequest>,
    ) -> Result<Response<NamespaceList>, Status> {
        let who = self.identify(&request)?;
        let options = list_options::<NamespacesService>(&request.get_ref().label_selector, "")?;
        let (items, resource_version) = self.service.list(&who, "", &options).await?;
        Ok(Response::new(NamespaceList {
            items,
            resource_version,
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<Namespace>, Status> {
        let who = self.identify(&request)?;
        let r = request.into_inner();
        // The annotations an update does not name stay as they are.
        let current = self.service.get(&who, "", &r.name).await?;
        let annotations = current.metadata.map(|m| m.annotations).unwrap_or_default();
        let namespace = Namespace {
            metadata: Some(ObjectMeta {
                name: r.name,
                labels: r.labels,
                annotations,
                resource_version: r.resource_version,
                ..Default::default()
            }),
            status: None,
        };
        respond(self.service.update(&who, namespace, false).await?)
    }
}
