//! The gRPC way in: kubelab's own services (`kubelab.v1`), each call authenticated and
//! handed to the resource's `Registry` (or its own methods, for the steps only agents
//! and the scheduler take: join, register, heartbeat, bind, status). No rules live here.

mod events;
mod namespaces;
mod nodes;
mod pods;

use std::sync::Arc;

use kubelab_proto::v1::WatchEventType;
use tonic::{Request, Response, Status};

use super::auth::{Authenticator, Identity};
use super::registry::{ListOptions, Registry, WatchEvents, Written};
use super::selector::{FieldSelector, LabelSelector};

/// A resource's service as gRPC serves it.
pub struct Grpc<S> {
    pub service: Arc<S>,
    pub auth: Arc<Authenticator>,
}

impl<S> Grpc<S> {
    pub fn new(service: Arc<S>, auth: Arc<Authenticator>) -> Self {
        Grpc { service, auth }
    }

    fn identify<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        Ok(self.auth.identify(header)?)
    }
}

/// A write's answer: the object, and the warnings as Kubernetes sends them in HTTP
/// (`warning: 299 - "text"`).
fn respond<T>(written: Written<T>) -> Result<Response<T>, Status> {
    let mut response = Response::new(written.object);
    for warning in written.warnings {
        response
            .metadata_mut()
            .append("warning", warning_header(&warning));
    }
    Ok(response)
}

/// A warning in Kubernetes' HTTP form: `299 - "text"`, the text quoted and, for gRPC
/// metadata, anything beyond printable ASCII replaced.
fn warning_header(text: &str) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    let quoted = super::rest::warning_value(text);
    tonic::metadata::MetadataValue::try_from(quoted).unwrap_or_else(|_| {
        tonic::metadata::MetadataValue::from_static("299 - \"unprintable warning\"")
    })
}

/// List options from a gRPC request's label selector and field selector text.
fn list_options<R: Registry>(labels: &str, fields: &str) -> Result<ListOptions, Status> {
    Ok(ListOptions {
        labels: LabelSelector::parse(labels)?,
        fields: FieldSelector::parse(fields, R::FIELDS)?,
    })
}

/// `spec.nodeName=NODE`, or nothing for an empty name.
fn node_field(node_name: &str) -> String {
    if node_name.is_empty() {
        String::new()
    } else {
        format!("spec.nodeName={node_name}")
    }
}

/// A gRPC stream of watch events, as returned by the Watch RPCs.
type WatchStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send>>;

fn watch_response<T, E>(
    events: WatchEvents<T>,
    wrap: impl Fn(WatchEventType, T) -> E + Send + 'static,
) -> Response<WatchStream<E>>
where
    T: Send + 'static,
    E: Send + 'static,
{
    use futures::StreamExt;
    let stream = events.map(move |event| match event {
        Ok((change_type, _, object)) => Ok(wrap(change_type, object)),
        Err(e) => Err(Status::from(e)),
    });
    Response::new(Box::pin(stream))
}
