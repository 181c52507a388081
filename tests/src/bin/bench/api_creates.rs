//! Rows 3 and 3b: durable pod creates per second from 64 clients, over gRPC beside this
//! disk's fsyncs per second, and over the Kubernetes REST API (kube-rs clients) beside the
//! gRPC figure of the same run.

use std::time::{Duration, Instant};

use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_tests::Lab;

use crate::measure::{creds, keep_logs};
use crate::pods::{create_from_all, plain_pod};
use crate::{Row, Sizes};

/// Row 3: durable creates per second, 64 clients each on its own connection.
pub async fn run(sizes: &Sizes, rows: &mut Vec<Row>) {
    let lab = Lab::start_without_scheduler(0, "info", &[]);
    let credential = creds(&lab);
    let clients: Vec<_> = (0..64)
        .map(|_| PodsClient::new(credential.channel().expect("channel")))
        .collect();
    // Warm-up: every connection made (TLS) before the clock starts.
    for (c, client) in clients.iter().enumerate() {
        client
            .clone()
            .create(plain_pod(format!("warm-{c}"), "127.0.0.1:1/none:1"))
            .await
            .expect("create");
    }
    let per_client = sizes.creates / 64;
    let start = Instant::now();
    create_from_all(clients, per_client, "c", "127.0.0.1:1/none:1").await;
    let elapsed = start.elapsed();
    let rate = (per_client * 64) as f64 / elapsed.as_secs_f64();
    eprintln!(
        "row 3: {} creates in {:.2}s",
        per_client * 64,
        elapsed.as_secs_f64()
    );
    let rest_rate = rest_creates(&lab, per_client).await;
    keep_logs(&lab, "api");
    let fsyncs = fsyncs_per_second(lab.dir.path());
    rows.push(Row {
        what: format!(
            "3b. the same over the Kubernetes REST API: 64 kube-rs clients, JSON ({} creates)",
            per_client * 64
        ),
        ours: format!("{rest_rate:.0} /s"),
        comparison: format!(
            "gRPC (row 3), same run: {rate:.0} /s; REST = {:.0}% of it",
            100.0 * rest_rate / rate
        ),
        target: "≥ 80% of gRPC".into(),
    });
    rows.push(Row {
        what: format!(
            "3. API: durable pod creates/s, 64 concurrent clients ({} creates)",
            per_client * 64
        ),
        ours: format!("{rate:.0} /s"),
        comparison: format!(
            "this disk: {fsyncs:.0} fsyncs/s (one per create without group commit)"
        ),
        target: "≥ 5,000/s".into(),
    });
}

/// This disk's synchronous write rate: the ceiling on durable creates without group commit.
fn fsyncs_per_second(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        file.write_all(&[0u8; 512]).expect("write");
        file.sync_data().expect("fsync");
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    n as f64 / start.elapsed().as_secs_f64()
}

/// Durable creates per second over REST: 64 kube-rs clients, each its own connection.
async fn rest_creates(lab: &Lab, per_client: usize) -> f64 {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};
    let kubeconfig = kube::config::Kubeconfig::read_from(lab.admin_config()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    let pod = |name: String| -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name },
            "spec": { "containers": [{ "name": "c", "image": "127.0.0.1:1/none:1" }] }
        }))
        .expect("pod")
    };
    let apis: Vec<Api<Pod>> = (0..64)
        .map(|_| {
            let client = kube::Client::try_from(config.clone()).expect("kube client");
            Api::namespaced(client, "default")
        })
        .collect();
    for (c, api) in apis.iter().enumerate() {
        api.create(&PostParams::default(), &pod(format!("rwarm-{c}")))
            .await
            .expect("create");
    }
    let start = Instant::now();
    let tasks: Vec<_> = apis
        .into_iter()
        .enumerate()
        .map(|(c, api)| {
            tokio::spawn(async move {
                for i in 0..per_client {
                    api.create(&PostParams::default(), &pod(format!("r{c}-{i}")))
                        .await
                        .expect("create over REST");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
    let elapsed = start.elapsed();
    eprintln!(
        "row 3b: {} REST creates in {:.2}s",
        per_client * 64,
        elapsed.as_secs_f64()
    );
    (per_client * 64) as f64 / elapsed.as_secs_f64()
}
