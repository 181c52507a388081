//! The pod's status, computed by its worker from what it knows of the containers (phase,
//! conditions, container statuses, as the kubelet reports them) and handed to the
//! StatusManager. Acts on nothing.

use super::*;

impl PodWorker {
    /// Computes the pod's status from its containers and hands it to the StatusManager
    /// when it changed.
    pub(super) fn report_status(&mut self) {
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
    pub(super) fn statuses_of(
        &self,
        containers: &[Container],
        placeholders: bool,
    ) -> Vec<ContainerStatus> {
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
    pub(super) fn conditions(&self, values: &[(&str, bool)]) -> Vec<PodCondition> {
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
