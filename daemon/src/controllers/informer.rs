//! An informer (client-go's idea): one kind's objects as last seen, kept by a list and
//! then a watch, and every change handed to the controllers that care. Controllers read
//! the cache, never the apiserver, to decide; they write through the API.
//!
//! A watch that ends is resumed from the last version seen; one the apiserver no longer
//! has (410 Expired) starts again with a list, whose differences from the cache are
//! handed on as changes, so nothing is missed across a restart of either side.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::{Api, ClientError, WatchEvent};
use crate::backoff::{self, Backoff};

/// What changed: an object added or modified (with what it was before), or deleted.
pub enum Change<K> {
    Applied { old: Option<Arc<K>>, new: Arc<K> },
    Deleted(Arc<K>),
}

type Handler<K> = Box<dyn Fn(&Change<K>) + Send + Sync>;

/// `namespace/name`: a namespaced object's key in caches and work queues.
pub fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

pub struct Informer<K> {
    cache: RwLock<BTreeMap<String, Arc<K>>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub fn new() -> Arc<Self> {
        Arc::new(Informer {
            cache: RwLock::new(BTreeMap::new()),
            handlers: RwLock::new(Vec::new()),
            synced: tokio::sync::watch::channel(false).0,
        })
    }

    /// Adds a handler; add them all before `run`.
    pub fn on_change(&self, handler: impl Fn(&Change<K>) + Send + Sync + 'static) {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(handler));
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// The objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let prefix = format!("{namespace}/");
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Resolves once the first list is in the cache.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }

    fn emit(&self, change: Change<K>) {
        for handler in self
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            handler(&change);
        }
    }

    fn apply(&self, object: K) {
        let key = key_of(object.metadata());
        let new = Arc::new(object);
        let old = self
            .cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, new.clone());
        self.emit(Change::Applied { old, new });
    }

    fn delete(&self, object: K) {
        let key = key_of(object.metadata());
        let removed = self
            .cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.emit(Change::Deleted(removed.unwrap_or_else(|| Arc::new(object))));
    }

    /// A fresh list replaces the cache; what it no longer has is deleted.
    fn replace(&self, items: Vec<K>) {
        let listed: std::collections::HashSet<String> =
            items.iter().map(|o| key_of(o.metadata())).collect();
        let gone: Vec<Arc<K>> = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(k, _)| !listed.contains(*k))
            .map(|(_, v)| v.clone())
            .collect();
        for object in gone {
            let key = key_of(object.metadata());
            self.cache
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            self.emit(Change::Deleted(object));
        }
        for object in items {
            self.apply(object);
        }
    }

    /// Lists and watches for ever.
    pub async fn run(self: Arc<Self>, api: Api<K>) {
        let mut backoff = Backoff::new(backoff::API_FIRST);
        loop {
            let list = match api.list().await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(kind = K::KIND, error = %e, "list failed; retrying");
                    backoff.sleep(backoff::API_MAX).await;
                    continue;
                }
            };
            self.replace(list.items);
            self.synced.send_replace(true);
            let mut version = list.resource_version;
            // Watch from the last version seen until the apiserver says to relist.
            loop {
                match self.watch_once(&api, &mut version).await {
                    Ok(()) => backoff = Backoff::new(backoff::API_FIRST),
                    Err(e) if e.is_expired() => break,
                    Err(e) => {
                        tracing::debug!(kind = K::KIND, error = %e, "watch ended; resuming");
                        backoff.sleep(backoff::API_MAX).await;
                    }
                }
            }
        }
    }

    async fn watch_once(&self, api: &Api<K>, version: &mut String) -> Result<(), ClientError> {
        let mut events = Box::pin(api.watch(version).await?);
        while let Some(event) = events.next().await {
            match event? {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    *version = o.metadata().resource_version.clone().unwrap_or_default();
                    self.apply(o);
                }
                WatchEvent::Deleted(o) => {
                    *version = o.metadata().resource_version.clone().unwrap_or_default();
                    self.delete(o);
                }
                WatchEvent::Bookmark(v) => *version = v,
            }
        }
        Ok(())
    }
}

/// The Services and EndpointSlices, followed together (what the service proxy and the
/// cluster DNS both read), with one wake-up for a change to either.
pub struct ServiceInformers {
    pub services: Arc<Informer<k8s_openapi::api::core::v1::Service>>,
    pub slices: Arc<Informer<k8s_openapi::api::discovery::v1::EndpointSlice>>,
    /// Notified after any change (several changes may wake it once).
    pub changed: Arc<tokio::sync::Notify>,
}

impl ServiceInformers {
    /// Starts both informers (for as long as the process runs) and waits until both have
    /// listed.
    pub async fn start(client: &super::client::Client) -> ServiceInformers {
        let informers = ServiceInformers {
            services: Informer::new(),
            slices: Informer::new(),
            changed: Arc::new(tokio::sync::Notify::new()),
        };
        let wake = informers.changed.clone();
        informers.services.on_change(move |_| wake.notify_one());
        let wake = informers.changed.clone();
        informers.slices.on_change(move |_| wake.notify_one());
        tokio::spawn(informers.services.clone().run(Api::all(client.clone())));
        tokio::spawn(informers.slices.clone().run(Api::all(client.clone())));
        informers.services.wait_synced().await;
        informers.slices.wait_synced().await;
        informers
    }
}
