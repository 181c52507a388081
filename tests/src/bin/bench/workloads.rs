//! Rows 8, 8b and 9: workloads through the controller manager. A Deployment of 100 on
//! two real agents until Available, beside 100 bare pods created at once in the same lab
//! (row 2's measure); a rolling update of those 100 to another image until complete,
//! beside deleting and creating 100 bare pods; and a Deployment of 10,000 on 1,000
//! hollow nodes until all are Running, in pods per second.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use kubelab_proto::v1::DeletePodRequest;
use kubelab_tests::Lab;

use crate::measure::keep_logs;
use crate::pods::{plain_pod, revision_now, start_one, wait_for_pods, Via};
use crate::{Row, Sizes};

fn deployment(name: &str, image: &str, replicas: usize) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "sleep", "image": image, "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "3600"],
                    }],
                },
            },
        },
    }))
    .expect("deployment")
}

async fn deployments(lab: &Lab) -> Api<Deployment> {
    let kubeconfig = kube::config::Kubeconfig::read_from(lab.admin_config()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    Api::namespaced(kube::Client::try_from(config).expect("client"), "default")
}

/// Polls until the Deployment's rollout is complete, as `kubectl rollout status` reads
/// it: the latest generation observed, every replica updated and available.
async fn wait_complete(api: &Api<Deployment>, name: &str, replicas: i32) {
    loop {
        let d = api.get(name).await.expect("get deployment");
        let status = d.status.unwrap_or_default();
        if status.observed_generation >= d.metadata.generation
            && status.updated_replicas == Some(replicas)
            && status.available_replicas == Some(replicas)
            && status.replicas == Some(replicas)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows 8 and 8b, on two real agents.
pub async fn run_real(sizes: &Sizes, rows: &mut Vec<Row>) {
    let n = sizes.burst;
    let mut lab = Lab::start_with_agent_log(2, "info");
    lab.start_controller_manager_logging("info");
    let (one, two) = (lab.push_busybox("dep-1"), lab.push_busybox("dep-2"));
    let mut pods = lab.pods_client();
    // Both agents have both images: the rows are about starting, not pulling.
    for (i, image) in [&one, &one, &two, &two].into_iter().enumerate() {
        start_one(Via::Api, &mut pods, &format!("warm-{i}"), image).await;
    }
    // The comparison, in this lab: n bare pods at once, until Running; then all deleted.
    let from = revision_now(&mut pods).await;
    let start = Instant::now();
    for i in 0..n {
        pods.create(plain_pod(format!("bare-{i}"), &one))
            .await
            .expect("create");
    }
    wait_for_pods(&mut pods, from, n, "Running").await;
    let bare = start.elapsed();
    let start = Instant::now();
    for i in 0..n {
        pods.delete(DeletePodRequest {
            namespace: "default".into(),
            name: format!("bare-{i}"),
            grace_period_seconds: Some(0),
            ..Default::default()
        })
        .await
        .expect("delete");
    }
    wait_gone(&mut pods).await;
    let bare_delete = start.elapsed();

    let api = deployments(&lab).await;
    let replicas = i32::try_from(n).unwrap_or(i32::MAX);
    let start = Instant::now();
    api.create(&PostParams::default(), &deployment("bench", &one, n))
        .await
        .expect("create deployment");
    wait_complete(&api, "bench", replicas).await;
    let available = start.elapsed();
    eprintln!(
        "row 8: a Deployment of {n} Available in {:.2}s",
        available.as_secs_f64()
    );
    let mut d = api.get("bench").await.expect("get");
    if let Some(spec) = d.spec.template.spec.as_mut() {
        spec.containers[0].image = Some(two.clone());
    }
    let start = Instant::now();
    api.replace("bench", &PostParams::default(), &d)
        .await
        .expect("set image");
    wait_complete(&api, "bench", replicas).await;
    let rolled = start.elapsed();
    eprintln!("row 8b: rolled out in {:.2}s", rolled.as_secs_f64());
    keep_logs(&lab, "workloads");
    rows.push(Row {
        what: format!("8. a Deployment of {n} on 2 real agents, created → Available"),
        ours: format!("{:.2} s", available.as_secs_f64()),
        comparison: format!(
            "{n} bare pods created at once (row 2's measure), same lab: {:.2} s",
            bare.as_secs_f64()
        ),
        target: "-".into(),
    });
    rows.push(Row {
        what: format!("8b. a rolling update of those {n} to another image (25% surge, 25% unavailable), → complete"),
        ours: format!("{:.2} s", rolled.as_secs_f64()),
        comparison: format!(
            "{n} bare pods deleted, then {n} created, same lab: {:.2} s",
            (bare + bare_delete).as_secs_f64()
        ),
        target: "-".into(),
    });
}

/// Waits until no pod is left in the lab.
async fn wait_gone(
    pods: &mut kubelab_proto::v1::pods_client::PodsClient<kubelab_proto::credential::AuthChannel>,
) {
    loop {
        let left = pods
            .list(kubelab_proto::v1::ListPodsRequest::default())
            .await
            .expect("list")
            .into_inner()
            .items
            .len();
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Row 9: a Deployment of many replicas on hollow nodes, until all Running.
pub async fn run_hollow(sizes: &Sizes, rows: &mut Vec<Row>) {
    let (mut lab, _hollow) = crate::scheduler::hollow_lab(sizes.hollow_nodes).await;
    lab.start_scheduler();
    lab.start_controller_manager_logging("info");
    let n = sizes.scheduled_pods;
    let mut pods = lab.pods_client();
    let from = revision_now(&mut pods).await;
    let api = deployments(&lab).await;
    let waiter = {
        let mut pods = pods.clone();
        tokio::spawn(async move { wait_for_pods(&mut pods, from, n, "Running").await })
    };
    let start = Instant::now();
    api.create(
        &PostParams::default(),
        &deployment("many", "127.0.0.1:1/hollow:1", n),
    )
    .await
    .expect("create deployment");
    let (_, last) = waiter.await.expect("waiter");
    let all_running = last.duration_since(start);
    let rate = n as f64 / all_running.as_secs_f64();
    eprintln!(
        "row 9: {n} replicas Running in {:.2}s",
        all_running.as_secs_f64()
    );
    keep_logs(&lab, "controller-manager");
    rows.push(Row {
        what: format!(
            "9. a Deployment of {n} replicas on {} hollow nodes, created → all Running",
            sizes.hollow_nodes
        ),
        ours: format!("{rate:.0} pods/s ({:.1} s)", all_running.as_secs_f64()),
        comparison: "kube-controller-manager at its default client limits (20 QPS, burst 30): ~20 pods/s, published".into(),
        target: "≥ 2,000/s".into(),
    });
}
