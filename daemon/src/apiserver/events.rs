//! The Events service: the record of what happened to each object, and when.
//!
//! Components report steps here (the scheduler `Scheduled`, the agent `Pulling`,
//! `Started`, ...); `kubelab describe` reads them back. Events are facts, never commands:
//! nothing watches them to decide what to do.

use std::sync::Arc;

use kubelab_proto::now_ms;
use kubelab_proto::v1::events_server::Events;
use kubelab_proto::v1::{Event, EventList, EventWatchEvent, ListEventsRequest, WatchRequest};
use tonic::{Request, Response, Status};

use super::auth::{Authenticator, Identity};
use super::store::{key, prefix, Object, Store};
use super::{watch_stream, ApiError, WatchStream};

pub struct EventsService {
    store: Arc<Store>,
    auth: Arc<Authenticator>,
}

impl EventsService {
    pub fn new(store: Arc<Store>, auth: Arc<Authenticator>) -> Self {
        EventsService { store, auth }
    }
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn create(&self, request: Request<Event>) -> Result<Response<Event>, Status> {
        let who = self.auth.identify(&request)?;
        let event = request.into_inner();
        // A node reports in its own name only.
        match &who {
            Identity::Node(name) if *name != event.source => {
                return Err(who.denied(&format!("record events as {:?}", event.source)))
            }
            Identity::Bootstrap => return Err(who.denied("record events")),
            _ => {}
        }
        let involved = event.involved_object.clone().unwrap_or_default();
        if involved.name.is_empty() || event.reason.is_empty() {
            return Err(ApiError::Invalid(
                "event: involvedObject.name and reason are required".into(),
            )
            .into());
        }
        let event = record(&self.store, event).await?;
        Ok(Response::new(event))
    }

    async fn list(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<EventList>, Status> {
        self.auth
            .identify(&request)?
            .require_cluster("list events")?;
        let r = request.into_inner();
        let (mut items, resource_version) = self
            .store
            .list::<Event>(&prefix::<Event>(&r.namespace))
            .await?;
        if !r.involved_uid.is_empty() {
            items.retain(|e| {
                e.involved_object
                    .as_ref()
                    .is_some_and(|o| o.uid == r.involved_uid)
            });
        }
        items.sort_by_key(|e| {
            (
                e.timestamp_ms,
                e.metadata.as_ref().map(|m| m.resource_version).unwrap_or(0),
            )
        });
        Ok(Response::new(EventList {
            items,
            resource_version,
        }))
    }

    type WatchStream = WatchStream<EventWatchEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.auth
            .identify(&request)?
            .require_cluster("watch events")?;
        let r = request.into_inner();
        let stream = watch_stream::<Event, _>(
            &self.store,
            r.from_revision,
            prefix::<Event>(&r.namespace),
            String::new(),
            &r.label_selector,
            |t, event| {
                Some(EventWatchEvent {
                    r#type: t as i32,
                    object: Some(event),
                })
            },
        )
        .await?;
        Ok(Response::new(stream))
    }
}

/// Stores an event (named like Kubernetes' ones: the object's name and a unique suffix;
/// a recorder names a repeat as the first, which it then replaces).
pub async fn record(store: &Store, mut event: Event) -> Result<Event, ApiError> {
    let involved = event.involved_object.clone().unwrap_or_default();
    if event.timestamp_ms == 0 {
        event.timestamp_ms = now_ms();
    }
    let namespace = if involved.namespace.is_empty() {
        "default".to_string()
    } else {
        involved.namespace.clone()
    };
    // Named like Kubernetes' events: the object's name and a unique suffix. A recorder
    // names a repeat as the first, which it then replaces (count and times updated).
    let given = event
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let name = if given.starts_with(&format!("{}.", involved.name)) {
        given
    } else {
        format!("{}.{}", involved.name, uuid::Uuid::new_v4().simple())
    };
    if event.count < 1 {
        event.count = 1;
    }
    if event.first_timestamp_ms == 0 {
        event.first_timestamp_ms = event.timestamp_ms;
    }
    let key = key::<Event>(&namespace, &name);
    store
        .update::<Event, _>(&key, |existing| {
            let meta = event.metadata.get_or_insert_with(Default::default);
            let previous = existing.and_then(|e| e.metadata);
            meta.name = name;
            meta.namespace = namespace;
            meta.uid = previous
                .as_ref()
                .map(|m| m.uid.clone())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            meta.creation_timestamp_ms = previous
                .map(|m| m.creation_timestamp_ms)
                .unwrap_or(event.first_timestamp_ms);
            Ok(Some(event))
        })
        .await
}

/// Removes events older than `ttl`, as kube-apiserver's --event-ttl does, for as long as
/// the apiserver runs: a long-lived lab does not grow without end.
pub async fn expire_events(store: Arc<Store>, ttl: std::time::Duration) {
    let period = (ttl / 10).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(60),
    );
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        let expired = expire_once(&store, ttl).await;
        if expired > 0 {
            tracing::debug!(expired, "expired events removed");
        }
    }
}

/// One pass: removes the events last seen more than `ttl` ago; returns how many.
async fn expire_once(store: &Store, ttl: std::time::Duration) -> usize {
    let cutoff = now_ms() - ttl.as_millis() as i64;
    let Ok((events, _)) = store.list::<Event>(&prefix::<Event>("")).await else {
        return 0;
    };
    let mut expired = 0;
    for event in events.iter().filter(|e| e.timestamp_ms < cutoff) {
        let meta = event.metadata.clone().unwrap_or_default();
        let key = key::<Event>(&meta.namespace, &meta.name);
        // Only the version we saw: a repeat recorded meanwhile is kept.
        let removed = store
            .update::<Event, _>(&key, |current| match current {
                Some(c) if c.resource_version() == meta.resource_version => Ok(None),
                _ => Err(ApiError::Conflict(key.clone())),
            })
            .await;
        expired += usize::from(removed.is_ok());
    }
    expired
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelab_proto::v1::ObjectReference;

    #[tokio::test]
    async fn events_older_than_the_ttl_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), super::super::store::HISTORY_WINDOW).expect("open");
        for (name, age_ms) in [("old", 7_200_000), ("new", 1_000)] {
            let event = Event {
                involved_object: Some(ObjectReference {
                    kind: "Pod".into(),
                    name: name.into(),
                    ..Default::default()
                }),
                reason: "Started".into(),
                timestamp_ms: now_ms() - age_ms,
                ..Default::default()
            };
            record(&store, event).await.expect("record");
        }
        let ttl = std::time::Duration::from_secs(3600);
        assert_eq!(expire_once(&store, ttl).await, 1);
        let (left, _) = store
            .list::<Event>(&prefix::<Event>(""))
            .await
            .expect("list");
        let names: Vec<_> = left
            .iter()
            .filter_map(|e| e.involved_object.as_ref().map(|o| o.name.as_str()))
            .collect();
        assert_eq!(names, ["new"]);
    }
}
