//! The connection to the apiserver, and gRPC errors turned into one-line messages.

use std::time::Duration;

use anyhow::Context;
use kubelab_proto::v1::events_client::EventsClient;
use kubelab_proto::v1::nodes_client::NodesClient;
use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_proto::v1::{ObjectKey, Pod, PodWatchEvent, WatchRequest};
use tonic::transport::Channel;

pub struct Api {
    pub server: String,
    pub pods: PodsClient<Channel>,
    pub nodes: NodesClient<Channel>,
    pub events: EventsClient<Channel>,
}

impl Api {
    /// Connects now, so that a lab that is not running is reported before anything else.
    pub async fn connect(server: &str) -> anyhow::Result<Api> {
        let url = if server.contains("://") {
            server.to_string()
        } else {
            format!("http://{server}")
        };
        let channel = tonic::transport::Endpoint::from_shared(url)
            .with_context(|| format!("invalid --server {server:?} (expected HOST:PORT)"))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot reach the apiserver at {server}: is the lab running? Start it with `make demo` or `kubelabd up`, or point --server (KUBELAB_SERVER) at it"
                )
            })?;
        Ok(Api {
            server: server.to_string(),
            pods: PodsClient::new(channel.clone()),
            nodes: NodesClient::new(channel.clone()),
            events: EventsClient::new(channel),
        })
    }

    /// One pod, by namespace and name.
    pub async fn get_pod(&mut self, namespace: &str, name: &str) -> anyhow::Result<Pod> {
        let key = ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        };
        let pod = self.pods.get(key).await.map_err(self.error())?;
        Ok(pod.into_inner())
    }

    /// Every change of the namespace's pods after `from_revision`.
    pub async fn watch_pods(
        &mut self,
        namespace: &str,
        from_revision: u64,
    ) -> anyhow::Result<tonic::Streaming<PodWatchEvent>> {
        let request = WatchRequest {
            from_revision,
            namespace: namespace.into(),
            node_name: String::new(),
        };
        let stream = self.pods.watch(request).await.map_err(self.error())?;
        Ok(stream.into_inner())
    }

    /// A gRPC error as one line: the server's own message, or what to do when it went away.
    pub fn error(&self) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
        move |s| match s.code() {
            tonic::Code::Unavailable if s.message().contains("agent") => {
                anyhow::anyhow!("{}", s.message())
            }
            tonic::Code::Unavailable => anyhow::anyhow!(
                "the apiserver at {} stopped answering: {}",
                self.server,
                s.message()
            ),
            // tonic's size limit: say what it means for the user.
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                if s.message().contains("too large") =>
            {
                anyhow::anyhow!(
                    "the request is too large for the apiserver ({}): keep pods under 1 MiB",
                    s.message().trim_start_matches("Error, ")
                )
            }
            _ => anyhow::anyhow!("{}", s.message()),
        }
    }
}
