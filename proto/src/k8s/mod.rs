//! Kubernetes' own encoding of kubelab's objects: the conversions between the API's
//! messages (`v1`, what is stored and what gRPC carries) and Kubernetes' JSON shapes
//! (the `k8s-openapi` types, what the REST API and manifests speak).
//!
//! One model per resource, two encodings: the apiserver stores and validates the
//! messages; JSON is made and read only here, at the edge. `decode` reads a client's
//! JSON as kube-apiserver does (unknown fields reported, `apiVersion`/`kind` checked);
//! `to_k8s` writes what kube-apiserver would return (with Kubernetes' defaults for the
//! fields kubelab fixes); `from_k8s` reads it back, and what that round trip would lose
//! is what kubelab does not support yet, named in warnings rather than dropped silently.
//! Decides nothing about validity beyond the shape: the apiserver validates.

mod decode;
mod events;
mod from_k8s;
pub mod printers;
mod suggest;
mod to_k8s;
mod unsupported;

pub use decode::{decode, DecodeError, Decoded};
pub use events::{api_version, event, event_from_k8s, event_v1, event_v1_from_k8s};
pub use from_k8s::{
    meta_from_k8s, namespace_from_k8s, node_from_k8s, parse_cpu, parse_memory, pod_from_k8s,
    pod_status_from_k8s, ConvertError,
};
pub use k8s_openapi;
pub use suggest::nearest_field;
pub use to_k8s::{created, meta, namespace, node, pod, pod_spec, qos_class};
pub use unsupported::unsupported;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The values Kubernetes defaults and kubelab fixes (it has one scheduler, no
/// priorities): written out as kube-apiserver does, and accepted back.
pub mod defaults {
    pub const DNS_POLICY: &str = "ClusterFirst";
    pub const SCHEDULER_NAME: &str = "default-scheduler";
    pub const PREEMPTION_POLICY: &str = "PreemptLowerPriority";
    pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
    pub const TERMINATION_MESSAGE_POLICY: &str = "File";

    /// The architecture as Kubernetes names it (`amd64`, `arm64`).
    pub fn architecture() -> &'static str {
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
    }

    /// Kubernetes' DefaultTolerationSeconds admission: a pod stays bound to a node that
    /// went not-ready or unreachable for 300 s, unless it says otherwise. kubelab adds
    /// these when it writes a pod out rather than storing them in every pod (they would
    /// double a small pod's size on disk, and durable creates are bound by the bytes
    /// flushed); a lab that sets other seconds (`--default-unreachable-toleration-seconds`)
    /// has them stored in each pod by the apiserver's admission, and these are not added.
    pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

    pub fn tolerations(
        given: &[crate::v1::Toleration],
    ) -> impl Iterator<Item = k8s_openapi::api::core::v1::Toleration> + '_ {
        [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ]
        .into_iter()
        .filter(|key| {
            !given.iter().any(|t| {
                (t.key == *key || (t.key.is_empty() && t.operator == "Exists"))
                    && (t.effect.is_empty() || t.effect == "NoExecute")
            })
        })
        .map(|key| k8s_openapi::api::core::v1::Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
            value: None,
        })
    }

    /// What a node reports as its kubelet's version (`kubectl get nodes`' VERSION).
    pub fn kubelet_version() -> String {
        format!("v{}-kubelab", crate::k8s::KUBERNETES_VERSION)
    }
}

/// The Kubernetes version whose API kubelab serves (a subset of it).
pub const KUBERNETES_VERSION: &str = "1.32.0";

pub fn time(ms: i64) -> Option<Time> {
    (ms > 0)
        .then(|| {
            k8s_openapi::jiff::Timestamp::from_millisecond(ms)
                .ok()
                .map(Time)
        })
        .flatten()
}

/// Milliseconds since the epoch of a Kubernetes time (0 when unset).
pub fn time_ms(t: &Option<Time>) -> i64 {
    t.as_ref().map(|t| t.0.as_millisecond()).unwrap_or(0)
}

/// A string Kubernetes leaves out when it is empty.
fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Bytes as Kubernetes writes them: `64Mi` when exact, plain bytes otherwise.
pub fn memory_quantity(bytes: i64) -> String {
    for (suffix, unit) in [("Gi", 1i64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}
