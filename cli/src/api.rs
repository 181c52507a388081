//! The connection to the apiserver, and gRPC errors turned into one-line messages.

use std::time::Duration;

use anyhow::Context;
use kubelab_proto::v1::events_client::EventsClient;
use kubelab_proto::v1::namespaces_client::NamespacesClient;
use kubelab_proto::v1::nodes_client::NodesClient;
use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_proto::v1::{ObjectKey, Pod, PodWatchEvent, WatchRequest};
use std::path::PathBuf;

use kubelab_proto::credential::{AuthChannel, Bearer, Credential};
use tonic::service::interceptor::InterceptedService;

/// Which apiserver, with which credential: `--kubeconfig` (or KUBELAB_CONFIG, or
/// `~/.kubelab/config`), and `--server` to point it elsewhere.
pub struct Connection {
    pub kubeconfig: PathBuf,
    pub server: Option<String>,
}

pub struct Api {
    pub server: String,
    pub pods: PodsClient<AuthChannel>,
    pub nodes: NodesClient<AuthChannel>,
    pub events: EventsClient<AuthChannel>,
    pub namespaces: NamespacesClient<AuthChannel>,
}

impl Api {
    /// Connects now, so that a lab that is not running is reported before anything else.
    pub async fn connect(to: &Connection) -> anyhow::Result<Api> {
        let credential = Credential::load(&to.kubeconfig)
            .map_err(|e| anyhow::anyhow!("{e} (the apiserver writes it when it starts: run `make demo` or `kubelabd up`, or choose one with --kubeconfig / KUBELAB_CONFIG)"))?
            .with_server(to.server.as_deref());
        let server = credential.server.clone();
        let endpoint = credential
            .endpoint()
            .with_context(|| format!("invalid server {server:?} (expected HOST:PORT)"))?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach the apiserver at {server}: is the lab running? Start it with `make demo` or `kubelabd up`, or point --server (KUBELAB_SERVER) at it ({})",
                    kubelab_proto::error_chain(&e)
                )
            })?;
        let channel = InterceptedService::new(channel, Bearer::new(&credential.token));
        Ok(Api {
            server,
            pods: PodsClient::new(channel.clone()),
            nodes: NodesClient::new(channel.clone()),
            events: EventsClient::new(channel.clone()),
            namespaces: NamespacesClient::new(channel),
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

    /// The pods of a namespace (all namespaces when empty).
    pub async fn list_pods(&mut self, namespace: &str) -> anyhow::Result<Vec<Pod>> {
        let request = kubelab_proto::v1::ListPodsRequest {
            namespace: namespace.into(),
            ..Default::default()
        };
        let list = self.pods.list(request).await.map_err(self.error())?;
        Ok(list.into_inner().items)
    }

    /// One node, by name.
    pub async fn get_node(&mut self, name: &str) -> anyhow::Result<kubelab_proto::v1::Node> {
        let key = ObjectKey {
            namespace: String::new(),
            name: name.into(),
        };
        let node = self.nodes.get(key).await.map_err(self.error())?;
        Ok(node.into_inner())
    }

    /// A pod and its events, oldest first (what `describe` and `trace` show).
    pub async fn pod_and_events(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<(Pod, Vec<kubelab_proto::v1::Event>)> {
        let pod = self.get_pod(namespace, name).await?;
        let meta = pod.metadata.clone().unwrap_or_default();
        let request = kubelab_proto::v1::ListEventsRequest {
            namespace: meta.namespace,
            involved_uid: meta.uid,
        };
        let events = self.events.list(request).await.map_err(self.error())?;
        Ok((pod, events.into_inner().items))
    }

    /// The events of the object with this uid (every event of the namespace for "").
    pub async fn events_of(
        &mut self,
        namespace: &str,
        uid: &str,
    ) -> anyhow::Result<Vec<kubelab_proto::v1::Event>> {
        let request = kubelab_proto::v1::ListEventsRequest {
            namespace: namespace.into(),
            involved_uid: uid.into(),
        };
        let events = self.events.list(request).await.map_err(self.error())?;
        Ok(events.into_inner().items)
    }

    /// The pods bound to a node (the field selector spec.nodeName).
    pub async fn pods_on_node(&mut self, node: &str) -> anyhow::Result<Vec<Pod>> {
        let request = kubelab_proto::v1::ListPodsRequest {
            node_name: node.into(),
            ..Default::default()
        };
        let pods = self.pods.list(request).await.map_err(self.error())?;
        Ok(pods.into_inner().items)
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
            ..Default::default()
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
