//! The bench's pods and how it watches them: a `sleep` pod, one pod started and timed
//! (by a gRPC call or `kubelab apply`), many created at once, and waiting for many.
//! Starts no lab.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_proto::v1::{
    Container, DeletePodRequest, ObjectMeta, Pod, PodSpec, WatchEventType, WatchRequest,
};
use kubelab_tests::Lab;

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

pub fn plain_pod(name: String, image: &str) -> Pod {
    let mut pod = sleep_pod(&name, image, false);
    pod.metadata.as_mut().expect("meta").labels =
        [("bench".to_string(), "load".to_string())].into();
    pod
}

/// How the pod is asked for: a gRPC call, or `kubelab apply` (a process, as a user does).
#[derive(Clone, Copy)]
pub enum Via<'a> {
    Api,
    /// A gRPC call for a `hostNetwork` pod: no pod network, so no CNI plugin runs.
    ApiHostNetwork,
    Cli(&'a Lab),
    /// `kubectl apply -f`: the Kubernetes REST API, with kubectl's own steps (OpenAPI,
    /// a GET, then the create).
    Kubectl(&'a Lab),
}

/// Creates the pod and returns how long until a watch shows it Running; then deletes it
/// and waits until it is gone.
pub async fn start_one(
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
        Via::Kubectl(lab) => {
            let out = lab.kubectl_with_input(&["apply", "-f", "-"], &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: sleep\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [sleep, \"3600\"]\n"
            ));
            assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
        }
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

/// Every client creates `per_client` pods (`PREFIX<client>-<i>`), one after another, all
/// clients at once; returns when all are created.
pub async fn create_from_all(
    clients: Vec<PodsClient<kubelab_proto::credential::AuthChannel>>,
    per_client: usize,
    prefix: &'static str,
    image: &'static str,
) {
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            tokio::spawn(async move {
                for i in 0..per_client {
                    client
                        .create(plain_pod(format!("{prefix}{c}-{i}"), image))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
}

/// Waits until `count` pods of the list are in `phase` (or bound, for "Bound"), following
/// a watch from `from`; returns when.
pub async fn wait_for_pods(
    pods: &mut PodsClient<kubelab_proto::credential::AuthChannel>,
    from: u64,
    count: usize,
    phase: &str,
) -> (Instant, Instant) {
    let mut stream = pods
        .watch(WatchRequest {
            from_revision: from,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut done = std::collections::HashSet::new();
    let mut first = None;
    while let Some(event) = stream.next().await {
        let pod = event.expect("watch").object.unwrap_or_default();
        let reached = match phase {
            "Bound" => pod.spec.as_ref().is_some_and(|s| !s.node_name.is_empty()),
            _ => pod.status.as_ref().is_some_and(|s| s.phase == phase),
        };
        if reached {
            first.get_or_insert_with(Instant::now);
            done.insert(pod.metadata.map(|m| m.uid).unwrap_or_default());
            if done.len() >= count {
                break;
            }
        }
    }
    let last = Instant::now();
    (first.unwrap_or(last), last)
}

pub async fn revision_now(pods: &mut PodsClient<kubelab_proto::credential::AuthChannel>) -> u64 {
    pods.list(kubelab_proto::v1::ListPodsRequest {
        label_selector: "nothing=matches".into(),
        ..Default::default()
    })
    .await
    .expect("list")
    .into_inner()
    .resource_version
}
