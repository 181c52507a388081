//! apps/v1 Deployments: their defaults and validation (kube-apiserver's deployment
//! strategy) and their table. The Deployment controller rolls them out.

use k8s_openapi::api::apps::v1::{self as apps, Deployment, RollingUpdateDeployment};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubelab_proto::k8s::printers::{self, Column, AGE, NAME};
use serde_json::{json, Value};

use super::replicasets::check_min_ready;
use super::{
    check_replicas, check_selector, check_selector_unchanged, check_template, default_template,
    wide_cells, DeploymentObject, ALWAYS, CONTAINERS, IMAGES,
};
use crate::apiserver::native::{to_k8s, Strategy};
use crate::apiserver::ApiError;

pub struct DeploymentStrategy;

impl Strategy for DeploymentStrategy {
    type Object = DeploymentObject;
    type Config = ();
    const RESOURCE: &'static str = "deployments.apps";

    fn default(d: &mut Deployment) {
        let spec = &mut d.spec;
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        let strategy = spec
            .strategy
            .get_or_insert_with(apps::DeploymentStrategy::default);
        let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if kind == "RollingUpdate" {
            let rolling = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            let quarter = || IntOrString::String("25%".into());
            rolling.max_surge.get_or_insert_with(quarter);
            rolling.max_unavailable.get_or_insert_with(quarter);
        }
        default_template(&mut spec.template, ALWAYS);
    }

    fn validate(d: &Deployment) -> Result<Vec<String>, ApiError> {
        let spec = &d.spec;
        check_replicas(spec.replicas)?;
        check_min_ready(spec.min_ready_seconds)?;
        if let Some(limit) = spec.revision_history_limit.filter(|l| *l < 0) {
            return Err(ApiError::Invalid(format!(
                "spec.revisionHistoryLimit: Invalid value: {limit}: must be greater than or equal to 0"
            )));
        }
        if let Some(deadline) = spec.progress_deadline_seconds {
            if deadline <= spec.min_ready_seconds.unwrap_or(0) {
                return Err(ApiError::Invalid(format!(
                    "spec.progressDeadlineSeconds: Invalid value: {deadline}: must be greater than minReadySeconds"
                )));
            }
        }
        check_strategy(spec.strategy.as_ref())?;
        let mut template = spec.template.clone();
        check_selector(&spec.selector, &template, "deployment")?;
        check_template(&mut template, ALWAYS)
    }

    fn validate_update(new: &Deployment, old: &Deployment) -> Result<(), ApiError> {
        check_selector_unchanged(&new.spec.selector, &old.spec.selector)
    }
}

/// `spec.strategy`: RollingUpdate (with surge and unavailability that are not both 0)
/// or Recreate (with no rollingUpdate).
fn check_strategy(strategy: Option<&apps::DeploymentStrategy>) -> Result<(), ApiError> {
    let Some(strategy) = strategy else {
        return Ok(());
    };
    match strategy.type_.as_deref() {
        Some("Recreate") => {
            if strategy.rolling_update.is_some() {
                return Err(ApiError::Invalid(
                    "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'".into(),
                ));
            }
            Ok(())
        }
        Some("RollingUpdate") | None => {
            let rolling = strategy.rolling_update.clone().unwrap_or_default();
            let surge = check_int_or_percent("spec.strategy.rollingUpdate.maxSurge", &rolling.max_surge)?;
            let unavailable = check_int_or_percent(
                "spec.strategy.rollingUpdate.maxUnavailable",
                &rolling.max_unavailable,
            )?;
            if surge == 0 && unavailable == 0 {
                return Err(ApiError::Invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0".into(),
                ));
            }
            Ok(())
        }
        Some(other) => Err(ApiError::Invalid(format!(
            "spec.strategy.type: Unsupported value: {other:?}: supported values: \"Recreate\", \"RollingUpdate\""
        ))),
    }
}

/// A number ≥ 0 or a percentage `N%` of at most 100%; returns the number or percent.
fn check_int_or_percent(field: &str, value: &Option<IntOrString>) -> Result<i64, ApiError> {
    match value {
        None => Ok(1),
        Some(IntOrString::Int(n)) if *n < 0 => Err(ApiError::Invalid(format!(
            "{field}: Invalid value: {n}: must be greater than or equal to 0"
        ))),
        Some(IntOrString::Int(n)) => Ok(i64::from(*n)),
        Some(IntOrString::String(text)) => {
            let percent = text
                .strip_suffix('%')
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "{field}: Invalid value: {text:?}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
                    ))
                })?;
            if percent > 100 {
                return Err(ApiError::Invalid(format!(
                    "{field}: Invalid value: {text:?}: must not be greater than 100%"
                )));
            }
            Ok(percent)
        }
    }
}

pub const COLUMNS: &[Column] = &[
    NAME,
    printers::column("Ready", "Number of the pod with ready state", 0),
    printers::column("Up-to-date", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0),
    printers::column("Available", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
    AGE,
    CONTAINERS,
    IMAGES,
    printers::column("Selector", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.", 1),
];

/// NAME READY UP-TO-DATE AVAILABLE AGE | CONTAINERS IMAGES SELECTOR
pub fn row(object: &DeploymentObject, now_ms: i64) -> Vec<Value> {
    let d = to_k8s(object);
    let spec = d.spec.clone();
    let status = d.status.clone().unwrap_or_default();
    let created = kubelab_proto::k8s::time_ms(&d.metadata.creation_timestamp);
    let mut row = vec![
        json!(d.metadata.name.clone().unwrap_or_default()),
        json!(format!(
            "{}/{}",
            status.ready_replicas.unwrap_or(0),
            spec.replicas.unwrap_or(1)
        )),
        json!(status.updated_replicas.unwrap_or(0)),
        json!(status.available_replicas.unwrap_or(0)),
        json!(printers::age(created, now_ms)),
    ];
    row.extend(wide_cells(Some(&spec.template), Some(&spec.selector)));
    row
}
