//! Nodes and scheduling: heartbeats and NotReady, cordon and drain, the scheduler's
//! filters and messages on real agents, and hollow nodes at scale.

use std::time::Duration;

use kubelab_proto::credential::init_tls;
use kubelab_proto::v1::{Container, ListEventsRequest, ListPodsRequest, ObjectMeta, Pod, PodSpec};
use kubelab_tests::{bin, wait_until, Lab, Proc};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().expect("runtime").block_on(f)
}

/// The status of the pod's Ready condition (`True`, `False`, or "" when absent).
fn pod_ready(lab: &Lab, name: &str) -> String {
    lab.pod_json(name)["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn node_events(lab: &Lab, node: &str) -> Vec<String> {
    init_tls();
    block_on(async {
        lab.events_client()
            .list(ListEventsRequest::default())
            .await
            .expect("events")
            .into_inner()
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object
                    .as_ref()
                    .is_some_and(|o| o.kind == "Node" && o.name == node)
            })
            .map(|e| format!("{}: {}", e.reason, e.message))
            .collect()
    })
}

fn sleep_pod(lab: &Lab, name: &str, image: &str, extra_spec: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 0\n{extra_spec}  containers:\n  - name: main\n    image: {image}\n    command: [\"sleep\", \"600\"]\n"
    );
    lab.apply_ok(&manifest);
}

fn node_of(lab: &Lab, pod: &str) -> String {
    lab.pod_json(pod)["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// An agent that stops heartbeating (frozen with SIGSTOP) makes its node NotReady after
/// the grace period, with an event, and its pods not Ready; woken, all comes back.
#[test]
fn a_silent_node_becomes_not_ready_and_its_pods_are_not_ready() {
    let lab = Lab::start_with_args(
        1,
        &["--heartbeat-period", "300ms"],
        &["--node-monitor-grace-period", "2s"],
    );
    let node = lab.node_names[0].clone();
    let image = lab.push_busybox("1");
    sleep_pod(&lab, "steady", &image, "");
    lab.wait_for("steady", "Running");
    wait_until("the pod to be Ready", Duration::from_secs(10), || {
        pod_ready(&lab, "steady") == "True"
    });
    lab.signal_agent(0, nix::sys::signal::Signal::SIGSTOP);
    wait_until("the node to be NotReady", Duration::from_secs(10), || {
        lab.ok(&["get", "nodes"]).contains(" NotReady ")
    });
    wait_until("the pod to be not Ready", Duration::from_secs(5), || {
        pod_ready(&lab, "steady") == "False"
    });
    let node_json: serde_json::Value =
        serde_json::from_str(&lab.ok(&["get", "node", &node, "-o", "json"])).expect("json");
    let ready = &node_json["status"]["conditions"][0];
    assert_eq!(ready["status"], "Unknown", "{node_json}");
    assert!(node_events(&lab, &node).contains(&format!(
        "NodeNotReady: Node {node} status is now: NodeNotReady"
    )));
    let described = lab.ok(&["describe", "node", &node]);
    assert!(
        described.contains("NodeStatusUnknown")
            && described.contains("Kubelet stopped posting node status.")
            && described.contains("NodeNotReady")
            && described.contains("Non-terminated Pods:  (1 in total)"),
        "{described}"
    );
    // The pod's containers ran on: only the API's view changed.
    assert_eq!(lab.pod_json("steady")["status"]["phase"], "Running");
    lab.signal_agent(0, nix::sys::signal::Signal::SIGCONT);
    wait_until(
        "the node to be Ready again",
        Duration::from_secs(10),
        || lab.ok(&["get", "nodes"]).contains(" Ready "),
    );
    wait_until("the pod to be Ready again", Duration::from_secs(10), || {
        pod_ready(&lab, "steady") == "True"
    });
    assert!(node_events(&lab, &node)
        .contains(&format!("NodeReady: Node {node} status is now: NodeReady")));
}

/// `cordon` keeps new pods off a node, `drain` (with --force, as kubectl asks for bare
/// pods) empties it, `uncordon` lets pods back — and a pod that fit nowhere is placed as
/// soon as a node is uncordoned.
#[test]
fn cordon_drain_and_uncordon() {
    let lab = Lab::start(2);
    let (n1, n2) = (lab.node_names[0].clone(), lab.node_names[1].clone());
    let image = lab.push_busybox("1");
    assert_eq!(
        lab.ok(&["cordon", &n1]).trim(),
        format!("node/{n1} cordoned")
    );
    assert!(lab
        .ok(&["get", "node", &n1])
        .contains("Ready,SchedulingDisabled"));
    for name in ["a", "b", "c"] {
        sleep_pod(&lab, name, &image, "");
    }
    for name in ["a", "b", "c"] {
        lab.wait_for(name, "Running");
        assert_eq!(
            node_of(&lab, name),
            n2,
            "pod {name} went to the cordoned node"
        );
    }
    let err = lab.fails(&["drain", &n2]);
    assert!(
        err.contains("cannot delete Pods that declare no controller (use --force to override)")
            && err.contains("default/a"),
        "{err}"
    );
    let out = lab.ok(&["drain", &n2, "--force", "--timeout", "60"]);
    // The refused drain had cordoned it already, as kubectl's does.
    assert!(
        out.contains(&format!("node/{n2} already cordoned")),
        "{out}"
    );
    assert!(
        out.contains("evicting pod default/b") && out.contains("pod/b evicted"),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(&format!("node/{n2} drained")),
        "{out}"
    );
    assert!(lab.ok(&["get", "pods", "-o", "name"]).trim().is_empty());
    sleep_pod(&lab, "waiting", &image, "");
    lab.wait_status("waiting", "Pending", Duration::from_secs(5));
    wait_until("FailedScheduling", Duration::from_secs(10), || {
        lab.ok(&["describe", "pod", "waiting"])
            .contains("0/2 nodes are available: 2 node(s) were unschedulable.")
    });
    assert_eq!(
        lab.ok(&["uncordon", &n1]).trim(),
        format!("node/{n1} uncordoned")
    );
    lab.wait_for("waiting", "Running");
    assert_eq!(node_of(&lab, "waiting"), n1);
}

/// nodeSelector, NoSchedule taints and tolerations, and maxPods, on real agents; the
/// FailedScheduling message counts each reason as kube-scheduler does, and a pod waiting
/// for room is placed when a pod is deleted.
#[test]
fn the_scheduler_honours_selectors_taints_and_max_pods() {
    let mut lab = Lab::start(0);
    let ssd = lab.add_agent(&["--node-labels", "disk=ssd", "--max-pods", "1"]);
    let gpu = lab.add_agent(&["--register-with-taints", "gpu=true:NoSchedule"]);
    let image = lab.push_busybox("1");
    let on_ssd = "  nodeSelector:\n    disk: ssd\n";
    sleep_pod(&lab, "fast", &image, on_ssd);
    lab.wait_for("fast", "Running");
    assert_eq!(node_of(&lab, "fast"), ssd);
    let tolerates = "  tolerations:\n  - key: gpu\n    operator: Equal\n    value: \"true\"\n    effect: NoSchedule\n";
    sleep_pod(&lab, "trainer", &image, tolerates);
    lab.wait_for("trainer", "Running");
    assert_eq!(node_of(&lab, "trainer"), gpu);
    sleep_pod(&lab, "fast-2", &image, on_ssd);
    sleep_pod(&lab, "plain", &image, "");
    for (pod, message) in [
        ("fast-2", "0/2 nodes are available: 1 Too many pods, 1 node(s) didn't match Pod's node selector."),
        ("plain", "0/2 nodes are available: 1 Too many pods, 1 node(s) had untolerated taint {gpu: true}."),
    ] {
        wait_until(&format!("FailedScheduling for {pod}"), Duration::from_secs(10), || {
            lab.ok(&["describe", "pod", pod]).contains(message)
        });
        assert_eq!(lab.pod_json(pod)["status"]["phase"], "Pending");
    }
    lab.ok(&["delete", "pod", "fast"]);
    wait_until(
        "a waiting pod to take the freed room",
        Duration::from_secs(15),
        || node_of(&lab, "fast-2") == ssd || node_of(&lab, "plain") == ssd,
    );
    // Bad tolerations are refused with what is allowed.
    let bad = "  tolerations:\n  - key: gpu\n    operator: Exists\n    value: \"true\"\n";
    let out = lab.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n{bad}  containers:\n  - name: main\n    image: {image}\n"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("operator Exists takes no value"), "{err}");
}

/// Fifty hollow nodes (no containers: the scale-test mode) take 200 pods, spread evenly
/// and within each node's maxPods; the 251st pod fits nowhere and says why. More nodes
/// than the cluster CIDR has ranges for still register (without a pod CIDR, each with a
/// CIDRNotAvailable event, as Kubernetes' node IPAM does).
#[test]
fn hollow_nodes_take_pods_spread_within_max_pods() {
    init_tls();
    // A /16 holds 32 /21 ranges: 18 of the 50 nodes get none.
    let lab = Lab::start_with_apiserver_args(0, &["--node-cidr-mask-size", "21"]);
    let _hollow = Proc::spawn(
        "hollow-nodes",
        std::process::Command::new(bin("kubelabd"))
            .args(["hollow-nodes", "--count", "50", "--hollow-max-pods", "5"])
            .arg("--bootstrap-config")
            .arg(lab.dir.path().join("apiserver/bootstrap.conf")),
        &lab.dir.path().join("hollow.log"),
    );
    wait_until("50 hollow nodes Ready", Duration::from_secs(30), || {
        lab.ok(&["get", "nodes"]).matches(" Ready ").count() == 50
    });
    wait_until(
        "18 CIDRNotAvailable events",
        Duration::from_secs(10),
        || {
            lab.ok(&["get", "events"])
                .matches("status is now: CIDRNotAvailable")
                .count()
                == 18
        },
    );
    let pod = |name: String| Pod {
        metadata: Some(ObjectMeta {
            name,
            namespace: "default".into(),
            labels: [("app".to_string(), "load".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: "127.0.0.1:1/hollow:1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let running = |pods: &[Pod]| {
        pods.iter()
            .filter(|p| p.status.as_ref().is_some_and(|s| s.phase == "Running"))
            .count()
    };
    let list = || {
        block_on(async {
            lab.pods_client()
                .list(ListPodsRequest::default())
                .await
                .expect("list")
                .into_inner()
                .items
        })
    };
    block_on(async {
        let mut pods = lab.pods_client();
        for i in 0..200 {
            pods.create(pod(format!("load-{i}"))).await.expect("create");
        }
    });
    wait_until(
        "200 pods Running on hollow nodes",
        Duration::from_secs(60),
        || running(&list()) == 200,
    );
    let mut per_node = std::collections::HashMap::<String, usize>::new();
    for p in list() {
        *per_node.entry(p.spec.expect("spec").node_name).or_default() += 1;
    }
    assert_eq!(per_node.len(), 50, "{per_node:?}");
    assert!(
        per_node.values().all(|n| *n == 4),
        "not spread evenly: {per_node:?}"
    );
    block_on(async {
        let mut pods = lab.pods_client();
        for i in 200..251 {
            pods.create(pod(format!("load-{i}"))).await.expect("create");
        }
    });
    wait_until("250 pods Running", Duration::from_secs(60), || {
        running(&list()) == 250
    });
    wait_until(
        "the 251st pod's FailedScheduling",
        Duration::from_secs(10),
        || {
            lab.kubelab(&["describe", "pod", "load-250"])
                .status
                .success()
                && String::from_utf8_lossy(&lab.kubelab(&["describe", "pod", "load-250"]).stdout)
                    .contains("0/50 nodes are available: 50 Too many pods.")
        },
    );
}

/// `kubelab label` and `kubelab taint` change where pods go, as kubectl's do; `describe
/// node` shows labels, taints, the node's pods and what they ask for.
#[test]
fn label_and_taint_decide_where_pods_go() {
    let lab = Lab::start(1);
    let node = lab.node_names[0].clone();
    let image = lab.push_busybox("1");
    assert_eq!(
        lab.ok(&["label", "node", &node, "disk=ssd"]).trim(),
        format!("node/{node} labeled")
    );
    sleep_pod(
        &lab,
        "wants-hdd",
        &image,
        "  nodeSelector:\n    disk: hdd\n",
    );
    wait_until("FailedScheduling", Duration::from_secs(10), || {
        lab.ok(&["describe", "pod", "wants-hdd"])
            .contains("0/1 nodes are available: 1 node(s) didn't match Pod's node selector.")
    });
    let err = lab.fails(&["label", "node", &node, "disk=hdd"]);
    assert!(
        err.contains("already has a value (ssd) for label \"disk\": add --overwrite"),
        "{err}"
    );
    lab.ok(&["label", "node", &node, "disk=hdd", "--overwrite"]);
    lab.wait_for("wants-hdd", "Running");
    assert_eq!(
        lab.ok(&["taint", "node", &node, "gpu=true:NoSchedule"])
            .trim(),
        format!("node/{node} tainted")
    );
    sleep_pod(&lab, "plain", &image, "");
    wait_until("FailedScheduling", Duration::from_secs(10), || {
        lab.ok(&["describe", "pod", "plain"])
            .contains("0/1 nodes are available: 1 node(s) had untolerated taint {gpu: true}.")
    });
    let described = lab.ok(&["describe", "node", &node]);
    assert!(
        described.contains("disk=hdd")
            && described.contains("gpu=true:NoSchedule")
            && described.contains("Non-terminated Pods:  (1 in total)")
            && described.contains("wants-hdd"),
        "{described}"
    );
    let err = lab.fails(&["taint", "node", &node, "gpu=true:NoRun"]);
    assert!(
        err.contains("Unsupported value: \"NoRun\": supported values: \"NoExecute\""),
        "{err}"
    );
    // As kubectl says it: a removal untaints.
    assert_eq!(
        lab.ok(&["taint", "node", &node, "gpu:NoSchedule-"]).trim(),
        format!("node/{node} untainted")
    );
    assert_eq!(
        lab.ok(&["label", "node", &node, "disk-"]).trim(),
        format!("node/{node} unlabeled")
    );
    lab.wait_for("plain", "Running");
    let err = lab.fails(&["taint", "node", &node, "gpu:NoSchedule-"]);
    assert!(err.contains("not found"), "{err}");
}
