//! PATCH, in the four types Kubernetes takes, told apart by `Content-Type`: JSON patch
//! (RFC 6902, `json-patch` crate), JSON merge patch (RFC 7386, same crate), strategic
//! merge patch (`strategic`) and server-side apply. The patched object then takes the
//! path of an update — decoding, validation, the registry — guarded by the version it
//! was read at, and read again when another write came first.

use axum::response::Response;
use serde_json::Value;

use super::handlers::{encode, write, Managed, Write};
use super::kinds::Kind;
use super::{strategic, Ctx};
use crate::apiserver::registry::Registry;
use crate::apiserver::ApiError;

/// How often a patch is retried when another write changed the object in between.
const ATTEMPTS: usize = 5;

#[derive(Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

fn patch_type(ctx: &Ctx) -> Result<PatchType, ApiError> {
    let content_type = ctx
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    match content_type {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
        ))),
    }
}

/// The patch type of a request as `apply_patch` names it; server-side apply is refused
/// where only the three patch types are taken (a workload's scale).
pub fn patch_kind(ctx: &Ctx) -> Result<&'static str, ApiError> {
    match patch_type(ctx)? {
        PatchType::Json => Ok("json"),
        PatchType::Merge => Ok("merge"),
        PatchType::Strategic => Ok("strategic"),
        PatchType::Apply => Err(ApiError::UnsupportedMediaType(
            "server-side apply is not supported on this subresource: use a merge patch".into(),
        )),
    }
}

/// Applies a patch of `kind` to `doc`.
pub fn apply_patch(doc: &mut Value, kind: &str, body: &[u8]) -> Result<(), ApiError> {
    let bad = |e: String| ApiError::BadRequest(e);
    match kind {
        "json" => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| bad(format!("the JSON patch is not valid: {e}")))?;
            json_patch::patch(doc, &patch)
                .map_err(|e| ApiError::Invalid(format!("the JSON patch does not apply: {e}")))
        }
        "merge" => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| bad(format!("the merge patch is not valid JSON: {e}")))?;
            json_patch::merge(doc, &patch);
            Ok(())
        }
        _ => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| bad(format!("the strategic merge patch is not valid JSON: {e}")))?;
            strategic::apply(doc, &patch).map_err(|e| bad(e.0))
        }
    }
}

/// Whether the patch names a resourceVersion itself (then a conflict is the client's to
/// resolve, not retried).
fn names_version(kind: PatchType, body: &[u8]) -> bool {
    match kind {
        PatchType::Json => String::from_utf8_lossy(body).contains("/metadata/resourceVersion"),
        _ => serde_json::from_slice::<Value>(body)
            .ok()
            .is_some_and(|p| !p["metadata"]["resourceVersion"].is_null()),
    }
}

pub async fn patch<K: Kind>(
    ctx: &Ctx,
    registry: &K::Registry,
    body: &[u8],
) -> Result<Response, ApiError> {
    let kind = patch_type(ctx)?;
    if kind == PatchType::Apply {
        return super::apply::apply::<K>(ctx, registry, body).await;
    }
    let retry = !names_version(kind, body);
    let name = match kind {
        PatchType::Json => "json",
        PatchType::Merge => "merge",
        _ => "strategic",
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = registry
            .get(&ctx.who, &ctx.info.namespace, &ctx.info.name)
            .await?;
        let mut doc = encode::<K>(&current);
        apply_patch(&mut doc, name, body)?;
        let bytes = serde_json::to_vec(&doc).map_err(|e| ApiError::Internal(e.to_string()))?;
        // The version read guards the write: another write in between is a conflict,
        // and the patch is applied again to what it wrote.
        let how = if ctx.info.subresource == "status" {
            Write::UpdateStatus
        } else {
            Write::Update
        };
        match write::<K>(ctx, registry, &bytes, how, Managed::Track).await {
            Err(ApiError::Conflict(_)) if retry && attempt < ATTEMPTS => continue,
            done => return done,
        }
    }
}
