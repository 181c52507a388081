//! Watches as kube-apiserver streams them: one JSON object per line, `{"type":"ADDED",
//! "object":{...}}`, resumable from a `resourceVersion`, with bookmarks when asked for
//! (`allowWatchBookmarks`), the initial state first when the version is `""`/`0` or
//! `sendInitialEvents=true`, and a 410 Expired `ERROR` event when the version is older
//! than the history kept (the client relists). Tables too (`kubectl get -w`).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use serde_json::{json, Value};

use super::handlers::{encode, list_options, table, wants_table};
use super::kinds::Kind;
use super::Ctx;
use crate::apiserver::registry::Registry;
use crate::apiserver::store::ChangeType;
use crate::apiserver::ApiError;

/// How often a quiet watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// The longest a watch may ask to run (`timeoutSeconds`).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

fn event_type(t: ChangeType) -> &'static str {
    match t {
        ChangeType::Added => "ADDED",
        ChangeType::Deleted => "DELETED",
        _ => "MODIFIED",
    }
}

fn line(value: &Value) -> Result<bytes::Bytes, Infallible> {
    let mut text = value.to_string();
    text.push('\n');
    Ok(bytes::Bytes::from(text))
}

/// An `ERROR` event carrying the Status kube-apiserver would send for `error`.
fn error_event<K: Kind>(ctx: &Ctx, error: ApiError) -> Value {
    let failure = super::handlers::target::<K>(ctx).failure(error);
    json!({ "type": "ERROR", "object": failure.body })
}

fn bookmark<K: Kind>(revision: u64, initial_end: bool) -> Value {
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if initial_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({
        "type": "BOOKMARK",
        "object": {
            "kind": <K::K8s as k8s_openapi::Resource>::KIND,
            "apiVersion": <K::K8s as k8s_openapi::Resource>::API_VERSION,
            "metadata": metadata,
        }
    })
}

pub async fn watch<K: Kind>(ctx: &Ctx, registry: &K::Registry) -> Result<Response, ApiError> {
    let options = list_options::<K>(&ctx.query)?;
    let as_table = wants_table(&ctx.headers);
    let bookmarks = ctx
        .query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let send_initial = ctx
        .query
        .get("sendInitialEvents")
        .is_some_and(|v| v == "true");
    let timeout =
        match ctx.query.get("timeoutSeconds") {
            Some(t) => Duration::from_secs(t.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("timeoutSeconds: not a number: {t:?}"))
            })?)
            .min(MAX_TIMEOUT),
            None => MAX_TIMEOUT,
        };
    let asked = ctx
        .query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let encode_object =
        move |o: &<K::Registry as Registry>::Object,
              query: &std::collections::HashMap<String, String>| {
            if as_table {
                table::<K>(std::slice::from_ref(o), 0, None, query)
            } else {
                encode::<K>(o)
            }
        };
    let mut lines: Vec<Value> = Vec::new();
    // "" and "0" start from the current state, sent first as ADDED events.
    let from = if asked.is_empty() || asked == "0" || send_initial {
        let (items, revision) = registry
            .list(&ctx.who, &ctx.info.namespace, &options)
            .await?;
        for item in &items {
            lines.push(json!({ "type": "ADDED", "object": encode_object(item, &ctx.query) }));
        }
        if send_initial {
            lines.push(bookmark::<K>(revision, true));
        }
        revision
    } else {
        asked.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("resourceVersion: not a valid version: {asked:?}"))
        })?
    };
    let events = match registry
        .watch(&ctx.who, &ctx.info.namespace, from, options)
        .await
    {
        Ok(events) => events,
        // As kube-apiserver's watch cache does: the stream opens and says why it ends.
        Err(e @ (ApiError::Expired(..) | ApiError::TooLarge(..))) => {
            let body = line(&error_event::<K>(ctx, e)).unwrap_or_default();
            return Ok(streaming(Body::from(body)));
        }
        Err(e) => return Err(e),
    };
    let query = ctx.query.clone();
    let target = super::handlers::target::<K>(ctx);
    let changes = events.map(move |event| match event {
        Ok((t, _, object)) => {
            json!({ "type": event_type(t), "object": encode_object(&object, &query) })
        }
        Err(e) => json!({ "type": "ERROR", "object": target.failure(e).body }),
    });
    let initial = futures::stream::iter(lines);
    let stream = if bookmarks {
        // A bookmark says how far the watch has come when nothing else is sent.
        let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_EVERY,
            BOOKMARK_EVERY,
        ))
        .map(|_| None);
        let changes = changes.map(Some);
        let mut last = from;
        let merged = futures::stream::select(changes, ticks).filter_map(move |item| {
            let out = match item {
                Some(event) => {
                    if let Some(rv) = event["object"]["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        last = last.max(rv);
                    }
                    Some(event)
                }
                None => Some(bookmark::<K>(last, false)),
            };
            futures::future::ready(out)
        });
        initial.chain(merged).boxed()
    } else {
        initial.chain(changes).boxed()
    };
    // An ERROR ends the watch; the client then relists or resumes.
    let stream = stream
        .scan(false, |ended, event| {
            if *ended {
                return futures::future::ready(None);
            }
            *ended = event["type"] == "ERROR";
            futures::future::ready(Some(event))
        })
        .map(|event| line(&event));
    // `timeoutSeconds` ends the watch whole, as in Kubernetes (clients then resume).
    let stream = stream.take_until(tokio::time::sleep(timeout));
    Ok(streaming(Body::from_stream(stream)))
}

fn streaming(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .header(axum::http::header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_default()
}
