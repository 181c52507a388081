//! Workloads through the real kubectl (issue 16): a ReplicaSet keeps its pods — replaces
//! a deleted one, scales up and down — and the garbage collector removes them with it,
//! or leaves them when asked to orphan them.

use std::time::Duration;

use kubelab_tests::{wait_until, Lab};

fn replicaset(name: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {image}\n        command: [\"sh\", \"-c\", \"exec sleep 3600\"]\n"
    )
}

/// `name phase deleting` of each pod with label `app=APP`.
fn pods_of(lab: &Lab, app: &str) -> Vec<(String, String, bool)> {
    let out = lab.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?.to_string();
            let phase = parts.next().unwrap_or("").to_string();
            Some((name, phase, parts.next().is_some()))
        })
        .collect()
}

fn running(lab: &Lab, app: &str) -> Vec<String> {
    pods_of(lab, app)
        .into_iter()
        .filter(|(_, phase, deleting)| phase == "Running" && !deleting)
        .map(|(name, _, _)| name)
        .collect()
}

fn wait_running(lab: &Lab, app: &str, count: usize) {
    wait_until(
        &format!("{count} running pods of {app}"),
        Duration::from_secs(60),
        || {
            running(lab, app).len() == count
                && pods_of(lab, app).iter().filter(|p| !p.2).count() == count
        },
    );
}

#[test]
fn a_replicaset_keeps_its_pods_scales_and_takes_them_along_when_deleted() {
    let mut lab = Lab::start(2);
    lab.start_controller_manager();
    let image = lab.push_busybox("1");
    let out = lab.kubectl_with_input(&["apply", "-f", "-"], &replicaset("web", &image, 3));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("replicaset.apps/web created"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_running(&lab, "web", 3);

    // kube-apiserver's columns, the counts the controller wrote.
    wait_until("the status counts 3 ready", Duration::from_secs(10), || {
        lab.kubectl_ok(&["get", "rs", "web", "-o", "jsonpath={.status.readyReplicas}"]) == "3"
    });
    let table = lab.kubectl_ok(&["get", "rs", "web"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "3", "3", "3"], "{table}");
    // Each pod is the ReplicaSet's, by a controller reference, and named after it.
    let owners = lab.kubectl_ok(&[
        "get", "pods", "-l", "app=web", "-o",
        "jsonpath={range .items[*]}{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller} {end}",
    ]);
    assert_eq!(
        owners.split_whitespace().collect::<Vec<_>>(),
        ["ReplicaSet/web/true"; 3]
    );
    assert!(running(&lab, "web").iter().all(|n| n.starts_with("web-")));

    // A deleted pod is replaced.
    let first = running(&lab, "web")[0].clone();
    lab.kubectl_ok(&["delete", "pod", &first]);
    wait_running(&lab, "web", 3);
    assert!(!running(&lab, "web").contains(&first));
    let events = lab.kubectl_ok(&["events", "--for", "replicaset/web"]);
    assert!(
        events.contains("SuccessfulCreate"),
        "{events}\n{}",
        lab.kubectl_ok(&["get", "events", "-o", "wide"])
    );
    assert!(events.contains("Created pod: web-"), "{events}");

    // kubectl scale, through the scale subresource.
    let scaled = lab.kubectl_ok(&["scale", "rs", "web", "--replicas=5"]);
    assert!(scaled.contains("replicaset.apps/web scaled"), "{scaled}");
    wait_running(&lab, "web", 5);
    lab.kubectl_ok(&["scale", "rs", "web", "--replicas=1"]);
    wait_running(&lab, "web", 1);

    // Deleted (background propagation, kubectl's default): its pods go too.
    let deleted = lab.kubectl_ok(&["delete", "rs", "web"]);
    assert!(
        deleted.contains("replicaset.apps \"web\" deleted"),
        "{deleted}"
    );
    wait_until("the pods of web are gone", Duration::from_secs(60), || {
        pods_of(&lab, "web").is_empty()
    });
}

#[test]
fn a_replicaset_deleted_with_cascade_orphan_leaves_its_pods_running() {
    let mut lab = Lab::start(1);
    lab.start_controller_manager();
    let image = lab.push_busybox("1");
    let out = lab.kubectl_with_input(&["apply", "-f", "-"], &replicaset("kept", &image, 2));
    assert!(out.status.success());
    wait_running(&lab, "kept", 2);
    let pods = running(&lab, "kept");
    lab.kubectl_ok(&["delete", "rs", "kept", "--cascade=orphan"]);
    wait_until("the ReplicaSet is gone", Duration::from_secs(30), || {
        !lab.kubectl(&["get", "rs", "kept"]).status.success()
    });
    // Its pods run on, with no owner.
    std::thread::sleep(Duration::from_secs(2));
    let mut still = running(&lab, "kept");
    still.sort();
    let mut before = pods.clone();
    before.sort();
    assert_eq!(still, before);
    let owners = lab.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=kept",
        "-o",
        "jsonpath={.items[*].metadata.ownerReferences}",
    ]);
    assert!(owners.trim().is_empty(), "{owners}");

    // A new ReplicaSet with the same selector adopts them instead of making new ones.
    let out = lab.kubectl_with_input(&["apply", "-f", "-"], &replicaset("kept", &image, 2));
    assert!(out.status.success());
    wait_until("the orphans are adopted", Duration::from_secs(30), || {
        lab.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=kept",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences[0].name}",
        ]) == "kept kept"
    });
    let mut adopted = running(&lab, "kept");
    adopted.sort();
    assert_eq!(adopted, before);
}

fn deployment(name: &str, image: &str, replicas: u32, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n{extra_spec}  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {image}\n        command: [\"sh\", \"-c\", \"exec sleep 3600\"]\n"
    )
}

/// `(not deleting, ready and not deleting, images)` of the pods of `app`.
fn census(lab: &Lab, app: &str) -> (usize, usize, Vec<String>) {
    let out = lab.kubectl_ok(&[
        "get", "pods", "-l", &format!("app={app}"), "-o",
        "jsonpath={range .items[*]}{.metadata.deletionTimestamp}|{.status.conditions[?(@.type==\"Ready\")].status}|{.spec.containers[0].image}{\"\\n\"}{end}",
    ]);
    let mut alive = 0;
    let mut ready = 0;
    let mut images = Vec::new();
    for line in out.lines() {
        let parts: Vec<&str> = line.split('|').collect();
        if parts.first().is_some_and(|d| d.is_empty()) {
            alive += 1;
            if parts.get(1) == Some(&"True") {
                ready += 1;
            }
            images.push(parts.get(2).unwrap_or(&"").to_string());
        }
    }
    (alive, ready, images)
}

#[test]
fn a_deployment_rolls_out_within_its_surge_and_unavailability_and_rolls_back() {
    let mut lab = Lab::start(2);
    lab.start_controller_manager();
    let one = lab.push_busybox("1");
    let two = lab.push_busybox("2");
    // 4 replicas, maxSurge 1, maxUnavailable 1.
    let strategy = "  strategy:\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 1\n";
    let out = lab.kubectl_with_input(&["apply", "-f", "-"], &deployment("web", &one, 4, strategy));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = lab.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(done.contains("successfully rolled out"), "{done}");
    lab.kubectl_ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=30s",
    ]);
    let table = lab.kubectl_ok(&["get", "deploy", "web"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "4/4", "4", "4"], "{table}");
    // kubelab trace starts a Deployment's pod at the Deployment's scaling.
    let pod = running(&lab, "web")[0].clone();
    let trace = lab.ok(&["trace", "pod", &pod]);
    let line = |step: &str| kubelab_tests::trace_step(&trace, step);
    assert!(
        line("3 deployment scaled")
            .contains("deployment web (deployment-controller): Scaled up replica set web-"),
        "{trace}"
    );
    assert!(
        line("3 pod created").contains("made by replica set web-")
            && line("3 pod created").contains(&format!("Created pod: {pod}")),
        "{trace}"
    );

    // A new image: never more than 4 + 1 pods, never fewer than 4 - 1 ready.
    let set = lab.kubectl_ok(&["set", "image", "deployment/web", &format!("main={two}")]);
    assert!(set.contains("deployment.apps/web image updated"), "{set}");
    let (mut most, mut fewest_ready) = (0, usize::MAX);
    wait_until(
        "the rollout to the second image",
        Duration::from_secs(90),
        || {
            let (alive, ready, images) = census(&lab, "web");
            most = most.max(alive);
            fewest_ready = fewest_ready.min(ready);
            alive == 4 && ready == 4 && images.iter().all(|i| *i == two)
        },
    );
    assert!(most <= 5, "at most replicas + maxSurge pods: saw {most}");
    assert!(
        fewest_ready >= 3,
        "at least replicas - maxUnavailable ready: saw {fewest_ready}"
    );
    lab.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let history = lab.kubectl_ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("REVISION") && history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    let events = lab.kubectl_ok(&["events", "--for", "deployment/web"]);
    assert!(
        events.contains("ScalingReplicaSet") && events.contains("Scaled up replica set web-"),
        "{events}"
    );

    // kubectl's create subcommands send their object as protobuf.
    assert_eq!(
        lab.kubectl_ok(&["create", "namespace", "team"]).trim(),
        "namespace/team created"
    );
    let created = lab.kubectl_ok(&[
        "create",
        "deployment",
        "other",
        "-n",
        "team",
        &format!("--image={one}"),
        "--replicas=2",
        "--",
        "sh",
        "-c",
        "exec sleep 3600",
    ]);
    assert_eq!(created.trim(), "deployment.apps/other created");
    let status = lab.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        "team",
        "deployment/other",
        "--timeout=60s",
    ]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let selector = lab.kubectl_ok(&[
        "get",
        "deploy",
        "other",
        "-n",
        "team",
        "-o",
        "jsonpath={.spec.selector.matchLabels.app}",
    ]);
    assert_eq!(selector, "other");
    lab.kubectl_ok(&["delete", "deployment", "other", "-n", "team"]);

    // Back to the first image, the first ReplicaSet grown again.
    let undo = lab.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    assert!(undo.contains("rolled back"), "{undo}");
    wait_until("the rollback", Duration::from_secs(90), || {
        let (alive, ready, images) = census(&lab, "web");
        alive == 4 && ready == 4 && images.iter().all(|i| *i == one)
    });
    let rs = lab.kubectl_ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
    assert_eq!(rs.lines().count(), 2, "one ReplicaSet per template: {rs}");

    lab.kubectl_ok(&["scale", "deployment/web", "--replicas=2"]);
    wait_until("2 pods", Duration::from_secs(60), || {
        census(&lab, "web").0 == 2
    });
    lab.kubectl_ok(&["delete", "deployment", "web"]);
    wait_until(
        "its ReplicaSets and pods gone",
        Duration::from_secs(60),
        || {
            lab.kubectl_ok(&["get", "rs,pods", "-l", "app=web", "-o", "name"])
                .trim()
                .is_empty()
        },
    );
}

#[test]
fn a_rollout_to_a_missing_image_stops_and_reports_its_deadline() {
    let mut lab = Lab::start(1);
    lab.start_controller_manager();
    let one = lab.push_busybox("1");
    let deadline = "  progressDeadlineSeconds: 4\n";
    let out = lab.kubectl_with_input(
        &["apply", "-f", "-"],
        &deployment("stuck", &one, 2, deadline),
    );
    assert!(out.status.success());
    lab.kubectl_ok(&["rollout", "status", "deployment/stuck", "--timeout=60s"]);
    let missing = format!("{}/no-such-image:1", lab.registry);
    lab.kubectl_ok(&[
        "set",
        "image",
        "deployment/stuck",
        &format!("main={missing}"),
    ]);
    let failed = lab.kubectl_fails(&["rollout", "status", "deployment/stuck", "--timeout=60s"]);
    assert!(
        failed.contains("exceeded its progress deadline"),
        "{failed}"
    );
    let reason = lab.kubectl_ok(&[
        "get",
        "deploy",
        "stuck",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
    ]);
    assert_eq!(reason, "ProgressDeadlineExceeded");
    // The old pods were not taken down (25% of 2 unavailable rounds down to 0).
    let (_, ready, images) = census(&lab, "stuck");
    assert_eq!(ready, 2);
    assert_eq!(images.iter().filter(|i| **i == one).count(), 2);

    // Scaled mid-rollout, the two ReplicaSets grow in proportion (old 2, new 1 of 2 + 1
    // surge; to 6 + 2 surge: 2·8/3 = 5.3 → 5 and 1·8/3 = 2.7 → 3), as Kubernetes does.
    lab.kubectl_ok(&["scale", "deployment/stuck", "--replicas=6"]);
    let sizes = || {
        lab.kubectl_ok(&[
            "get", "rs", "-l", "app=stuck", "-o",
            "jsonpath={range .items[*]}{.spec.template.spec.containers[0].image}={.spec.replicas} {end}",
        ])
    };
    wait_until(
        "the ReplicaSets resized in proportion",
        Duration::from_secs(20),
        || {
            let now = sizes();
            now.contains(&format!("{one}=5")) && now.contains(&format!("{missing}=3"))
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let now = sizes();
    assert!(
        now.contains(&format!("{one}=5")) && now.contains(&format!("{missing}=3")),
        "{now}"
    );
}

/// The controller manager killed with `kill -9` in the middle of a rollout, and started
/// again: the rollout completes, and no pod is created beyond what it needs.
#[test]
fn a_rollout_survives_a_killed_controller_manager_without_extra_pods() {
    let mut lab = Lab::start(2);
    lab.start_controller_manager();
    let one = lab.push_busybox("1");
    let two = lab.push_busybox("2");
    let out = lab.kubectl_with_input(&["apply", "-f", "-"], &deployment("phoenix", &one, 4, ""));
    assert!(out.status.success());
    lab.kubectl_ok(&["rollout", "status", "deployment/phoenix", "--timeout=90s"]);
    lab.kubectl_ok(&["set", "image", "deployment/phoenix", &format!("main={two}")]);
    // Mid-rollout: a new ReplicaSet exists and has begun.
    wait_until("the rollout has begun", Duration::from_secs(30), || {
        census(&lab, "phoenix").2.contains(&two)
    });
    lab.kill_controller_manager();
    lab.start_controller_manager();
    wait_until("the rollout completes", Duration::from_secs(90), || {
        let (alive, ready, images) = census(&lab, "phoenix");
        alive == 4 && ready == 4 && images.iter().all(|i| *i == two)
    });
    lab.kubectl_ok(&["rollout", "status", "deployment/phoenix", "--timeout=30s"]);
    // Every pod the ReplicaSets ever made, as the apiserver logged each creation (events
    // are best effort: one in flight when the controller manager died may be lost): 4 of
    // the first template and 4 of the second, none made twice.
    let log = std::fs::read_to_string(lab.dir.path().join("apiserver.log")).unwrap_or_default();
    let created = log
        .lines()
        .filter(|l| l.contains("created") && l.contains("pod=pods/default/phoenix-"))
        .count();
    let rs = lab.kubectl_ok(&["get", "rs", "-l", "app=phoenix", "-o", "name"]);
    assert_eq!(rs.lines().count(), 2, "{rs}");
    assert_eq!(created, 8, "4 pods of each template");
}

/// Each propagation policy leaves what Kubernetes leaves: Foreground deletes the pods and
/// ReplicaSet before the Deployment goes; Orphan leaves the ReplicaSet (no owner) and its
/// pods running; a paused Deployment's new template waits for `rollout resume`.
#[test]
fn deleting_a_deployment_honours_each_propagation_policy() {
    let mut lab = Lab::start(1);
    lab.start_controller_manager();
    let one = lab.push_busybox("1");
    let two = lab.push_busybox("2");
    for name in ["front", "orphaned"] {
        lab.kubectl_with_input(&["apply", "-f", "-"], &deployment(name, &one, 1, ""));
    }
    for name in ["front", "orphaned"] {
        let target = format!("deployment/{name}");
        lab.kubectl_ok(&["rollout", "status", &target, "--timeout=60s"]);
    }
    // Paused: a new image makes no new ReplicaSet until resumed.
    lab.kubectl_ok(&["rollout", "pause", "deployment/front"]);
    lab.kubectl_ok(&["set", "image", "deployment/front", &format!("main={two}")]);
    std::thread::sleep(Duration::from_secs(2));
    let rs = lab.kubectl_ok(&["get", "rs", "-l", "app=front", "-o", "name"]);
    assert_eq!(rs.lines().count(), 1, "{rs}");
    lab.kubectl_ok(&["rollout", "resume", "deployment/front"]);
    lab.kubectl_ok(&["rollout", "status", "deployment/front", "--timeout=60s"]);
    assert_eq!(census(&lab, "front").2, std::slice::from_ref(&two));

    // Foreground: `kubectl delete` waits; afterwards nothing of it is left.
    lab.kubectl_ok(&["delete", "deployment", "front", "--cascade=foreground"]);
    wait_until("everything of front gone", Duration::from_secs(30), || {
        lab.kubectl_ok(&["get", "deploy,rs,pods", "-l", "app=front", "-o", "name"])
            .trim()
            .is_empty()
    });

    let available = lab.kubectl_ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/orphaned",
        "--timeout=30s",
    ]);
    assert_eq!(available.trim(), "deployment.apps/orphaned condition met");
    // Orphan: the ReplicaSet stays without an owner, and its pod keeps running.
    let pods_before = running(&lab, "orphaned");
    lab.kubectl_ok(&["delete", "deployment", "orphaned", "--cascade=orphan"]);
    wait_until("the ReplicaSet orphaned", Duration::from_secs(30), || {
        lab.kubectl(&["get", "deploy", "orphaned"]).status.code() == Some(1)
            && lab
                .kubectl_ok(&[
                    "get",
                    "rs",
                    "-l",
                    "app=orphaned",
                    "-o",
                    "jsonpath={.items[*].metadata.ownerReferences}",
                ])
                .trim()
                .is_empty()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(running(&lab, "orphaned"), pods_before);
    let rs = lab.kubectl_ok(&["get", "rs", "-l", "app=orphaned", "-o", "name"]);
    assert_eq!(rs.lines().count(), 1, "{rs}");
}
