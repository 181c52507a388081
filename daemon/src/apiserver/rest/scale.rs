//! A workload's `scale` subresource, as autoscaling/v1 `Scale`: what `kubectl scale`
//! reads and patches. Its `spec.replicas` is the workload's; its status is what the
//! controller last saw, with the selector in text form. A write is an update of the
//! workload guarded by the version read, like any other.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::handlers::{decode, dry_run, encode, place};
use super::kinds::Kind;
use super::patch::{apply_patch, patch_kind};
use super::request_info::Verb;
use super::{json_response, Ctx};
use crate::apiserver::registry::Registry;
use crate::apiserver::selector::LabelSelector;
use crate::apiserver::ApiError;

/// How often a scale is retried when another write changed the workload in between.
const ATTEMPTS: usize = 5;

/// The Scale of a workload (given as its Kubernetes JSON).
fn scale_of(workload: &Value) -> Value {
    let meta = &workload["metadata"];
    let selector = serde_json::from_value(workload["spec"]["selector"].clone())
        .ok()
        .and_then(|s| LabelSelector::from_k8s(&s, "spec.selector").ok())
        .map(|s| s.to_text())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": { "replicas": workload["spec"]["replicas"].as_i64().unwrap_or(1) },
        "status": {
            "replicas": workload["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

pub async fn scale<K: Kind>(
    ctx: &Ctx,
    registry: &K::Registry,
    body: &[u8],
) -> Result<Response, ApiError> {
    let read = || registry.get(&ctx.who, &ctx.info.namespace, &ctx.info.name);
    if ctx.verb == Verb::Get {
        let current = read().await?;
        return Ok(json_response(
            StatusCode::OK,
            &scale_of(&encode::<K>(&current)),
            &[],
        ));
    }
    let given: Option<Value> = match ctx.verb {
        Verb::Update => Some(
            serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("Scale: {e}")))?,
        ),
        _ => None,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = read().await?;
        let mut workload = encode::<K>(&current);
        let scale = match &given {
            Some(scale) => scale.clone(),
            None => {
                let mut scale = scale_of(&workload);
                apply_patch(&mut scale, patch_kind(ctx)?, body)?;
                scale
            }
        };
        // A version the client names must be current; otherwise the one read guards.
        let named = scale["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !named.is_empty() && Some(named) != workload["metadata"]["resourceVersion"].as_str() {
            return Err(crate::apiserver::store::conflict(&format!(
                "{}.{} {:?}",
                K::PLURAL,
                <K::K8s as k8s_openapi::Resource>::GROUP,
                ctx.info.name
            )));
        }
        let replicas = scale["spec"]["replicas"]
            .as_i64()
            .and_then(|r| i32::try_from(r).ok())
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "spec.replicas: Invalid value: {}: must be a whole number of replicas",
                    scale["spec"]["replicas"]
                ))
            })?;
        workload["spec"]["replicas"] = json!(replicas);
        let bytes = serde_json::to_vec(&workload).map_err(|e| ApiError::Internal(e.to_string()))?;
        let (mut object, _) = decode::<K>(ctx, &bytes)?;
        place(ctx, &mut object, <K::Registry as Registry>::NAMESPACED)?;
        match registry
            .update(&ctx.who, object, dry_run(&ctx.query)?)
            .await
        {
            Ok(done) => {
                return Ok(json_response(
                    StatusCode::OK,
                    &scale_of(&encode::<K>(&done.object)),
                    &done.warnings,
                ))
            }
            Err(ApiError::Conflict(_)) if named.is_empty() && attempt < ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
}
