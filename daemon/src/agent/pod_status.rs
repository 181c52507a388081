//! Kubernetes' rules for container and pod states, as pure functions.
//!
//! Which exits are restarted (`restartPolicy`), and which phase a pod is in (Pending,
//! Running, Succeeded, Failed) given its containers. No I/O, no state.

use kubelab_proto::v1::container_state::State;
use kubelab_proto::v1::{ContainerState, ContainerStateWaiting, ContainerStatus};

pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Whether a failed init container is run again: unless the policy is Never.
pub fn should_restart_init(policy: &str, exit_code: i32) -> bool {
    exit_code != 0 && policy != "Never"
}

/// Whether every init container has run to success.
pub fn initialized(init_count: usize, init: &[ContainerStatus]) -> bool {
    init.len() == init_count && init.iter().all(|s| terminated_exit_code(s) == Some(0))
}

/// Kubernetes' pod phase rules, from the init containers' and containers' states.
pub fn pod_phase(
    restart_policy: &str,
    init_count: usize,
    init: &[ContainerStatus],
    statuses: &[ContainerStatus],
) -> &'static str {
    let init_failed = init.iter().any(|s| {
        terminated_exit_code(s).is_some_and(|c| c != 0 && !should_restart_init(restart_policy, c))
    });
    if init_failed {
        return "Failed";
    }
    if !initialized(init_count, init) {
        return "Pending";
    }
    let codes: Vec<Option<i32>> = statuses.iter().map(terminated_exit_code).collect();
    let all_done = !codes.is_empty()
        && codes
            .iter()
            .all(|c| c.is_some_and(|code| !should_restart(restart_policy, code)));
    if all_done {
        return if codes.iter().all(|c| *c == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let any_ran = statuses.iter().any(|s| {
        s.restart_count > 0
            || s.last_state.is_some()
            || matches!(
                s.state.as_ref().and_then(|s| s.state.as_ref()),
                Some(State::Running(_)) | Some(State::Terminated(_))
            )
    });
    if any_ran {
        "Running"
    } else {
        "Pending"
    }
}

pub fn terminated_exit_code(status: &ContainerStatus) -> Option<i32> {
    match status.state.as_ref().and_then(|s| s.state.as_ref()) {
        Some(State::Terminated(t)) => Some(t.exit_code),
        _ => None,
    }
}

pub fn waiting(reason: &str, message: &str) -> Option<ContainerState> {
    Some(ContainerState {
        state: Some(State::Waiting(ContainerStateWaiting {
            reason: reason.into(),
            message: message.into(),
        })),
    })
}

pub fn waiting_message(status: &ContainerStatus) -> String {
    match status.state.as_ref().and_then(|s| s.state.as_ref()) {
        Some(State::Waiting(w)) => w.message.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelab_proto::v1::ContainerStateTerminated;

    fn terminated(code: i32) -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                state: Some(State::Terminated(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn phase_follows_restart_policy() {
        assert_eq!(pod_phase("Never", 0, &[], &[terminated(0)]), "Succeeded");
        assert_eq!(pod_phase("Never", 0, &[], &[terminated(3)]), "Failed");
        assert_eq!(
            pod_phase("OnFailure", 0, &[], &[terminated(0)]),
            "Succeeded"
        );
        assert_eq!(pod_phase("OnFailure", 0, &[], &[terminated(3)]), "Running");
        assert_eq!(pod_phase("Always", 0, &[], &[terminated(0)]), "Running");
        assert_eq!(
            pod_phase(
                "Never",
                0,
                &[],
                &[ContainerStatus {
                    state: waiting("ContainerCreating", ""),
                    ..Default::default()
                }]
            ),
            "Pending"
        );
    }

    #[test]
    fn init_containers_gate_the_phase() {
        let running = ContainerStatus {
            state: waiting("PodInitializing", ""),
            ..Default::default()
        };
        // One of two init containers done: still Pending.
        assert_eq!(
            pod_phase(
                "Always",
                2,
                &[terminated(0)],
                std::slice::from_ref(&running)
            ),
            "Pending"
        );
        // A failed init container fails the pod only under Never.
        assert_eq!(
            pod_phase("Never", 1, &[terminated(1)], std::slice::from_ref(&running)),
            "Failed"
        );
        assert_eq!(
            pod_phase(
                "OnFailure",
                1,
                &[terminated(1)],
                std::slice::from_ref(&running)
            ),
            "Pending"
        );
        assert_eq!(
            pod_phase("Never", 1, &[terminated(0)], &[terminated(0)]),
            "Succeeded"
        );
    }
}
