//! Rows 10 and 10b: Services through the agents' service proxy (iptables). How long after
//! a new pod is Ready a request to its Service can reach it (kube-proxy's network
//! programming latency), and what a request through a cluster IP costs beside the same
//! request to the pod's own address. Both measured from the host, whose OUTPUT chain
//! goes through the same `KUBE-SERVICES` rules a pod's traffic does.

use std::time::{Duration, Instant};

use kubelab_tests::{http_get, Lab};

use crate::measure::{ms, percentile};
use crate::Row;

/// The names of the Deployment's pods that are Ready (a gRPC list: cheap enough to poll
/// every few milliseconds, unlike a kubectl process).
async fn ready_pods(
    pods: &mut kubelab_proto::v1::pods_client::PodsClient<kubelab_proto::credential::AuthChannel>,
) -> Vec<String> {
    let listed = pods
        .list(kubelab_proto::v1::ListPodsRequest {
            label_selector: "app=web".into(),
            ..Default::default()
        })
        .await
        .expect("list pods")
        .into_inner()
        .items;
    listed
        .into_iter()
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
            })
        })
        .filter_map(|p| p.metadata.map(|m| m.name))
        .collect()
}

pub async fn run(rows: &mut Vec<Row>) {
    let mut lab = Lab::start_with_agent_args(1, &["--proxy-mode", "iptables"]);
    lab.start_controller_manager_logging("info");
    let image = lab.push_busybox("svc");
    let server = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";
    lab.kubectl_with_input(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      terminationGracePeriodSeconds: 0\n      containers:\n      - name: main\n        image: {image}\n        command: [\"sh\", \"-c\", \"{server}\"]\n        readinessProbe:\n          tcpSocket:\n            port: 8080\n          periodSeconds: 1\n"
        ),
    );
    lab.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    lab.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
    ]);
    let service = format!(
        "{}:80",
        lab.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
    );
    let pod_ip = lab.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    let direct = format!("{pod_ip}:8080");
    while http_get(&service).is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 10b: the same request, 300 times each way, alternating.
    let (mut through, mut straight) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        for (to, times) in [(&service, &mut through), (&direct, &mut straight)] {
            let start = Instant::now();
            http_get(to);
            times.push(start.elapsed());
        }
    }
    through.sort();
    straight.sort();

    // 10: a new replica at a time, from Ready to its first answer through the Service.
    let mut latencies = Vec::new();
    let mut pods = lab.pods_client();
    for replicas in 2..=11 {
        let before = ready_pods(&mut pods).await;
        lab.kubectl_ok(&["scale", "deployment/web", &format!("--replicas={replicas}")]);
        let (new, ready_at) = loop {
            let now = ready_pods(&mut pods).await;
            if let Some(new) = now.iter().find(|p| !before.contains(p)) {
                break (new.clone(), Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        while http_get(&service) != new {
            if ready_at.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        latencies.push(ready_at.elapsed());
    }
    latencies.sort();
    eprintln!("row 10: {latencies:?}");
    rows.push(Row {
        what: "10. service programming: a new pod Ready → first answer through its cluster IP, p50 / p99 (10 pods, one at a time)".into(),
        ours: format!("{} / {}", ms(percentile(&latencies, 0.5)), ms(percentile(&latencies, 0.99))),
        comparison: "kube-proxy's SLO: p99 ≤ 5 s (at scale), published".into(),
        target: "-".into(),
    });
    rows.push(Row {
        what: "10b. an HTTP request from the host through a cluster IP vs to the pod's address, p50 (300 each, alternating)".into(),
        ours: format!("{} (p99 {})", ms(percentile(&through, 0.5)), ms(percentile(&through, 0.99))),
        comparison: format!(
            "to the pod directly: {} (p99 {}); the proxy adds {}",
            ms(percentile(&straight, 0.5)),
            ms(percentile(&straight, 0.99)),
            ms(percentile(&through, 0.5).saturating_sub(percentile(&straight, 0.5)))
        ),
        target: "-".into(),
    });
}
