//! The pod's sandbox, for its worker: re-adopting what a previous agent run left, the
//! pinned namespaces, volumes and `/etc` files, the pod network (attached in the
//! background, checked after a restart, detached when the pod finishes or goes), and the
//! removal of all of it from the node. Starts no container.

use super::*;

impl PodWorker {
    /// Containers a previous run of the agent started for this pod: the running ones are
    /// followed again (same container, same pid), the ones that ended meanwhile are
    /// reported with their exit codes and restarted per the policy.
    /// Returns whether there was anything to re-adopt.
    pub(super) fn readopt(&mut self) -> bool {
        let uid = uid_of(&self.pod);
        let recovered = self.k.node.recover(&uid);
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
        if self.k.node.sandbox_exists(&uid) {
            let volumes = crate::blocking::here(|| {
                self.k
                    .node
                    .prepare_pod(&self.pod, self.k.config.pod_pids_limit)
            });
            self.volumes = volumes.ok();
            if let Some(ip) = self.k.node.recorded_pod_ip(&uid) {
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
    pub(super) async fn check_network(&self) {
        if let Err(e) = self.k.node.check_network(&uid_of(&self.pod)).await {
            tracing::warn!(error = %e, "the pod's network is not as it was attached");
            self.k.events.pod_event(
                &self.pod,
                "Warning",
                "NetworkNotReady",
                format!("Pod network check failed: {e}"),
            );
        }
    }

    /// A pod that has finished (Succeeded or Failed) gives its address back, as the kubelet
    /// stops a finished pod's sandbox; its status keeps showing the IP it had, and its
    /// volumes and logs stay until it is deleted.
    pub(super) async fn release_network_if_finished(&mut self) {
        let finished = self
            .last_status
            .as_ref()
            .is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed");
        let uid = uid_of(&self.pod);
        if !finished
            || !self.k.node.network_attached(&uid)
            || self.containers.values().any(|c| c.running.is_some())
        {
            return;
        }
        if let Some(task) = self.network_task.take() {
            let _ = task.await;
        }
        match self.k.node.detach_network(&uid).await {
            Ok(()) => tracing::info!("pod finished: its network is detached"),
            Err(e) => tracing::warn!(error = %e, "could not detach a finished pod's network"),
        }
    }

    /// The pod's namespaces and volumes, made once before its first container; its
    /// network is attached meanwhile, in the background (`wait_for_network`).
    pub(super) async fn ensure_sandbox(&mut self) -> bool {
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
    pub(super) fn sandbox_failed(&mut self, error: &str) {
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
    pub(super) fn make_sandbox(&mut self) -> Result<HashMap<String, PathBuf>, String> {
        let volumes = crate::blocking::here(|| {
            self.k
                .node
                .prepare_pod(&self.pod, self.k.config.pod_pids_limit)
        })
        .map_err(|e| e.to_string())?;
        if self.pod.spec.as_ref().is_some_and(|s| s.host_network) {
            self.pod_ip = HOST_IP.to_string();
        } else {
            let (k, pod) = (self.k.clone(), self.pod.clone());
            let attach = async move { k.node.attach_network(&pod).await };
            self.network_task = Some(tokio::spawn(attach.in_current_span()));
        }
        // Written now, so that containers can mount them; the pod's own line is added
        // once its IP is known (the file is rewritten in place: mounts see the change).
        let (resolv, warning) = self.resolv_conf();
        if let Some(message) = warning {
            self.k
                .events
                .pod_event(&self.pod, "Warning", "MissingClusterDNS", message);
        }
        let domain = &self.k.config.dns.cluster_domain;
        crate::blocking::here(|| {
            self.k
                .node
                .write_etc_files(&self.pod, &self.pod_ip, &resolv, domain)
        })
        .map_err(|e| e.to_string())?;
        Ok(volumes)
    }

    /// The pod's resolv.conf (`dns_config`), and a warning when its policy could not be
    /// followed.
    fn resolv_conf(&self) -> (String, Option<String>) {
        let dns = &self.k.config.dns;
        let spec = self.pod.spec.clone().unwrap_or_default();
        let namespace = self
            .pod
            .metadata
            .as_ref()
            .map(|m| m.namespace.as_str())
            .unwrap_or("default");
        let (conf, warning) = crate::agent::dns_config::pod_resolv_conf(
            &spec,
            namespace,
            &dns.node_resolv_conf(),
            dns,
        );
        (conf.render(), warning)
    }

    /// Waits for the pod network being attached (if it is), then adds the pod's IP to
    /// its `/etc/hosts`. A container is created meanwhile, and started only after this.
    pub(super) async fn wait_for_network(&mut self) -> Result<(), String> {
        let Some(task) = self.network_task.take() else {
            return Ok(());
        };
        let ip = task
            .await
            .unwrap_or_else(|e| Err(format!("the network task failed: {e}")))?;
        self.pod_ip = ip;
        let (resolv, _) = self.resolv_conf();
        let domain = &self.k.config.dns.cluster_domain;
        crate::blocking::here(|| {
            self.k
                .node
                .write_etc_files(&self.pod, &self.pod_ip, &resolv, domain)
        })
        .map_err(|e| e.to_string())
    }

    /// Detaches the pod's network (CNI DEL, while its namespace still exists), then removes
    /// its files, mounts and cgroups.
    pub(super) async fn remove_from_node(&mut self) {
        // A DEL must not race the ADD still running: let it finish first.
        if let Some(task) = self.network_task.take() {
            let _ = task.await;
        }
        if let Err(e) = self.k.node.detach_network(&uid_of(&self.pod)).await {
            tracing::warn!(error = %e, "could not detach the pod's network");
            self.k.events.pod_event(
                &self.pod,
                "Warning",
                "FailedKillPod",
                format!("error killing pod: failed to destroy network for sandbox: {e}"),
            );
        }
        let (node, pod) = (self.k.node.clone(), self.pod.clone());
        if let Err(e) = crate::blocking::off_thread(move || node.remove_pod(&pod)).await {
            tracing::warn!(error = %e, "could not remove the pod's files");
        }
    }
}
