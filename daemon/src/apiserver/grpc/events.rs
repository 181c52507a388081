//! The Events gRPC service: the registry's create, list and watch.

use kubelab_proto::v1::events_server::Events;
use kubelab_proto::v1::{Event, EventList, EventWatchEvent, ListEventsRequest, WatchRequest};
use tonic::{Request, Response, Status};

use super::{list_options, respond, watch_response, Grpc, WatchStream};
use crate::apiserver::events::EventsService;
use crate::apiserver::registry::Registry;

#[tonic::async_trait]
impl Events for Grpc<EventsService> {
    async fn create(&self, request: Request<Event>) -> Result<Response<Event>, Status> {
        let who = self.identify(&request)?;
        respond(
            self.service
                .create(&who, request.into_inner(), false)
                .await?,
        )
    }

    async fn list(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<EventList>, Status> {
        let who = self.identify(&request)?;
        let r = request.into_inner();
        let fields = if r.involved_uid.is_empty() {
            String::new()
        } else {
            format!("involvedObject.uid={}", r.involved_uid)
        };
        let options = list_options::<EventsService>("", &fields)?;
        let (items, resource_version) = self.service.list(&who, &r.namespace, &options).await?;
        Ok(Response::new(EventList {
            items,
            resource_version,
        }))
    }

    type WatchStream = WatchStream<EventWatchEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = self.identify(&request)?;
        let r = request.into_inner();
        let options = list_options::<EventsService>(&r.label_selector, "")?;
        let events = self
            .service
            .watch(&who, &r.namespace, r.from_revision, options)
            .await?;
        Ok(watch_response(events, |t, event| EventWatchEvent {
            r#type: t as i32,
            object: Some(event),
        }))
    }
}
