//! Events in Kubernetes' two shapes, core/v1 (`kubectl get events`, `describe`) and
//! events.k8s.io/v1 (`kubectl events`), both ways.

use k8s_openapi::api::core::v1 as k8s;

use super::from_k8s::meta_from_k8s;
use super::{non_empty, time, time_ms, ConvertError};
use crate::v1 as api;

/// Our event in Kubernetes' core/v1 shape.
pub fn event(e: &api::Event) -> k8s::Event {
    let involved = e.involved_object.clone().unwrap_or_default();
    let first = if e.first_timestamp_ms > 0 {
        e.first_timestamp_ms
    } else {
        e.timestamp_ms
    };
    k8s::Event {
        metadata: super::meta(&e.metadata.clone().unwrap_or_default()),
        involved_object: k8s::ObjectReference {
            api_version: Some(api_version(&involved).into()),
            kind: non_empty(&involved.kind),
            namespace: non_empty(&involved.namespace),
            name: non_empty(&involved.name),
            uid: non_empty(&involved.uid),
            ..Default::default()
        },
        reason: non_empty(&e.reason),
        message: non_empty(&e.message),
        type_: non_empty(&e.r#type),
        source: Some(k8s::EventSource {
            component: Some(event_component(&e.source).into()),
            host: (event_component(&e.source) == "kubelet").then(|| e.source.clone()),
        }),
        reporting_component: Some(event_component(&e.source).into()),
        reporting_instance: non_empty(&e.source),
        first_timestamp: time(first),
        last_timestamp: time(e.timestamp_ms),
        count: Some(e.count.max(1)),
        event_time: None,
        ..Default::default()
    }
}

/// Who reported an event, as Kubernetes names its components: kubelab's scheduler is
/// `default-scheduler`, a controller `replicaset-controller` and the like; a node's agent
/// reports as `kubelet`.
fn event_component(source: &str) -> &str {
    match source {
        "scheduler" | "default-scheduler" => "default-scheduler",
        "" => "kubelab",
        s if s.starts_with("kubelab") => s,
        // kube-controller-manager's controllers report under their own names.
        s if s.ends_with("-controller") => s,
        _ => "kubelet",
    }
}

/// Our event in events.k8s.io/v1's shape (`kubectl events`).
pub fn event_v1(e: &api::Event) -> k8s_openapi::api::events::v1::Event {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let core = event(e);
    let micro = |ms: i64| {
        k8s_openapi::jiff::Timestamp::from_millisecond(ms)
            .ok()
            .map(MicroTime)
    };
    k8s_openapi::api::events::v1::Event {
        metadata: core.metadata,
        event_time: micro(e.timestamp_ms.max(1)),
        series: (e.count > 1).then(|| k8s_openapi::api::events::v1::EventSeries {
            count: e.count,
            last_observed_time: micro(e.timestamp_ms.max(1))
                .unwrap_or(MicroTime(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
        }),
        reporting_controller: core.reporting_component,
        reporting_instance: core.reporting_instance,
        action: core.reason.clone(),
        reason: core.reason,
        regarding: Some(core.involved_object),
        note: core.message,
        type_: core.type_,
        deprecated_source: core.source,
        deprecated_first_timestamp: core.first_timestamp,
        deprecated_last_timestamp: core.last_timestamp,
        deprecated_count: core.count,
        related: None,
    }
}

/// A Kubernetes core/v1 event as kubelab's (what a recorder reports).
pub fn event_from_k8s(e: k8s::Event) -> Result<api::Event, ConvertError> {
    let o = e.involved_object;
    let source = e
        .reporting_instance
        .or(e.source.as_ref().and_then(|s| s.host.clone()))
        .or(e.reporting_component)
        .or(e.source.and_then(|s| s.component))
        .unwrap_or_default();
    // eventTime (microseconds) when the recorder gave it; lastTimestamp has only seconds.
    let last = match &e.event_time {
        Some(t) => t.0.as_millisecond(),
        None => time_ms(&e.last_timestamp),
    };
    Ok(api::Event {
        metadata: Some(meta_from_k8s(e.metadata)?),
        involved_object: Some(reference(o)),
        reason: e.reason.unwrap_or_default(),
        message: e.message.unwrap_or_default(),
        r#type: e.type_.unwrap_or_else(|| "Normal".into()),
        source,
        timestamp_ms: last,
        count: e.count.unwrap_or(1),
        first_timestamp_ms: time_ms(&e.first_timestamp),
    })
}

/// An events.k8s.io/v1 event as kubelab's.
pub fn event_v1_from_k8s(
    e: k8s_openapi::api::events::v1::Event,
) -> Result<api::Event, ConvertError> {
    let o = e.regarding.unwrap_or_default();
    let at = e.event_time.map(|t| t.0.as_millisecond()).unwrap_or(0);
    Ok(api::Event {
        metadata: Some(meta_from_k8s(e.metadata)?),
        involved_object: Some(reference(o)),
        reason: e.reason.unwrap_or_default(),
        message: e.note.unwrap_or_default(),
        r#type: e.type_.unwrap_or_else(|| "Normal".into()),
        source: e.reporting_instance.unwrap_or_default(),
        timestamp_ms: at,
        count: e.series.map(|s| s.count).unwrap_or(1),
        first_timestamp_ms: at,
    })
}

/// The API version of the object an event is about (`apps/v1` for a ReplicaSet).
pub fn api_version(o: &api::ObjectReference) -> &str {
    if o.api_version.is_empty() {
        "v1"
    } else {
        &o.api_version
    }
}

/// The object an event is about, as kubelab keeps the reference.
fn reference(o: k8s::ObjectReference) -> api::ObjectReference {
    api::ObjectReference {
        api_version: o.api_version.filter(|v| v != "v1").unwrap_or_default(),
        kind: o.kind.unwrap_or_default(),
        namespace: o.namespace.unwrap_or_default(),
        name: o.name.unwrap_or_default(),
        uid: o.uid.unwrap_or_default(),
    }
}
