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
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        let result = match tokio::time::timeout(timeout, self.check(probe, timeout)).await {
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

    /// One try; `timeout` (the probe's) also bounds the network checks' own thread.
    async fn check(&self, probe: &Probe, timeout: Duration) -> Result<(), String> {
        match &probe.handler {
            Some(Handler::Exec(e)) => self.exec(&e.command).await,
            Some(Handler::HttpGet(h)) => {
                let (host, port, path) = (h.host.clone(), h.port, h.path.clone());
                self.in_pod_network(move || http_get(&host, port, &path, timeout))
                    .await
            }
            Some(Handler::TcpSocket(t)) => {
                let (host, port) = (t.host.clone(), t.port);
                self.in_pod_network(move || connect(&host, port, timeout).map(drop))
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

/// The longest status line the HTTP probe reads before giving up on the answer.
const MAX_STATUS_LINE: usize = 4096;

/// What is left of `timeout` from `start`, or an error once it is spent.
fn remaining(start: Instant, timeout: Duration) -> Result<Duration, String> {
    timeout
        .checked_sub(start.elapsed())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("timeout: no answer within {}s", timeout.as_secs()))
}

/// A TCP connection to the pod (`host` empty: the pod's own loopback).
fn connect(host: &str, port: i32, timeout: Duration) -> Result<TcpStream, String> {
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let addr: std::net::SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|_| format!("bad address {host}:{port}"))?;
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: {e}"))
}

/// An HTTP GET as the kubelet's prober does it: 200-399 is success. The status line may
/// arrive in pieces; it is read until its end, within `timeout` and `MAX_STATUS_LINE`.
fn http_get(host: &str, port: i32, path: &str, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut stream = connect(host, port, timeout)?;
    let path = if path.is_empty() { "/" } else { path };
    let host_header = if host.is_empty() { "127.0.0.1" } else { host };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}:{port}\r\nUser-Agent: kubelab-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(remaining(start, timeout)?))
        .map_err(|e| format!("sending the request: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending the request: {e}"))?;
    let line = read_status_line(&mut stream, start, timeout)?;
    let code = status_code(&line)?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// The answer's first line (without its `\r\n`), read until complete.
fn read_status_line(
    stream: &mut TcpStream,
    start: Instant,
    timeout: Duration,
) -> Result<String, String> {
    let mut line: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        if line.len() >= MAX_STATUS_LINE {
            return Err(format!(
                "not an HTTP answer: no status line in the first {MAX_STATUS_LINE} bytes"
            ));
        }
        stream
            .set_read_timeout(Some(remaining(start, timeout)?))
            .map_err(|e| format!("reading the answer: {e}"))?;
        let want = chunk.len().min(MAX_STATUS_LINE - line.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => {
                return Err(format!(
                    "the connection closed before the status line was complete: {:?}",
                    String::from_utf8_lossy(&line)
                ))
            }
            Ok(n) => line.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "timeout: no complete status line within {}s",
                    timeout.as_secs()
                ))
            }
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
}

/// The code of a status line `HTTP/1.x CODE [REASON]`.
fn status_code(line: &str) -> Result<u16, String> {
    let bad = || format!("not an HTTP answer: {line:?}");
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    let versioned = version
        .strip_prefix("HTTP/1.")
        .is_some_and(|minor| minor.len() == 1 && minor.bytes().all(|b| b.is_ascii_digit()));
    if !versioned || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    code.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-connection server on loopback that reads the request, then plays `script`:
    /// each piece written and flushed, with the pause after it. Returns its port.
    fn server(script: Vec<(Vec<u8>, Duration)>) -> i32 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 256];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            for (piece, pause) in script {
                if conn.write_all(&piece).and_then(|()| conn.flush()).is_err() {
                    return;
                }
                std::thread::sleep(pause);
            }
        });
        i32::from(port)
    }

    const NO_PAUSE: Duration = Duration::ZERO;

    #[test]
    fn a_status_line_in_two_segments_is_a_pass() {
        let port = server(vec![
            (b"HTTP/1.1 2".to_vec(), Duration::from_millis(300)),
            (b"00 OK\r\n\r\n".to_vec(), NO_PAUSE),
        ]);
        assert_eq!(http_get("", port, "/", Duration::from_secs(5)), Ok(()));
    }

    #[test]
    fn a_status_line_that_never_completes_fails_at_the_timeout() {
        let port = server(vec![(b"HTTP/1.1 200 OK".to_vec(), Duration::from_secs(10))]);
        let start = Instant::now();
        let err = http_get("", port, "/", Duration::from_secs(1)).expect_err("passed");
        assert!(err.contains("timeout"), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn codes_200_to_399_pass_and_others_fail() {
        let get = |answer: &[u8]| {
            let port = server(vec![(answer.to_vec(), NO_PAUSE)]);
            http_get("", port, "/healthz", Duration::from_secs(5))
        };
        assert_eq!(get(b"HTTP/1.1 204 No Content\r\n\r\n"), Ok(()));
        assert_eq!(get(b"HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n"), Ok(()));
        assert_eq!(get(b"HTTP/1.1 399\n\n"), Ok(()));
        let err = get(b"HTTP/1.1 500 Internal Server Error\r\n\r\n").expect_err("passed");
        assert!(err.contains("statuscode: 500"), "{err}");
        let err = get(b"HTTP/1.1 199 Odd\r\n\r\n").expect_err("passed");
        assert!(err.contains("statuscode: 199"), "{err}");
    }

    #[test]
    fn what_is_not_an_http_status_line_fails() {
        let get = |answer: &[u8]| {
            let port = server(vec![(answer.to_vec(), NO_PAUSE)]);
            http_get("", port, "/", Duration::from_secs(5)).expect_err("passed")
        };
        assert!(get(b"SSH-2.0-OpenSSH\r\n").contains("not an HTTP answer"));
        assert!(get(b"HTTP/1.1 2000 OK\r\n").contains("not an HTTP answer"));
        assert!(get(b"HTTP/1.1 200").contains("closed before the status line"));
        assert!(get(&[b'H'; MAX_STATUS_LINE + 10]).contains("no status line"));
    }

    #[test]
    fn status_codes_are_read_from_well_formed_lines_only() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(status_code("HTTP/1.0 404"), Ok(404));
        assert!(status_code("HTTP/2 200").is_err());
        assert!(status_code("HTTP/1.1 +20").is_err());
        assert!(status_code("HTTP/1.1  200").is_err());
        assert!(status_code("").is_err());
    }
}
