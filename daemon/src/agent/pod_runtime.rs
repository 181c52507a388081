//! The seam between a pod worker and the node it drives: images, the pod's sandbox and
//! network, containers (the kubelet's CRI calls, in kubelab's shape).
//!
//! `PodRuntime` is everything a `PodWorker` asks of the node; `NodeRuntime` is the real
//! one (the ImageManager, the RuntimeService with its shims, the CNI NetworkManager).
//! Because the worker sees only the trait, its state machine — restarts, back-off, probe
//! verdicts, termination, re-adoption — is unit-tested against a fake in milliseconds,
//! without root (`pod_worker/tests.rs`), while the real path keeps its end-to-end tests.
//! Owns no state of its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use kubelab_proto::v1::{Container, Pod};
use nix::sys::signal::Signal;

use super::network::NetworkManager;
use super::pod_workers::uid_of;
use super::runtime::{
    Created, ExitRecord, PodContext, Recovered, RuntimeError, RuntimeService, Started,
};
use crate::container::image::{Image, ImageError, ImageManager, Outcome, PullPolicy};

/// A container created and not yet started (OCI's create/start split): the pod network
/// is attached meanwhile.
#[tonic::async_trait]
pub trait CreatedContainer: Send {
    async fn start(self: Box<Self>) -> Result<Started, RuntimeError>;
    /// Gives it up (the pod could not be made ready): deleted, nothing left mounted.
    /// Returns the error to report.
    async fn abort(self: Box<Self>, why: String) -> RuntimeError;
}

/// What a pod worker drives on its node.
#[tonic::async_trait]
pub trait PodRuntime: Send + Sync + 'static {
    /// The containers a previous run of the agent started for the pod `uid`.
    fn recover(&self, uid: &str) -> HashMap<String, Recovered>;
    fn sandbox_exists(&self, uid: &str) -> bool;
    /// The pod's directory of pinned namespaces.
    fn sandbox_dir(&self, uid: &str) -> PathBuf;
    /// Makes (or finds again) the sandbox and volumes; volume name → host path.
    fn prepare_pod(
        &self,
        pod: &Pod,
        pids_limit: i64,
    ) -> Result<HashMap<String, PathBuf>, RuntimeError>;
    /// The pod's `/etc/hosts` and `/etc/resolv.conf`, with its IP once known.
    fn write_etc_files(
        &self,
        pod: &Pod,
        pod_ip: &str,
        resolv: &str,
        cluster_domain: &str,
    ) -> Result<(), RuntimeError>;
    /// Attaches the pod network (CNI ADD); returns the pod's IP.
    async fn attach_network(&self, pod: &Pod) -> Result<String, String>;
    /// Whether the pod network is still as attached (CNI CHECK).
    async fn check_network(&self, uid: &str) -> Result<(), String>;
    /// Detaches the pod network (CNI DEL); nothing to do when none is attached.
    async fn detach_network(&self, uid: &str) -> Result<(), String>;
    fn network_attached(&self, uid: &str) -> bool;
    /// The IP the pod's network record holds (a re-adopted pod's).
    fn recorded_pod_ip(&self, uid: &str) -> Option<String>;
    /// Makes sure the image is here per the policy; `on_pull` runs before a pull starts.
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        on_pull: Box<dyn FnOnce() + Send>,
    ) -> Result<(Image, Outcome), ImageError>;
    async fn create_container(
        &self,
        pod: &Pod,
        container: &Container,
        image: &Image,
        ctx: &PodContext<'_>,
    ) -> Result<Box<dyn CreatedContainer>, RuntimeError>;
    /// Waits for a started container to end; how it ended.
    async fn wait(&self, uid: &str, container: &str, started: &Started) -> ExitRecord;
    fn signal(&self, pid: i32, signal: Signal);
    /// Removes a stopped container's files.
    fn remove_container(&self, uid: &str, container: &str) -> Result<(), RuntimeError>;
    /// Removes everything the pod left on the node (sandbox, volumes, cgroup).
    fn remove_pod(&self, pod: &Pod) -> Result<(), RuntimeError>;
}

/// The real node: images from registries, containers through shims, the CNI plugins.
pub struct NodeRuntime {
    pub images: Arc<ImageManager>,
    pub runtime: Arc<RuntimeService>,
    pub network: Arc<NetworkManager>,
}

#[tonic::async_trait]
impl CreatedContainer for Created {
    async fn start(self: Box<Self>) -> Result<Started, RuntimeError> {
        Created::start(*self).await
    }

    async fn abort(self: Box<Self>, why: String) -> RuntimeError {
        Created::abort(*self, why).await
    }
}

#[tonic::async_trait]
impl PodRuntime for NodeRuntime {
    fn recover(&self, uid: &str) -> HashMap<String, Recovered> {
        self.runtime.recover(uid)
    }

    fn sandbox_exists(&self, uid: &str) -> bool {
        self.runtime.sandbox_exists(uid)
    }

    fn sandbox_dir(&self, uid: &str) -> PathBuf {
        self.runtime.sandbox_dir(uid)
    }

    fn prepare_pod(
        &self,
        pod: &Pod,
        pids_limit: i64,
    ) -> Result<HashMap<String, PathBuf>, RuntimeError> {
        self.runtime.prepare_pod(pod, pids_limit)
    }

    fn write_etc_files(
        &self,
        pod: &Pod,
        pod_ip: &str,
        resolv: &str,
        cluster_domain: &str,
    ) -> Result<(), RuntimeError> {
        self.runtime
            .write_etc_files(pod, pod_ip, resolv, cluster_domain)
    }

    async fn attach_network(&self, pod: &Pod) -> Result<String, String> {
        let uid = uid_of(pod);
        let meta = pod.metadata.clone().unwrap_or_default();
        // What the kubelet passes to plugins about the pod.
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={uid};K8S_POD_UID={uid}",
            meta.namespace, meta.name
        );
        let netns = self.runtime.sandbox_dir(&uid).join("net");
        let record = self.runtime.network_record(&uid);
        self.network
            .setup(&uid, args, &netns, &record)
            .await
            .map_err(|e| format!("failed to set up the pod network: {e}"))
    }

    async fn check_network(&self, uid: &str) -> Result<(), String> {
        let record = self.runtime.network_record(uid);
        self.network.check(&record).await.map_err(|e| e.to_string())
    }

    async fn detach_network(&self, uid: &str) -> Result<(), String> {
        let record = self.runtime.network_record(uid);
        self.network
            .teardown(&record)
            .await
            .map_err(|e| e.to_string())
    }

    fn network_attached(&self, uid: &str) -> bool {
        self.runtime.network_record(uid).exists()
    }

    fn recorded_pod_ip(&self, uid: &str) -> Option<String> {
        NetworkManager::pod_ip(&self.runtime.network_record(uid))
    }

    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        on_pull: Box<dyn FnOnce() + Send>,
    ) -> Result<(Image, Outcome), ImageError> {
        self.images.ensure(image, policy, on_pull).await
    }

    async fn create_container(
        &self,
        pod: &Pod,
        container: &Container,
        image: &Image,
        ctx: &PodContext<'_>,
    ) -> Result<Box<dyn CreatedContainer>, RuntimeError> {
        let created = self
            .runtime
            .create_container(pod, container, image, &self.images, ctx)
            .await?;
        Ok(Box::new(created))
    }

    async fn wait(&self, uid: &str, container: &str, started: &Started) -> ExitRecord {
        self.runtime.wait(uid, container, started).await
    }

    fn signal(&self, pid: i32, signal: Signal) {
        self.runtime.signal(pid, signal)
    }

    fn remove_container(&self, uid: &str, container: &str) -> Result<(), RuntimeError> {
        self.runtime.remove_container(uid, container)
    }

    fn remove_pod(&self, pod: &Pod) -> Result<(), RuntimeError> {
        self.runtime.remove_pod(pod)
    }
}
