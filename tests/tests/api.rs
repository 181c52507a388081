//! The API's semantics as Kubernetes users rely on them: watches that never miss or
//! reorder, conditional writes, label and field selectors, expired watches that clients
//! relist, and acknowledged writes that survive `kill -9`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kubelab_proto::credential::init_tls;
use kubelab_proto::v1::{
    BindRequest, Container, DeletePodRequest, ListPodsRequest, ObjectMeta, Pod, PodSpec,
    UpdateNodeRequest, WatchEventType, WatchRequest,
};
use kubelab_tests::{pod_manifest, wait_until, Lab};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().expect("runtime").block_on(f)
}

fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: "127.0.0.1:1/nothing:1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Sixteen clients create 400 pods (208 labelled app=web) and delete every fifth, all at
/// once; a watch of everything and a watch with a label selector each see every change
/// exactly once, in revision order.
#[test]
fn watches_see_every_change_once_and_in_order_under_concurrent_writes() {
    init_tls();
    let lab = Lab::start(0);
    block_on(async {
        let pods = lab.pods_client();
        let from = pods
            .clone()
            .list(ListPodsRequest::default())
            .await
            .expect("list")
            .into_inner()
            .resource_version;
        let watch = |selector: &str| {
            let mut pods = pods.clone();
            let request = WatchRequest {
                from_revision: from,
                label_selector: selector.into(),
                ..Default::default()
            };
            async move { pods.watch(request).await.expect("watch").into_inner() }
        };
        let mut all = watch("").await;
        let mut web = watch("app=web").await;
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let mut pods = pods.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        let name = format!("w{w}-{i}");
                        let labels: &[(&str, &str)] = if i % 2 == 0 {
                            &[("app", "web")]
                        } else {
                            &[("app", "db")]
                        };
                        pods.create(pod(&name, labels)).await.expect("create");
                        if i % 5 == 0 {
                            let delete = DeletePodRequest {
                                namespace: "default".into(),
                                name,
                                ..Default::default()
                            };
                            pods.delete(delete).await.expect("delete");
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        // Collects (revision, type, name) until `added` adds and `deleted` deletes are seen.
        async fn collect(
            stream: &mut tonic::Streaming<kubelab_proto::v1::PodWatchEvent>,
            added: usize,
            deleted: usize,
        ) -> Vec<(u64, WatchEventType, String)> {
            let mut seen = Vec::new();
            let count = |seen: &Vec<(u64, WatchEventType, String)>, t| {
                seen.iter().filter(|(_, x, _)| *x == t).count()
            };
            while count(&seen, WatchEventType::Added) < added
                || count(&seen, WatchEventType::Deleted) < deleted
            {
                let event = tokio::time::timeout(Duration::from_secs(20), stream.next())
                    .await
                    .expect("the watch went quiet before every change arrived")
                    .expect("stream open")
                    .expect("no error");
                let t = event.r#type();
                let meta = event.object.and_then(|p| p.metadata).expect("meta");
                if t != WatchEventType::Modified {
                    seen.push((meta.resource_version, t, meta.name));
                }
            }
            seen
        }
        for (stream, added, deleted, label) in
            // app=web: i = 0, 2, … 24 (13 of each writer's 25), deleted at 0, 10, 20.
            [(&mut all, 400, 80, ""), (&mut web, 208, 48, "app=web")]
        {
            let seen = collect(stream, added, deleted).await;
            assert!(
                seen.windows(2).all(|w| w[0].0 < w[1].0),
                "watch {label:?}: revisions out of order"
            );
            let mut adds = HashSet::new();
            for (_, t, name) in &seen {
                if *t == WatchEventType::Added {
                    assert!(
                        adds.insert(name.clone()),
                        "watch {label:?}: {name} added twice"
                    );
                } else {
                    assert!(
                        adds.contains(name),
                        "watch {label:?}: {name} deleted before added"
                    );
                }
            }
            assert_eq!(
                (adds.len(), seen.len() - adds.len()),
                (added, deleted),
                "watch {label:?}"
            );
        }
    });
}

/// A write that names the resource version it read is refused once someone else wrote
/// in between (Kubernetes' optimistic concurrency); `kubelab cordon`, which reads and
/// writes that way, still gets its change in.
#[test]
fn a_write_over_a_stale_read_is_a_conflict() {
    init_tls();
    let lab = Lab::start(1);
    let node = lab.node_names[0].clone();
    block_on(async {
        let mut pods = lab.pods_client();
        let created = pods
            .create(pod("stale", &[]))
            .await
            .expect("create")
            .into_inner();
        let read = created.metadata.clone().expect("meta").resource_version;
        let bind = BindRequest {
            namespace: "default".into(),
            name: "stale".into(),
            node_name: node.clone(),
            resource_version: read,
            ..Default::default()
        };
        // Two writers read the same version; the first write wins (unless the scheduler
        // was quicker: then both are stale), the second is a conflict.
        let _ = pods.bind(bind.clone()).await;
        let err = pods.bind(bind).await.expect_err("a bind over a stale read");
        assert_eq!(err.code(), tonic::Code::Aborted, "{err}");
        assert!(
            err.message().contains("the object has been modified; please apply your changes to the latest version and try again"),
            "{err}"
        );
        let mut nodes = lab.nodes_client();
        let current = nodes
            .get(kubelab_proto::v1::ObjectKey {
                namespace: String::new(),
                name: node.clone(),
            })
            .await
            .expect("node")
            .into_inner();
        let version = current.metadata.clone().expect("meta").resource_version;
        // Each write changes a label: as in Kubernetes, a write that changes nothing is
        // not a write (the version stays, and so it is never stale).
        let update = |v: u64, value: &str| {
            let mut labels = current.metadata.clone().expect("meta").labels;
            labels.insert("writer".into(), value.into());
            UpdateNodeRequest {
                name: node.clone(),
                labels,
                spec: current.spec.clone(),
                resource_version: v,
            }
        };
        nodes
            .update(update(version, "first"))
            .await
            .expect("first write wins");
        let err = nodes
            .update(update(version, "second"))
            .await
            .expect_err("second write over the same read");
        assert_eq!(err.code(), tonic::Code::Aborted, "{err}");
    });
    assert_eq!(
        lab.ok(&["cordon", &node]).trim(),
        format!("node/{node} cordoned")
    );
    assert!(lab
        .ok(&["get", "nodes"])
        .contains("Ready,SchedulingDisabled"));
}

/// `get -l` and `--field-selector spec.nodeName=` filter as in Kubernetes; a bad selector
/// is one line naming the problem.
#[test]
fn label_and_field_selectors_filter_lists() {
    let lab = Lab::start(2);
    let image = lab.push_busybox("1");
    for (name, app, node) in [("web-a", "web", 0), ("web-b", "web", 1), ("db", "db", 0)] {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {app}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: {image}\n    command: [\"sleep\", \"600\"]\n",
            lab.node_names[node]
        );
        lab.apply_ok(&manifest);
    }
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["get", "pods", "-o", "name"];
        all.extend_from_slice(args);
        let mut names: Vec<String> = lab.ok(&all).lines().map(String::from).collect();
        names.sort();
        names
    };
    assert_eq!(names(&["-l", "app=web"]), ["pod/web-a", "pod/web-b"]);
    assert_eq!(names(&["-l", "app!=web"]), ["pod/db"]);
    assert_eq!(names(&["-l", "app in (db,cache)"]), ["pod/db"]);
    assert_eq!(names(&["-l", "!app"]), Vec::<String>::new());
    let on_first = format!("spec.nodeName={}", lab.node_names[0]);
    assert_eq!(
        names(&["--field-selector", &on_first]),
        ["pod/db", "pod/web-a"]
    );
    assert_eq!(
        names(&["--field-selector", &on_first, "-l", "app=web"]),
        ["pod/web-a"]
    );
    let err = lab.fails(&["get", "pods", "-l", "app=we b"]);
    assert!(
        err.starts_with("error: invalid label selector \"app=we b\""),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = lab.fails(&["get", "pods", "--field-selector", "status.phase=Running"]);
    assert!(err.contains("kubelab knows spec.nodeName=NODE"), "{err}");
}

/// 1,000 creates from 64 clients at once; the apiserver is killed with SIGKILL in the
/// middle. Restarted, it has every pod it acknowledged.
#[test]
fn every_acknowledged_create_survives_kill_9() {
    init_tls();
    let mut lab = Lab::start(0);
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    block_on(async {
        let pods = lab.pods_client();
        let clients: Vec<_> = (0..64)
            .map(|c| {
                let (mut pods, acknowledged, count) =
                    (pods.clone(), acknowledged.clone(), count.clone());
                tokio::spawn(async move {
                    for i in 0..16 {
                        let name = format!("p{c}-{i}");
                        if pods.create(pod(&name, &[])).await.is_err() {
                            // The apiserver is gone: this create was not acknowledged.
                            return;
                        }
                        acknowledged.lock().expect("lock").push(name);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        while count.load(Ordering::SeqCst) < 300 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "creates too slow"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lab.kill_apiserver();
        for c in clients {
            let _ = c.await;
        }
    });
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() >= 300 && acknowledged.len() < 1024,
        "{}",
        acknowledged.len()
    );
    lab.start_apiserver();
    let stored: HashSet<String> = block_on(async {
        lab.pods_client()
            .list(ListPodsRequest::default())
            .await
            .expect("list after restart")
            .into_inner()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.map(|m| m.name))
            .collect()
    });
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|n| !stored.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged pods lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
}

/// `kubelab get pods -w` prints each change; when the apiserver restarts and the
/// watch's version has left its (here tiny) history, the CLI relists and goes on.
#[test]
fn get_watch_follows_changes_and_relists_when_its_version_expired() {
    let mut lab = Lab::start_with_apiserver_args(0, &["--watch-history", "2"]);
    let out = lab.dir.path().join("watch.out");
    let err = lab.dir.path().join("watch.err");
    let mut watcher = std::process::Command::new(kubelab_tests::bin("kubelab"))
        .args(["get", "pods", "-w"])
        .env("KUBELAB_CONFIG", lab.admin_config())
        .env_remove("KUBELAB_SERVER")
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("kubelab get -w");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let image = format!("{}/nothing:1", lab.registry);
    lab.apply_ok(&pod_manifest("first", &image, "Never", "true"));
    wait_until(
        "the watch to print the first pod",
        Duration::from_secs(10),
        || read(&out).contains("first"),
    );
    lab.kill_apiserver();
    lab.start_apiserver();
    for name in ["second", "third", "fourth", "fifth"] {
        lab.apply_ok(&pod_manifest(name, &image, "Never", "true"));
    }
    wait_until("the watch to relist", Duration::from_secs(15), || {
        read(&out).contains("fifth")
    });
    let _ = watcher.kill();
    let _ = watcher.wait();
    let stderr = read(&err);
    assert!(
        stderr.contains("expired") && stderr.contains("relisting"),
        "{stderr}"
    );
    assert!(read(&out).starts_with("NAME"), "{}", read(&out));
}
