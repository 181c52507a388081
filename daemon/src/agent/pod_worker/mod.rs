//! The pod worker: everything the agent does for one pod, one step at a time.
//!
//! `sync_pod` makes the node match the pod's spec: the sandbox (shared namespaces) and
//! volumes first, then the init containers one at a time, each to success, then the
//! containers (pull, create, start, with back-off after failures). Container exits come
//! from their shims and probe verdicts from the prober; restarts follow `restartPolicy`;
//! a delete stops the containers (SIGTERM, grace period, SIGKILL), cleans up, and lets the
//! apiserver remove the pod. A worker started after an agent restart re-adopts the
//! containers its predecessor left running. Only workers start or stop containers; they
//! never write the pod's spec, and they report status through the StatusManager only.
//!
//! Here: the worker's state and its loop. Beside it: `sandbox` (namespaces, volumes, the
//! pod network, re-adoption), `containers` (pull, create, start, exits, probes, back-off),
//! `termination` (SIGTERM, grace period, SIGKILL, the delete finished), `status` (the
//! pod's status as the kubelet computes it).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubelab_proto::now_ms;
use kubelab_proto::v1::container_state::State;
use kubelab_proto::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    DeletePodRequest, Pod, PodCondition, PodStatus,
};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

mod containers;
mod sandbox;
mod status;
mod termination;
#[cfg(test)]
mod tests;

use super::pod_status::{
    initialized, pod_phase, should_restart, should_restart_init, terminated_exit_code, waiting,
    waiting_message,
};
use super::pod_workers::{deletion, name_of, uid_of, Desired};
use super::prober::{self, ProbeKind, ProbeUpdate};
use super::runtime::{ExitRecord, PodContext, Recovered, RuntimeError, Started};
use super::Kubelet;
use crate::backoff::Backoff;
use crate::container::image::{ImageError, Outcome, PullPolicy};

/// After a failed pull the status says ErrImagePull this long, then ImagePullBackOff.
const ERR_IMAGE_PULL_SHOWN: Duration = Duration::from_secs(1);
/// The node's address as pods and the API see it (the lab runs on one host).
const HOST_IP: &str = "127.0.0.1";
/// How long SIGKILLed containers get to be reaped before we stop waiting.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// What reaches a worker besides changes of its pod.
#[derive(Debug)]
pub enum WorkerMsg {
    /// A container's process ended (from the task waiting on its shim).
    Exited(String, ExitRecord),
    /// A probe of a container crossed a threshold (from the prober).
    Probe(String, ProbeUpdate),
}

/// What a worker knows of one container beyond its reported status.
struct ContainerRuntime {
    status: ContainerStatus,
    /// Set while the container runs.
    running: Option<Started>,
    /// When it started (for the back-off reset), on this agent's clock.
    started: Option<Instant>,
    /// Its probes, while it runs.
    prober: Option<tokio::task::JoinHandle<()>>,
    /// Do not try to pull or start before this (back-off).
    retry_at: Option<Instant>,
    /// When the ErrImagePull status gives way to ImagePullBackOff.
    show_backoff_at: Option<Instant>,
    /// Failed pulls and crashes back off apart, as in the kubelet (one per image, one per
    /// container).
    pull_backoff: Backoff,
    crash_backoff: Backoff,
}

impl Drop for ContainerRuntime {
    fn drop(&mut self) {
        if let Some(p) = self.prober.take() {
            p.abort();
        }
    }
}

pub struct PodWorker {
    k: Arc<Kubelet>,
    pod: Pod,
    containers: HashMap<String, ContainerRuntime>,
    msgs_tx: mpsc::Sender<WorkerMsg>,
    msgs_rx: mpsc::Receiver<WorkerMsg>,
    /// The sandbox and volumes, once made: volume name → host path.
    volumes: Option<HashMap<String, PathBuf>>,
    /// The pod's IP, once its network is attached.
    pod_ip: String,
    /// The CNI plugins attaching the pod network, while they run.
    network_task: Option<tokio::task::JoinHandle<Result<String, String>>>,
    /// After a failure to make them, not before this.
    sandbox_retry_at: Option<Instant>,
    sandbox_backoff: Backoff,
    last_status: Option<PodStatus>,
    start_time_ms: i64,
    /// A pod already finished when this worker met it (the agent restarted): never rerun it.
    finished_before: bool,
    desired: watch::Receiver<Desired>,
}

/// Whether a sync went to the end, or stopped because the pod changed meanwhile.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
enum Synced {
    Done,
    Interrupted,
}

impl PodWorker {
    pub fn new(k: Arc<Kubelet>, pod: Pod, desired: watch::Receiver<Desired>) -> Self {
        let (msgs_tx, msgs_rx) = mpsc::channel(16);
        let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
        let finished_before = phase == "Succeeded" || phase == "Failed";
        let start_time_ms = pod
            .status
            .as_ref()
            .map(|s| s.start_time_ms)
            .filter(|t| *t > 0)
            .unwrap_or_else(now_ms);
        let sandbox_backoff = Backoff::new(k.config.backoff_initial);
        PodWorker {
            k,
            pod,
            containers: HashMap::new(),
            msgs_tx,
            msgs_rx,
            volumes: None,
            pod_ip: String::new(),
            network_task: None,
            sandbox_retry_at: None,
            sandbox_backoff,
            last_status: None,
            start_time_ms,
            finished_before,
            desired,
        }
    }

    pub async fn run(mut self) {
        tracing::info!(phase = ?self.pod.status.as_ref().map(|s| s.phase.as_str()), "pod admitted: a worker now owns it");
        if self.readopt() {
            self.check_network().await;
        }
        loop {
            let current = self.desired.borrow_and_update().clone();
            match current {
                Desired::Pod(pod) if deletion(&pod) == 0 => {
                    self.pod = *pod;
                    if self.sync_pod().await == Synced::Interrupted {
                        // The change that interrupted us is already seen: act on it now.
                        continue;
                    }
                }
                // Deleted in the API: stop, then let the apiserver remove it.
                Desired::Pod(pod) => {
                    self.pod = *pod;
                    let grace = self
                        .pod
                        .metadata
                        .as_ref()
                        .map(|m| m.deletion_grace_period_seconds);
                    return self.stop(grace.unwrap_or(30), true).await;
                }
                // Removed from the API already (a forced delete).
                Desired::Gone => {
                    let grace = self
                        .pod
                        .spec
                        .as_ref()
                        .map(|s| s.termination_grace_period_seconds);
                    return self.stop(grace.unwrap_or(30), false).await;
                }
                Desired::Shutdown => return self.stop(0, false).await,
            }
            let wake = self
                .containers
                .values()
                .flat_map(|c| [c.retry_at, c.show_backoff_at])
                .chain([self.sandbox_retry_at])
                .flatten()
                .min();
            tokio::select! {
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        // PodWorkers is gone: the agent is stopping without telling us. Stop too.
                        return self.stop(0, false).await;
                    }
                }
                Some(msg) = self.msgs_rx.recv() => self.on_message(msg).await,
                _ = sleep_until(wake), if wake.is_some() => {}
            }
        }
    }

    async fn on_message(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Exited(name, exit) => self.on_exit(&name, exit, true),
            WorkerMsg::Probe(name, update) => self.on_probe(&name, update).await,
        }
    }

    /// The worker's last act: stop the containers (SIGTERM, `grace_seconds`, SIGKILL), remove
    /// what the pod left on this node, and, for a delete asked in the API, finish it there.
    async fn stop(&mut self, grace_seconds: i64, finish_in_api: bool) {
        let names: Vec<String> = self.containers.keys().cloned().collect();
        self.kill_containers(&names, crate::deadline::grace_period(grace_seconds), false)
            .await;
        self.remove_from_node().await;
        if finish_in_api {
            self.finish_delete().await;
        }
    }

    /// Makes the node match the pod's spec: starts what should run, then reports.
    async fn sync_pod(&mut self) -> Synced {
        let mut synced = Synced::Done;
        if !self.finished_before && self.ensure_sandbox().await {
            synced = self.sync_containers().await;
        }
        self.report_status();
        self.release_network_if_finished().await;
        synced
    }

    async fn sync_containers(&mut self) -> Synced {
        let spec = self.pod.spec.clone().unwrap_or_default();
        // Init containers: one at a time, in order, each to success.
        for c in &spec.init_containers {
            let state = self.runtime_of(c);
            if state.running.is_some() {
                return Synced::Done;
            }
            match terminated_exit_code(&state.status) {
                Some(0) => continue,
                Some(code) if !should_restart_init(&spec.restart_policy, code) => {
                    return Synced::Done; // the pod has failed
                }
                _ => return self.sync_container(c, "OnFailure").await,
            }
        }
        for c in &spec.containers {
            if self.sync_container(c, &spec.restart_policy).await == Synced::Interrupted {
                return Synced::Interrupted;
            }
        }
        Synced::Done
    }
}

/// `10s`, `2m40s`, `500ms`: as Kubernetes prints a back-off.
fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m0s"),
        (m, s) => format!("{m}m{s}s"),
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}
