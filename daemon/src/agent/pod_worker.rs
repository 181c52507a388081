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

use super::network::NetworkManager;
use super::pod_status::{
    initialized, pod_phase, should_restart, should_restart_init, terminated_exit_code, waiting,
    waiting_message,
};
use super::pod_workers::{deletion, name_of, uid_of, Desired};
use super::prober::{self, ProbeKind, ProbeUpdate};
use super::runtime::{ExitRecord, PodContext, Recovered, RuntimeError, Started};
use super::Kubelet;
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

/// An exponential back-off: each step waits twice the one before, up to a cap.
#[derive(Clone, Copy, Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The wait for this failure; the next one waits twice as long (at most `max`).
    fn step(&mut self, max: Duration) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(max);
        delay
    }
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
        let sandbox_backoff = Backoff {
            next: k.config.backoff_initial,
        };
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

    /// Containers a previous run of the agent started for this pod: the running ones are
    /// followed again (same container, same pid), the ones that ended meanwhile are
    /// reported with their exit codes and restarted per the policy.
    /// Returns whether there was anything to re-adopt.
    fn readopt(&mut self) -> bool {
        let uid = uid_of(&self.pod);
        let recovered = self.k.runtime.recover(&uid);
        if recovered.is_empty() {
            return false;
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        // The status the API has keeps what this agent knew: restart counts, last states.
        let reported: Vec<ContainerStatus> = self
            .pod
            .status
            .as_ref()
            .map(|s| {
                s.init_container_statuses
                    .iter()
                    .chain(&s.container_statuses)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for c in spec.init_containers.iter().chain(&spec.containers) {
            let Some(found) = recovered.get(&c.name) else {
                // Not started by the previous run; an init container may have finished
                // earlier: its reported success still counts.
                if let Some(status) = reported.iter().find(|s| s.name == c.name) {
                    self.runtime_of(c).status = status.clone();
                }
                continue;
            };
            let (started, exit) = match found {
                Recovered::Running(s) => (s.clone(), None),
                Recovered::Exited(s, e) => (s.clone(), Some(e.clone())),
            };
            tracing::info!(container = %c.name, pid = started.pid, exited = exit.is_some(), "re-adopting a container of the previous agent run");
            let previous = reported.iter().find(|s| s.name == c.name).cloned();
            let state = self.runtime_of(c);
            if let Some(previous) = previous {
                state.status.last_state = previous.last_state;
            }
            state.status.restart_count = started.restart_count;
            self.mark_running(c, started.clone());
            match exit {
                None => self.follow(c, started),
                Some(exit) => self.on_exit(&c.name, exit, true),
            }
        }
        if self.k.runtime.sandbox_exists(&uid) {
            let volumes = crate::blocking::here(|| {
                self.k
                    .runtime
                    .prepare_pod(&self.pod, self.k.config.pod_pids_limit)
            });
            self.volumes = volumes.ok();
            if let Some(ip) = NetworkManager::pod_ip(&self.k.runtime.network_record(&uid)) {
                self.pod_ip = ip;
            }
            if self.pod.spec.as_ref().is_some_and(|s| s.host_network) {
                self.pod_ip = HOST_IP.into();
            }
        }
        true
    }

    /// An agent started again asks the plugins whether a re-adopted pod's network is
    /// still as it was left (CNI CHECK).
    async fn check_network(&self) {
        let record = self.k.runtime.network_record(&uid_of(&self.pod));
        if let Err(e) = self.k.network.check(&record).await {
            tracing::warn!(error = %e, "the pod's network is not as it was attached");
            self.k.events.pod_event(
                &self.pod,
                "Warning",
                "NetworkNotReady",
                format!("Pod network check failed: {e}"),
            );
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

    /// A pod that has finished (Succeeded or Failed) gives its address back, as the kubelet
    /// stops a finished pod's sandbox; its status keeps showing the IP it had, and its
    /// volumes and logs stay until it is deleted.
    async fn release_network_if_finished(&mut self) {
        let finished = self
            .last_status
            .as_ref()
            .is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed");
        let record = self.k.runtime.network_record(&uid_of(&self.pod));
        if !finished || !record.exists() || self.containers.values().any(|c| c.running.is_some()) {
            return;
        }
        if let Some(task) = self.network_task.take() {
            let _ = task.await;
        }
        match self.k.network.teardown(&record).await {
            Ok(()) => tracing::info!("pod finished: its network is detached"),
            Err(e) => tracing::warn!(error = %e, "could not detach a finished pod's network"),
        }
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

    /// The pod's namespaces and volumes, made once before its first container; its
    /// network is attached meanwhile, in the background (`wait_for_network`).
    async fn ensure_sandbox(&mut self) -> bool {
        if self.volumes.is_some() {
            return true;
        }
        if self.sandbox_retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        match self.make_sandbox() {
            Ok(volumes) => {
                self.volumes = Some(volumes);
                self.sandbox_retry_at = None;
                true
            }
            Err(e) => {
                self.sandbox_failed(&e);
                false
            }
        }
    }

    /// Records a sandbox failure; it is made again after a back-off.
    fn sandbox_failed(&mut self, error: &str) {
        tracing::warn!(%error, "cannot make the pod's sandbox");
        self.k.events.pod_event(
            &self.pod,
            "Warning",
            "FailedCreatePodSandBox",
            format!("Failed to create pod sandbox: {error}"),
        );
        self.volumes = None;
        let delay = self.sandbox_backoff.step(self.k.config.backoff_max);
        self.sandbox_retry_at = Some(crate::deadline::after(Instant::now(), delay));
    }

    /// Pinned namespaces, volumes and the pod's `/etc` files; then the CNI plugins start
    /// attaching the pod network, as a task of its own.
    fn make_sandbox(&mut self) -> Result<HashMap<String, PathBuf>, String> {
        let volumes = crate::blocking::here(|| {
            self.k
                .runtime
                .prepare_pod(&self.pod, self.k.config.pod_pids_limit)
        })
        .map_err(|e| e.to_string())?;
        let uid = uid_of(&self.pod);
        if self.pod.spec.as_ref().is_some_and(|s| s.host_network) {
            self.pod_ip = HOST_IP.to_string();
        } else {
            let meta = self.pod.metadata.clone().unwrap_or_default();
            // What the kubelet passes to plugins about the pod.
            let args = format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={uid};K8S_POD_UID={uid}",
                meta.namespace, meta.name
            );
            let netns = self.k.runtime.sandbox_dir(&uid).join("net");
            let record = self.k.runtime.network_record(&uid);
            let k = self.k.clone();
            let attach = async move {
                k.network
                    .setup(&uid, args, &netns, &record)
                    .await
                    .map_err(|e| format!("failed to set up the pod network: {e}"))
            };
            self.network_task = Some(tokio::spawn(attach.in_current_span()));
        }
        // Written now, so that containers can mount them; the pod's own line is added
        // once its IP is known (the file is rewritten in place: mounts see the change).
        crate::blocking::here(|| self.k.runtime.write_etc_files(&self.pod, &self.pod_ip))
            .map_err(|e| e.to_string())?;
        Ok(volumes)
    }

    /// Waits for the pod network being attached (if it is), then adds the pod's IP to
    /// its `/etc/hosts`. A container is created meanwhile, and started only after this.
    async fn wait_for_network(&mut self) -> Result<(), String> {
        let Some(task) = self.network_task.take() else {
            return Ok(());
        };
        let ip = task
            .await
            .unwrap_or_else(|e| Err(format!("the network task failed: {e}")))?;
        self.pod_ip = ip;
        crate::blocking::here(|| self.k.runtime.write_etc_files(&self.pod, &self.pod_ip))
            .map_err(|e| e.to_string())
    }

    async fn sync_container(&mut self, c: &Container, restart_policy: &str) -> Synced {
        let now = Instant::now();
        let state = self.runtime_of(c);
        if state.running.is_some() {
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
    async fn start_container(&mut self, c: &Container) -> Synced {
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
                let backoff_max = k.config.backoff_max;
                let state = self.runtime_of(c);
                state.status.state = waiting(reason, &e.to_string());
                let delay = state.pull_backoff.step(backoff_max);
                state.retry_at = Some(crate::deadline::after(Instant::now(), delay));
                // Only a failed pull turns into ImagePullBackOff; a bad name stays named as such.
                if reason == "ErrImagePull" {
                    state.show_backoff_at = Some(crate::deadline::after(
                        Instant::now(),
                        ERR_IMAGE_PULL_SHOWN.min(delay),
                    ));
                }
                return Synced::Done;
            }
        };
        let initial = k.config.backoff_initial;
        self.runtime_of(c).pull_backoff = Backoff { next: initial };
        let restart_count = self.restart_count_for_start(c);
        let no_volumes = HashMap::new();
        let ctx = PodContext {
            restart_count,
            sandbox: &k.runtime.sandbox_dir(&uid_of(&pod)),
            volumes: self.volumes.as_ref().unwrap_or(&no_volumes),
        };
        let created = k
            .runtime
            .create_container(&pod, c, &image, &k.images, &ctx)
            .await;
        let created = match created {
            Ok(created) => created,
            Err(e) => return self.start_failed(c, &e),
        };
        k.events.pod_event(
            &pod,
            "Normal",
            "Created",
            format!("Created container {}", c.name),
        );
        // The container was created while the CNI plugins ran; it starts once they are done.
        if let Err(e) = self.wait_for_network().await {
            let _ = k.runtime.abort_created(created, e.clone()).await;
            self.sandbox_failed(&e);
            return Synced::Done;
        }
        let started = match k.runtime.start_created(created).await {
            Ok(started) => started,
            Err(e) => return self.start_failed(c, &e),
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
        state.status.restart_count = restart_count;
        state.status.image_id = image.digest.clone();
        self.mark_running(c, started.clone());
        self.follow(c, started);
        Synced::Done
    }

    /// A container could not be created or started: `CreateContainerConfigError` when its
    /// spec cannot be honoured (runAsNonRoot with a root image, say), else
    /// `CreateContainerError`; a retry after the crash back-off.
    fn start_failed(&mut self, c: &Container, error: &RuntimeError) -> Synced {
        tracing::warn!(%error, "start failed");
        self.k
            .events
            .pod_event(&self.pod, "Warning", "Failed", format!("Error: {error}"));
        let reason = match error {
            RuntimeError::Spec(_) => "CreateContainerConfigError",
            _ => "CreateContainerError",
        };
        let backoff_max = self.k.config.backoff_max;
        let state = self.runtime_of(c);
        state.status.state = waiting(reason, &error.to_string());
        let delay = state.crash_backoff.step(backoff_max);
        state.retry_at = Some(crate::deadline::after(Instant::now(), delay));
        Synced::Done
    }

    /// The restart count the next start of `c` will have: one more than before, once it has run.
    fn restart_count_for_start(&mut self, c: &Container) -> i32 {
        let state = self.runtime_of(c);
        let ran = state.status.last_state.is_some()
            || matches!(
                state.status.state.as_ref().and_then(|s| s.state.as_ref()),
                Some(State::Terminated(_))
            );
        if ran {
            state.status.restart_count.saturating_add(1)
        } else {
            state.status.restart_count
        }
    }

    /// Records a container as running (its status, its pid).
    fn mark_running(&mut self, c: &Container, started: Started) {
        let is_init = self
            .pod
            .spec
            .as_ref()
            .is_some_and(|s| s.init_containers.iter().any(|i| i.name == c.name));
        let has_probes = c.startup_probe.is_some() || c.readiness_probe.is_some();
        let state = self.runtime_of(c);
        if state.status.image_id.is_empty() {
            state.status.image_id = started.image_id.clone();
        }
        state.status.container_id = started.container_id.clone();
        state.status.pid = started.pid;
        // Without probes a container is started and ready as soon as it runs; with them
        // the prober says when (init containers are never "ready").
        state.status.started = !has_probes || c.startup_probe.is_none();
        state.status.ready = !is_init && !has_probes;
        state.status.state = Some(ContainerState {
            state: Some(State::Running(ContainerStateRunning {
                started_at_ms: started.started_at_ms,
            })),
        });
        state.started = Some(Instant::now());
        state.running = Some(started);
    }

    /// Waits for the container's exit in the background, and starts its probes.
    fn follow(&mut self, c: &Container, started: Started) {
        let msgs = self.msgs_tx.clone();
        let name = c.name.clone();
        let (k, uid) = (self.k.clone(), uid_of(&self.pod));
        tokio::spawn(async move {
            let record = k.runtime.wait(&uid, &name, &started).await;
            let _ = msgs.send(WorkerMsg::Exited(name, record)).await;
        });
        let has_probes =
            c.startup_probe.is_some() || c.readiness_probe.is_some() || c.liveness_probe.is_some();
        if has_probes {
            let host_network = self.pod.spec.as_ref().is_some_and(|s| s.host_network);
            let netns =
                (!host_network).then(|| self.k.runtime.sandbox_dir(&uid_of(&self.pod)).join("net"));
            let prober = prober::start(
                self.k.clone(),
                self.pod.clone(),
                c.clone(),
                netns,
                self.msgs_tx.clone(),
            );
            self.runtime_of(c).prober = Some(prober);
        }
    }

    /// A probe crossed a threshold.
    async fn on_probe(&mut self, name: &str, update: ProbeUpdate) {
        let Some(state) = self.containers.get_mut(name) else {
            return;
        };
        if state.running.is_none() {
            return;
        }
        match update {
            ProbeUpdate::Started => state.status.started = true,
            ProbeUpdate::Ready(ready) => {
                tracing::info!(container = name, ready, "readiness changed");
                state.status.ready = ready;
            }
            ProbeUpdate::Failed(kind, message) => {
                let what = if kind == ProbeKind::Startup {
                    "startup"
                } else {
                    "liveness"
                };
                tracing::info!(container = name, %message, "{what} probe failed: restarting the container");
                self.k.events.pod_event(
                    &self.pod,
                    "Normal",
                    "Killing",
                    format!("Container {name} failed {what} probe, will be restarted"),
                );
                let grace = self
                    .pod
                    .spec
                    .as_ref()
                    .map(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30);
                self.kill_containers(
                    &[name.to_string()],
                    crate::deadline::grace_period(grace),
                    true,
                )
                .await;
            }
        }
        self.report_status();
    }

    /// What the worker knows of a container, made on first sight (waiting, ContainerCreating).
    fn runtime_of(&mut self, c: &Container) -> &mut ContainerRuntime {
        let initial = self.k.config.backoff_initial;
        self.containers
            .entry(c.name.clone())
            .or_insert_with(|| ContainerRuntime {
                status: ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    state: waiting("ContainerCreating", ""),
                    ..Default::default()
                },
                running: None,
                started: None,
                prober: None,
                retry_at: None,
                show_backoff_at: None,
                pull_backoff: Backoff { next: initial },
                crash_backoff: Backoff { next: initial },
            })
    }

    /// A container ended: record how, free its rootfs, and plan a restart if the policy wants one.
    fn on_exit(&mut self, name: &str, exit: ExitRecord, may_restart: bool) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let is_init = spec.init_containers.iter().any(|c| c.name == name);
        let restart = may_restart
            && if is_init {
                should_restart_init(&spec.restart_policy, exit.exit_code)
            } else {
                should_restart(&spec.restart_policy, exit.exit_code)
            };
        let uid = uid_of(&self.pod);
        let config = self.k.config.clone();
        let Some(state) = self.containers.get_mut(name) else {
            return;
        };
        tracing::info!(
            container = name,
            exit_code = exit.exit_code,
            signal = exit.signal,
            oom_killed = exit.oom_killed,
            "container exited"
        );
        if let Some(p) = state.prober.take() {
            p.abort();
        }
        let started_at_ms = match state.status.state.as_ref().and_then(|s| s.state.as_ref()) {
            Some(State::Running(r)) => r.started_at_ms,
            _ => 0,
        };
        let reason = if exit.oom_killed {
            "OOMKilled"
        } else if exit.exit_code == 0 {
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
        state.status.started = false;
        state.status.pid = 0;
        state.running = None;
        // A container that ran long enough starts its back-off afresh (the kubelet: 10 min).
        if state
            .started
            .take()
            .is_some_and(|t| t.elapsed() >= config.backoff_reset)
        {
            state.crash_backoff = Backoff {
                next: config.backoff_initial,
            };
        }
        if let Err(e) = crate::blocking::here(|| self.k.runtime.remove_container(&uid, name)) {
            tracing::warn!(container = name, error = %e, "could not remove the container's files");
        }
        if restart {
            let delay = state.crash_backoff.step(config.backoff_max);
            state.retry_at = Some(crate::deadline::after(Instant::now(), delay));
            state.status.last_state = state.status.state.take();
            state.status.state = waiting(
                "CrashLoopBackOff",
                &format!(
                    "back-off {} restarting failed container={name} pod={}",
                    format_duration(delay),
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

    /// Stops the named running containers: SIGTERM, then SIGKILL once `grace` has passed.
    /// Their exits are handled as any exit (`may_restart`: whether the policy may restart them).
    async fn kill_containers(&mut self, names: &[String], grace: Duration, may_restart: bool) {
        let running: Vec<(String, i32)> = names
            .iter()
            .filter_map(|n| {
                let pid = self.containers.get(n)?.running.as_ref()?.pid;
                Some((n.clone(), pid))
            })
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
            if !may_restart {
                self.k.events.pod_event(
                    &self.pod,
                    "Normal",
                    "Killing",
                    format!("Stopping container {name}"),
                );
            }
            self.k.runtime.signal(*pid, first);
        }
        let mut killed = first == Signal::SIGKILL;
        // Until the grace period ends; once SIGKILL is sent, until the reaping should be done.
        let mut deadline = crate::deadline::tokio_after(if killed { KILL_TIMEOUT } else { grace });
        let still_running = |w: &PodWorker| {
            running
                .iter()
                .filter_map(|(n, _)| w.containers.get(n)?.running.as_ref().map(|s| s.pid))
                .collect::<Vec<i32>>()
        };
        // Probe verdicts of other containers wait until these are stopped; they are only
        // sent on a change, so none may be lost.
        let mut deferred = Vec::new();
        while !still_running(self).is_empty() {
            tokio::select! {
                Some(msg) = self.msgs_rx.recv() => match msg {
                    WorkerMsg::Exited(name, exit) => self.on_exit(&name, exit, may_restart),
                    probe @ WorkerMsg::Probe(..) => deferred.push(probe),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if killed {
                        tracing::warn!("containers did not die after SIGKILL; giving up on them");
                        break;
                    }
                    for pid in still_running(self) {
                        self.k.runtime.signal(pid, Signal::SIGKILL);
                    }
                    killed = true;
                    deadline = crate::deadline::tokio_after(KILL_TIMEOUT);
                }
            }
        }
        for msg in deferred {
            let _ = self.msgs_tx.try_send(msg);
        }
    }

    /// Detaches the pod's network (CNI DEL, while its namespace still exists), then removes
    /// its files, mounts and cgroups.
    async fn remove_from_node(&mut self) {
        // A DEL must not race the ADD still running: let it finish first.
        if let Some(task) = self.network_task.take() {
            let _ = task.await;
        }
        let record = self.k.runtime.network_record(&uid_of(&self.pod));
        if let Err(e) = self.k.network.teardown(&record).await {
            tracing::warn!(error = %e, "could not detach the pod's network");
            self.k.events.pod_event(
                &self.pod,
                "Warning",
                "FailedKillPod",
                format!("error killing pod: failed to destroy network for sandbox: {e}"),
            );
        }
        let (runtime, pod) = (self.k.runtime.clone(), self.pod.clone());
        if let Err(e) = crate::blocking::off_thread(move || runtime.remove_pod(&pod)).await {
            tracing::warn!(error = %e, "could not remove the pod's files");
        }
    }

    /// The containers are stopped and their files gone: let the apiserver remove the pod.
    async fn finish_delete(&self) {
        let meta = self.pod.metadata.clone().unwrap_or_default();
        let request = DeletePodRequest {
            resource_version: 0,
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
        let init_done = {
            let init: Vec<ContainerStatus> = self.statuses_of(&spec.init_containers, false);
            initialized(spec.init_containers.len(), &init)
        };
        let init_statuses = self.statuses_of(&spec.init_containers, true);
        // Until the init containers are done, the containers wait in PodInitializing.
        let statuses: Vec<ContainerStatus> = spec
            .containers
            .iter()
            .map(|c| match self.containers.get(&c.name) {
                Some(s) => s.status.clone(),
                None => ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    state: waiting(
                        if init_done {
                            "ContainerCreating"
                        } else {
                            "PodInitializing"
                        },
                        "",
                    ),
                    ..Default::default()
                },
            })
            .collect();
        let phase = pod_phase(
            &spec.restart_policy,
            spec.init_containers.len(),
            &init_statuses,
            &statuses,
        );
        let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
        let conditions = self.conditions(&[
            ("PodScheduled", true),
            ("Initialized", init_done),
            ("ContainersReady", all_ready),
            ("Ready", all_ready && phase == "Running"),
        ]);
        let status = PodStatus {
            phase: phase.into(),
            host_ip: HOST_IP.into(),
            pod_ip: self.pod_ip.clone(),
            start_time_ms: self.start_time_ms,
            container_statuses: statuses,
            init_container_statuses: init_statuses,
            conditions,
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

    /// The statuses of these containers (with placeholders for the ones not met yet, when asked).
    fn statuses_of(&self, containers: &[Container], placeholders: bool) -> Vec<ContainerStatus> {
        containers
            .iter()
            .filter_map(|c| match self.containers.get(&c.name) {
                Some(s) => Some(s.status.clone()),
                None if placeholders => Some(ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    state: waiting("PodInitializing", ""),
                    ..Default::default()
                }),
                None => None,
            })
            .collect()
    }

    /// The pod's conditions, keeping each one's transition time while its value holds.
    fn conditions(&self, values: &[(&str, bool)]) -> Vec<PodCondition> {
        let previous = self
            .last_status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        values
            .iter()
            .map(|(kind, value)| {
                let status = if *value { "True" } else { "False" };
                let since = previous
                    .iter()
                    .find(|c| c.r#type == *kind && c.status == status)
                    .map(|c| c.last_transition_time_ms)
                    .unwrap_or_else(now_ms);
                PodCondition {
                    r#type: kind.to_string(),
                    status: status.into(),
                    last_transition_time_ms: since,
                    ..Default::default()
                }
            })
            .collect()
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
