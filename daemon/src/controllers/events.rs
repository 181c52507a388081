//! Events the controllers record (`SuccessfulCreate`, `FailedCreate`, `ScalingReplicaSet`
//! ...), as kube-controller-manager's recorders write them: core/v1 events about the
//! workload, from the controller's component name. Best effort: an event that cannot be
//! written is logged, never retried, never a reason to stop.
//!
//! Like client-go's recorder, it keeps a controller from flooding the API with events
//! about one object (a ReplicaSet of 10,000 making `Created pod` 10,000 times): each
//! object gets a bucket of 25 events, refilled with one every 5 minutes
//! (`EventSourceObjectSpamFilter`); events beyond it are dropped.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::client::{Api, Client};

/// Events one object may get at once, and how fast that allowance comes back.
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL_PER_SECOND: f64 = 1.0 / 300.0;

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    /// Per object uid: the events it may still get, and when that was worked out.
    buckets: Arc<Mutex<HashMap<String, (f64, Instant)>>>,
}

impl Recorder {
    pub fn new(client: Client, component: &'static str) -> Recorder {
        Recorder {
            client,
            component,
            buckets: Arc::default(),
        }
    }

    /// Takes one event from the object's bucket; false when it is empty.
    fn allowed(&self, uid: &str) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, since) = buckets.entry(uid.to_string()).or_insert((SPAM_BURST, now));
        let refilled = *tokens + since.elapsed().as_secs_f64() * SPAM_REFILL_PER_SECOND;
        *tokens = refilled.min(SPAM_BURST);
        *since = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        // Full buckets say nothing: forget them, so the map stays small.
        buckets.retain(|_, (t, at)| *t < SPAM_BURST - 1.0 || at.elapsed().as_secs() < 600);
        true
    }

    /// Records `reason` and `message` about `object` (Normal, or Warning when `warning`).
    pub fn record<K>(&self, object: &K, warning: bool, reason: &str, message: String)
    where
        K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
    {
        let meta = object.metadata();
        if !self.allowed(meta.uid.as_deref().unwrap_or("")) {
            tracing::debug!(object = ?meta.name, reason, "event dropped: too many about this object");
            return;
        }
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let name = meta.name.clone().unwrap_or_default();
        // Not jiff's clock: its `std` feature is not in every build of kubelabd.
        let now_ms = kubelab_proto::now_ms();
        let now = kubelab_proto::k8s::time(now_ms);
        let event = Event {
            metadata: ObjectMeta {
                // As client-go names them: the object's name and a unique suffix.
                name: Some(format!("{name}.{}", uuid::Uuid::new_v4().simple())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(K::API_VERSION.into()),
                kind: Some(K::KIND.into()),
                name: Some(name),
                namespace: Some(namespace.clone()),
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                field_path: None,
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            reporting_component: Some(self.component.into()),
            first_timestamp: now.clone(),
            last_timestamp: now,
            // The timestamps above keep whole seconds; this one keeps the milliseconds
            // `kubelab trace` and `describe` show.
            event_time: k8s_openapi::jiff::Timestamp::from_millisecond(now_ms)
                .ok()
                .map(MicroTime),
            count: Some(1),
            ..Default::default()
        };
        let api = Api::<Event>::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&event).await {
                tracing::debug!(error = %e, "event not recorded");
            }
        });
    }
}
