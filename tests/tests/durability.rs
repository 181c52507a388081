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

/// An agent killed with `kill -9` leaves its containers running; started again, it stops
/// them and runs its pods afresh, so there is never a second copy of a container and
/// nothing of the old one is left.
#[test]
fn an_agent_killed_and_started_again_runs_its_pods_once() {
    use kubelab_tests::processes_in_cgroups;
    use std::time::{Duration, Instant};
    let mut lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("s", &image, "Always", "exec sleep 3600"));
    lab.wait_for("s", "Running");
    let uid = lab.pod_json("s")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let before = processes_in_cgroups(&uid);
    assert_eq!(before.len(), 1, "one container process: {before:?}");

    lab.kill_agent(0);
    assert!(
        std::path::Path::new(&format!("/proc/{}", before[0])).exists(),
        "the container outlives its agent"
    );
    lab.restart_agent(0);
    let start = Instant::now();
    loop {
        let now = processes_in_cgroups(&uid);
        if now.len() == 1 && now != before {
            break;
        }
        assert!(now.len() <= 1, "two copies of the container: {now:?}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pod did not run again: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{}", before[0])).exists(),
        "the old container still runs"
    );
    lab.wait_for("s", "Running");
}
