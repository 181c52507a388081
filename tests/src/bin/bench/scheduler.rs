//! Rows 4 and 5c: the scheduler alone binding pods to hollow nodes, then the apiserver's
//! memory holding them.

use std::process::Command;
use std::time::{Duration, Instant};

use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_tests::Lab;

use crate::measure::{creds, keep_logs, rss_mb};
use crate::pods::{create_from_all, revision_now, wait_for_pods};
use crate::{Row, Sizes};

/// A lab of `count` hollow nodes, without a scheduler, once they are all Ready; the
/// hollow nodes' process goes when the returned `Proc` is dropped.
pub async fn hollow_lab(count: usize) -> (Lab, kubelab_tests::Proc) {
    // Hollow nodes make no pod network, but each still gets a range: /28s, so that a
    // thousand fit in the lab's /16.
    let lab = Lab::start_without_scheduler(0, "info", &["--node-cidr-mask-size", "28"]);
    let hollow = kubelab_tests::Proc::spawn(
        "hollow-nodes",
        Command::new(kubelab_tests::bin("kubelabd"))
            .args(["hollow-nodes", "--count", &count.to_string()])
            .arg("--bootstrap-config")
            .arg(lab.dir.path().join("apiserver/bootstrap.conf"))
            .env("RUST_LOG", "warn"),
        &lab.dir.path().join("hollow.log"),
    );
    let mut nodes = lab.nodes_client();
    let start = Instant::now();
    loop {
        let listed = nodes
            .list(kubelab_proto::v1::ListNodesRequest::default())
            .await
            .expect("nodes")
            .into_inner()
            .items;
        if listed
            .iter()
            .filter(|n| kubelab_proto::node_is_ready(n))
            .count()
            == count
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "hollow nodes did not come up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{count} hollow nodes Ready in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    (lab, hollow)
}

/// Row 4 and 5c: the scheduler alone binding pods to hollow nodes, then the apiserver's
/// memory holding them.
pub async fn run(sizes: &Sizes, rows: &mut Vec<Row>) {
    let (mut lab, _hollow) = hollow_lab(sizes.hollow_nodes).await;
    let credential = creds(&lab);
    let clients: Vec<_> = (0..16)
        .map(|_| PodsClient::new(credential.channel().expect("channel")))
        .collect();
    let per_client = sizes.scheduled_pods / 16;
    create_from_all(clients, per_client, "s", "127.0.0.1:1/hollow:1").await;
    let total = per_client * 16;
    let mut pods = lab.pods_client();
    let from = revision_now(&mut pods).await;
    let waiter = {
        let mut pods = pods.clone();
        tokio::spawn(async move { wait_for_pods(&mut pods, from, total, "Bound").await })
    };
    let start = Instant::now();
    lab.start_scheduler();
    let (first, last) = waiter.await.expect("waiter");
    let bound = last.duration_since(start);
    let rate = total as f64 / bound.as_secs_f64();
    let steady = (total - 1) as f64 / last.duration_since(first).as_secs_f64();
    eprintln!("row 4: {total} pods bound in {:.2}s", bound.as_secs_f64());
    let waiter = {
        let mut pods = pods.clone();
        tokio::spawn(async move { wait_for_pods(&mut pods, from, total, "Running").await })
    };
    let running = waiter.await.expect("waiter").1.duration_since(start);
    rows.push(Row {
        what: format!(
            "4. scheduler: pods bound/s, {} hollow nodes, {total} pending pods (from the scheduler's start, list included)",
            sizes.hollow_nodes
        ),
        ours: format!("{rate:.0} /s ({steady:.0} /s from the first bind to the last)"),
        comparison: format!(
            "all {total} reported Running by the hollow nodes after {:.1} s (kube-scheduler: ~100–300/s, published)",
            running.as_secs_f64()
        ),
        target: "≥ 2,000/s".into(),
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    keep_logs(&lab, "scheduler");
    rows.push(Row {
        what: format!(
            "5c. memory: apiserver holding {total} pods (and their events, {} nodes)",
            sizes.hollow_nodes
        ),
        ours: format!("{:.1} MB", rss_mb(lab.apiserver_pid())),
        comparison: "-".into(),
        target: "≤ 150 MB".into(),
    });
}
