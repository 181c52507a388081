//! The REST verbs, once for every resource: get, list (JSON or Table, paged), create,
//! update, patch and delete, each decoding the request, calling the resource's
//! `Registry` (the code gRPC calls too) and encoding the answer as kube-apiserver does.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kubelab_proto::k8s::printers::Column;
use serde_json::{json, Value};

use super::kinds::Kind;
use super::managed_fields as mf;
use super::status::{failure, Failure, Target};
use super::{json_response, warning_value, Ctx};
use crate::apiserver::registry::{DeleteOptions, ListOptions, Registry};
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::store::Object;
use crate::apiserver::ApiError;

/// The most objects one page of a list holds, whatever `limit` asks.
const MAX_PAGE: usize = 10_000;

/// An object of `K` as JSON, `kind` and `apiVersion` included.
pub fn encode<K: Kind>(object: &<K::Registry as Registry>::Object) -> Value {
    serde_json::to_value(K::to_k8s(object)).unwrap_or(Value::Null)
}

/// Whether the client asked for a Table (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn column_definitions(columns: &[Column]) -> Value {
    Value::Array(
        columns
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.kind,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

/// A `meta.k8s.io/v1` Table of `objects`, each row carrying its object as `includeObject`
/// asks (`Metadata` by default, as kube-apiserver does).
pub fn table<K: Kind>(
    objects: &[<K::Registry as Registry>::Object],
    resource_version: u64,
    continue_token: Option<String>,
    query: &HashMap<String, String>,
) -> Value {
    let now = kubelab_proto::now_ms();
    let include = query
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({ "cells": K::row(o, now) });
            match include {
                "None" => {}
                "Object" => row["object"] = encode::<K>(o),
                _ => {
                    let full = encode::<K>(o);
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": full["metadata"].clone(),
                    });
                }
            }
            row
        })
        .collect();
    let mut metadata = json!({ "resourceVersion": resource_version.to_string() });
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(K::columns()),
        "rows": rows,
    })
}

/// The list options of a query: `labelSelector`, `fieldSelector` (and a namespace in
/// the path acts as `metadata.namespace`).
pub fn list_options<K: Kind>(query: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    let text = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
    Ok(ListOptions {
        labels: LabelSelector::parse(text("labelSelector"))?,
        fields: FieldSelector::parse(text("fieldSelector"), <K::Registry as Registry>::FIELDS)?,
    })
}

/// A `continue` token: where the next page starts (the name after the last one sent).
fn continue_token(revision: u64, after: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(json!({ "rv": revision, "start": after }).to_string())
}

fn read_continue(token: &str) -> Result<String, ApiError> {
    use base64::Engine;
    let invalid = || ApiError::BadRequest(format!("continue key is not valid: {token:?}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    value["start"]
        .as_str()
        .map(String::from)
        .ok_or_else(invalid)
}

fn key_of<T: Object>(object: &T) -> String {
    object
        .meta()
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .unwrap_or_default()
}

pub async fn list<K: Kind>(ctx: &Ctx, registry: &K::Registry) -> Result<Response, ApiError> {
    let options = list_options::<K>(&ctx.query)?;
    let (mut items, revision) = registry
        .list(&ctx.who, &ctx.info.namespace, &options)
        .await?;
    // Pages follow the store's order (namespace, then name); a token says where to go on.
    if let Some(token) = ctx.query.get("continue").filter(|t| !t.is_empty()) {
        let start = read_continue(token)?;
        items.retain(|o| key_of(o) > start);
    }
    let limit = match ctx.query.get("limit").map(|l| l.parse::<usize>()) {
        None => MAX_PAGE,
        Some(Ok(0)) => MAX_PAGE,
        Some(Ok(n)) => n.min(MAX_PAGE),
        Some(Err(_)) => return Err(ApiError::BadRequest("limit: must be a number".into())),
    };
    let more = items.len() > limit;
    items.truncate(limit);
    let token = more
        .then(|| items.last().map(|o| continue_token(revision, &key_of(o))))
        .flatten();
    if wants_table(&ctx.headers) {
        return Ok(json_response(
            StatusCode::OK,
            &table::<K>(&items, revision, token, &ctx.query),
            &[],
        ));
    }
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if let Some(token) = token {
        metadata["continue"] = json!(token);
    }
    let items: Vec<Value> = items.iter().map(encode::<K>).collect();
    let body = json!({
        "kind": format!("{}List", <K::K8s as k8s_openapi::Resource>::KIND),
        "apiVersion": <K::K8s as k8s_openapi::Resource>::API_VERSION,
        "metadata": metadata,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &body, &[]))
}

pub async fn get<K: Kind>(ctx: &Ctx, registry: &K::Registry) -> Result<Response, ApiError> {
    let object = registry
        .get(&ctx.who, &ctx.info.namespace, &ctx.info.name)
        .await?;
    if wants_table(&ctx.headers) {
        let revision = object.resource_version();
        return Ok(json_response(
            StatusCode::OK,
            &table::<K>(std::slice::from_ref(&object), revision, None, &ctx.query),
            &[],
        ));
    }
    Ok(json_response(StatusCode::OK, &encode::<K>(&object), &[]))
}

/// How unknown fields are treated (`fieldValidation`): Strict refuses, Warn (the
/// default, as in kube-apiserver) warns, Ignore says nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

fn field_validation(query: &HashMap<String, String>) -> Result<FieldValidation, ApiError> {
    match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::BadRequest(format!(
            "fieldValidation: Invalid value: {other:?}: must be one of Ignore, Warn, Strict"
        ))),
    }
}

pub fn dry_run(query: &HashMap<String, String>) -> Result<bool, ApiError> {
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
        ))),
    }
}

/// A client's object read from JSON: decoded, its unknown fields handled as asked, and
/// the fields kubelab does not support yet named in warnings.
pub fn decode<K: Kind>(
    ctx: &Ctx,
    body: &[u8],
) -> Result<(<K::Registry as Registry>::Object, Vec<String>), ApiError> {
    let validation = field_validation(&ctx.query)?;
    // kubectl's create subcommands send protobuf: read into the JSON it stands for.
    let json;
    let body = if is_protobuf(ctx) {
        let object = super::protobuf_object::to_json(body).map_err(|e| {
            ApiError::UnsupportedMediaType(format!("the protobuf body could not be read: {e}"))
        })?;
        json = serde_json::to_vec(&object).map_err(|e| ApiError::Internal(e.to_string()))?;
        json.as_slice()
    } else {
        body
    };
    let decoded = kubelab_proto::k8s::decode::<K::K8s>(body)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut warnings = Vec::new();
    let unknown: Vec<String> = decoded
        .unknown
        .iter()
        .map(|path| format!("unknown field {path:?}"))
        .collect();
    match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            return Err(ApiError::BadRequest(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                unknown.join(", "),
                kind = <K::K8s as k8s_openapi::Resource>::KIND,
                version = <K::K8s as k8s_openapi::Resource>::VERSION,
            )))
        }
        FieldValidation::Ignore => {}
        _ => warnings.extend(unknown),
    }
    let object = K::from_k8s(decoded.object).map_err(|e| ApiError::BadRequest(e.0))?;
    let kept = encode::<K>(&object);
    for path in kubelab_proto::k8s::unsupported(&decoded.value, &kept) {
        if !decoded.unknown.contains(&path) {
            warnings.push(format!(
                "{path}: kubelab does not support this field yet; it is ignored"
            ));
        }
    }
    Ok((object, warnings))
}

/// The namespace and name the path gives win; a body that names others is refused, as
/// kube-apiserver refuses it.
pub fn place<T: Object>(ctx: &Ctx, object: &mut T, namespaced: bool) -> Result<(), ApiError> {
    let meta = object.meta_mut();
    if namespaced {
        if meta.namespace.is_empty() {
            meta.namespace = ctx.info.namespace.clone();
        } else if meta.namespace != ctx.info.namespace {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
    } else {
        meta.namespace.clear();
    }
    if !ctx.info.name.is_empty() {
        if meta.name.is_empty() {
            meta.name = ctx.info.name.clone();
        } else if meta.name != ctx.info.name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                meta.name, ctx.info.name
            )));
        }
    }
    Ok(())
}

/// How a write's managed fields are kept: tracked as an update by the request's
/// manager, or as a server-side apply worked them out.
pub enum Managed {
    Track,
    Entries(Vec<kubelab_proto::v1::ManagedFieldsEntry>),
}

/// The manager of a request: `fieldManager`, else the client's program name (its
/// User-Agent up to the first `/`), as kube-apiserver names it.
pub fn manager_of(ctx: &Ctx) -> String {
    if let Some(m) = ctx.query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    ctx.headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|m| !m.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// Whether a write makes an object or replaces one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    Update,
    /// The status subresource: only the status is taken.
    UpdateStatus,
}

/// The one path of every write (create, update, and the object a patch or an apply
/// produced): decode the JSON, place it at the URL's namespace and name, hand it to the
/// registry, answer with the object as stored and every warning.
pub async fn write<K: Kind>(
    ctx: &Ctx,
    registry: &K::Registry,
    body: &[u8],
    how: Write,
    managed: Managed,
) -> Result<Response, ApiError> {
    let (mut object, mut warnings) = decode::<K>(ctx, body)?;
    place(ctx, &mut object, <K::Registry as Registry>::NAMESPACED)?;
    let dry_run = dry_run(&ctx.query)?;
    let api_version = <K::K8s as k8s_openapi::Resource>::API_VERSION;
    let entries = match managed {
        Managed::Entries(entries) => entries,
        Managed::Track => {
            let sent: Value = serde_json::from_slice(body).unwrap_or_default();
            let manager = manager_of(ctx);
            let (mut entries, changed) = match how {
                Write::Create => (Vec::new(), mf::fields_of(&sent)),
                Write::Update | Write::UpdateStatus => {
                    let current = registry
                        .get(&ctx.who, &ctx.info.namespace, &ctx.info.name)
                        .await?;
                    let entries = current
                        .meta()
                        .map(|m| m.managed_fields.clone())
                        .unwrap_or_default();
                    (entries, mf::changed(&encode::<K>(&current), &sent))
                }
            };
            mf::record_update(&mut entries, &manager, api_version, &changed);
            entries
        }
    };
    object.meta_mut().managed_fields = entries;
    let (code, done) = match how {
        Write::Create => {
            // The URL names no object on create: errors name the one in the body.
            let name = object.meta().map(|m| m.name.clone()).unwrap_or_default();
            match registry.create(&ctx.who, object, dry_run).await {
                Ok(done) => (StatusCode::CREATED, done),
                Err(e) => {
                    let mut target = target::<K>(ctx);
                    target.name = name;
                    return Ok(target.failure(e).into_response());
                }
            }
        }
        Write::Update => (
            StatusCode::OK,
            registry.update(&ctx.who, object, dry_run).await?,
        ),
        Write::UpdateStatus => (
            StatusCode::OK,
            registry.update_status(&ctx.who, object, dry_run).await?,
        ),
    };
    warnings.extend(done.warnings);
    Ok(json_response(code, &encode::<K>(&done.object), &warnings))
}

/// Whether the request's body is in Kubernetes' protobuf encoding.
fn is_protobuf(ctx: &Ctx) -> bool {
    ctx.headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(super::protobuf::CONTENT_TYPE.as_bytes())
        })
}

/// Kubernetes' `DeleteOptions`, from the body (kubectl sends one) or the query.
pub fn delete_options(
    ctx: &Ctx,
    body: &[u8],
    default_propagation: &str,
) -> Result<DeleteOptions, ApiError> {
    let protobuf = is_protobuf(ctx);
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else if protobuf {
        super::protobuf::delete_options(body)
            .map_err(|e| ApiError::BadRequest(format!("DeleteOptions (protobuf): {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("DeleteOptions: {e}")))?
    };
    let grace = match body.get("gracePeriodSeconds").and_then(Value::as_i64) {
        Some(g) => Some(g),
        None => match ctx.query.get("gracePeriodSeconds") {
            Some(g) => Some(g.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!("gracePeriodSeconds: not a number: {g:?}"))
            })?),
            None => None,
        },
    };
    let dry_run = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"))
        || dry_run(&ctx.query)?;
    let propagation = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(ctx.query.get("propagationPolicy").map(String::as_str))
        .unwrap_or(default_propagation);
    let Some(propagation) = crate::apiserver::registry::Propagation::parse(propagation) else {
        return Err(ApiError::BadRequest(format!(
            "propagationPolicy: Unsupported value: {propagation:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
        )));
    };
    let preconditions = body.get("preconditions").cloned().unwrap_or(Value::Null);
    let resource_version = match preconditions.get("resourceVersion").and_then(Value::as_str) {
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("preconditions.resourceVersion: {v:?}")))?,
        None => 0,
    };
    Ok(DeleteOptions {
        grace_period_seconds: grace,
        // kubectl's --force sends grace period 0; that is a forced delete.
        force: grace == Some(0),
        uid: preconditions
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        resource_version,
        dry_run,
        propagation,
    })
}

pub async fn delete<K: Kind>(
    ctx: &Ctx,
    registry: &K::Registry,
    body: &[u8],
) -> Result<Response, ApiError> {
    let options = delete_options(ctx, body, K::DEFAULT_PROPAGATION)?;
    let object = registry
        .delete(&ctx.who, &ctx.info.namespace, &ctx.info.name, options)
        .await?;
    Ok(json_response(StatusCode::OK, &encode::<K>(&object), &[]))
}

/// An error answered as a Status object about this request's target.
pub fn fail<K: Kind>(ctx: &Ctx, error: ApiError) -> Response {
    target::<K>(ctx).failure(error).into_response()
}

pub fn target<K: Kind>(ctx: &Ctx) -> Target {
    Target {
        resource: K::PLURAL.into(),
        kind: <K::K8s as k8s_openapi::Resource>::KIND.into(),
        group: ctx.info.group.clone(),
        name: ctx.info.name.clone(),
    }
}

/// A method the resource does not take.
pub fn not_allowed(ctx: &Ctx) -> Failure {
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!(
            "the server does not allow this method on the requested resource ({} {})",
            ctx.method, ctx.path
        ),
        Value::Null,
    )
}

/// `warning_value` for each warning, as `Warning` headers.
pub fn warning_headers(warnings: &[String]) -> Vec<(axum::http::HeaderName, String)> {
    warnings
        .iter()
        .map(|w| (axum::http::header::WARNING, warning_value(w)))
        .collect()
}
