//! Node lifecycle with eviction (issue 16), through the real kubectl: an agent killed with
//! `kill -9` makes its node unreachable, its pods are evicted when the lab's short default
//! toleration runs out, and their Deployment's ReplicaSet runs them on the other node;
//! when the agent comes back it stops the evicted pods and runs nothing twice. A user's
//! `NoExecute` taint evicts what does not tolerate it.

use std::time::Duration;

use kubelab_tests::{processes_in_cgroups, wait_until, Lab};

fn deployment(name: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {image}\n        command: [\"sh\", \"-c\", \"exec sleep 3600\"]\n"
    )
}

/// `(name, uid, node, deleting)` of each Running or Pending pod with label `app=APP`.
fn pods(lab: &Lab, app: &str) -> Vec<(String, String, String, bool)> {
    let out = lab.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| {
                (
                    f[0].to_string(),
                    f[1].to_string(),
                    f[2].to_string(),
                    f.len() > 4 || f[3] != "Running",
                )
            })
        })
        .collect()
}

/// The names of the live (Running, not being deleted) pods of `app` on `node`.
fn live_on(lab: &Lab, app: &str, node: &str) -> Vec<String> {
    pods(lab, app)
        .into_iter()
        .filter(|(_, _, n, deleting)| n == node && !deleting)
        .map(|(name, ..)| name)
        .collect()
}

#[test]
fn a_dead_agents_pods_are_evicted_and_run_on_the_other_node() {
    let mut lab = Lab::start_with_args(
        2,
        &["--heartbeat-period", "300ms"],
        &[
            "--node-monitor-grace-period",
            "2s",
            "--default-unreachable-toleration-seconds",
            "3",
        ],
    );
    lab.start_controller_manager();
    let image = lab.push_busybox("1");
    lab.kubectl_with_input(&["apply", "-f", "-"], &deployment("web", &image, 4));
    let (dead, alive) = (lab.node_names[0].clone(), lab.node_names[1].clone());
    wait_until("4 running pods", Duration::from_secs(60), || {
        pods(&lab, "web").iter().filter(|p| !p.3).count() == 4
    });
    let doomed: Vec<(String, String, String, bool)> = pods(&lab, "web")
        .into_iter()
        .filter(|p| p.2 == dead)
        .collect();
    assert!(
        !doomed.is_empty(),
        "the scheduler spreads 4 pods over 2 nodes: {:?}",
        pods(&lab, "web")
    );
    // The lab's admission gave every pod its 3 s.
    let tolerations = lab.kubectl_ok(&[
        "get",
        "pod",
        &doomed[0].0,
        "-o",
        "jsonpath={range .spec.tolerations[*]}{.key}={.tolerationSeconds} {end}",
    ]);
    assert!(
        tolerations.contains("node.kubernetes.io/unreachable=3")
            && tolerations.contains("node.kubernetes.io/not-ready=300"),
        "{tolerations}"
    );

    lab.kill_agent(0);
    wait_until(
        "the dead node tainted unreachable",
        Duration::from_secs(20),
        || {
            lab.kubectl_ok(&[
                "get",
                "node",
                &dead,
                "-o",
                "jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}",
            ])
            .contains("node.kubernetes.io/unreachable:NoExecute")
        },
    );
    wait_until(
        "4 live pods, all on the other node",
        Duration::from_secs(60),
        || live_on(&lab, "web", &alive).len() == 4 && live_on(&lab, "web", &dead).is_empty(),
    );
    // The evicted pods stay, Terminating, until their node says they stopped (as in
    // Kubernetes: nobody can tell whether they still run there).
    let still: Vec<_> = pods(&lab, "web")
        .into_iter()
        .filter(|p| p.2 == dead)
        .collect();
    assert_eq!(still.len(), doomed.len(), "{still:?}");
    assert!(still.iter().all(|p| p.3), "{still:?}");
    let events = lab.kubectl_ok(&["get", "events"]);
    for (name, ..) in &doomed {
        assert!(
            events.contains(&format!("Marking for deletion Pod default/{name}")),
            "{events}"
        );
    }
    assert!(events.contains("NodeNotReady"), "{events}");
    let rollout = lab.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert!(rollout.contains("successfully rolled out"), "{rollout}");

    // The agent comes back: the evicted pods' containers are stopped and the pods go;
    // nothing of theirs starts again, and the node takes no pod of the Deployment.
    lab.restart_agent(0);
    wait_until("the evicted pods gone", Duration::from_secs(30), || {
        pods(&lab, "web").iter().all(|p| p.2 != dead)
    });
    std::thread::sleep(Duration::from_secs(2));
    for (name, uid, ..) in &doomed {
        assert!(
            processes_in_cgroups(uid).is_empty(),
            "{name} still has processes on the node that came back"
        );
    }
    assert_eq!(live_on(&lab, "web", &alive).len(), 4);
    let taints = lab.kubectl_ok(&["get", "node", &dead, "-o", "jsonpath={.spec.taints}"]);
    assert!(!taints.contains("unreachable"), "{taints}");

    // A user's NoExecute taint: the pods there go at once (none tolerates it), and
    // come back on the node that is Ready again.
    lab.kubectl_ok(&["taint", "node", &alive, "dedicated=lab:NoExecute"]);
    wait_until(
        "the Deployment moved off the tainted node",
        Duration::from_secs(60),
        || live_on(&lab, "web", &dead).len() == 4 && live_on(&lab, "web", &alive).is_empty(),
    );
    lab.kubectl_ok(&["taint", "node", &alive, "dedicated=lab:NoExecute-"]);
}
