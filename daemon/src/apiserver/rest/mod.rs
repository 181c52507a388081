//! The REST way in: the Kubernetes API as kube-apiserver serves it (JSON over HTTPS), so
//! that kubectl, k9s and client libraries work with kubelab unchanged.
//!
//! A request is authenticated (the same bearer tokens as gRPC), read into a
//! `RequestInfo` (verb, resource, namespace, name, subresource) and handed to the
//! resource's `Registry` — the code the gRPC services call — through the generic verbs
//! of `handlers`; answers and errors are encoded as kube-apiserver encodes them. No rule
//! about any resource lives here.
//!
//! Layout: `request_info` (paths), `kinds` (each resource's names, JSON shape and table),
//! `handlers` (get, list, and the one write path), `patch` (the four patch types, with
//! `strategic` merge and server-side `apply`, whose bookkeeping is `managed_fields`),
//! `watch` (JSON-lines watch streams), `subresources` (a pod's status, binding, log),
//! `scale` (a workload's replicas as autoscaling/v1 Scale), `exec`
//! (WebSocket), `discovery` (`/api`, `/apis`, `/version`) and `openapi`, `protobuf` (the
//! one protobuf body read), `status` (errors as Status).

mod apply;
mod discovery;
mod exec;
mod handlers;
mod inflight;
pub use inflight::Inflight;
mod kinds;
mod managed_fields;
mod openapi;
mod patch;
mod protobuf;
mod protobuf_object;
pub mod request_info;
mod scale;
mod status;
mod strategic;
mod subresources;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use self::kinds::Kind;
use self::request_info::{NotAResource, RequestInfo, Verb};
use self::status::failure;
use super::auth::{Authenticator, Identity};
use super::events::EventsService;
use super::namespaces::NamespacesService;
use super::native::NativeRegistry;
use super::nodes::NodesService;
use super::pods::PodsService;
use super::services::endpointslices::EndpointSliceStrategy;
use super::services::ServiceStrategy;
use super::workloads::deployments::DeploymentStrategy;
use super::workloads::jobs::JobStrategy;
use super::workloads::replicasets::ReplicaSetStrategy;
use super::ApiError;

/// What the REST side serves from: the same services gRPC serves from.
pub struct Rest {
    pub pods: Arc<PodsService>,
    pub nodes: Arc<NodesService>,
    pub namespaces: Arc<NamespacesService>,
    pub events: Arc<EventsService>,
    pub replicasets: Arc<NativeRegistry<ReplicaSetStrategy>>,
    pub deployments: Arc<NativeRegistry<DeploymentStrategy>>,
    pub jobs: Arc<NativeRegistry<JobStrategy>>,
    pub services: Arc<NativeRegistry<ServiceStrategy>>,
    pub endpointslices: Arc<NativeRegistry<EndpointSliceStrategy>>,
    pub auth: Arc<Authenticator>,
    /// `HOST:PORT` clients reach this apiserver at (for discovery).
    pub address: String,
    pub inflight: inflight::Inflight,
}

impl Rest {
    /// `--max-requests-inflight`: REST requests served at once (0: no limit).
    pub fn limit_requests(mut self, limit: usize) -> Rest {
        self.inflight = inflight::Inflight::new(limit);
        self
    }
}

/// One request, read: who sent it and what it asks.
pub struct Ctx {
    pub who: Identity,
    pub method: Method,
    pub path: String,
    pub verb: Verb,
    pub info: RequestInfo,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
}

/// The largest body read (a pod is far smaller; Kubernetes caps objects at 1.5 MB).
const MAX_BODY: usize = 3 << 20;

/// A warning as Kubernetes sends it in HTTP: `299 - "text"`, the text quoted and
/// anything beyond printable ASCII replaced.
pub fn warning_value(text: &str) -> String {
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
    quoted
}

/// A JSON answer with `Warning` headers.
pub fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    for (name, value) in handlers::warning_headers(warnings) {
        if let Ok(value) = value.parse() {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Every REST request comes here.
pub async fn serve(rest: Arc<Rest>, request: Request<Body>) -> Response {
    let path = request.uri().path().to_string();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    // Health and version are public, as in Kubernetes (system:public-info-viewer).
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return (StatusCode::OK, "ok").into_response(),
        "/version" => return discovery::version(),
        _ => {}
    }
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let who = match rest.auth.identify(authorization) {
        Ok(who) => who,
        Err(e) => return status::Target::default().failure(e).into_response(),
    };
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    // Long-running requests (watches, log follows, exec) are not counted, as in
    // kube-apiserver; everything else takes a place while it is served.
    let long_running = watch
        || path.ends_with("/exec")
        || (path.ends_with("/log") && query.get("follow").is_some_and(|f| f == "true"));
    let _slot = if long_running {
        None
    } else {
        match rest.inflight.enter() {
            Some(slot) => Some(slot),
            None => {
                let mut response = failure(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                    serde_json::json!({ "retryAfterSeconds": 1 }),
                )
                .into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                return response;
            }
        }
    };
    let (verb, info) = match request_info::parse(request.method(), &path, watch) {
        Ok(parsed) => parsed,
        Err(NotAResource::Discovery { group, version }) => {
            return discovery::serve(&rest, &group, &version)
        }
        Err(NotAResource::Unknown) => return discovery::other(request),
    };
    let (parts, body) = request.into_parts();
    let mut ctx = Ctx {
        who,
        method: parts.method.clone(),
        path,
        verb,
        info,
        query,
        headers: parts.headers.clone(),
    };
    if ctx.info.group.is_empty() && ctx.info.resource == "pods" && ctx.info.subresource == "exec" {
        return subresources::exec(rest, ctx, Request::from_parts(parts, body)).await;
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("the request body is larger than {MAX_BODY} bytes"),
                Value::Null,
            )
            .into_response()
        }
    };
    let (group, version, resource) = (
        ctx.info.group.clone(),
        ctx.info.version.clone(),
        ctx.info.resource.clone(),
    );
    match (group.as_str(), version.as_str(), resource.as_str()) {
        ("", "v1", "pods") => resource_request::<kinds::Pods>(&rest, &rest.pods, &ctx, &body).await,
        ("", "v1", "nodes") => {
            resource_request::<kinds::Nodes>(&rest, &rest.nodes, &ctx, &body).await
        }
        ("", "v1", "namespaces") => {
            resource_request::<kinds::Namespaces>(&rest, &rest.namespaces, &ctx, &body).await
        }
        ("", "v1", "events") => {
            resource_request::<kinds::Events>(&rest, &rest.events, &ctx, &body).await
        }
        ("authentication.k8s.io", "v1", "selfsubjectreviews") if ctx.verb == Verb::Create => {
            discovery::whoami(&ctx)
        }
        ("", "v1", "services") => {
            resource_request::<kinds::Services>(&rest, &rest.services, &ctx, &body).await
        }
        ("discovery.k8s.io", "v1", "endpointslices") => {
            resource_request::<kinds::EndpointSlices>(&rest, &rest.endpointslices, &ctx, &body)
                .await
        }
        ("apps", "v1", "replicasets") => {
            resource_request::<kinds::ReplicaSets>(&rest, &rest.replicasets, &ctx, &body).await
        }
        ("apps", "v1", "deployments") => {
            resource_request::<kinds::Deployments>(&rest, &rest.deployments, &ctx, &body).await
        }
        ("batch", "v1", "jobs") => {
            resource_request::<kinds::Jobs>(&rest, &rest.jobs, &ctx, &body).await
        }
        ("events.k8s.io", "v1", "events") => {
            ctx.info.group = "events.k8s.io".into();
            resource_request::<kinds::EventsV1>(&rest, &rest.events, &ctx, &body).await
        }
        _ => discovery::not_found(),
    }
}

/// A request for one resource: the verb and subresource decide the handler.
async fn resource_request<K: Kind>(
    rest: &Arc<Rest>,
    registry: &K::Registry,
    ctx: &Ctx,
    body: &[u8],
) -> Response {
    use self::handlers as h;
    let result: Result<Response, ApiError> = match (ctx.verb, ctx.info.subresource.as_str()) {
        (Verb::List, "") => h::list::<K>(ctx, registry).await,
        (Verb::Watch, "") => watch::watch::<K>(ctx, registry).await,
        (Verb::Get, "" | "status") => h::get::<K>(ctx, registry).await,
        (Verb::Create, "") => {
            h::write::<K>(ctx, registry, body, h::Write::Create, h::Managed::Track).await
        }
        (Verb::Update, "") => {
            h::write::<K>(ctx, registry, body, h::Write::Update, h::Managed::Track).await
        }
        (Verb::Patch, "") => patch::patch::<K>(ctx, registry, body).await,
        (Verb::Delete, "") => h::delete::<K>(ctx, registry, body).await,
        (_, "log" | "binding" | "status" | "attach" | "portforward") if K::PLURAL == "pods" => {
            return subresources::pod(rest, ctx, body).await
        }
        (Verb::Update, "status") => {
            h::write::<K>(
                ctx,
                registry,
                body,
                h::Write::UpdateStatus,
                h::Managed::Track,
            )
            .await
        }
        (Verb::Patch, "status") => patch::patch::<K>(ctx, registry, body).await,
        (Verb::Get | Verb::Update | Verb::Patch, "scale")
            if K::SUBRESOURCES.iter().any(|(s, _)| *s == "scale") =>
        {
            scale::scale::<K>(ctx, registry, body).await
        }
        _ => return h::not_allowed(ctx).into_response(),
    };
    result.unwrap_or_else(|e| h::fail::<K>(ctx, e))
}

/// Every step that reads a REST request, on arbitrary input and without a server: the
/// path, the query, the selectors, a body as a Pod, a patch of each type applied to a
/// pod, a DeleteOptions (JSON or protobuf), an applied configuration. For the fuzz
/// target `rest_request` and the replay of its corpus: whatever comes, nothing panics.
///
/// `input` is `M PATH\nQUERY\nCONTENT-TYPE\nBODY`, M a byte choosing the method.
pub fn decode_hostile(input: &[u8]) -> usize {
    use kinds::Kind;
    let Some((&m, rest)) = input.split_first() else {
        return 0;
    };
    let mut parts = rest.splitn(4, |b| *b == b'\n');
    let text = |p: Option<&[u8]>| String::from_utf8_lossy(p.unwrap_or_default()).into_owned();
    let (path, query, content_type) = (text(parts.next()), text(parts.next()), text(parts.next()));
    let body = parts.next().unwrap_or_default();
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    let method = &methods[usize::from(m) % methods.len()];
    let mut reached = 0;
    if request_info::parse(method, &path, m % 2 == 0).is_ok() {
        reached += 1;
    }
    let query: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
    let fields = <<kinds::Pods as Kind>::Registry as super::registry::Registry>::FIELDS;
    if super::selector::FieldSelector::parse(get("fieldSelector"), fields).is_ok() {
        reached += 1;
    }
    if super::selector::LabelSelector::parse(get("labelSelector")).is_ok() {
        reached += 1;
    }
    if let Ok(decoded) = kubelab_proto::k8s::decode::<k8s_openapi::api::core::v1::Pod>(body) {
        if let Ok(pod) = kubelab_proto::k8s::pod_from_k8s(decoded.object) {
            let kept = serde_json::to_value(kubelab_proto::k8s::pod(&pod)).unwrap_or_default();
            reached += kubelab_proto::k8s::unsupported(&decoded.value, &kept).len();
        }
    }
    let base = kubelab_proto::v1::Pod::default();
    for kind in ["json", "merge", "strategic"] {
        let mut doc = serde_json::to_value(kubelab_proto::k8s::pod(&base)).unwrap_or_default();
        if patch::apply_patch(&mut doc, kind, body).is_ok() {
            reached += 1;
        }
    }
    if content_type.starts_with(protobuf::CONTENT_TYPE) && protobuf::delete_options(body).is_ok() {
        reached += 1;
    }
    if protobuf_object::to_json(body).is_ok() {
        reached += 1;
    }
    if yaml_serde::from_slice::<serde_json::Value>(body).is_ok() {
        reached += 1;
    }
    reached
}

#[cfg(test)]
mod tests {
    /// What `make fuzz` kept for `rest_request` replays without a panic.
    #[test]
    fn the_fuzz_corpus_replays_without_panics() {
        for path in kubelab_proto::fuzz_corpus("rest_request") {
            let input = std::fs::read(&path).unwrap_or_default();
            let _ = super::decode_hostile(&input);
        }
    }
}
