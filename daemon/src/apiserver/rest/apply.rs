//! Server-side apply (`Content-Type: application/apply-patch+yaml`, `kubectl apply
//! --server-side`): the applied configuration creates the object when it is missing,
//! and is merged into it (by Kubernetes' strategic rules) when it exists.
//!
//! kubelab's first slice of it: `fieldManager` is required as in Kubernetes, but the
//! fields each manager owns are not tracked yet, so there are no conflicts between
//! managers and a field left out of a later apply is not removed.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::handlers::{decode, dry_run, encode, place};
use super::kinds::Kind;
use super::{json_response, strategic, Ctx};
use crate::apiserver::registry::Registry;
use crate::apiserver::ApiError;

pub async fn apply<K: Kind>(
    ctx: &Ctx,
    registry: &K::Registry,
    body: &[u8],
) -> Result<Response, ApiError> {
    if ctx.query.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(ApiError::BadRequest(
            "PATCH: fieldManager is required for apply requests".into(),
        ));
    }
    // YAML is a superset of JSON: one parser takes both.
    let applied: Value = yaml_serde::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::BadRequest(
            "the applied configuration must be an object".into(),
        ));
    }
    let dry_run = dry_run(&ctx.query)?;
    let current = match registry
        .get(&ctx.who, &ctx.info.namespace, &ctx.info.name)
        .await
    {
        Ok(current) => Some(current),
        Err(ApiError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let bytes = |v: &Value| serde_json::to_vec(v).map_err(|e| ApiError::Internal(e.to_string()));
    match current {
        None => {
            let (mut object, warnings) = decode::<K>(ctx, &bytes(&applied)?)?;
            place(ctx, &mut object, <K::Registry as Registry>::NAMESPACED)?;
            let done = registry.create(&ctx.who, object, dry_run).await?;
            let mut all = warnings;
            all.extend(done.warnings);
            Ok(json_response(
                StatusCode::CREATED,
                &encode::<K>(&done.object),
                &all,
            ))
        }
        Some(current) => {
            let mut doc = encode::<K>(&current);
            strategic::apply(&mut doc, &applied).map_err(|e| ApiError::BadRequest(e.0))?;
            let (mut object, warnings) = decode::<K>(ctx, &bytes(&doc)?)?;
            place(ctx, &mut object, <K::Registry as Registry>::NAMESPACED)?;
            let done = registry.update(&ctx.who, object, dry_run).await?;
            let mut all = warnings;
            all.extend(done.warnings);
            Ok(json_response(
                StatusCode::OK,
                &encode::<K>(&done.object),
                &all,
            ))
        }
    }
}
