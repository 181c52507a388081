//! The workload resources: apps/v1 ReplicaSets and Deployments and batch/v1 Jobs, kept natively
//! (`native.rs`), each with its `Strategy` — Kubernetes' defaults and validation — and its
//! table. What their controllers do is in `controllers/`; this module only decides what
//! may be stored.
//!
//! A workload's pod template is checked by the pods' own rules: made into a pod, it must
//! pass what a pod created directly would pass, and it is kept with the defaults a pod
//! gets (so `kubectl get deploy -o yaml` shows what kube-apiserver would).

pub mod deployments;
pub mod jobs;
pub mod replicasets;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, ObjectMeta};
use serde_json::Value;

use super::native::native;
use super::selector::LabelSelector;
use super::ApiError;

native!(ReplicaSetObject, apps::ReplicaSet, "replicasets");
native!(DeploymentObject, apps::Deployment, "deployments");
native!(JobObject, k8s_openapi::api::batch::v1::Job, "jobs");

/// The restart policy of the pods of ReplicaSets and Deployments.
const ALWAYS: &[&str] = &["Always"];

/// Most replicas one workload may ask for (a lab's bound; Kubernetes has none but int32).
pub const MAX_REPLICAS: i32 = 100_000;

/// `spec.replicas`: not negative, and within kubelab's bound.
fn check_replicas(replicas: Option<i32>) -> Result<(), ApiError> {
    let replicas = replicas.unwrap_or(1);
    if replicas < 0 {
        return Err(ApiError::Invalid(format!(
            "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
        )));
    }
    if replicas > MAX_REPLICAS {
        return Err(ApiError::Invalid(format!(
            "spec.replicas: Invalid value: {replicas}: must be less than or equal to {MAX_REPLICAS} (kubelab's limit for a lab)"
        )));
    }
    Ok(())
}

/// `spec.selector` and the template's labels: the selector is required and not empty, and
/// must select the template's pods (else the controller would make pods forever).
fn check_selector(
    selector: &K8sSelector,
    template: &core::PodTemplateSpec,
    kind: &str,
) -> Result<LabelSelector, ApiError> {
    let parsed = LabelSelector::from_k8s(selector, "spec.selector")?;
    if parsed.is_empty() {
        return Err(ApiError::Invalid(format!(
            "spec.selector: Invalid value: {}: empty selector is invalid for {kind}",
            serde_json::to_string(selector).unwrap_or_default()
        )));
    }
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if !parsed.matches(&labels.clone().into_iter().collect()) {
        return Err(ApiError::Invalid(format!(
            "spec.template.metadata.labels: Invalid value: {}: `selector` does not match template `labels`",
            serde_json::to_string(&labels).unwrap_or_default()
        )));
    }
    Ok(parsed)
}

/// `spec.selector` may not change after create (Kubernetes' rule for apps/v1).
fn check_selector_unchanged(new: &K8sSelector, old: &K8sSelector) -> Result<(), ApiError> {
    if new == old {
        return Ok(());
    }
    Err(ApiError::Invalid(format!(
        "spec.selector: Invalid value: {}: field is immutable",
        serde_json::to_string(new).unwrap_or_default()
    )))
}

/// Checks a pod template as a pod and writes it back with a pod's defaults; returns the
/// warnings for fields kubelab does not support yet (named under `spec.template`).
/// `restart_policies`: those the workload's pods may have (Always for ReplicaSets and
/// Deployments; OnFailure or Never for Jobs).
fn check_template(
    template: &mut core::PodTemplateSpec,
    restart_policies: &[&str],
) -> Result<Vec<String>, ApiError> {
    let meta = template.metadata.clone().unwrap_or_default();
    let pod = core::Pod {
        metadata: ObjectMeta {
            // A stand-in: a template's pods get their names from the controller.
            name: Some("template".into()),
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    };
    let given = serde_json::to_value(&pod).unwrap_or(Value::Null);
    let converted = kubelab_proto::k8s::pod_from_k8s(pod)
        .map_err(|e| ApiError::Invalid(format!("spec.template.{}", e.0)))?;
    let checked = super::validation::validate_and_default_pod(converted).map_err(in_template)?;
    super::validation::check_supported(&checked).map_err(in_template)?;
    let spec = checked.spec.clone().unwrap_or_default();
    if !restart_policies.contains(&spec.restart_policy.as_str()) {
        let supported: Vec<String> = restart_policies.iter().map(|p| format!("{p:?}")).collect();
        return Err(ApiError::Invalid(format!(
            "spec.template.spec.restartPolicy: Unsupported value: {:?}: supported values: {}",
            spec.restart_policy,
            supported.join(", ")
        )));
    }
    let mut kept = kubelab_proto::k8s::pod(&checked);
    // What admission adds to a pod (its priority, the default tolerations) is not part of
    // a template: kube-apiserver adds it to each pod made from it.
    if let Some(spec) = kept.spec.as_mut() {
        spec.priority = None;
        spec.preemption_policy = None;
        let defaults: Vec<_> = kubelab_proto::k8s::defaults::tolerations(&[]).collect();
        if let Some(tolerations) = spec.tolerations.as_mut() {
            tolerations.retain(|t| !defaults.contains(t));
        }
        if spec.tolerations.as_ref().is_some_and(|t| t.is_empty()) {
            spec.tolerations = None;
        }
    }
    let warnings = kubelab_proto::k8s::unsupported(
        &given,
        &serde_json::to_value(&kept).unwrap_or(Value::Null),
    )
    .into_iter()
    .filter(|path| path.starts_with("spec."))
    .map(|path| {
        format!("spec.template.{path}: kubelab does not support this field yet; it is ignored")
    })
    .collect();
    template.spec = kept.spec;
    Ok(warnings)
}

/// Fills in the template's pod defaults (what a pod made from it would get), when it
/// is a valid pod; `validate` reports it otherwise.
fn default_template(template: &mut core::PodTemplateSpec, restart_policies: &[&str]) {
    let mut checked = template.clone();
    if check_template(&mut checked, restart_policies).is_ok() {
        template.spec = checked.spec;
    }
}

/// A pod's error, said of the template.
fn in_template(e: ApiError) -> ApiError {
    match e {
        ApiError::Invalid(text) if text.starts_with("spec.") => {
            ApiError::Invalid(format!("spec.template.{text}"))
        }
        other => other,
    }
}

/// The wide tables' columns of a workload's template (`-o wide`).
const CONTAINERS: kubelab_proto::k8s::printers::Column = kubelab_proto::k8s::printers::column(
    "Containers",
    "Names of each container in the template.",
    1,
);
const IMAGES: kubelab_proto::k8s::printers::Column = kubelab_proto::k8s::printers::column(
    "Images",
    "Images referenced by each container in the template.",
    1,
);
const SELECTOR: kubelab_proto::k8s::printers::Column =
    kubelab_proto::k8s::printers::column("Selector", "Label selector for pods.", 1);

/// The containers' names and images, and the selector, as the wide tables show them.
fn wide_cells(
    template: Option<&core::PodTemplateSpec>,
    selector: Option<&K8sSelector>,
) -> [Value; 3] {
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or(""))
        .collect();
    let selector = selector
        .and_then(|s| LabelSelector::from_k8s(s, "spec.selector").ok())
        .map(|s| s.to_text())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into());
    [
        Value::from(names.join(",")),
        Value::from(images.join(",")),
        Value::from(selector),
    ]
}
