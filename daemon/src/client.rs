//! Connecting to the apiserver: one channel per process, shared by every client stub.
//!
//! The scheduler and the agents reach the cluster only through here.

use kubelab_proto::credential::{AuthChannel, Credential, CredentialError};
use kubelab_proto::v1::events_client::EventsClient;
use kubelab_proto::v1::nodes_client::NodesClient;
use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_proto::v1::{Event, ObjectReference, Pod};

/// The API's three clients over one HTTP/2 connection (TLS, with the credential's token
/// on every call). Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    pub pods: PodsClient<AuthChannel>,
    pub nodes: NodesClient<AuthChannel>,
    pub events: EventsClient<AuthChannel>,
}

impl ApiClient {
    /// A lazily connected client: the first call connects, and a lost connection is
    /// re-established by later calls, so components survive an apiserver restart.
    pub fn new(credential: &Credential) -> Result<Self, CredentialError> {
        let channel = credential.channel()?;
        Ok(ApiClient {
            pods: PodsClient::new(channel.clone()),
            nodes: NodesClient::new(channel.clone()),
            events: EventsClient::new(channel),
        })
    }

    /// A client over an existing connection, with its own token: many hollow nodes share
    /// a few connections.
    pub fn over(channel: tonic::transport::Channel, token: &str) -> Self {
        let channel = AuthChannel::new(channel, kubelab_proto::credential::Bearer::new(token));
        ApiClient {
            pods: PodsClient::new(channel.clone()),
            nodes: NodesClient::new(channel.clone()),
            events: EventsClient::new(channel),
        }
    }
}

/// How long a repeated event keeps updating the first one (Kubernetes: 10 minutes).
const CORRELATION_WINDOW_MS: i64 = 10 * 60 * 1000;

/// The events recorded lately, by what makes two of them "the same": object, type,
/// reason and message. A repeat becomes an update of the first (`count`, times).
#[derive(Default)]
struct Recent {
    seen: std::collections::HashMap<SameEvent, Repeats>,
}

/// Object uid, type, reason, message.
type SameEvent = (String, String, String, String);
/// The event's name, how many times it happened, when it first did.
type Repeats = (String, i32, i64);

impl Recent {
    fn correlate(&mut self, event: &mut Event) {
        let now = event.timestamp_ms;
        self.seen
            .retain(|_, (_, _, first)| now.saturating_sub(*first) < CORRELATION_WINDOW_MS);
        if self.seen.len() >= MAX_RECENT {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, (_, _, first))| *first)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.seen.remove(&oldest);
            }
        }
        let object = event.involved_object.clone().unwrap_or_default();
        let key = (
            object.uid,
            event.r#type.clone(),
            event.reason.clone(),
            event.message.clone(),
        );
        let (name, count, first) = self.seen.entry(key).or_insert_with(|| {
            let name = format!("{}.{}", object.name, uuid::Uuid::new_v4().simple());
            (name, 0, now)
        });
        *count = count.saturating_add(1);
        event.metadata.get_or_insert_with(Default::default).name = name.clone();
        event.count = *count;
        event.first_timestamp_ms = *first;
    }
}

/// How many events may wait to be written; past that new ones are dropped (and counted
/// in the log), as Kubernetes' event broadcaster drops when its queue of 1000 is full.
const EVENT_QUEUE: usize = 1000;
/// How many distinct recent events are remembered for correlation (Kubernetes' cache:
/// 4096); past that the oldest is forgotten.
const MAX_RECENT: usize = 4096;
/// One event write may take this long; an apiserver that hangs costs the event, not the
/// recorder.
const EVENT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Records events in the order they happen, without making the caller wait (Kubernetes'
/// EventRecorder). Events are best effort: one that cannot be written is logged and dropped.
#[derive(Clone)]
pub struct EventRecorder {
    source: String,
    tx: tokio::sync::mpsc::Sender<Event>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl EventRecorder {
    /// Starts the writer task; `source` names the reporter (`scheduler`, or a node name).
    pub fn start(api: ApiClient, source: &str) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(EVENT_QUEUE);
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let dropped_seen = dropped.clone();
        tokio::spawn(async move {
            let mut recent = Recent::default();
            while let Some(mut event) = rx.recv().await {
                let lost = dropped_seen.swap(0, std::sync::atomic::Ordering::Relaxed);
                if lost > 0 {
                    tracing::warn!(
                        lost,
                        "events dropped: more were recorded than the apiserver took"
                    );
                }
                recent.correlate(&mut event);
                let written = tokio::time::timeout(
                    EVENT_WRITE_TIMEOUT,
                    api.events.clone().create(event.clone()),
                )
                .await;
                match written {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(reason = %event.reason, error = %e.message(), "could not record event")
                    }
                    Err(_) => {
                        tracing::warn!(reason = %event.reason, "could not record event: the apiserver did not answer within 10s")
                    }
                }
            }
        });
        EventRecorder {
            source: source.to_string(),
            tx,
            dropped,
        }
    }

    /// A recorder whose events go to the returned receiver instead of the API (for the
    /// pod workers' unit tests).
    #[cfg(test)]
    pub fn capture(source: &str) -> (Self, tokio::sync::mpsc::Receiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let recorder = EventRecorder {
            source: source.to_string(),
            tx,
            dropped: Default::default(),
        };
        (recorder, rx)
    }

    /// An event about a pod, stamped now. `type_` is Normal or Warning.
    pub fn pod_event(&self, pod: &Pod, type_: &str, reason: &str, message: String) {
        self.pod_event_at(pod, kubelab_proto::now_ms(), type_, reason, message)
    }

    /// An event about a pod that happened at `at_ms`.
    pub fn pod_event_at(&self, pod: &Pod, at_ms: i64, type_: &str, reason: &str, message: String) {
        let meta = pod.metadata.clone().unwrap_or_default();
        let event = Event {
            involved_object: Some(ObjectReference {
                kind: "Pod".into(),
                namespace: meta.namespace,
                name: meta.name,
                uid: meta.uid,
                api_version: String::new(),
            }),
            reason: reason.into(),
            message,
            r#type: type_.into(),
            source: self.source.clone(),
            timestamp_ms: at_ms,
            ..Default::default()
        };
        if self.tx.try_send(event).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many distinct events come within the window, only the newest 4096 are
    /// remembered; a repeat still counts up.
    #[test]
    fn the_correlation_cache_is_bounded() {
        let mut recent = Recent::default();
        let event = |i: usize| Event {
            reason: "Pulled".into(),
            message: format!("image {i}"),
            timestamp_ms: 1_000_000 + i as i64,
            ..Default::default()
        };
        for i in 0..5000 {
            recent.correlate(&mut event(i));
        }
        assert_eq!(recent.seen.len(), MAX_RECENT);
        let mut again = event(4999);
        recent.correlate(&mut again);
        assert_eq!(again.count, 2);
    }
}
