//! Making and removing a workload's pods (kube-controller-manager's `RealPodControl`):
//! a pod from the owner's template, named after the owner, with a controller reference
//! to it; creation in slow-start batches; deletion with the pod's uid as precondition;
//! the `SuccessfulCreate`/`SuccessfulDelete` events on the owner. Shared by the
//! ReplicaSet and Job controllers; decides nothing about how many pods there should be.

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::client::{Api, Client, ClientError};
use super::events::Recorder;
use super::pod_state;

#[derive(Clone)]
pub struct PodControl {
    client: Client,
    events: Recorder,
}

/// What a pod is made from: its owner, the owner's template, and the pods' name prefix.
pub struct Template<'a, K> {
    pub owner: &'a K,
    pub template: &'a PodTemplateSpec,
    pub generate_name: String,
}

impl PodControl {
    pub fn new(client: Client, events: Recorder) -> Self {
        PodControl { client, events }
    }

    /// Creates `count` pods in batches of 1, 2, 4, …, stopping at the first batch with a
    /// failure (a template that cannot make pods fails once, not a thousand times);
    /// returns how many were created and the first error.
    pub async fn create_in_batches<K>(
        &self,
        from: &Template<'_, K>,
        count: usize,
    ) -> (usize, Option<ClientError>)
    where
        K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
    {
        let mut created = 0;
        let mut batch = 1;
        while created < count {
            let size = batch.min(count - created);
            let results = join_all((0..size).map(|_| self.create_pod(from))).await;
            let mut error = None;
            for result in results {
                match result {
                    Ok(()) => created += 1,
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
            if error.is_some() {
                return (created, error);
            }
            batch = batch.saturating_mul(2);
        }
        (created, None)
    }

    async fn create_pod<K>(&self, from: &Template<'_, K>) -> Result<(), ClientError>
    where
        K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
    {
        let owner = from.owner.metadata();
        let template_meta = from.template.metadata.clone().unwrap_or_default();
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(from.generate_name.clone()),
                namespace: owner.namespace.clone(),
                labels: template_meta.labels,
                annotations: template_meta.annotations,
                owner_references: Some(vec![pod_state::owner_ref(from.owner)]),
                ..Default::default()
            },
            spec: from.template.spec.clone(),
            status: None,
        };
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace_of(owner));
        let created = api.create(&pod).await?;
        let pod_name = created.metadata.name.unwrap_or_default();
        tracing::info!(kind = K::KIND, owner = ?owner.name, pod = %pod_name, "created pod");
        self.events.record(
            from.owner,
            false,
            "SuccessfulCreate",
            format!("Created pod: {pod_name}"),
        );
        Ok(())
    }

    /// Deletes one pod of `owner`; returns the error, if any (a pod already gone is none).
    pub async fn delete_pod<K>(&self, owner: &K, pod: &Pod) -> Option<ClientError>
    where
        K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
    {
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace_of(&pod.metadata));
        let name = pod.metadata.name.clone().unwrap_or_default();
        match api
            .delete(&name, "Background", pod.metadata.uid.as_deref())
            .await
        {
            Ok(()) => {
                self.events.record(
                    owner,
                    false,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                );
                None
            }
            Err(e) if e.is_not_found() => None,
            Err(e) => Some(e),
        }
    }
}

pub fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}
