//! The agent's own gRPC server: container logs, read from this node's log files.
//!
//! Only the apiserver calls it (it proxies `kubelab logs`, as kube-apiserver proxies to the
//! kubelet). It reads files; it never changes a pod.

use std::sync::Arc;

use kubelab_proto::v1::agent_server::Agent;
use kubelab_proto::v1::{LogChunk, LogsRequest};
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status};

use super::runtime::RuntimeService;

pub struct AgentService {
    pub runtime: Arc<RuntimeService>,
}

#[tonic::async_trait]
impl Agent for AgentService {
    type LogsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogChunk, Status>> + Send>>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = request.into_inner();
        let dir = self
            .runtime
            .find_pod_logs(&r.namespace, &r.name)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "pod {}/{} has no logs on this node (has it started?)",
                    r.namespace, r.name
                ))
            })?;
        // The container name becomes a file name: only a DNS label may (no `/`, no `..`).
        let valid = !r.container.is_empty()
            && r.container
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(Status::invalid_argument(format!(
                "invalid container name {:?}",
                r.container
            )));
        }
        let path = dir.join(format!("{}.log", r.container));
        let mut file = tokio::fs::File::open(&path).await.map_err(|_| {
            Status::not_found(format!(
                "container {:?} of pod {}/{} has not started yet",
                r.container, r.namespace, r.name
            ))
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx
                            .send(Ok(LogChunk {
                                data: buf[..n].to_vec(),
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!(
                                "reading {}: {e}",
                                path.display()
                            ))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
