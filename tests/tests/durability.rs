//! What the apiserver acknowledged survives it being killed.

use kubelab_tests::{pod_manifest, Lab};

/// Pods survive a `kill -9` of the apiserver: after a restart on the same data directory
/// they are all there with their status, and the scheduler and agents carry on.
#[test]
fn pods_survive_an_apiserver_restart() {
    let mut lab = Lab::start(1);
    let image = lab.push_busybox("1");
    let manifest = |name: &str| pod_manifest(name, &image, "Never", &format!("echo {name}"));
    lab.apply_ok(&manifest("before"));
    lab.wait_for("before", "Succeeded");
    lab.kill_apiserver();
    lab.start_apiserver();
    let json = lab.pod_json("before");
    assert_eq!(json["status"]["phase"], "Succeeded");
    // The scheduler and the agent reconnect by themselves.
    lab.apply_ok(&manifest("after"));
    lab.wait_for("after", "Succeeded");
    assert_eq!(lab.ok(&["logs", "after"]), "after\n");
}

/// An agent killed with `kill -9` leaves its containers running under their shims;
/// started again, it re-adopts them: the same process goes on (no second copy is ever
/// started), the pod stays Running with the same container, and the re-adopted container
/// is under control again (a delete stops it and leaves nothing).
#[test]
fn a_killed_agent_started_again_readopts_its_running_containers() {
    use kubelab_tests::processes_in_cgroups;
    use std::time::{Duration, Instant};
    let mut lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("s", &image, "Always", "exec sleep 3600"));
    lab.wait_for("s", "Running");
    let before_json = lab.pod_json("s");
    let uid = before_json["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let container_id = before_json["status"]["containerStatuses"][0]["containerID"].clone();
    let before = processes_in_cgroups(&uid);
    assert_eq!(before.len(), 1, "one container process: {before:?}");

    lab.kill_agent(0);
    lab.restart_agent(0);
    // The new agent has had time to act once its node is Ready again and a status written.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let now = processes_in_cgroups(&uid);
        assert_eq!(
            now,
            before,
            "the container must go on, alone:\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        lab.logs().contains("re-adopting a container"),
        "the agent says it re-adopted:\n{}",
        lab.logs()
    );
    let after = lab.pod_json("s");
    assert_eq!(after["status"]["phase"], "Running");
    assert_eq!(
        after["status"]["containerStatuses"][0]["containerID"],
        container_id
    );
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);

    lab.ok(&["delete", "pod", "s", "--grace-period", "0"]);
    assert!(
        processes_in_cgroups(&uid).is_empty(),
        "the re-adopted container is stopped"
    );
    assert!(kubelab_tests::mounts_under(lab.dir.path()).is_empty());
}

/// A container that ends while its agent is down is reported, with its exit code, once
/// the agent is back.
#[test]
fn an_exit_while_the_agent_was_down_is_reported_with_its_code() {
    let mut lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("brief", &image, "Never", "sleep 4; exit 7"));
    lab.wait_for("brief", "Running");
    lab.kill_agent(0);
    let uid = lab.pod_json("brief")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    assert!(
        !kubelab_tests::processes_in_cgroups(&uid).is_empty(),
        "still running when its agent died"
    );
    // The container ends while no agent is there to see it.
    kubelab_tests::wait_until(
        "the container to end",
        std::time::Duration::from_secs(20),
        || kubelab_tests::processes_in_cgroups(&uid).is_empty(),
    );
    lab.restart_agent(0);
    lab.wait_for("brief", "Failed");
    let pod = lab.pod_json("brief");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 7,
        "{pod}"
    );
}
