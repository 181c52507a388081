//! Events in the API: the record of what happened to each object, and when.
//!
//! Components report steps here (the scheduler `Scheduled`, the agent `Pulling`,
//! `Started`, ...); `kubelab describe` reads them back. Events are facts, never commands:
//! nothing watches them to decide what to do.

use std::sync::Arc;

use kubelab_proto::now_ms;
use kubelab_proto::v1::Event;

use super::auth::Identity;
use super::registry::{
    selected, watch_store, DeleteOptions, ListOptions, Registry, WatchEvents, Written,
};
use super::store::{key, prefix, Object, Store};
use super::ApiError;

pub struct EventsService {
    store: Arc<Store>,
}

impl EventsService {
    pub fn new(store: Arc<Store>) -> Self {
        EventsService { store }
    }
}

/// Events are read by the admin and the scheduler; nodes only write them.
fn may_read(who: &Identity, what: &str) -> Result<(), ApiError> {
    who.require_cluster(what)
}

impl Registry for EventsService {
    type Object = Event;
    const NAMESPACED: bool = true;
    const FIELDS: &'static [&'static str] = &[
        "metadata.name",
        "metadata.namespace",
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
        // events.k8s.io/v1's names for the same fields (kubectl events uses them).
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
    ];

    fn field(event: &Event, field: &str) -> String {
        let object = event.involved_object.clone().unwrap_or_default();
        match field {
            "involvedObject.kind" | "regarding.kind" => object.kind,
            "involvedObject.namespace" | "regarding.namespace" => object.namespace,
            "involvedObject.name" | "regarding.name" => object.name,
            "involvedObject.uid" | "regarding.uid" => object.uid,
            "involvedObject.apiVersion" | "regarding.apiVersion" => {
                kubelab_proto::k8s::api_version(&object).into()
            }
            "reason" => event.reason.clone(),
            "source" => event.source.clone(),
            "reportingComponent" => event.source.clone(),
            "type" => event.r#type.clone(),
            _ => String::new(),
        }
    }

    async fn get(&self, who: &Identity, namespace: &str, name: &str) -> Result<Event, ApiError> {
        may_read(who, "read events")?;
        self.store
            .get_durable::<Event>(&key::<Event>(namespace, name))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("events {name:?}")))
    }

    async fn list(
        &self,
        who: &Identity,
        namespace: &str,
        options: &ListOptions,
    ) -> Result<(Vec<Event>, u64), ApiError> {
        may_read(who, "list events")?;
        let (mut items, revision) = self
            .store
            .list::<Event>(&prefix::<Event>(namespace))
            .await?;
        items.retain(|e| selected(e, options, Self::field));
        items.sort_by_key(|e| (e.timestamp_ms, e.resource_version()));
        Ok((items, revision))
    }

    async fn watch(
        &self,
        who: &Identity,
        namespace: &str,
        from_revision: u64,
        options: ListOptions,
    ) -> Result<WatchEvents<Event>, ApiError> {
        may_read(who, "watch events")?;
        watch_store(
            &self.store,
            from_revision,
            prefix::<Event>(namespace),
            String::new(),
            options,
            Self::field,
        )
        .await
    }

    async fn create(
        &self,
        who: &Identity,
        event: Event,
        dry_run: bool,
    ) -> Result<Written<Event>, ApiError> {
        // A node reports in its own name only.
        match who {
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
            ));
        }
        if dry_run {
            return Ok(Written::new(event));
        }
        Ok(Written::new(record(&self.store, event).await?))
    }

    async fn update(
        &self,
        who: &Identity,
        _event: Event,
        _dry_run: bool,
    ) -> Result<Written<Event>, ApiError> {
        Err(who.denied("update events (recorders replace them by name through create)"))
    }

    async fn delete(
        &self,
        who: &Identity,
        namespace: &str,
        name: &str,
        options: DeleteOptions,
    ) -> Result<Event, ApiError> {
        who.require(&[Identity::Admin], "delete events")?;
        let key = key::<Event>(namespace, name);
        if options.dry_run {
            return self
                .store
                .get::<Event>(&key)?
                .ok_or_else(|| ApiError::NotFound(format!("events {name:?}")));
        }
        self.store
            .update::<Event, _>(&key, |current| match current {
                Some(_) => Ok(None),
                None => Err(ApiError::NotFound(format!("events {name:?}"))),
            })
            .await
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
