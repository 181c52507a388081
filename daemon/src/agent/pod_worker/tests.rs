//! The pod worker's state machine against a fake node (`PodRuntime`): restarts and
//! back-off per `restartPolicy`, failed pulls, a failed liveness probe, termination with
//! its grace period, re-adoption after an agent restart. No root, no containers, no
//! apiserver: each test takes milliseconds (the one grace period, a second).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use kubelab_proto::v1::{Event, ObjectMeta, PodSpec};
use tokio::sync::oneshot;

use super::*;
use crate::agent::pod_runtime::{CreatedContainer, PodRuntime};
use crate::agent::runtime::RuntimeService;
use crate::agent::status_manager::StatusManager;
use crate::agent::{network, KubeletConfig};
use crate::client::{ApiClient, EventRecorder};
use crate::container::image::Image;

/// What the fake node is told to do, and what it saw.
#[derive(Default)]
struct Script {
    /// Every call the worker made, in order: "pull main", "create main", "start main",
    /// "signal main SIGTERM", "remove main", "remove pod".
    calls: Vec<String>,
    /// Exit codes of the coming runs of each container; a run with none left runs until
    /// it is signalled.
    exits: HashMap<String, VecDeque<i32>>,
    /// Containers that ignore SIGTERM (only SIGKILL ends them).
    ignore_term: HashSet<String>,
    /// How many pulls fail before one succeeds.
    failing_pulls: usize,
    /// What a previous agent run left: container name → what is found again.
    recovered: HashMap<String, Recovered>,
    next_pid: i32,
    /// Running containers by pid: their name and what ends their wait.
    running: HashMap<i32, (String, Option<oneshot::Sender<ExitRecord>>)>,
    waits: HashMap<i32, oneshot::Receiver<ExitRecord>>,
}

impl Script {
    /// A container "process" whose wait ends when `exit` is sent.
    fn spawn(&mut self, name: &str, pid: i32) {
        let (tx, rx) = oneshot::channel();
        self.running.insert(pid, (name.to_string(), Some(tx)));
        self.waits.insert(pid, rx);
        if let Some(code) = self.exits.get_mut(name).and_then(|e| e.pop_front()) {
            self.exit(pid, code, 0);
        }
    }

    fn exit(&mut self, pid: i32, exit_code: i32, signal: i32) {
        if let Some(tx) = self.running.get_mut(&pid).and_then(|(_, tx)| tx.take()) {
            let _ = tx.send(ExitRecord {
                exit_code,
                signal,
                finished_at_ms: now_ms(),
                oom_killed: false,
            });
        }
    }
}

#[derive(Clone, Default)]
struct FakeNode(Arc<Mutex<Script>>);

impl FakeNode {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn calls(&self) -> Vec<String> {
        self.script().calls.clone()
    }
}

struct FakeCreated {
    node: FakeNode,
    name: String,
    restart_count: i32,
}

#[tonic::async_trait]
impl CreatedContainer for FakeCreated {
    async fn start(self: Box<Self>) -> Result<Started, RuntimeError> {
        let mut script = self.node.script();
        script.calls.push(format!("start {}", self.name));
        script.next_pid += 1;
        let pid = 1000 + script.next_pid;
        script.spawn(&self.name, pid);
        Ok(Started {
            container_id: format!("{}-{pid}", self.name),
            pid,
            started_at_ms: now_ms(),
            shim_pid: pid,
            restart_count: self.restart_count,
            image_id: "sha256:fake".into(),
        })
    }

    async fn abort(self: Box<Self>, why: String) -> RuntimeError {
        RuntimeError::Start(why)
    }
}

#[tonic::async_trait]
impl PodRuntime for FakeNode {
    fn recover(&self, _uid: &str) -> HashMap<String, Recovered> {
        let mut script = self.script();
        let recovered = std::mem::take(&mut script.recovered);
        for (name, found) in &recovered {
            if let Recovered::Running(started) = found {
                script.spawn(name, started.pid);
            }
        }
        recovered
    }

    fn sandbox_exists(&self, _uid: &str) -> bool {
        true
    }

    fn sandbox_dir(&self, uid: &str) -> PathBuf {
        PathBuf::from("/nonexistent/sandbox").join(uid)
    }

    fn prepare_pod(
        &self,
        _pod: &Pod,
        _pids: i64,
    ) -> Result<HashMap<String, PathBuf>, RuntimeError> {
        Ok(HashMap::new())
    }

    fn write_etc_files(
        &self,
        _pod: &Pod,
        _ip: &str,
        _resolv: &str,
        _domain: &str,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn attach_network(&self, _pod: &Pod) -> Result<String, String> {
        Ok("10.1.0.2".into())
    }

    async fn check_network(&self, _uid: &str) -> Result<(), String> {
        Ok(())
    }

    async fn detach_network(&self, _uid: &str) -> Result<(), String> {
        self.script().calls.push("detach network".into());
        Ok(())
    }

    fn network_attached(&self, _uid: &str) -> bool {
        false
    }

    fn recorded_pod_ip(&self, _uid: &str) -> Option<String> {
        Some("10.1.0.2".into())
    }

    async fn ensure_image(
        &self,
        image: &str,
        _policy: PullPolicy,
        on_pull: Box<dyn FnOnce() + Send>,
    ) -> Result<(Image, Outcome), ImageError> {
        on_pull();
        let mut script = self.script();
        script.calls.push("pull".into());
        if script.failing_pulls > 0 {
            script.failing_pulls -= 1;
            return Err(ImageError::Registry("manifest unknown".into()));
        }
        let image = Image {
            reference: image.into(),
            digest: "sha256:fake".into(),
            config: Default::default(),
            diff_ids: Vec::new(),
            size_bytes: 0,
            layers: Vec::new(),
            config_digest: String::new(),
        };
        Ok((
            image,
            Outcome::Pulled {
                seconds: 0.0,
                bytes: 0,
            },
        ))
    }

    async fn create_container(
        &self,
        _pod: &Pod,
        container: &Container,
        _image: &Image,
        ctx: &PodContext<'_>,
    ) -> Result<Box<dyn CreatedContainer>, RuntimeError> {
        self.script()
            .calls
            .push(format!("create {}", container.name));
        Ok(Box::new(FakeCreated {
            node: self.clone(),
            name: container.name.clone(),
            restart_count: ctx.restart_count,
        }))
    }

    async fn wait(&self, _uid: &str, _container: &str, started: &Started) -> ExitRecord {
        let rx = self.script().waits.remove(&started.pid);
        match rx {
            Some(rx) => rx.await.unwrap_or_default(),
            None => ExitRecord::default(),
        }
    }

    fn signal(&self, pid: i32, signal: Signal) {
        let mut script = self.script();
        let Some(name) = script.running.get(&pid).map(|(n, _)| n.clone()) else {
            return;
        };
        script.calls.push(format!("signal {name} {signal:?}"));
        if signal == Signal::SIGTERM && script.ignore_term.contains(&name) {
            return;
        }
        script.exit(pid, 128 + signal as i32, signal as i32);
    }

    fn remove_container(&self, _uid: &str, container: &str) -> Result<(), RuntimeError> {
        self.script().calls.push(format!("remove {container}"));
        Ok(())
    }

    fn remove_pod(&self, _pod: &Pod) -> Result<(), RuntimeError> {
        self.script().calls.push("remove pod".into());
        Ok(())
    }
}

/// A worker running one pod on the fake node, and what the test sees of it.
struct Harness {
    node: FakeNode,
    k: Arc<Kubelet>,
    desired: watch::Sender<Desired>,
    events: mpsc::Receiver<Event>,
    seen: Vec<Event>,
    msgs: mpsc::Sender<WorkerMsg>,
    worker: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

const UID: &str = "uid-1";

fn pod(restart_policy: &str, grace_seconds: i64) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: "p".into(),
            namespace: "default".into(),
            uid: UID.into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: "127.0.0.1:1/app:1".into(),
                image_pull_policy: "IfNotPresent".into(),
                ..Default::default()
            }],
            restart_policy: restart_policy.into(),
            termination_grace_period_seconds: grace_seconds,
            node_name: "node-1".into(),
            ..Default::default()
        }),
        status: None,
    }
}

impl Harness {
    fn start(pod: Pod, script: impl FnOnce(&mut Script)) -> Harness {
        let node = FakeNode::default();
        script(&mut node.script());
        let dir = tempfile::tempdir().expect("tempdir");
        // Nothing listens there: the one API call a worker makes (finishing a delete)
        // fails at once, as with an apiserver that is down.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let (events, events_rx) = EventRecorder::capture("node-1");
        let k = Arc::new(Kubelet {
            api: ApiClient::over(channel, "token"),
            events,
            node: Arc::new(node.clone()),
            runtime: Arc::new(
                RuntimeService::new(dir.path().join("node"), "node-1".into(), 1 << 20)
                    .expect("runtime"),
            ),
            status: StatusManager::default(),
            service_links: crate::agent::service_links::ServiceLinks::none(),
            config: KubeletConfig {
                backoff_initial: Duration::from_millis(20),
                backoff_max: Duration::from_millis(80),
                backoff_reset: Duration::from_secs(60),
                pod_pids_limit: 0,
                dns: Default::default(),
            },
            network: Arc::new(network::NetworkManager::new(network::NetworkSettings {
                bin_dirs: Vec::new(),
                conf_file: None,
                bridge: "kl-test".into(),
                cluster_cidr: "10.1.0.0/16".into(),
                ipam_dir: dir.path().join("ipam"),
                netns: None,
            })),
        });
        let (desired, desired_rx) = watch::channel(Desired::Pod(Box::new(pod.clone())));
        let worker = PodWorker::new(k.clone(), pod, desired_rx);
        let msgs = worker.msgs_tx.clone();
        Harness {
            node,
            k,
            desired,
            events: events_rx,
            seen: Vec::new(),
            msgs,
            worker: tokio::spawn(worker.run()),
            _dir: dir,
        }
    }

    /// Waits (at most 5 s) for a status the test expects; returns it.
    async fn status_where(&self, what: &str, wanted: impl Fn(&PodStatus) -> bool) -> PodStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.k.status.newest(UID) {
                if wanted(&status) {
                    return status;
                }
                if start.elapsed() > Duration::from_secs(5) {
                    panic!("no status {what}; the last: {status:?}");
                }
            } else if start.elapsed() > Duration::from_secs(5) {
                panic!("no status {what}; none yet");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The reasons of the events recorded so far.
    fn reasons(&mut self) -> Vec<String> {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        self.seen.iter().map(|e| e.reason.clone()).collect()
    }

    /// The pod deleted in the API with this grace period: the worker stops it and ends.
    async fn delete(&self, mut pod: Pod, grace_seconds: i64) {
        let meta = pod.metadata.get_or_insert_with(Default::default);
        meta.deletion_timestamp_ms = now_ms();
        meta.deletion_grace_period_seconds = grace_seconds;
        let _ = self.desired.send(Desired::Pod(Box::new(pod)));
    }
}

fn container(status: &PodStatus) -> ContainerStatus {
    status
        .container_statuses
        .first()
        .cloned()
        .unwrap_or_default()
}

fn waiting_reason(status: &PodStatus) -> String {
    match container(status).state.and_then(|s| s.state) {
        Some(State::Waiting(w)) => w.reason,
        _ => String::new(),
    }
}

fn is_running(status: &PodStatus) -> bool {
    matches!(
        container(status).state.and_then(|s| s.state),
        Some(State::Running(_))
    )
}

/// restartPolicy Always: a container that keeps exiting is restarted each time, with
/// CrashLoopBackOff and a back-off that doubles up to its cap, and its restartCount counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_is_restarted_with_a_growing_back_off() {
    let mut h = Harness::start(pod("Always", 30), |s| {
        s.exits.insert("main".into(), VecDeque::from([1, 1, 1, 1]));
    });
    // Each crash is reported (CrashLoopBackOff, a BackOff event) whether or not a poll
    // catches the short back-off windows; the last one shows in lastState.
    let running = h
        .status_where("running after four crashes", |s| {
            is_running(s) && container(s).restart_count == 4
        })
        .await;
    assert_eq!(running.phase, "Running");
    let last = container(&running).last_state.and_then(|s| s.state);
    assert!(
        matches!(&last, Some(State::Terminated(t)) if t.exit_code == 1),
        "{last:?}"
    );
    let calls = h.node.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == "start main").count(),
        5,
        "{calls:?}"
    );
    assert!(h.reasons().iter().filter(|r| *r == "BackOff").count() >= 4);
    h.worker.abort();
}

/// restartPolicy OnFailure: a failure is retried, a success ends the pod Succeeded; Never:
/// a failure ends the pod Failed with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_retries_until_success_and_never_does_not_restart() {
    let h = Harness::start(pod("OnFailure", 30), |s| {
        s.exits.insert("main".into(), VecDeque::from([2, 0]));
    });
    let done = h
        .status_where("Succeeded", |s| s.phase == "Succeeded")
        .await;
    assert_eq!(container(&done).restart_count, 1);
    h.worker.abort();

    let h = Harness::start(pod("Never", 30), |s| {
        s.exits.insert("main".into(), VecDeque::from([3]));
    });
    let failed = h.status_where("Failed", |s| s.phase == "Failed").await;
    assert_eq!(container(&failed).restart_count, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let starts = h.node.calls().iter().filter(|c| *c == "start main").count();
    assert_eq!(starts, 1, "a Never pod was started again");
    h.worker.abort();
}

/// A failed pull shows ErrImagePull, then ImagePullBackOff, is retried with back-off,
/// and the container starts once the image comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pull_backs_off_and_is_retried() {
    let mut h = Harness::start(pod("Always", 30), |s| s.failing_pulls = 2);
    h.status_where("ErrImagePull", |s| waiting_reason(s) == "ErrImagePull")
        .await;
    h.status_where("running", is_running).await;
    let pulls = h.node.calls().iter().filter(|c| *c == "pull").count();
    assert_eq!(pulls, 3);
    let reasons = h.reasons();
    assert!(reasons.iter().any(|r| r == "Failed"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Pulled"), "{reasons:?}");
    h.worker.abort();
}

/// A failed liveness probe kills the container (SIGTERM) and starts it again, as the
/// kubelet does: a Killing event, restartCount 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_liveness_probe_restarts_the_container() {
    let mut h = Harness::start(pod("Always", 30), |_| {});
    h.status_where("running", is_running).await;
    h.msgs
        .send(WorkerMsg::Probe(
            "main".into(),
            ProbeUpdate::Failed(ProbeKind::Liveness, "connection refused".into()),
        ))
        .await
        .expect("worker alive");
    let again = h
        .status_where("running again", |s| {
            is_running(s) && container(s).restart_count == 1
        })
        .await;
    assert_eq!(container(&again).restart_count, 1);
    assert!(h.node.calls().contains(&"signal main SIGTERM".to_string()));
    assert!(h.reasons().contains(&"Killing".to_string()));
    h.worker.abort();
}

/// A delete stops the container with SIGTERM; one that ignores it gets SIGKILL when the
/// grace period ends. Then the pod's network and files go, and the worker ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_sends_sigterm_then_sigkill_after_the_grace_period() {
    let p = pod("Always", 30);
    let h = Harness::start(p.clone(), |s| {
        s.ignore_term.insert("main".into());
    });
    h.status_where("running", is_running).await;
    let asked = Instant::now();
    h.delete(p, 1).await;
    tokio::time::timeout(Duration::from_secs(5), h.worker)
        .await
        .expect("the worker ended")
        .expect("no panic");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "SIGKILL before the grace period: {took:?}"
    );
    let calls = h.node.calls();
    let tail: Vec<_> = calls.iter().rev().take(5).rev().cloned().collect();
    assert_eq!(
        tail,
        [
            "signal main SIGTERM",
            "signal main SIGKILL",
            "remove main",
            "detach network",
            "remove pod"
        ],
        "{calls:?}"
    );
}

/// An agent started again finds its container still running: the worker follows the
/// same process (no new container), keeps its restartCount, and sees it exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_container_is_re_adopted_not_started_again() {
    let h = Harness::start(pod("OnFailure", 30), |s| {
        s.recovered.insert(
            "main".into(),
            Recovered::Running(Started {
                container_id: "main-42".into(),
                pid: 42,
                started_at_ms: now_ms(),
                shim_pid: 42,
                restart_count: 2,
                image_id: "sha256:fake".into(),
            }),
        );
    });
    let adopted = h.status_where("running", is_running).await;
    assert_eq!(container(&adopted).restart_count, 2);
    h.node.script().exit(42, 0, 0);
    let done = h
        .status_where("Succeeded", |s| s.phase == "Succeeded")
        .await;
    assert_eq!(container(&done).restart_count, 2);
    let calls = h.node.calls();
    assert!(!calls.iter().any(|c| c.starts_with("create")), "{calls:?}");
    h.worker.abort();
}
