//! apps/v1 ReplicaSets: their defaults and validation (kube-apiserver's replicaset
//! strategy) and their table. The ReplicaSet controller keeps their pods.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kubelab_proto::k8s::printers::{self, Column, AGE, NAME};
use serde_json::{json, Value};

use super::{
    check_replicas, check_selector, check_selector_unchanged, check_template, default_template,
    wide_cells, ReplicaSetObject, ALWAYS, CONTAINERS, IMAGES, SELECTOR,
};
use crate::apiserver::native::{to_k8s, Strategy};
use crate::apiserver::ApiError;

pub struct ReplicaSetStrategy;

impl Strategy for ReplicaSetStrategy {
    type Object = ReplicaSetObject;
    type Config = ();
    const RESOURCE: &'static str = "replicasets.apps";

    fn default(rs: &mut ReplicaSet) {
        rs.spec.replicas.get_or_insert(1);
        if let Some(template) = rs.spec.template.as_mut() {
            default_template(template, ALWAYS);
        }
    }

    fn validate(rs: &ReplicaSet) -> Result<Vec<String>, ApiError> {
        let spec = &rs.spec;
        check_replicas(spec.replicas)?;
        check_min_ready(spec.min_ready_seconds)?;
        let mut template = spec
            .template
            .clone()
            .ok_or_else(|| ApiError::Invalid("spec.template: Required value".into()))?;
        check_selector(&spec.selector, &template, "replicaset")?;
        check_template(&mut template, ALWAYS)
    }

    fn validate_update(new: &ReplicaSet, old: &ReplicaSet) -> Result<(), ApiError> {
        check_selector_unchanged(&new.spec.selector, &old.spec.selector)
    }
}

/// `spec.minReadySeconds`: not negative.
pub(super) fn check_min_ready(seconds: Option<i32>) -> Result<(), ApiError> {
    match seconds {
        Some(s) if s < 0 => Err(ApiError::Invalid(format!(
            "spec.minReadySeconds: Invalid value: {s}: must be greater than or equal to 0"
        ))),
        _ => Ok(()),
    }
}

pub const COLUMNS: &[Column] = &[
    NAME,
    printers::column("Desired", "Replicas is the number of desired pods.", 0),
    printers::column(
        "Current",
        "Replicas is the most recently observed number of replicas.",
        0,
    ),
    printers::column(
        "Ready",
        "The number of ready replicas for this replica set.",
        0,
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// NAME DESIRED CURRENT READY AGE | CONTAINERS IMAGES SELECTOR
pub fn row(object: &ReplicaSetObject, now_ms: i64) -> Vec<Value> {
    let rs = to_k8s(object);
    let spec = rs.spec.clone();
    let status = rs.status.clone().unwrap_or_default();
    let created = kubelab_proto::k8s::time_ms(&rs.metadata.creation_timestamp);
    let mut row = vec![
        json!(rs.metadata.name.clone().unwrap_or_default()),
        json!(spec.replicas.unwrap_or(1)),
        json!(status.replicas),
        json!(status.ready_replicas.unwrap_or(0)),
        json!(printers::age(created, now_ms)),
    ];
    row.extend(wide_cells(spec.template.as_ref(), Some(&spec.selector)));
    row
}
