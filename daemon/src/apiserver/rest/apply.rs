//! Server-side apply (`Content-Type: application/apply-patch+yaml`, `kubectl apply
//! --server-side`): a manager (`fieldManager`, required) says what it wants the fields it
//! names to be. The object is created when missing; else the applied fields are merged
//! in (by Kubernetes' strategic rules), the fields this manager applied before and no
//! longer names are removed (unless another manager set them too), and a field another
//! manager set to another value is a conflict (409) — unless `force=true`, which takes it
//! over. Who set what is kept in `managedFields` (`managed_fields.rs`).

use axum::response::Response;
use serde_json::Value;

use super::handlers::{encode, write, Managed, Write};
use super::kinds::Kind;
use super::managed_fields as mf;
use super::{strategic, Ctx};
use crate::apiserver::registry::Registry;
use crate::apiserver::store::Object;
use crate::apiserver::ApiError;

pub async fn apply<K: Kind>(
    ctx: &Ctx,
    registry: &K::Registry,
    body: &[u8],
) -> Result<Response, ApiError> {
    let Some(manager) = ctx.query.get("fieldManager").filter(|m| !m.is_empty()) else {
        return Err(ApiError::BadRequest(
            "PATCH: fieldManager is required for apply requests".into(),
        ));
    };
    let force = ctx.query.get("force").is_some_and(|f| f == "true");
    // YAML is a superset of JSON: one parser takes both.
    let applied: Value = yaml_serde::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::BadRequest(
            "the applied configuration must be an object".into(),
        ));
    }
    let api_version = <K::K8s as k8s_openapi::Resource>::API_VERSION;
    let applied_fields = mf::fields_of(&applied);
    let retry = applied["metadata"]["resourceVersion"].is_null();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = match registry
            .get(&ctx.who, &ctx.info.namespace, &ctx.info.name)
            .await
        {
            Ok(current) => current,
            Err(ApiError::NotFound(_)) => {
                let entries = vec![mf::entry(manager, "Apply", api_version, &applied_fields)];
                return write::<K>(
                    ctx,
                    registry,
                    &to_bytes(&applied)?,
                    Write::Create,
                    Managed::Entries(entries),
                )
                .await;
            }
            Err(e) => return Err(e),
        };
        let mut doc = encode::<K>(&current);
        let mut entries = current
            .meta()
            .map(|m| m.managed_fields.clone())
            .unwrap_or_default();
        let conflicts = mf::conflicts(&entries, manager, &applied, &applied_fields, &doc);
        if !conflicts.is_empty() && !force {
            return Err(ApiError::Conflict(mf::conflict_message(
                &conflicts,
                api_version,
            )));
        }
        // What this manager applied before and names no more goes, unless someone else set it.
        let before: mf::FieldSet = entries
            .iter()
            .filter(|e| e.manager == *manager && e.operation == "Apply")
            .flat_map(mf::fields)
            .collect();
        let others: mf::FieldSet = entries
            .iter()
            .filter(|e| !(e.manager == *manager && e.operation == "Apply"))
            .flat_map(mf::fields)
            .collect();
        for path in before.difference(&applied_fields) {
            if !others.contains(path) {
                mf::remove_at(&mut doc, path);
            }
        }
        strategic::apply(&mut doc, &applied).map_err(|e| ApiError::BadRequest(e.0))?;
        // The bookkeeping: this manager's Apply entry is what it named now; what it took by
        // force is no longer the others'.
        let taken: mf::FieldSet = conflicts.into_iter().map(|(_, path)| path).collect();
        entries.retain_mut(|e| {
            if e.manager == *manager && e.operation == "Apply" {
                return false;
            }
            let mut set = mf::fields(e);
            set.retain(|p| !taken.contains(p));
            e.fields_v1 = mf::to_fields_v1(&set).to_string();
            !set.is_empty()
        });
        entries.push(mf::entry(manager, "Apply", api_version, &applied_fields));
        let written = write::<K>(
            ctx,
            registry,
            &to_bytes(&doc)?,
            Write::Update,
            Managed::Entries(entries),
        )
        .await;
        // Another write came between the read and this one (a node's status, say): the
        // configuration is applied again to what it wrote, unless it named a version.
        match written {
            Err(ApiError::Conflict(_)) if retry && attempt < ATTEMPTS => continue,
            done => return done,
        }
    }
}

/// How often an apply is made again when another write changed the object in between.
const ATTEMPTS: usize = 5;

fn to_bytes(value: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))
}
