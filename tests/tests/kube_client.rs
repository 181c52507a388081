//! A second real client nobody here wrote, the `kube` crate (kube-rs): its typed API and
//! its `runtime::watcher` work against kubelab as against Kubernetes.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config};
use kubelab_tests::Lab;

async fn client(lab: &Lab) -> Client {
    kubelab_proto::credential::init_tls();
    let kubeconfig = kube::config::Kubeconfig::read_from(lab.admin_config()).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": "kube-rs" } },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{ "name": "c", "image": "127.0.0.1:1/none:1" }]
        }
    }))
    .expect("pod")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// Typed create, get, list with a selector, the three patches and delete.
#[test]
fn kube_rs_reads_and_writes_pods_and_nodes() {
    let lab = Lab::start(1);
    runtime().block_on(async {
        let client = client(&lab).await;
        let nodes: Api<Node> = Api::all(client.clone());
        let listed = nodes.list(&ListParams::default()).await.expect("nodes");
        assert_eq!(listed.items.len(), 1);
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let created = pods
            .create(&PostParams::default(), &pod("k1"))
            .await
            .expect("create");
        assert!(created.metadata.uid.is_some());
        assert_eq!(
            created.spec.as_ref().and_then(|s| s.dns_policy.as_deref()),
            Some("ClusterFirst")
        );
        let err = pods
            .create(&PostParams::default(), &pod("k1"))
            .await
            .expect_err("a second k1");
        match err {
            kube::Error::Api(status) => {
                assert_eq!(status.code, 409);
                assert_eq!(status.reason, "AlreadyExists");
            }
            other => panic!("not a Status: {other}"),
        }
        let got = pods.get("k1").await.expect("get");
        assert_eq!(got.metadata.name.as_deref(), Some("k1"));
        let selected = pods
            .list(&ListParams::default().labels("app=kube-rs"))
            .await
            .expect("list");
        assert_eq!(selected.items.len(), 1);
        let merge = serde_json::json!({ "metadata": { "labels": { "m": "1" } } });
        pods.patch("k1", &PatchParams::default(), &Patch::Merge(&merge))
            .await
            .expect("merge patch");
        let strategic = serde_json::json!({ "metadata": { "labels": { "s": "2" } } });
        pods.patch("k1", &PatchParams::default(), &Patch::Strategic(&strategic))
            .await
            .expect("strategic patch");
        let applied = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "k1", "labels": { "a": "3" } }
        });
        let patched = pods
            .patch(
                "k1",
                &PatchParams::apply("kube-rs-test"),
                &Patch::Apply(&applied),
            )
            .await
            .expect("server-side apply");
        let labels = patched.metadata.labels.unwrap_or_default();
        assert_eq!(
            (labels.get("m"), labels.get("s"), labels.get("a")),
            (
                Some(&"1".to_string()),
                Some(&"2".to_string()),
                Some(&"3".to_string())
            )
        );
        pods.delete("k1", &DeleteParams::default())
            .await
            .expect("delete");
        // A bound pod's delete is graceful: gone once its agent has stopped it.
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match pods.get("k1").await {
                    Err(kube::Error::Api(s)) if s.code == 404 => break,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .expect("k1 gone");
    });
}

/// The watcher lists, then follows changes; an apiserver restart is survived (the
/// watch resumes from its version); the streaming-list form (`sendInitialEvents`) works.
#[test]
fn kube_rs_watcher_follows_changes_across_a_restart() {
    let mut lab = Lab::start(1);
    let rt = runtime();
    let pods: Api<Pod> = rt.block_on(async { Api::namespaced(client(&lab).await, "default") });
    rt.block_on(pods.create(&PostParams::default(), &pod("before")))
        .expect("create");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for (name, config) in [
        ("list", watcher::Config::default()),
        ("stream", watcher::Config::default().streaming_lists()),
    ] {
        // With kube-rs' back-off, as its documentation has it: errors (the apiserver
        // gone) are yielded and the watcher goes on.
        let stream = watcher::watcher(pods.clone(), config).default_backoff();
        let tx = tx.clone();
        rt.spawn(async move {
            let mut stream = stream.boxed();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let text = match event {
                    Event::Init => "init".to_string(),
                    Event::InitApply(p) => {
                        format!("init-apply {}", p.metadata.name.unwrap_or_default())
                    }
                    Event::InitDone => "init-done".to_string(),
                    Event::Apply(p) => format!("apply {}", p.metadata.name.unwrap_or_default()),
                    Event::Delete(p) => format!("delete {}", p.metadata.name.unwrap_or_default()),
                };
                let _ = tx.send(format!("{name}: {text}"));
            }
        });
    }
    let mut seen = Vec::new();
    let mut expect = |want: &str, seen: &mut Vec<String>| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), async {
                while !seen.iter().any(|s| s == want) {
                    match rx.recv().await {
                        Some(s) => seen.push(s),
                        None => break,
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {seen:?}"));
        })
    };
    for watch in ["list", "stream"] {
        expect(&format!("{watch}: init-apply before"), &mut seen);
        expect(&format!("{watch}: init-done"), &mut seen);
    }
    rt.block_on(pods.create(&PostParams::default(), &pod("after")))
        .expect("create");
    expect("list: apply after", &mut seen);
    expect("stream: apply after", &mut seen);
    lab.kill_apiserver();
    lab.start_apiserver();
    rt.block_on(pods.create(&PostParams::default(), &pod("restarted")))
        .expect("create after a restart");
    expect("list: apply restarted", &mut seen);
    rt.block_on(pods.delete("before", &DeleteParams::default()))
        .expect("delete");
    expect("list: delete before", &mut seen);
}
