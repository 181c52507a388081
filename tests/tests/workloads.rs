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
