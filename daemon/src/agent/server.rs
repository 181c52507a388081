//! The agent's own gRPC server: container logs and exec, on this node only.
//!
//! Only the apiserver calls it (it proxies `kubelab logs` and `kubelab exec`, as
//! kube-apiserver proxies to the kubelet). Logs are read from files (`logs.rs`); exec
//! runs a command in a running container through the exec helper. It never changes a
//! pod's spec or status.

use std::path::PathBuf;
use std::sync::Arc;

use kubelab_proto::v1::agent_server::Agent;
use kubelab_proto::v1::{ExecOutput, ExecRequest, LogChunk, LogsRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::logs::{self, LogOptions, LogsError};
use super::runtime::RuntimeService;

pub struct AgentService {
    pub runtime: Arc<RuntimeService>,
    /// What the apiserver presents; no one else may read logs or run commands here.
    pub peer_token: String,
}

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

impl AgentService {
    fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(token) if !self.peer_token.is_empty() && token == self.peer_token => Ok(()),
            _ => Err(Status::unauthenticated(
                "only the apiserver may call an agent (kubelab logs and exec go through it)",
            )),
        }
    }

    /// The pod's log directory and uid (the newest pod of that name on this node).
    fn find_pod(&self, namespace: &str, name: &str) -> Result<(PathBuf, String), Status> {
        let dir = self.runtime.find_pod_logs(namespace, name).ok_or_else(|| {
            Status::not_found(format!(
                "pod {namespace}/{name} has not started on this node yet"
            ))
        })?;
        let uid = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit('_').next())
            .unwrap_or_default()
            .to_string();
        Ok((dir, uid))
    }
}

/// The container name becomes a file name: only a DNS label may (no `/`, no `..`).
fn check_container_name(name: &str) -> Result<(), Status> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid container name {name:?}"
        )))
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    type LogsStream = Stream<LogChunk>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        self.authenticate(&request)?;
        let r = request.into_inner();
        check_container_name(&r.container)?;
        let (dir, uid) = self.find_pod(&r.namespace, &r.name)?;
        let path =
            logs::select_file(&dir.join(&r.container), &r.container, r.previous).map_err(|e| {
                match e {
                    LogsError::Io(..) => Status::internal(e.to_string()),
                    _ => Status::not_found(format!("pod {}/{}: {e}", r.namespace, r.name)),
                }
            })?;
        let options = LogOptions {
            tail_lines: r.tail_lines,
            timestamps: r.timestamps,
            // A previous run's file is finished: nothing to follow.
            follow: r.follow && !r.previous,
            since_ms: r.since_time_ms,
        };
        let (runtime, container) = (self.runtime.clone(), r.container.clone());
        let (lines_tx, mut lines_rx) = mpsc::channel::<Vec<u8>>(8);
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let run = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1);
            let still_writing = move || runtime.is_running(&uid, &container, run);
            let reader = tokio::spawn(logs::stream(path, options, still_writing, lines_tx));
            while let Some(data) = lines_rx.recv().await {
                if tx.send(Ok(LogChunk { data })).await.is_err() {
                    reader.abort();
                    return;
                }
            }
            if let Ok(Err(e)) = reader.await {
                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type ExecStream = Stream<ExecOutput>;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        self.authenticate(&request)?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("exec: no request was sent"))?;
        check_container_name(&first.container)?;
        let (_, uid) = self.find_pod(&first.namespace, &first.name)?;
        if first.tty {
            return self.exec_on_terminal(&uid, first, inbound);
        }
        let mut child = self
            .runtime
            .exec(&uid, &first.container, &first.command)
            .map_err(|e| {
                Status::failed_precondition(format!("pod {}/{}: {e}", first.namespace, first.name))
            })?;
        tracing::info!(pod = %first.name, container = %first.container, command = ?first.command, "exec");
        let (tx, rx) = mpsc::channel(16);
        // stdin: from the stream to the command, closed at the client's end of input.
        if let Some(mut stdin) = child.stdin.take() {
            let initial = first.stdin;
            let eof = first.stdin_eof;
            tokio::spawn(async move {
                if stdin.write_all(&initial).await.is_err() || eof {
                    return;
                }
                while let Ok(Some(m)) = inbound.message().await {
                    if stdin.write_all(&m.stdin).await.is_err() || m.stdin_eof {
                        return;
                    }
                }
            });
        }
        let pump = |mut from: Box<dyn tokio::io::AsyncRead + Unpin + Send>, is_err: bool| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = from.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let data = buf[..n].to_vec();
                    let out = if is_err {
                        ExecOutput {
                            stderr: data,
                            ..Default::default()
                        }
                    } else {
                        ExecOutput {
                            stdout: data,
                            ..Default::default()
                        }
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        break;
                    }
                }
            })
        };
        let stdout = child.stdout.take().map(|s| pump(Box::new(s), false));
        let stderr = child.stderr.take().map(|s| pump(Box::new(s), true));
        tokio::spawn(async move {
            // All output first, then the exit code as the last message.
            for pump in [stdout, stderr].into_iter().flatten() {
                let _ = pump.await;
            }
            send_exit_code(&tx, &mut child).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

impl AgentService {
    /// `exec -t`: the command on a terminal; its master side is read for output and
    /// written with input, and resized as the user's window is.
    fn exec_on_terminal(
        &self,
        uid: &str,
        first: ExecRequest,
        mut inbound: tonic::Streaming<ExecRequest>,
    ) -> Result<Response<Stream<ExecOutput>>, Status> {
        use std::io::{Read, Write};
        let (mut child, console) = self
            .runtime
            .exec_tty(uid, &first.container, &first.command)
            .map_err(|e| {
                Status::failed_precondition(format!("pod {}/{}: {e}", first.namespace, first.name))
            })?;
        tracing::info!(pod = %first.name, container = %first.container, command = ?first.command, "exec on a terminal");
        let (tx, rx) = mpsc::channel(16);
        let size = first.resize;
        tokio::spawn(async move {
            let master = match tokio::task::spawn_blocking(move || console.receive()).await {
                Ok(Ok(master)) => master,
                Ok(Err(e)) => {
                    // The helper says why on its stderr; the agent adds what it saw.
                    let mut why = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ =
                            tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut why).await;
                    }
                    let _ = tx
                        .send(Err(Status::failed_precondition(
                            format!("{e} {why}").trim().to_string(),
                        )))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                    return;
                }
            };
            if let Some(size) = size {
                crate::agent::runtime::tty::resize(&master, clamp(size.width), clamp(size.height));
            }
            let (Ok(reader), Ok(writer)) = (master.try_clone(), master.try_clone()) else {
                let _ = tx
                    .send(Err(Status::internal("cannot share the terminal")))
                    .await;
                return;
            };
            // Output: blocking reads on a thread of their own, until the terminal closes
            // (EIO once the command and its children are gone).
            let out = tx.clone();
            let reading = tokio::task::spawn_blocking(move || {
                let mut file = std::fs::File::from(reader);
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = file.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let chunk = ExecOutput {
                        stdout: buf[..n].to_vec(),
                        ..Default::default()
                    };
                    if out.blocking_send(Ok(chunk)).is_err() {
                        break;
                    }
                }
            });
            // Input and resizes, as they come; writes block, so a thread does them.
            let (input, typed) = std::sync::mpsc::channel::<Vec<u8>>();
            let mut terminal = std::fs::File::from(writer);
            std::thread::spawn(move || {
                for data in typed {
                    if terminal.write_all(&data).is_err() {
                        break;
                    }
                }
            });
            let resizer = master.try_clone();
            let typing = tokio::spawn(async move {
                if !first.stdin.is_empty() {
                    let _ = input.send(first.stdin);
                }
                while let Ok(Some(m)) = inbound.message().await {
                    if let (Some(size), Ok(fd)) = (m.resize, resizer.as_ref()) {
                        crate::agent::runtime::tty::resize(
                            fd,
                            clamp(size.width),
                            clamp(size.height),
                        );
                    }
                    if !m.stdin.is_empty() && input.send(m.stdin).is_err() {
                        break;
                    }
                }
            });
            let exited = child.wait().await;
            drop(master);
            let _ = reading.await;
            typing.abort();
            send_exit(&tx, exited).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// A terminal dimension from a client, in the 16 bits the kernel keeps.
fn clamp(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// The exec's last message: the command's exit code (255 when it cannot be told).
async fn send_exit(
    tx: &mpsc::Sender<Result<ExecOutput, Status>>,
    exited: std::io::Result<std::process::ExitStatus>,
) {
    let code = exited.ok().and_then(|s| s.code()).unwrap_or(255);
    let _ = tx
        .send(Ok(ExecOutput {
            exit_code: Some(code),
            ..Default::default()
        }))
        .await;
}

/// Waits for the helper and sends its exit code.
async fn send_exit_code(
    tx: &mpsc::Sender<Result<ExecOutput, Status>>,
    child: &mut tokio::process::Child,
) {
    send_exit(tx, child.wait().await).await;
}
