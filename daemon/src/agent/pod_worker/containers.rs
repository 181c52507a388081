//! A pod's containers, for its worker: pulling each one's image, creating and starting it
//! (with back-off after failures), following it while it runs, and acting on its exit
//! and its probes' verdicts per `restartPolicy`. Stops nothing but what a failed liveness
//! or startup probe restarts (through `termination`).

use super::*;

impl PodWorker {
    pub(super) async fn sync_container(&mut self, c: &Container, restart_policy: &str) -> Synced {
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
    pub(super) async fn start_container(&mut self, c: &Container) -> Synced {
        let k = self.k.clone();
        let pod = self.pod.clone();
        let policy = PullPolicy::parse(&c.image_pull_policy);
        // The pull runs as a task of its own, so that a delete arriving during a long pull
        // is acted on at once: we stop waiting (the image still lands in the cache, which
        // is harmless). The steps after it mount and start things, and are never cut short.
        let pull = tokio::spawn({
            let (k, pod, image) = (k.clone(), pod.clone(), c.image.clone());
            async move {
                let on_pull = {
                    let (k, pod, image) = (k.clone(), pod.clone(), image.clone());
                    Box::new(move || {
                        tracing::info!(%image, "pulling image");
                        k.events.pod_event(
                            &pod,
                            "Normal",
                            "Pulling",
                            format!("Pulling image {image:?}"),
                        );
                    })
                };
                k.node.ensure_image(&image, policy, on_pull).await
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
        self.runtime_of(c).pull_backoff = Backoff::new(initial);
        let restart_count = self.restart_count_for_start(c);
        let no_volumes = HashMap::new();
        let namespace = pod
            .metadata
            .as_ref()
            .map(|m| m.namespace.clone())
            .unwrap_or_default();
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let service_env = k.service_links.env_for(&namespace, links).await;
        let ctx = PodContext {
            restart_count,
            sandbox: &k.node.sandbox_dir(&uid_of(&pod)),
            volumes: self.volumes.as_ref().unwrap_or(&no_volumes),
            service_env: &service_env,
        };
        let created = k.node.create_container(&pod, c, &image, &ctx).await;
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
            let _ = created.abort(e.clone()).await;
            self.sandbox_failed(&e);
            return Synced::Done;
        }
        let started = match created.start().await {
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
    pub(super) fn start_failed(&mut self, c: &Container, error: &RuntimeError) -> Synced {
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
    pub(super) fn restart_count_for_start(&mut self, c: &Container) -> i32 {
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
    pub(super) fn mark_running(&mut self, c: &Container, started: Started) {
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
    pub(super) fn follow(&mut self, c: &Container, started: Started) {
        let msgs = self.msgs_tx.clone();
        let name = c.name.clone();
        let (k, uid) = (self.k.clone(), uid_of(&self.pod));
        tokio::spawn(async move {
            let record = k.node.wait(&uid, &name, &started).await;
            let _ = msgs.send(WorkerMsg::Exited(name, record)).await;
        });
        let has_probes =
            c.startup_probe.is_some() || c.readiness_probe.is_some() || c.liveness_probe.is_some();
        if has_probes {
            let host_network = self.pod.spec.as_ref().is_some_and(|s| s.host_network);
            let netns =
                (!host_network).then(|| self.k.node.sandbox_dir(&uid_of(&self.pod)).join("net"));
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
    pub(super) async fn on_probe(&mut self, name: &str, update: ProbeUpdate) {
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
    pub(super) fn runtime_of(&mut self, c: &Container) -> &mut ContainerRuntime {
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
                pull_backoff: Backoff::new(initial),
                crash_backoff: Backoff::new(initial),
            })
    }

    /// A container ended: record how, free its rootfs, and plan a restart if the policy wants one.
    pub(super) fn on_exit(&mut self, name: &str, exit: ExitRecord, may_restart: bool) {
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
            state.crash_backoff = Backoff::new(config.backoff_initial);
        }
        if let Err(e) = crate::blocking::here(|| self.k.node.remove_container(&uid, name)) {
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
}
