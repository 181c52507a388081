//! batch/v1 Jobs: their defaults and validation (kube-apiserver's job strategy) and their
//! table. The Job controller runs their pods to completion.
//!
//! Unless `manualSelector` is true, a Job's selector is generated from its uid and its
//! template gets the labels that select it (`batch.kubernetes.io/controller-uid`,
//! `batch.kubernetes.io/job-name` and the older `controller-uid`, `job-name`); a Job
//! without labels takes its template's. Indexed Jobs, pod failure and success policies
//! and per-index backoff are refused with a message saying so (kubelab does not run them
//! yet), rather than stored and ignored.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use kubelab_proto::k8s::printers::{self, Column, AGE, NAME};
use serde_json::{json, Value};

use super::{
    check_selector, check_template, default_template, wide_cells, JobObject, CONTAINERS, IMAGES,
    SELECTOR,
};
use crate::apiserver::native::{to_k8s, Strategy};
use crate::apiserver::ApiError;

/// The restart policies a Job's pods may have.
const POLICIES: &[&str] = &["OnFailure", "Never"];
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";

pub struct JobStrategy;

impl Strategy for JobStrategy {
    type Object = JobObject;
    type Config = ();
    const RESOURCE: &'static str = "jobs.batch";

    fn default(job: &mut Job) {
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let spec = job.spec.get_or_insert_with(Default::default);
        if spec.completions.is_none() && spec.parallelism.is_none() {
            spec.completions = Some(1);
        }
        spec.parallelism.get_or_insert(1);
        let per_index = spec.backoff_limit_per_index.is_some();
        spec.backoff_limit
            .get_or_insert(if per_index { i32::MAX } else { 6 });
        spec.completion_mode
            .get_or_insert_with(|| "NonIndexed".into());
        spec.suspend.get_or_insert(false);
        let replacement = if spec.pod_failure_policy.is_some() {
            "Failed"
        } else {
            "TerminatingOrFailed"
        };
        spec.pod_replacement_policy
            .get_or_insert_with(|| replacement.into());
        let manual = *spec.manual_selector.get_or_insert(false);
        if !manual && !uid.is_empty() {
            generate_selector(spec, &uid, &name);
        }
        default_template(&mut spec.template, POLICIES);
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone());
        if job.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
            job.metadata.labels = template_labels;
        }
    }

    fn validate(job: &Job) -> Result<Vec<String>, ApiError> {
        let spec = job.spec.clone().unwrap_or_default();
        for (field, value) in [
            ("parallelism", spec.parallelism.map(i64::from)),
            ("completions", spec.completions.map(i64::from)),
            ("activeDeadlineSeconds", spec.active_deadline_seconds),
            ("backoffLimit", spec.backoff_limit.map(i64::from)),
            (
                "ttlSecondsAfterFinished",
                spec.ttl_seconds_after_finished.map(i64::from),
            ),
        ] {
            if let Some(v) = value.filter(|v| *v < 0) {
                return Err(ApiError::Invalid(format!(
                    "spec.{field}: Invalid value: {v}: must be greater than or equal to 0"
                )));
            }
        }
        check_not_yet(&spec)?;
        let policy = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_default();
        if policy.is_empty() || policy == "Always" {
            return Err(ApiError::Invalid(
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"".into(),
            ));
        }
        let mut template = spec.template.clone();
        let selector = spec
            .selector
            .clone()
            .ok_or_else(|| ApiError::Invalid("spec.selector: Required value".into()))?;
        check_selector(&selector, &template, "job")?;
        if spec.manual_selector != Some(true) {
            check_generated(&selector, job)?;
        }
        check_template(&mut template, POLICIES)
    }

    fn validate_update(new: &Job, old: &Job) -> Result<(), ApiError> {
        let (new, old) = (
            new.spec.clone().unwrap_or_default(),
            old.spec.clone().unwrap_or_default(),
        );
        let immutable = |field: &str, a: Value, b: Value| {
            if a == b {
                return Ok(());
            }
            Err(ApiError::Invalid(format!(
                "spec.{field}: Invalid value: {a}: field is immutable"
            )))
        };
        immutable("selector", json!(new.selector), json!(old.selector))?;
        immutable(
            "completions",
            json!(new.completions),
            json!(old.completions),
        )?;
        immutable(
            "completionMode",
            json!(new.completion_mode),
            json!(old.completion_mode),
        )?;
        if new.template != old.template {
            return Err(ApiError::Invalid(
                "spec.template: Invalid value: the pod template: field is immutable".into(),
            ));
        }
        Ok(())
    }
}

/// The selector by the Job's uid, and the labels that make its template match it (each
/// only when the user did not set it).
fn generate_selector(spec: &mut k8s_openapi::api::batch::v1::JobSpec, uid: &str, name: &str) {
    let labels = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    for (key, value) in [
        (LEGACY_JOB_NAME, name),
        (JOB_NAME, name),
        (LEGACY_CONTROLLER_UID, uid),
        (CONTROLLER_UID, uid),
    ] {
        labels
            .entry(key.to_string())
            .or_insert_with(|| value.to_string());
    }
    spec.selector
        .get_or_insert_with(K8sSelector::default)
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .entry(CONTROLLER_UID.to_string())
        .or_insert_with(|| uid.to_string());
}

/// A selector the user wrote needs `manualSelector: true` (Kubernetes' rule: otherwise
/// two Jobs could claim each other's pods).
fn check_generated(selector: &K8sSelector, job: &Job) -> Result<(), ApiError> {
    let Some(uid) = job.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(()); // an update without the uid: the stored selector is kept
    };
    let expected = BTreeMap::from([(CONTROLLER_UID.to_string(), uid.to_string())]);
    if selector.match_labels.as_ref() == Some(&expected) && selector.match_expressions.is_none() {
        return Ok(());
    }
    Err(ApiError::Invalid(format!(
        "spec.selector: Invalid value: {}: `selector` not auto-generated (set spec.manualSelector: true to choose the pods yourself)",
        serde_json::to_string(selector).unwrap_or_default()
    )))
}

/// What kubelab's Job controller does not do yet is refused, not stored and ignored.
fn check_not_yet(spec: &k8s_openapi::api::batch::v1::JobSpec) -> Result<(), ApiError> {
    let not_yet = |field: &str| {
        Err(ApiError::Invalid(format!(
            "spec.{field}: Forbidden: kubelab does not run this yet; remove it (NonIndexed Jobs with backoffLimit are supported)"
        )))
    };
    match spec.completion_mode.as_deref() {
        Some("NonIndexed") | None => {}
        Some("Indexed") => return not_yet("completionMode: Indexed"),
        Some(other) => {
            return Err(ApiError::Invalid(format!(
                "spec.completionMode: Unsupported value: {other:?}: supported values: \"NonIndexed\", \"Indexed\""
            )))
        }
    }
    if spec.pod_failure_policy.is_some() {
        return not_yet("podFailurePolicy");
    }
    if spec.success_policy.is_some() {
        return not_yet("successPolicy");
    }
    if spec.backoff_limit_per_index.is_some() || spec.max_failed_indexes.is_some() {
        return not_yet("backoffLimitPerIndex");
    }
    match spec.managed_by.as_deref() {
        None | Some("kubernetes.io/job-controller") => Ok(()),
        Some(_) => not_yet("managedBy"),
    }
}

pub const COLUMNS: &[Column] = &[
    NAME,
    printers::column("Status", "Status of the job.", 0),
    printers::column(
        "Completions",
        "The number of pods which reached phase Succeeded.",
        0,
    ),
    printers::column("Duration", "Time required to complete the job.", 0),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// Whether the Job has a condition of this type with status True (the first of its type).
pub fn has_condition(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == kind))
        .is_some_and(|c| c.status == "True")
}

/// NAME STATUS COMPLETIONS DURATION AGE | CONTAINERS IMAGES SELECTOR, as kubectl 1.32
/// prints them.
pub fn row(object: &JobObject, now_ms: i64) -> Vec<Value> {
    let job = to_k8s(object);
    let spec = job.spec.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let state = if has_condition(&job, "Complete") {
        "Complete"
    } else if has_condition(&job, "Failed") {
        "Failed"
    } else if job.metadata.deletion_timestamp.is_some() {
        "Terminating"
    } else if has_condition(&job, "Suspended") {
        "Suspended"
    } else if has_condition(&job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let succeeded = status.succeeded.unwrap_or(0);
    let completions = match (spec.completions, spec.parallelism.unwrap_or(1)) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        (None, p) if p > 1 => format!("{succeeded}/1 of {p}"),
        (None, _) => format!("{succeeded}/1"),
    };
    let ms = kubelab_proto::k8s::time_ms;
    let started = ms(&status.start_time);
    let duration = match (started, ms(&status.completion_time)) {
        (0, _) => String::new(),
        (start, 0) => printers::age(start, now_ms),
        (start, end) => printers::age(start, end),
    };
    let created = ms(&job.metadata.creation_timestamp);
    let mut row = vec![
        json!(job.metadata.name.clone().unwrap_or_default()),
        json!(state),
        json!(completions),
        json!(duration),
        json!(printers::age(created, now_ms)),
    ];
    row.extend(wide_cells(Some(&spec.template), spec.selector.as_ref()));
    row
}
