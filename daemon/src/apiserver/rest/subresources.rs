//! A pod's subresources over REST: `status` (written by its node), `binding` (the
//! scheduler's), `log` (streamed from the agent) and `exec` (a WebSocket, `exec.rs`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kubelab_proto::v1::LogsRequest;
use serde_json::Value;

use super::handlers::{encode, fail};
use super::kinds::{self, Kind};
use super::request_info::Verb;
use super::{json_response, Ctx, Rest};
use crate::apiserver::auth::Identity;
use crate::apiserver::registry::Registry;
use crate::apiserver::ApiError;

pub async fn pod(rest: &Arc<Rest>, ctx: &Ctx, body: &[u8]) -> Response {
    let result = match (ctx.info.subresource.as_str(), ctx.verb) {
        ("status", Verb::Update) => status(rest, ctx, body).await,
        ("binding", Verb::Create) => binding(rest, ctx, body).await,
        ("log", Verb::Get) => log(rest, ctx).await,
        ("attach", _) => Err(ApiError::BadRequest(
            "attach is not supported by kubelab (a container's console is not kept open to join): read its output with kubectl logs -f, or run a command in it with kubectl exec".into(),
        )),
        ("portforward", _) => Err(ApiError::BadRequest(
            "port-forward is not supported by kubelab yet: a pod's IP is reachable from the machine the lab runs on (kubectl get pod -o wide)".into(),
        )),
        _ => return super::handlers::not_allowed(ctx).into_response(),
    };
    result.unwrap_or_else(|e| fail::<kinds::Pods>(ctx, e))
}

/// `PUT pods/NAME/status`: a node writes the status of a pod bound to it.
async fn status(rest: &Rest, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let decoded = kubelab_proto::k8s::decode::<<kinds::Pods as Kind>::K8s>(body)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let given = decoded.object.metadata;
    let status = kubelab_proto::k8s::pod_status_from_k8s(decoded.object.status);
    let uid = given.uid.unwrap_or_default();
    let version = given
        .resource_version
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let pod = rest
        .pods
        .update_status(
            &ctx.who,
            &ctx.info.namespace,
            &ctx.info.name,
            &uid,
            version,
            status,
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &encode::<kinds::Pods>(&pod),
        &[],
    ))
}

/// `POST pods/NAME/binding`: the scheduler binds a pod to a node.
async fn binding(rest: &Rest, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let binding: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("Binding: {e}")))?;
    let node = binding["target"]["name"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::Invalid("target.name: Required value".into()));
    }
    let uid = binding["metadata"]["uid"].as_str().unwrap_or_default();
    rest.pods
        .bind(&ctx.who, &ctx.info.namespace, &ctx.info.name, node, uid, 0)
        .await?;
    let ok = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201
    });
    Ok(json_response(StatusCode::CREATED, &ok, &[]))
}

fn number(ctx: &Ctx, name: &str) -> Result<Option<i64>, ApiError> {
    ctx.query
        .get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("{name}: not a number: {v:?}")))
        })
        .transpose()
}

/// `GET pods/NAME/log`: the container's log from its agent, streamed as it comes.
async fn log(rest: &Rest, ctx: &Ctx) -> Result<Response, ApiError> {
    ctx.who.require(&[Identity::Admin], "read container logs")?;
    let flag = |name: &str| ctx.query.get(name).is_some_and(|v| v == "true");
    let since_time_ms = match (number(ctx, "sinceSeconds")?, ctx.query.get("sinceTime")) {
        (Some(s), _) if s <= 0 => {
            return Err(ApiError::Invalid(
                "sinceSeconds: Invalid value: must be greater than 0".into(),
            ))
        }
        (Some(s), _) => kubelab_proto::now_ms().saturating_sub(s.saturating_mul(1000)),
        (None, Some(t)) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|_| ApiError::BadRequest(format!("sinceTime: not an RFC 3339 time: {t:?}")))?
            .timestamp_millis(),
        (None, None) => 0,
    };
    let limit = number(ctx, "limitBytes")?;
    if limit.is_some_and(|l| l <= 0) {
        return Err(ApiError::Invalid(
            "limitBytes: Invalid value: must be greater than 0".into(),
        ));
    }
    let tail_lines = number(ctx, "tailLines")?;
    let request = LogsRequest {
        namespace: ctx.info.namespace.clone(),
        name: ctx.info.name.clone(),
        container: ctx.query.get("container").cloned().unwrap_or_default(),
        follow: flag("follow"),
        previous: flag("previous"),
        tail_lines,
        timestamps: flag("timestamps"),
        since_time_ms,
    };
    // Asked before the stream opens, so that errors come back as Status objects.
    let _ = rest
        .pods
        .get(&ctx.who, &ctx.info.namespace, &ctx.info.name)
        .await?;
    let stream = rest.pods.proxy.logs(request).await?;
    let mut left = limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let body = stream
        .take_while(|chunk| futures::future::ready(chunk.is_ok()))
        .filter_map(|chunk| futures::future::ready(chunk.ok()))
        .map(move |chunk| {
            let mut data = chunk.data;
            if let Some(left) = left.as_mut() {
                data.truncate(*left);
                *left -= data.len();
            }
            data
        })
        .take_while(|data| futures::future::ready(!data.is_empty()))
        .map(|data| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(data)));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(body))
        .unwrap_or_default())
}

/// `pods/NAME/exec`.
pub async fn exec(rest: Arc<Rest>, ctx: Ctx, request: Request<Body>) -> Response {
    super::exec::exec(rest, ctx, request).await
}
