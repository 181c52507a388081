//! What the apiserver acknowledged survives it being killed.

use kubelab_tests::Lab;

/// Pods survive a `kill -9` of the apiserver: after a restart on the same data directory
/// they are all there with their status, and the scheduler and agents carry on.
#[test]
fn pods_survive_an_apiserver_restart() {
    let mut lab = Lab::start(1);
    let image = lab.push_busybox("1");
    let manifest = |name: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    command: [\"echo\", \"{name}\"]\n")
    };
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
