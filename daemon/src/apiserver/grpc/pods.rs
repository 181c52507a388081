//! The Pods gRPC service: each call decoded, authenticated, and handed to `PodsService`,
//! the same code the REST side calls.

use futures::StreamExt;
use kubelab_proto::v1::pods_server::Pods;
use kubelab_proto::v1::{
    BindRequest, DeletePodRequest, ExecOutput, ExecRequest, ListPodsRequest, LogChunk, LogsRequest,
    ObjectKey, Pod, PodList, PodWatchEvent, UpdatePodStatusRequest, WatchRequest,
};
use tonic::{Request, Response, Status};

use super::{list_options, node_field, respond, watch_response, Grpc, WatchStream};
use crate::apiserver::pods::PodsService;
use crate::apiserver::registry::{DeleteOptions, Registry};

#[tonic::async_trait]
impl Pods for Grpc<PodsService> {
    async fn create(&self, request: Request<Pod>) -> Result<Response<Pod>, Status> {
        let who = self.identify(&request)?;
        respond(
            self.service
                .create(&who, request.into_inner(), false)
                .await?,
        )
    }

    async fn update(&self, request: Request<Pod>) -> Result<Response<Pod>, Status> {
        let who = self.identify(&request)?;
        respond(
            self.service
                .update(&who, request.into_inner(), false)
                .await?,
        )
    }

    async fn get(&self, request: Request<ObjectKey>) -> Result<Response<Pod>, Status> {
        let who = self.identify(&request)?;
        let r = request.into_inner();
        Ok(Response::new(
            self.service.get(&who, &r.namespace, &r.name).await?,
        ))
    }

    async fn list(&self, request: Request<ListPodsRequest>) -> Result<Response<PodList>, Status> {
        let who = self.identify(&request)?;
        let r = request.into_inner();
        let options = list_options::<PodsService>(&r.label_selector, &node_field(&r.node_name))?;
        let (items, resource_version) = self.service.list(&who, &r.namespace, &options).await?;
        Ok(Response::new(PodList {
            items,
            resource_version,
        }))
    }

    async fn delete(&self, request: Request<DeletePodRequest>) -> Result<Response<Pod>, Status> {
        let who = self.identify(&request)?;
        let r = request.into_inner();
        let options = DeleteOptions {
            grace_period_seconds: r.grace_period_seconds,
            force: r.force,
            uid: r.uid,
            resource_version: r.resource_version,
            dry_run: false,
            propagation: Default::default(),
        };
        Ok(Response::new(
            self.service
                .delete(&who, &r.namespace, &r.name, options)
                .await?,
        ))
    }

    async fn bind(&self, request: Request<BindRequest>) -> Result<Response<Pod>, Status> {
        let who = self.identify(&request)?;
        let r = request.into_inner();
        let pod = self
            .service
            .bind(
                &who,
                &r.namespace,
                &r.name,
                &r.node_name,
                &r.uid,
                r.resource_version,
            )
            .await?;
        Ok(Response::new(pod))
    }

    async fn update_status(
        &self,
        request: Request<UpdatePodStatusRequest>,
    ) -> Result<Response<Pod>, Status> {
        let who = self.identify(&request)?;
        let r = request.into_inner();
        let pod = self
            .service
            .update_status(
                &who,
                &r.namespace,
                &r.name,
                &r.uid,
                r.resource_version,
                r.status,
            )
            .await?;
        Ok(Response::new(pod))
    }

    type WatchStream = WatchStream<PodWatchEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = self.identify(&request)?;
        let r = request.into_inner();
        let options = list_options::<PodsService>(&r.label_selector, &node_field(&r.node_name))?;
        let events = self
            .service
            .watch(&who, &r.namespace, r.from_revision, options)
            .await?;
        Ok(watch_response(events, |t, pod| PodWatchEvent {
            r#type: t as i32,
            object: Some(pod),
        }))
    }

    type LogsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogChunk, Status>> + Send>>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        self.identify(&request)?.require(
            &[crate::apiserver::auth::Identity::Admin],
            "read container logs",
        )?;
        let stream = self.service.proxy.logs(request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    type ExecStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<ExecOutput, Status>> + Send>>;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        self.identify(&request)?.require(
            &[crate::apiserver::auth::Identity::Admin],
            "run commands in containers",
        )?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("exec: no request was sent"))?;
        // The user's stdin follows the first message, untouched, until the stream ends.
        let stdin = inbound
            .take_while(|m| futures::future::ready(m.is_ok()))
            .filter_map(|m| futures::future::ready(m.ok()));
        let stream = self.service.proxy.exec(first, stdin).await?;
        Ok(Response::new(stream))
    }
}
