//! The prober: startup, liveness and readiness probes of one running container.
//!
//! As in the kubelet, a container's probes run on their own timer, one task per container
//! while it runs: the startup probe first (nothing else runs until it passes), then
//! liveness and readiness side by side. Each result counts towards `successThreshold` or
//! `failureThreshold`; only a crossing is reported to the pod worker (`ProbeUpdate`), which
//! decides what happens (mark ready, kill and restart). Every failed try is an `Unhealthy`
//! event, as in Kubernetes. Probes of kind `httpGet` and `tcpSocket` connect inside the
//! pod's network namespace; `exec` probes run through the exec helper.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubelab_proto::v1::probe::Handler;
use kubelab_proto::v1::{Container, Pod, Probe};
use tokio::sync::mpsc;

use super::pod_worker::WorkerMsg;
use super::Kubelet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// What crossed a threshold.
#[derive(Debug)]
pub enum ProbeUpdate {
    /// The startup probe passed (or there is none): liveness and readiness begin.
    Started,
    /// Readiness changed.
    Ready(bool),
    /// Liveness or startup failed `failureThreshold` times: the container must be restarted.
    Failed(ProbeKind, String),
}

/// Starts the probes of a container that has just started; the task ends when aborted
/// (the container stopped) or when the worker is gone.
pub fn start(
    k: Arc<Kubelet>,
    pod: Pod,
    container: Container,
    netns: Option<PathBuf>,
    worker: mpsc::Sender<WorkerMsg>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let prober = Prober {
            k,
            pod,
            container,
            netns,
            worker,
        };
        prober.run().await
    })
}

struct Prober {
    k: Arc<Kubelet>,
    pod: Pod,
    container: Container,
    /// The pod's network namespace (`None` for a hostNetwork pod: the host's is the pod's).
    netns: Option<PathBuf>,
    worker: mpsc::Sender<WorkerMsg>,
}

/// Consecutive results of one probe, and where they stand against the thresholds.
struct Counter {
    probe: Probe,
    successes: i32,
    failures: i32,
    next: tokio::time::Instant,
}

impl Counter {
    fn new(probe: &Probe, now: tokio::time::Instant) -> Counter {
        Counter {
            probe: probe.clone(),
            successes: 0,
            failures: 0,
            next: tokio::time::Instant::from_std(crate::deadline::after(
                now.into_std(),
                crate::deadline::seconds(probe.initial_delay_seconds),
            )),
        }
    }

    /// Records one result; returns the new verdict when a threshold was just crossed.
    fn record(&mut self, ok: bool) -> Option<bool> {
        let period = crate::deadline::seconds(self.probe.period_seconds.max(1));
        self.next =
            tokio::time::Instant::from_std(crate::deadline::after(self.next.into_std(), period));
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes == self.probe.success_threshold.max(1)).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures == self.probe.failure_threshold.max(1)).then_some(false)
        }
    }
}

impl Prober {
    async fn run(self) {
        let now = tokio::time::Instant::now();
        let c = &self.container;
        if let Some(startup) = &c.startup_probe {
            let mut counter = Counter::new(startup, now);
            loop {
                tokio::time::sleep_until(counter.next).await;
                let (ok, message) = self.try_once(ProbeKind::Startup, &counter.probe).await;
                match counter.record(ok) {
                    Some(true) => break,
                    Some(false) => {
                        self.send(ProbeUpdate::Failed(ProbeKind::Startup, message))
                            .await;
                        return;
                    }
                    None => {}
                }
            }
        }
        self.send(ProbeUpdate::Started).await;
        let now = tokio::time::Instant::now();
        let mut liveness = c.liveness_probe.as_ref().map(|p| Counter::new(p, now));
        let mut readiness = c.readiness_probe.as_ref().map(|p| Counter::new(p, now));
        // Without a readiness probe a started container is ready at once.
        if readiness.is_none() {
            self.send(ProbeUpdate::Ready(true)).await;
        }
        loop {
            let next = [&liveness, &readiness]
                .into_iter()
                .flatten()
                .map(|c| c.next)
                .min();
            let Some(next) = next else { return };
            tokio::time::sleep_until(next).await;
            let now = tokio::time::Instant::now();
            if let Some(counter) = liveness.as_mut().filter(|c| c.next <= now) {
                let (ok, message) = self.try_once(ProbeKind::Liveness, &counter.probe).await;
                if counter.record(ok) == Some(false) {
                    self.send(ProbeUpdate::Failed(ProbeKind::Liveness, message))
                        .await;
                    return;
                }
            }
            if let Some(counter) = readiness.as_mut().filter(|c| c.next <= now) {
                let (ok, _) = self.try_once(ProbeKind::Readiness, &counter.probe).await;
                if let Some(ready) = counter.record(ok) {
                    self.send(ProbeUpdate::Ready(ready)).await;
                }
            }
        }
    }

    async fn send(&self, update: ProbeUpdate) {
        let _ = self
            .worker
            .send(WorkerMsg::Probe(self.container.name.clone(), update))
            .await;
    }

    /// Runs the probe once; a failure is reported as an `Unhealthy` event.
    async fn try_once(&self, kind: ProbeKind, probe: &Probe) -> (bool, String) {
        let timeout = crate::deadline::seconds(probe.timeout_seconds.max(1));
        let result = match tokio::time::timeout(timeout, self.check(probe)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timeout: no answer within {}s", timeout.as_secs())),
        };
        match result {
            Ok(()) => (true, String::new()),
            Err(e) => {
                let message = format!("{} probe failed: {e}", kind.name());
                tracing::debug!(container = %self.container.name, %message);
                self.k
                    .events
                    .pod_event(&self.pod, "Warning", "Unhealthy", message.clone());
                (false, message)
            }
        }
    }

    async fn check(&self, probe: &Probe) -> Result<(), String> {
        match &probe.handler {
            Some(Handler::Exec(e)) => self.exec(&e.command).await,
            Some(Handler::HttpGet(h)) => {
                let (host, port, path) = (h.host.clone(), h.port, h.path.clone());
                self.in_pod_network(move || http_get(&host, port, &path))
                    .await
            }
            Some(Handler::TcpSocket(t)) => {
                let (host, port) = (t.host.clone(), t.port);
                self.in_pod_network(move || connect(&host, port).map(drop))
                    .await
            }
            None => Err("the probe has no handler".into()),
        }
    }

    async fn exec(&self, command: &[String]) -> Result<(), String> {
        let uid = self
            .pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let child = self
            .k
            .runtime
            .exec(&uid, &self.container.name, command)
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        if out.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Err(format!(
            "command {command:?} exited with {}: {}",
            out.status.code().unwrap_or(-1),
            text.trim()
        ))
    }

    /// Runs a blocking network check on a thread of its own that has joined the pod's
    /// network namespace (`setns` changes only the calling thread; the thread then ends).
    async fn in_pod_network(
        &self,
        check: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) -> Result<(), String> {
        let netns = self.netns.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let joined = match &netns {
                None => Ok(()),
                Some(netns) => std::fs::File::open(netns)
                    .map_err(|e| format!("{}: {e}", netns.display()))
                    .and_then(|f| {
                        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| format!("joining the pod's network: {e}"))
                    }),
            };
            let _ = tx.send(joined.and_then(|()| check()));
        });
        rx.await
            .unwrap_or_else(|_| Err("the probe thread failed".into()))
    }
}

/// A TCP connection to the pod (`host` empty: the pod's own loopback).
fn connect(host: &str, port: i32) -> Result<std::net::TcpStream, String> {
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let addr: std::net::SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|_| format!("bad address {host}:{port}"))?;
    // The caller's timeout bounds the whole probe; this one keeps the thread from hanging.
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("dial tcp {addr}: {e}"))
}

/// An HTTP GET as the kubelet's prober does it: 200-399 is success.
fn http_get(host: &str, port: i32, path: &str) -> Result<(), String> {
    let mut stream = connect(host, port)?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let path = if path.is_empty() { "/" } else { path };
    let host_header = if host.is_empty() { "127.0.0.1" } else { host };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}:{port}\r\nUser-Agent: kubelab-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}
