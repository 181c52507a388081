//! `make bench`: kubelab's speed figures beside a bare `runc run`, in one run, on this machine.
//!
//! Pod start with a cached image: create → Running observed through a watch (the way
//! Kubernetes' pod startup SLO measures it), for sequential `sleep` pods, with a pod
//! network and without one (`hostNetwork`); then `runc run` of the same busybox rootfs.
//! Prints one table. Not a test: nothing here asserts a time.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_proto::v1::{
    Container, DeletePodRequest, ObjectMeta, Pod, PodSpec, WatchEventType, WatchRequest,
};
use kubelab_tests::Lab;

const RUNS: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn sleep_pod(name: &str, image: &str, host_network: bool) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "sleep".into(),
                image: image.into(),
                command: vec!["sleep".into(), "3600".into()],
                image_pull_policy: "IfNotPresent".into(),
                ..Default::default()
            }],
            restart_policy: "Always".into(),
            termination_grace_period_seconds: 0,
            host_network,
            ..Default::default()
        }),
        status: None,
    }
}

/// Creates the pod and returns how long until a watch shows it Running; then deletes it
/// and waits until it is gone.
/// How the pod is asked for: a gRPC call, or `kubelab apply` (a process, as a user does).
#[derive(Clone, Copy)]
enum Via<'a> {
    Api,
    /// A gRPC call for a `hostNetwork` pod: no pod network, so no CNI plugin runs.
    ApiHostNetwork,
    Cli(&'a Lab),
}

async fn start_one(
    via: Via<'_>,
    pods: &mut PodsClient<kubelab_proto::credential::AuthChannel>,
    name: &str,
    image: &str,
) -> Duration {
    let from = pods
        .list(kubelab_proto::v1::ListPodsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .resource_version;
    let mut watch = pods
        .watch(WatchRequest {
            from_revision: from,
            namespace: "default".into(),
            node_name: String::new(),
            label_selector: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let start = Instant::now();
    match via {
        Via::Api | Via::ApiHostNetwork => {
            let host_network = matches!(via, Via::ApiHostNetwork);
            pods.create(sleep_pod(name, image, host_network))
                .await
                .expect("create");
        }
        Via::Cli(lab) => lab.apply_ok(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: sleep\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [sleep, \"3600\"]\n"
        )),
    }
    let mut running = None;
    while let Some(event) = watch.next().await {
        let event = event.expect("watch event");
        let Some(pod) = event.object.as_ref() else {
            continue;
        };
        if pod.metadata.as_ref().map(|m| m.name.as_str()) != Some(name) {
            continue;
        }
        if running.is_none() && pod.status.as_ref().is_some_and(|s| s.phase == "Running") {
            running = Some(start.elapsed());
            pods.delete(DeletePodRequest {
                namespace: "default".into(),
                name: name.into(),
                grace_period_seconds: Some(0),
                ..Default::default()
            })
            .await
            .expect("delete");
        }
        if event.r#type() == WatchEventType::Deleted {
            break;
        }
    }
    running.expect("the pod ran")
}

/// How `runc run` is timed: to the end of `/bin/true` (start, exit, clean-up), or, with
/// `-d`, until a detached `sleep` has started (what "Running" means for a pod).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runc {
    True,
    DetachedSleep,
}

fn runc_run(rootfs: &std::path::Path, runs: usize, how: Runc) -> Option<Vec<Duration>> {
    if Command::new("runc").arg("--version").output().is_err() {
        eprintln!("runc not found (apt-get install runc): skipping the comparison");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("kubelab-bench-runc-")
        .tempdir()
        .expect("tempdir");
    let bundle = dir.path();
    let status = Command::new("cp")
        .arg("-a")
        .arg(rootfs)
        .arg(bundle.join("rootfs"))
        .status()
        .expect("cp");
    assert!(status.success());
    let status = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .status()
        .expect("runc spec");
    assert!(status.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = match how {
        Runc::True => serde_json::json!(["/bin/true"]),
        Runc::DetachedSleep => serde_json::json!(["sleep", "3600"]),
    };
    std::fs::write(&path, serde_json::to_vec(&spec).expect("json")).expect("write config");
    let mut times = Vec::new();
    for i in 0..runs {
        let id = format!("kubelab-bench-{}-{i}", std::process::id());
        let mut cmd = Command::new("runc");
        cmd.arg("run");
        if how == Runc::DetachedSleep {
            cmd.arg("--detach");
        }
        // No pipes: a detached container would hold them open.
        cmd.arg("--bundle")
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let start = Instant::now();
        let status = cmd.status().expect("runc run");
        times.push(start.elapsed());
        let _ = Command::new("runc")
            .args(["delete", "--force", &id])
            .output();
        if !status.success() {
            eprintln!("runc run failed ({status}); skipping the comparison");
            return None;
        }
    }
    Some(times)
}

#[tokio::main]
async fn main() {
    let lab = Lab::start_with_agent_log(1, "info");
    let image = lab.push_busybox("bench");
    let mut pods = lab.pods_client();
    // Warm-up: pulls and unpacks the image once, so every measured start finds it cached.
    start_one(Via::Api, &mut pods, "warmup", &image).await;
    let mut starts = Vec::new();
    let mut applies = Vec::new();
    let mut no_network = Vec::new();
    // Interleaved, so that the machine's moods fall on all three alike.
    for i in 0..RUNS {
        starts.push(start_one(Via::Api, &mut pods, &format!("bench-{i}"), &image).await);
        applies.push(start_one(Via::Cli(&lab), &mut pods, &format!("apply-{i}"), &image).await);
        no_network
            .push(start_one(Via::ApiHostNetwork, &mut pods, &format!("host-{i}"), &image).await);
    }
    starts.sort();
    applies.sort();
    no_network.sort();
    let runc = |how| {
        runc_run(lab.busybox_rootfs(), RUNS, how).map(|mut t| {
            t.sort();
            t
        })
    };
    let (runc_true, runc_sleep) = (runc(Runc::True), runc(Runc::DetachedSleep));
    let row = |what: &str, t: &[Duration]| {
        println!(
            "| {what} | {} | {} | {RUNS} |",
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.99))
        )
    };
    println!();
    println!("| figure (this machine, this run) | median | p99 | runs |");
    println!("|---|---|---|---|");
    row(
        "pod start, cached image: create → Running seen by a watch",
        &starts,
    );
    row(
        "the same, asked for with `kubelab apply -f` (a CLI process)",
        &applies,
    );
    row(
        "the same, `hostNetwork: true` (no pod network: no CNI plugin runs)",
        &no_network,
    );
    if let Some(t) = &runc_sleep {
        row(
            "`runc run --detach` of the same rootfs, `sleep` (until started)",
            t,
        );
    }
    if let Some(t) = &runc_true {
        row(
            "`runc run` of the same rootfs, `/bin/true` (start to exit)",
            t,
        );
        println!();
        println!(
            "pod start p99 / `runc run` median: {:.2}x",
            percentile(&starts, 0.99).as_secs_f64() / percentile(t, 0.5).as_secs_f64()
        );
    }
    println!(
        "pod network's cost on pod start (median with − without): {}",
        ms(percentile(&starts, 0.5).saturating_sub(percentile(&no_network, 0.5)))
    );
}
