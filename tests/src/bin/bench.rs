//! `make bench`: kubelab's figures, each beside a comparison measured in the same run on
//! this machine, as one table (the rows of issue 6):
//!
//! 1. pod start with a cached image (create → Running seen by a watch, as Kubernetes' pod
//!    startup SLO measures it), 100 sequential pods, beside `runc run` of the same rootfs;
//! 2. a burst of 100 pods on 2 real agents, beside 100 `runc run --detach`, two at a time;
//! 3. durable pod creates per second from 64 clients, beside this disk's fsyncs per second;
//! 4. scheduler binds per second, 1,000 hollow nodes and 10,000 pods;
//! 5. memory (RSS) of the apiserver and an agent idle, and of the apiserver holding 10,000 pods;
//! 6. a cold image pull and unpack, beside `skopeo copy` + `umoci unpack` of the same image.
//!
//! Not a test: nothing here asserts a time. `BENCH_QUICK=1` shrinks the counts;
//! `BENCH_ONLY=3,4` runs only those rows (to profile one).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_proto::v1::{
    Container, DeletePodRequest, ObjectMeta, Pod, PodSpec, WatchEventType, WatchRequest,
};
use kubelab_tests::Lab;

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

fn runc_run(
    rootfs: &std::path::Path,
    runs: usize,
    how: Runc,
    lane: usize,
) -> Option<Vec<Duration>> {
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
        let id = format!("kubelab-bench-{}-{lane}-{i}", std::process::id());
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

/// How many of each thing to measure (`BENCH_QUICK=1`: a fast look, not for the record).
struct Sizes {
    sequential: usize,
    extra: usize,
    burst: usize,
    creates: usize,
    hollow_nodes: usize,
    scheduled_pods: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        if std::env::var_os("BENCH_QUICK").is_some() {
            Sizes {
                sequential: 20,
                extra: 5,
                burst: 20,
                creates: 2_000,
                hollow_nodes: 100,
                scheduled_pods: 1_000,
            }
        } else {
            Sizes {
                sequential: 100,
                extra: 20,
                burst: 100,
                creates: 20_000,
                hollow_nodes: 1_000,
                scheduled_pods: 10_000,
            }
        }
    }
}

/// One row of the table.
struct Row {
    what: String,
    ours: String,
    comparison: String,
    target: String,
}

fn rss_mb(pid: Option<u32>) -> f64 {
    let kb = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    kb / 1024.0
}

fn creds(lab: &Lab) -> kubelab_proto::credential::Credential {
    kubelab_proto::credential::Credential::load(&lab.admin_config()).expect("admin credential")
}

fn plain_pod(name: String, image: &str) -> Pod {
    let mut pod = sleep_pod(&name, image, false);
    pod.metadata.as_mut().expect("meta").labels =
        [("bench".to_string(), "load".to_string())].into();
    pod
}

/// Waits until `count` pods of the list are in `phase` (or bound, for "Bound"), following
/// a watch from `from`; returns when.
async fn wait_for_pods(
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

async fn revision_now(pods: &mut PodsClient<kubelab_proto::credential::AuthChannel>) -> u64 {
    pods.list(kubelab_proto::v1::ListPodsRequest {
        label_selector: "nothing=matches".into(),
        ..Default::default()
    })
    .await
    .expect("list")
    .into_inner()
    .resource_version
}

/// Rows 1 and 5 (idle): sequential pod starts on one agent, beside runc.
async fn pod_start(sizes: &Sizes, rows: &mut Vec<Row>) {
    // Row 1b's hostNetwork pods need PodSecurity's privileged level.
    let lab = Lab::start_with(1, "info", &[], &["--pod-security-default", "privileged"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (apiserver_idle, agent_idle) = (rss_mb(lab.apiserver_pid()), rss_mb(lab.agent_pid(0)));
    let image = lab.push_busybox("bench");
    let mut pods = lab.pods_client();
    // Warm-up: pulls and unpacks the image once, so every measured start finds it cached.
    start_one(Via::Api, &mut pods, "warmup", &image).await;
    let mut starts = Vec::new();
    let mut applies = Vec::new();
    let mut no_network = Vec::new();
    // Interleaved, so that the machine's moods fall on all kinds alike.
    for i in 0..sizes.sequential {
        starts.push(start_one(Via::Api, &mut pods, &format!("bench-{i}"), &image).await);
        if i < sizes.extra {
            applies.push(start_one(Via::Cli(&lab), &mut pods, &format!("apply-{i}"), &image).await);
            no_network.push(
                start_one(Via::ApiHostNetwork, &mut pods, &format!("host-{i}"), &image).await,
            );
        }
    }
    starts.sort();
    applies.sort();
    no_network.sort();
    eprintln!("row 1: {} pods started", starts.len());
    let runc = |how, runs| {
        runc_run(lab.busybox_rootfs(), runs, how, 0).map(|mut t| {
            t.sort();
            t
        })
    };
    let runc_true = runc(Runc::True, sizes.sequential);
    let runc_sleep = runc(Runc::DetachedSleep, sizes.extra);
    let median_p99 =
        |t: &[Duration]| format!("{} / {}", ms(percentile(t, 0.5)), ms(percentile(t, 0.99)));
    let runc_median = runc_true.as_ref().map(|t| percentile(t, 0.5));
    rows.push(Row {
        what: format!("1. pod start, cached image, real containers: create → Running seen by a watch, p50 / p99, {} sequential pods", starts.len()),
        ours: median_p99(&starts),
        comparison: match (&runc_true, runc_median) {
            (Some(t), Some(m)) => format!(
                "`runc run` /bin/true, same rootfs: p50 / p99 {}; our p99 = {:.2}× its median",
                median_p99(t),
                percentile(&starts, 0.99).as_secs_f64() / m.as_secs_f64()
            ),
            _ => "runc not found".into(),
        },
        target: "p99 ≤ 3× runc's median".into(),
    });
    rows.push(Row {
        what: format!(
            "1b. the same with `hostNetwork: true` (no CNI), {} pods",
            no_network.len()
        ),
        ours: median_p99(&no_network),
        comparison: format!(
            "pod network's cost (p50 difference): {}",
            ms(percentile(&starts, 0.5).saturating_sub(percentile(&no_network, 0.5)))
        ),
        target: "-".into(),
    });
    rows.push(Row {
        what: format!(
            "1c. the same through `kubelab apply -f` (a CLI process), {} pods",
            applies.len()
        ),
        ours: median_p99(&applies),
        comparison: runc_sleep
            .as_ref()
            .map(|t| {
                format!(
                    "`runc run --detach` sleep (until started): {}",
                    median_p99(t)
                )
            })
            .unwrap_or_default(),
        target: "-".into(),
    });
    rows.push(Row {
        what: "5a. memory: apiserver idle (RSS)".into(),
        ours: format!("{apiserver_idle:.1} MB"),
        comparison: "-".into(),
        target: "≤ 30 MB".into(),
    });
    rows.push(Row {
        what: "5b. memory: agent idle (RSS)".into(),
        ours: format!("{agent_idle:.1} MB"),
        comparison: "-".into(),
        target: "≤ 20 MB".into(),
    });
}

/// Row 2: a burst on two real agents, beside runc starting as many, two at a time.
async fn burst(sizes: &Sizes, rows: &mut Vec<Row>) {
    let lab = Lab::start_with_agent_log(2, "info");
    let image = lab.push_busybox("burst");
    let mut pods = lab.pods_client();
    // Both agents pull the image first: the burst is about starting, not pulling.
    for i in 0..2 {
        start_one(Via::Api, &mut pods, &format!("warm-{i}"), &image).await;
    }
    let from = revision_now(&mut pods).await;
    let waiter = {
        let mut pods = pods.clone();
        let n = sizes.burst;
        tokio::spawn(async move { wait_for_pods(&mut pods, from, n, "Running").await })
    };
    let start = Instant::now();
    let creates: Vec<_> = (0..sizes.burst)
        .map(|i| {
            let mut pods = pods.clone();
            let pod = plain_pod(format!("burst-{i}"), &image);
            tokio::spawn(async move { pods.create(pod).await.expect("create") })
        })
        .collect();
    for c in creates {
        c.await.expect("create task");
    }
    let all_running = waiter.await.expect("waiter").1.duration_since(start);
    eprintln!(
        "row 2: {} pods Running in {:.2}s",
        sizes.burst,
        all_running.as_secs_f64()
    );
    // runc: the same number of detached containers, two at a time (two "nodes").
    let runc = runc_parallel(lab.busybox_rootfs(), sizes.burst, 2);
    rows.push(Row {
        what: format!(
            "2. burst: {} pods created at once on 2 real agents, until all Running",
            sizes.burst
        ),
        ours: format!("{:.2} s", all_running.as_secs_f64()),
        comparison: runc
            .map(|d| {
                format!(
                    "{} `runc run --detach`, 2 at a time: {:.2} s",
                    sizes.burst,
                    d.as_secs_f64()
                )
            })
            .unwrap_or_else(|| "runc not found".into()),
        target: "≤ 5 s".into(),
    });
}

/// `count` detached runc containers started `width` at a time; the time until all started.
fn runc_parallel(rootfs: &std::path::Path, count: usize, width: usize) -> Option<Duration> {
    let start = Instant::now();
    let per_lane = count.div_ceil(width);
    let lanes: Vec<_> = (0..width)
        .map(|lane| {
            let rootfs = rootfs.to_path_buf();
            std::thread::spawn(move || {
                runc_run(&rootfs, per_lane, Runc::DetachedSleep, lane).is_some()
            })
        })
        .collect();
    let ok = lanes.into_iter().all(|l| l.join().unwrap_or(false));
    // runc_run also deletes each container right after starting it: that is counted too,
    // which makes the comparison kinder to runc than to us.
    ok.then(|| start.elapsed())
}

/// With BENCH_KEEP_LOGS=DIR, the lab's logs are copied there (`row-apiserver.log`, ...)
/// before the lab is removed: for profiling.
fn keep_logs(lab: &Lab, row: &str) {
    let Some(dir) = std::env::var_os("BENCH_KEEP_LOGS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::create_dir_all(&dir);
    for entry in std::fs::read_dir(lab.dir.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "log") {
            let name = format!("{row}-{}", entry.file_name().to_string_lossy());
            let _ = std::fs::copy(&path, dir.join(name));
        }
    }
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

/// Every client creates `per_client` pods (`PREFIX<client>-<i>`), one after another, all
/// clients at once; returns when all are created.
async fn create_from_all(
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

/// Row 3: durable creates per second, 64 clients each on its own connection.
async fn api_creates(sizes: &Sizes, rows: &mut Vec<Row>) {
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
    keep_logs(&lab, "api");
    let fsyncs = fsyncs_per_second(lab.dir.path());
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

/// Row 4 and 5c: the scheduler alone binding pods to hollow nodes, then the apiserver's
/// memory holding them.
async fn scheduler(sizes: &Sizes, rows: &mut Vec<Row>) {
    // Hollow nodes make no pod network, but each still gets a range: /28s, so that a
    // thousand fit in the lab's /16.
    let mut lab = Lab::start_without_scheduler(0, "info", &["--node-cidr-mask-size", "28"]);
    let _hollow = kubelab_tests::Proc::spawn(
        "hollow-nodes",
        Command::new(kubelab_tests::bin("kubelabd"))
            .args(["hollow-nodes", "--count", &sizes.hollow_nodes.to_string()])
            .arg("--bootstrap-config")
            .arg(lab.dir.path().join("apiserver/bootstrap.conf"))
            .env("RUST_LOG", "warn"),
        &lab.dir.path().join("hollow.log"),
    );
    let credential = creds(&lab);
    let mut nodes =
        kubelab_proto::v1::nodes_client::NodesClient::new(credential.channel().expect("channel"));
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
            == sizes.hollow_nodes
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
        "row 4: {} hollow nodes Ready in {:.1}s",
        sizes.hollow_nodes,
        start.elapsed().as_secs_f64()
    );
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

/// Row 6: a cold pull and unpack by an agent, beside skopeo and umoci on the same image.
async fn image_pull(rows: &mut Vec<Row>) {
    let lab = Lab::start_with_agent_log(1, "info");
    // A larger image than busybox, so that bytes matter: busybox plus a layer of the
    // host's /usr/share/perl (present on Debian; tens of MB of small files).
    let extra = ["/usr/share/perl", "/usr/share/perl5", "/usr/lib/python3"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.is_dir());
    let layer_dir = lab.dir.path().join("extra-layer");
    if let Some(src) = extra {
        let dest = layer_dir.join("usr/share/extra");
        std::fs::create_dir_all(&dest).expect("mkdir");
        let status = Command::new("cp")
            .arg("-a")
            .arg(src)
            .arg(&dest)
            .status()
            .expect("cp");
        assert!(status.success());
    }
    let image = format!("{}/pullbench:1", lab.registry);
    let mut push = Command::new(kubelab_tests::bin("kubelab"));
    push.args(["image", "push"])
        .arg(lab.busybox_rootfs())
        .arg(&image);
    if extra.is_some() {
        push.arg("--layer").arg(&layer_dir);
    }
    let out = push
        .env("KUBELAB_CONFIG", lab.admin_config())
        .output()
        .expect("push");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pods = lab.pods_client();
    start_one(Via::Api, &mut pods, "cold", &image).await;
    let mut events = kubelab_proto::v1::events_client::EventsClient::new(
        creds(&lab).channel().expect("channel"),
    );
    let pulled = events
        .list(kubelab_proto::v1::ListEventsRequest::default())
        .await
        .expect("events")
        .into_inner()
        .items
        .into_iter()
        .find(|e| e.reason == "Pulled" && e.message.starts_with("Successfully pulled"))
        .map(|e| e.message)
        .unwrap_or_default();
    let seconds: f64 = pulled
        .split(" in ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    let size: String = pulled
        .split("Image size: ")
        .nth(1)
        .map(|s| s.trim_end_matches(" bytes.").to_string())
        .unwrap_or_default();
    let mb = size.parse::<f64>().unwrap_or(0.0) / 1e6;
    let work = lab.dir.path().join("skopeo");
    std::fs::create_dir_all(&work).expect("skopeo dir");
    let start = Instant::now();
    let copied = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:1", work.join("layout").display()))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let copy = start.elapsed();
    let start = Instant::now();
    let unpacked = copied
        && Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:1", work.join("layout").display()))
            .arg(work.join("bundle"))
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    let unpack = start.elapsed();
    rows.push(Row {
        what: format!("6. image pull + unpack, cold, by an agent (image of {mb:.1} MB, time from the `Pulled` event)"),
        ours: format!("{seconds:.2} s"),
        comparison: if unpacked {
            format!(
                "`skopeo copy` {:.2} s + `umoci unpack` {:.2} s = {:.2} s",
                copy.as_secs_f64(),
                unpack.as_secs_f64(),
                (copy + unpack).as_secs_f64()
            )
        } else {
            "skopeo or umoci missing (apt-get install skopeo umoci)".into()
        },
        target: "-".into(),
    });
}

/// Row 7: `kubelab image build` of examples/site: cold (nothing cached, the base image
/// pulled), cached (nothing changed), and with one copied file changed.
async fn image_build(rows: &mut Vec<Row>) {
    let lab = Lab::start(0);
    lab.push_busybox("demo");
    let context = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/site");
    // A copy, so that "one file changed" does not touch the repository.
    let copy = lab.dir.path().join("site");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&context)
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    let image = format!("{}/site:bench", lab.registry);
    let build = |root: &std::path::Path| {
        let start = Instant::now();
        let out = Command::new(kubelab_tests::bin("kubelab"))
            .args(["image", "build"])
            .arg(&copy)
            .args([
                "-t",
                &image,
                "--build-arg",
                &format!("REGISTRY={}", lab.registry),
                "--root",
            ])
            .arg(root)
            .output()
            .expect("kubelab image build");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        start.elapsed()
    };
    let runs = 5;
    let mut cold: Vec<Duration> = (0..runs)
        .map(|i| build(&lab.dir.path().join(format!("cold-{i}"))))
        .collect();
    let root = lab.dir.path().join("warm");
    build(&root);
    let mut cached: Vec<Duration> = (0..runs).map(|_| build(&root)).collect();
    let mut changed: Vec<Duration> = (0..runs)
        .map(|i| {
            std::fs::write(
                copy.join("www/index.html"),
                format!("<h1>version {i}</h1>\n"),
            )
            .expect("edit");
            build(&root)
        })
        .collect();
    // The same three with buildah (Debian's; `buildah bud --layers`, its own storage).
    let buildah = |root: &std::path::Path| {
        let start = Instant::now();
        let ok = Command::new("buildah")
            .arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("run"))
            .args([
                "--storage-driver",
                "overlay",
                "bud",
                "--layers",
                "--quiet",
                "--tls-verify=false",
            ])
            .args([
                "--build-arg",
                &format!("REGISTRY={}", lab.registry),
                "-t",
                "site:bench",
            ])
            .arg(&copy)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| start.elapsed())
    };
    let theirs: Option<[Vec<Duration>; 3]> = (|| {
        let cold = (0..runs)
            .map(|i| buildah(&lab.dir.path().join(format!("buildah-cold-{i}"))))
            .collect::<Option<Vec<_>>>()?;
        let root = lab.dir.path().join("buildah-warm");
        buildah(&root)?;
        let cached = (0..runs)
            .map(|_| buildah(&root))
            .collect::<Option<Vec<_>>>()?;
        let changed = (0..runs)
            .map(|i| {
                std::fs::write(
                    copy.join("www/index.html"),
                    format!("<h1>buildah {i}</h1>\n"),
                )
                .ok()?;
                buildah(&root)
            })
            .collect::<Option<Vec<_>>>()?;
        Some([cold, cached, changed])
    })();
    for v in [&mut cold, &mut cached, &mut changed] {
        v.sort();
    }
    let ms = |v: &[Duration]| percentile(v, 50.0).as_secs_f64() * 1000.0;
    rows.push(Row {
        what: format!("7. `kubelab image build examples/site` (12 steps, 4 layers on busybox), median of {runs}: cold (base pulled) / cached / one copied file changed"),
        ours: format!("{:.0} ms / {:.0} ms / {:.0} ms", ms(&cold), ms(&cached), ms(&changed)),
        comparison: match theirs {
            Some(mut t) => {
                for v in &mut t {
                    v.sort();
                }
                format!("`buildah bud --layers`, same steps: {:.0} ms / {:.0} ms / {:.0} ms", ms(&t[0]), ms(&t[1]), ms(&t[2]))
            }
            None => "buildah missing or failed (apt-get install buildah)".into(),
        },
        target: "-".into(),
    });
}

#[tokio::main]
async fn main() {
    kubelab_proto::credential::init_tls();
    let sizes = Sizes::from_env();
    let mut rows = Vec::new();
    // BENCH_ONLY=3 (or 1,4...) runs only those rows: for profiling one of them.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |row: &str| only.is_empty() || only.split(',').any(|r| r == row);
    if wanted("1") || wanted("5") {
        pod_start(&sizes, &mut rows).await;
    }
    if wanted("2") {
        burst(&sizes, &mut rows).await;
    }
    if wanted("3") {
        api_creates(&sizes, &mut rows).await;
    }
    if wanted("4") || wanted("5") {
        scheduler(&sizes, &mut rows).await;
    }
    if wanted("6") {
        image_pull(&mut rows).await;
    }
    if wanted("7") {
        image_build(&mut rows).await;
    }
    rows.sort_by(|a, b| a.what.cmp(&b.what));
    println!();
    println!("| figure (this machine, this run) | kubelab | comparison, same run | target |");
    println!("|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} |",
            row.what, row.ours, row.comparison, row.target
        );
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!();
    println!(
        "machine: {cpus} cores, {}",
        std::fs::read_to_string("/proc/version")
            .unwrap_or_default()
            .trim()
    );
}
