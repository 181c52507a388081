//! The pod worker: everything the agent does for one pod, one step at a time.
//!
//! `sync_pod` makes the node match the pod's spec (pull, create, start each container,
//! with back-off after failures), container exits come from their shims, restarts follow
//! `restartPolicy`, and a delete stops the containers (SIGTERM, grace period, SIGKILL),
//! cleans up, and lets the apiserver remove the pod. Only workers start or stop
//! containers; they never write the pod's spec, and they report status through the
//! StatusManager only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubelab_proto::now_ms;
use kubelab_proto::v1::container_state::State;
use kubelab_proto::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    DeletePodRequest, Pod, PodStatus,
};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::image::{ImageError, Outcome, PullPolicy};
use super::pod_status::{
    pod_phase, should_restart, terminated_exit_code, waiting, waiting_message,
};
use super::pod_workers::{deletion, name_of, uid_of, Desired};
use super::runtime::{ExitRecord, RuntimeService};
use super::Kubelet;

/// First back-off after a failed pull or a crash; it doubles up to `MAX_BACKOFF` (the kubelet's values).
const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// After a failed pull the status says ErrImagePull this long, then ImagePullBackOff.
const ERR_IMAGE_PULL_SHOWN: Duration = Duration::from_secs(1);
/// How long SIGKILLed containers get to be reaped before we stop waiting.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker knows of one container beyond its reported status.
struct ContainerRuntime {
    status: ContainerStatus,
    /// Set while the container runs.
    pid: Option<i32>,
    /// Do not try to pull or start before this (back-off).
    retry_at: Option<Instant>,
    /// When the ErrImagePull status gives way to ImagePullBackOff.
    show_backoff_at: Option<Instant>,
    backoff: Duration,
}

pub struct PodWorker {
    k: Arc<Kubelet>,
    pod: Pod,
    containers: HashMap<String, ContainerRuntime>,
    exits_tx: mpsc::Sender<(String, ExitRecord)>,
    exits_rx: mpsc::Receiver<(String, ExitRecord)>,
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
        let (exits_tx, exits_rx) = mpsc::channel(16);
        let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
        let finished_before = phase == "Succeeded" || phase == "Failed";
        let start_time_ms = pod
            .status
            .as_ref()
            .map(|s| s.start_time_ms)
            .filter(|t| *t > 0)
            .unwrap_or_else(now_ms);
        PodWorker {
            k,
            pod,
            containers: HashMap::new(),
            exits_tx,
            exits_rx,
            last_status: None,
            start_time_ms,
            finished_before,
            desired,
        }
    }

    pub async fn run(mut self) {
        tracing::info!(phase = ?self.pod.status.as_ref().map(|s| s.phase.as_str()), "pod admitted: a worker now owns it");
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
                .flatten()
                .min();
            tokio::select! {
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        // PodWorkers is gone: the agent is stopping without telling us. Stop too.
                        return self.stop(0, false).await;
                    }
                }
                Some((name, exit)) = self.exits_rx.recv() => self.on_exit(&name, exit, true),
                _ = sleep_until(wake), if wake.is_some() => {}
            }
        }
    }

    /// The worker's last act: stop the containers (SIGTERM, `grace_seconds`, SIGKILL), remove
    /// what the pod left on this node, and, for a delete asked in the API, finish it there.
    async fn stop(&mut self, grace_seconds: i64, finish_in_api: bool) {
        self.kill_pod(Duration::from_secs(grace_seconds.max(0) as u64))
            .await;
        self.remove_from_node();
        if finish_in_api {
            self.finish_delete().await;
        }
    }

    /// Makes the node match the pod's spec: starts what should run, then reports.
    async fn sync_pod(&mut self) -> Synced {
        let mut synced = Synced::Done;
        if !self.finished_before {
            let spec = self.pod.spec.clone().unwrap_or_default();
            for container in &spec.containers {
                synced = self.sync_container(container, &spec.restart_policy).await;
                if synced == Synced::Interrupted {
                    break;
                }
            }
        }
        self.report_status();
        synced
    }

    async fn sync_container(
        &mut self,
        c: &kubelab_proto::v1::Container,
        restart_policy: &str,
    ) -> Synced {
        let now = Instant::now();
        let state = self.runtime_of(c);
        if state.pid.is_some() {
            return Synced::Done;
        }
        if let Some(code) = terminated_exit_code(&state.status) {
            if !should_restart(restart_policy, code) {
                return Synced::Done;
            }
        }
        if state.show_backoff_at.is_some_and(|t| now >= t) {
            state.show_backoff_at = None;
            let error = waiting_message(&state.status);
            state.status.state = waiting(
                "ImagePullBackOff",
                &format!("Back-off pulling image {:?}: {error}", c.image),
            );
            let message = format!("Back-off pulling image {:?}", c.image);
            self.k
                .events
                .pod_event(&self.pod, "Normal", "BackOff", message);
        }
        let state = self.runtime_of(c);
        if state.retry_at.is_some_and(|t| now < t) {
            return Synced::Done;
        }
        state.retry_at = None;
        self.start_container(c).await
    }

    /// Pull (if needed), create and start one container, recording each step as an event.
    #[tracing::instrument(skip_all, fields(container = %c.name))]
    async fn start_container(&mut self, c: &kubelab_proto::v1::Container) -> Synced {
        let k = self.k.clone();
        let pod = self.pod.clone();
        let policy = PullPolicy::parse(&c.image_pull_policy);
        // The pull runs as a task of its own, so that a delete arriving during a long pull
        // is acted on at once: we stop waiting (the image still lands in the cache, which
        // is harmless). The steps after it mount and start things, and are never cut short.
        let pull = tokio::spawn({
            let (k, pod, image) = (k.clone(), pod.clone(), c.image.clone());
            async move {
                k.images
                    .ensure(&image, policy, || {
                        tracing::info!(%image, "pulling image");
                        k.events.pod_event(
                            &pod,
                            "Normal",
                            "Pulling",
                            format!("Pulling image {image:?}"),
                        );
                    })
                    .await
            }
            .in_current_span()
        });
        let pulled = tokio::select! {
            joined = pull => joined.unwrap_or_else(|e| Err(ImageError::Io("the pull task".into(), std::io::Error::other(e)))),
            _ = self.desired.changed() => {
                tracing::info!("the pod changed while its image was being pulled");
                return Synced::Interrupted;
            }
        };
        let image = match pulled {
            Ok((image, Outcome::AlreadyPresent)) => {
                k.events.pod_event(
                    &pod,
                    "Normal",
                    "Pulled",
                    format!("Container image {:?} already present on machine", c.image),
                );
                image
            }
            Ok((image, Outcome::Pulled { seconds, bytes })) => {
                tracing::info!(seconds, bytes, "image pulled");
                k.events.pod_event(
                    &pod,
                    "Normal",
                    "Pulled",
                    format!(
                        "Successfully pulled image {:?} in {seconds:.3}s. Image size: {} bytes.",
                        c.image, image.size_bytes
                    ),
                );
                image
            }
            Err(e) => {
                tracing::warn!(error = %e, "pull failed");
                let reason = match &e {
                    ImageError::NeverPull(_) => "ErrImageNeverPull",
                    ImageError::InvalidReference(..) => "InvalidImageName",
                    _ => "ErrImagePull",
                };
                k.events.pod_event(
                    &pod,
                    "Warning",
                    "Failed",
                    format!("Failed to pull image {:?}: {e}", c.image),
                );
                k.events
                    .pod_event(&pod, "Warning", "Failed", format!("Error: {reason}"));
                let state = self.runtime_of(c);
                state.status.state = waiting(reason, &e.to_string());
                // Only a failed pull turns into ImagePullBackOff; a bad name stays named as such.
                if reason == "ErrImagePull" {
                    state.show_backoff_at =
                        Some(Instant::now() + ERR_IMAGE_PULL_SHOWN.min(state.backoff));
                }
                back_off(state);
                return Synced::Done;
            }
        };
        k.events.pod_event(
            &pod,
            "Normal",
            "Created",
            format!("Created container {}", c.name),
        );
        let started = match k.runtime.start_container(&pod, c, &image, &k.images).await {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(error = %e, "start failed");
                k.events
                    .pod_event(&pod, "Warning", "Failed", format!("Error: {e}"));
                let state = self.runtime_of(c);
                state.status.state = waiting("CreateContainerError", &e.to_string());
                back_off(state);
                return Synced::Done;
            }
        };
        tracing::info!(pid = started.pid, "container started");
        k.events.pod_event(
            &pod,
            "Normal",
            "Started",
            format!("Started container {} (pid {})", c.name, started.pid),
        );
        let state = self.runtime_of(c);
        if let Some(State::Terminated(_)) =
            state.status.state.as_ref().and_then(|s| s.state.as_ref())
        {
            state.status.last_state = state.status.state.take();
        }
        if state.status.last_state.is_some() {
            state.status.restart_count += 1;
        }
        state.status.image_id = image.digest.clone();
        state.status.container_id = started.container_id.clone();
        state.status.pid = started.pid;
        state.status.ready = true;
        state.status.state = Some(ContainerState {
            state: Some(State::Running(ContainerStateRunning {
                started_at_ms: started.started_at_ms,
            })),
        });
        state.pid = Some(started.pid);
        let exits = self.exits_tx.clone();
        let name = c.name.clone();
        tokio::spawn(async move {
            let record = RuntimeService::wait(started).await;
            let _ = exits.send((name, record)).await;
        });
        Synced::Done
    }

    /// What the worker knows of a container, made on first sight (waiting, ContainerCreating).
    fn runtime_of(&mut self, c: &kubelab_proto::v1::Container) -> &mut ContainerRuntime {
        self.containers
            .entry(c.name.clone())
            .or_insert_with(|| ContainerRuntime {
                status: ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    state: waiting("ContainerCreating", ""),
                    ..Default::default()
                },
                pid: None,
                retry_at: None,
                show_backoff_at: None,
                backoff: INITIAL_BACKOFF,
            })
    }

    /// A container ended: record how, free its rootfs, and plan a restart if the policy wants one.
    fn on_exit(&mut self, name: &str, exit: ExitRecord, may_restart: bool) {
        let restart_policy = self
            .pod
            .spec
            .as_ref()
            .map(|s| s.restart_policy.clone())
            .unwrap_or_default();
        let uid = uid_of(&self.pod);
        let Some(state) = self.containers.get_mut(name) else {
            return;
        };
        tracing::info!(
            container = name,
            exit_code = exit.exit_code,
            signal = exit.signal,
            "container exited"
        );
        let started_at_ms = match state.status.state.as_ref().and_then(|s| s.state.as_ref()) {
            Some(State::Running(r)) => r.started_at_ms,
            _ => 0,
        };
        let reason = if exit.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        state.status.state = Some(ContainerState {
            state: Some(State::Terminated(ContainerStateTerminated {
                exit_code: exit.exit_code,
                signal: exit.signal,
                reason: reason.into(),
                message: String::new(),
                started_at_ms,
                finished_at_ms: exit.finished_at_ms,
                container_id: state.status.container_id.clone(),
            })),
        });
        state.status.ready = false;
        state.status.pid = 0;
        state.pid = None;
        if let Err(e) = self.k.runtime.remove_container(&uid, name) {
            tracing::warn!(container = name, error = %e, "could not remove the container's files");
        }
        if may_restart && should_restart(&restart_policy, exit.exit_code) {
            let delay = state.backoff;
            back_off(state);
            state.status.last_state = state.status.state.take();
            state.status.state = waiting(
                "CrashLoopBackOff",
                &format!(
                    "back-off {}s restarting failed container={name} pod={}",
                    delay.as_secs(),
                    name_of(&self.pod)
                ),
            );
            self.k.events.pod_event(
                &self.pod,
                "Warning",
                "BackOff",
                format!("Back-off restarting failed container {name}"),
            );
        }
    }

    /// Stops every running container: SIGTERM, then SIGKILL once `grace` has passed.
    async fn kill_pod(&mut self, grace: Duration) {
        let running: Vec<(String, i32)> = self
            .containers
            .iter()
            .filter_map(|(n, c)| c.pid.map(|p| (n.clone(), p)))
            .collect();
        if running.is_empty() {
            return;
        }
        let first = if grace.is_zero() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        for (name, pid) in &running {
            tracing::info!(container = %name, ?grace, "stopping container");
            self.k.events.pod_event(
                &self.pod,
                "Normal",
                "Killing",
                format!("Stopping container {name}"),
            );
            self.k.runtime.signal(*pid, first);
        }
        let mut killed = first == Signal::SIGKILL;
        // Until the grace period ends; once SIGKILL is sent, until the reaping should be done.
        let mut deadline = tokio::time::Instant::now() + if killed { KILL_TIMEOUT } else { grace };
        while self.containers.values().any(|c| c.pid.is_some()) {
            tokio::select! {
                Some((name, exit)) = self.exits_rx.recv() => self.on_exit(&name, exit, false),
                _ = tokio::time::sleep_until(deadline) => {
                    if killed {
                        tracing::warn!("containers did not die after SIGKILL; giving up on them");
                        return;
                    }
                    for pid in self.containers.values().filter_map(|c| c.pid) {
                        self.k.runtime.signal(pid, Signal::SIGKILL);
                    }
                    killed = true;
                    deadline = tokio::time::Instant::now() + KILL_TIMEOUT;
                }
            }
        }
    }

    fn remove_from_node(&self) {
        if let Err(e) = self.k.runtime.remove_pod(&self.pod) {
            tracing::warn!(error = %e, "could not remove the pod's files");
        }
    }

    /// The containers are stopped and their files gone: let the apiserver remove the pod.
    async fn finish_delete(&self) {
        let meta = self.pod.metadata.clone().unwrap_or_default();
        let request = DeletePodRequest {
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            grace_period_seconds: Some(0),
            force: true,
        };
        match self.k.api.pods.clone().delete(request).await {
            Ok(_) => tracing::info!("pod deleted"),
            Err(e) if matches!(e.code(), tonic::Code::NotFound | tonic::Code::Aborted) => {}
            Err(e) => {
                tracing::warn!(error = %e.message(), "could not finish the delete; it will be retried on relist")
            }
        }
    }

    /// Computes the pod's status from its containers and hands it to the StatusManager
    /// when it changed.
    fn report_status(&mut self) {
        if self.finished_before {
            return;
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        let statuses: Vec<ContainerStatus> = spec
            .containers
            .iter()
            .filter_map(|c| self.containers.get(&c.name).map(|s| s.status.clone()))
            .collect();
        let phase = pod_phase(&spec.restart_policy, &statuses);
        let status = PodStatus {
            phase: phase.into(),
            host_ip: "127.0.0.1".into(),
            start_time_ms: self.start_time_ms,
            container_statuses: statuses,
            ..Default::default()
        };
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let meta = self.pod.metadata.clone().unwrap_or_default();
        tracing::debug!(phase, "status changed");
        self.k
            .status
            .set_status(&meta.namespace, &meta.name, &meta.uid, status.clone());
        self.last_status = Some(status);
    }
}

/// Doubles the container's back-off (up to the cap) and sets when it may try again.
fn back_off(state: &mut ContainerRuntime) {
    state.retry_at = Some(Instant::now() + state.backoff);
    state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}
