//! The apiserver: the cluster's only source of truth, served over HTTPS as the
//! Kubernetes REST API and as kubelab's gRPC API, on one port.
//!
//! Owns the store (sled) and is the only component that touches it. It validates and
//! defaults what users send, hands out revisions, and streams changes to watchers. It
//! never schedules, pulls or runs anything: the scheduler and the agents are its clients.
//!
//! Layout: `store` (sled, revisions, watch feed) and its `flusher` (group commit);
//! `registry` (the verbs every resource offers) and the resources `pods`, `nodes`,
//! `namespaces`, `events` (each one's rules), and `workloads` (apps/v1, kept in
//! Kubernetes' own shape by `native`); two ways in, `grpc` and `rest`, both
//! calling the registries, over one listener (`serve`); `validation`, `pod_security`
//! (Pod Security admission) and `selector` (pure checks); `agent_proxy` (logs and exec
//! to agents); `node_lifecycle` (NotReady nodes), `node_ipam` (pod CIDRs), `auth`.

mod agent_proxy;
pub mod auth;
mod events;
mod flusher;
mod grpc;
mod namespaces;
mod native;
pub mod node_ipam;
mod node_lifecycle;
mod nodes;
pub mod pod_security;
mod pods;
mod registry;
pub mod rest;
pub mod selector;
mod serve;
pub mod services;
mod store;
mod validation;
pub mod workloads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kubelab_proto::v1::events_server::EventsServer;
use kubelab_proto::v1::namespaces_server::NamespacesServer;
use kubelab_proto::v1::nodes_server::NodesServer;
use kubelab_proto::v1::pods_server::PodsServer;
use tokio::net::TcpListener;

use self::grpc::Grpc;

pub use store::Store;

/// Everything that can go wrong in an API call; each maps to one gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("invalid {0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("resource version {0} is too old (history starts after {1}): expired, relist")]
    Expired(u64, u64),
    #[error("Too large resource version: {0}, current: {1} (relist)")]
    TooLarge(u64, u64),
    #[error("this watch fell behind the changes after revision {0} and was closed: relist")]
    WatchTooSlow(u64),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
    /// Worded whole by whoever refuses (`pods "x" is forbidden: ...`, as Kubernetes says it).
    #[error("{0}")]
    Forbidden(String),
    /// No credential, or one the cluster does not know.
    #[error("{0}")]
    Unauthorized(String),
    /// A request that cannot be read (a bad selector, a body that is not JSON...).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
}

impl ApiError {
    /// An error an agent returned, read back (its code decides the kind).
    pub fn from_status(status: tonic::Status) -> ApiError {
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::NotFound => ApiError::BadRequest(message),
            tonic::Code::InvalidArgument => ApiError::BadRequest(message),
            tonic::Code::PermissionDenied => ApiError::Forbidden(message),
            tonic::Code::Unauthenticated => ApiError::Unauthorized(message),
            tonic::Code::FailedPrecondition => ApiError::FailedPrecondition(message),
            tonic::Code::Unavailable => ApiError::Unavailable(message),
            _ => ApiError::Internal(message),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        match e {
            ApiError::NotFound(_) => tonic::Status::not_found(message),
            ApiError::AlreadyExists(_) => tonic::Status::already_exists(message),
            ApiError::Invalid(_) | ApiError::BadRequest(_) => {
                tonic::Status::invalid_argument(message)
            }
            ApiError::Unauthorized(_) => tonic::Status::unauthenticated(message),
            ApiError::MethodNotAllowed(_) | ApiError::UnsupportedMediaType(_) => {
                tonic::Status::unimplemented(message)
            }
            ApiError::Forbidden(_) => tonic::Status::permission_denied(message),
            ApiError::Conflict(_) => tonic::Status::aborted(message),
            ApiError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            ApiError::Expired(..) | ApiError::TooLarge(..) | ApiError::WatchTooSlow(_) => {
                tonic::Status::out_of_range(message)
            }
            ApiError::Unavailable(_) => tonic::Status::unavailable(message),
            ApiError::Storage(_) | ApiError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ApiserverArgs {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:6443", env = "KUBELAB_LISTEN")]
    pub listen: SocketAddr,
    /// Directory of the sled database.
    #[arg(long, default_value = "/var/lib/kubelab/apiserver")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The size of each node's range (a /24 holds 254 pods).
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// How many past changes a watch can resume from; a client further behind is told
    /// its resource version expired, and relists.
    #[arg(long, default_value_t = store::HISTORY_WINDOW)]
    pub watch_history: u64,
    /// How long events are kept (kube-apiserver's --event-ttl).
    #[arg(long, default_value = "1h", value_parser = kubelab_proto::duration::parse)]
    pub event_ttl: std::time::Duration,
    /// REST requests served at once (watches, log follows and exec not counted); one
    /// more gets 429 TooManyRequests and retries (kube-apiserver's flag; 0: no limit).
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Make the CA, certificate, tokens and credentials (as every start does when they are
    /// missing), say where they are, and exit without serving.
    #[arg(long)]
    pub init: bool,
}

/// What the apiserver decides for the whole cluster; `kubelabd up` takes the same flags
/// and hands them on (`forwarded`).
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// The pods' addresses; each node gets a range of it when it registers. Two labs on
    /// one host need different ones.
    #[arg(long, default_value = "10.88.0.0/16")]
    pub cluster_cidr: node_ipam::Cidr,
    /// The Pod Security level enforced (and warned about) in namespaces without the
    /// pod-security.kubernetes.io/enforce (or warn) label: privileged (anything goes),
    /// baseline (no privileged containers, host namespaces, hostPath, added capabilities
    /// ...) or restricted (baseline, and non-root, no escalation, drop ALL, seccomp).
    #[arg(long, value_enum, default_value_t = pod_security::Level::Baseline)]
    pub pod_security_default: pod_security::Level,
    /// Where to write the admin credential the CLI reads (default: ~/.kubelab/config).
    #[arg(long)]
    pub admin_config: Option<PathBuf>,
    /// A node whose agent has not heartbeated for this long is NotReady, tainted
    /// unreachable, and its pods are not Ready (kube-controller-manager's
    /// --node-monitor-grace-period).
    #[arg(long, default_value = "40s", value_parser = kubelab_proto::duration::parse)]
    pub node_monitor_grace_period: std::time::Duration,
    /// The Services' cluster IPs (kube-apiserver's --service-cluster-ip-range); may not
    /// overlap --cluster-cidr.
    #[arg(long, default_value = "10.96.0.0/16")]
    pub service_cluster_ip_range: node_ipam::Cidr,
    /// How long a pod stays bound to a not-ready node before it is evicted, unless it
    /// tolerates that itself (kube-apiserver's DefaultTolerationSeconds admission; a lab
    /// sets a few seconds to watch eviction happen).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(0..=86_400))]
    pub default_not_ready_toleration_seconds: i64,
    /// The same for a node whose agent stopped heartbeating (unreachable).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(0..=86_400))]
    pub default_unreachable_toleration_seconds: i64,
}

impl ClusterArgs {
    /// These flags as arguments for an apiserver started by another command.
    pub fn forwarded(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--cluster-cidr".into(),
            self.cluster_cidr.to_string().into(),
        ];
        args.push("--pod-security-default".into());
        args.push(self.pod_security_default.as_str().into());
        if let Some(path) = &self.admin_config {
            args.push("--admin-config".into());
            args.push(path.into());
        }
        args.push("--service-cluster-ip-range".into());
        args.push(self.service_cluster_ip_range.to_string().into());
        args.push("--node-monitor-grace-period".into());
        args.push(format!("{}ms", self.node_monitor_grace_period.as_millis()).into());
        args.push("--default-not-ready-toleration-seconds".into());
        args.push(self.default_not_ready_toleration_seconds.to_string().into());
        args.push("--default-unreachable-toleration-seconds".into());
        args.push(
            self.default_unreachable_toleration_seconds
                .to_string()
                .into(),
        );
        args
    }
}

/// The admin credential's default place: `~/.kubelab/config`, as kubectl's is `~/.kube/config`.
pub fn default_admin_config() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kubelab").join("config"))
}

/// The largest request the API accepts: a pod is far smaller (Kubernetes' objects are
/// capped at 1.5 MB by etcd); anything bigger is refused before it is decoded.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Opens the store and serves the API until `shutdown` resolves.
pub async fn run(args: ApiserverArgs, shutdown: crate::Shutdown) -> Result<(), ApiserverError> {
    let (services_range, pods_range) = (
        args.cluster.service_cluster_ip_range,
        args.cluster.cluster_cidr,
    );
    if services_range.overlaps(&pods_range) {
        return Err(ApiserverError::Overlap(services_range, pods_range));
    }
    let store = Arc::new(
        Store::open(&args.data_dir, args.watch_history)
            .map_err(|e| ApiserverError::Open(args.data_dir.clone(), e))?,
    );
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| ApiserverError::Bind(args.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ApiserverError::Bind(args.listen, e))?;
    let (auth, server_identity) = auth::Authenticator::load_or_create(&args.data_dir)?;
    let admin_config = args
        .cluster
        .admin_config
        .clone()
        .or_else(default_admin_config);
    // Listening on every address (for nodes on other machines), the credentials written
    // here name loopback: the certificate is this host's `localhost`, and kubectl checks
    // the address it connects to against it.
    let local = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    auth.write_credentials(&args.data_dir, &local.to_string(), admin_config.as_deref())?;
    if args.init {
        println!(
            "credentials written: {} (admin, also at {}), {}, {}",
            args.data_dir.join("admin.conf").display(),
            admin_config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into()),
            args.data_dir.join("scheduler.conf").display(),
            args.data_dir.join("bootstrap.conf").display(),
        );
        return Ok(());
    }
    let auth = Arc::new(auth);
    tracing::info!(%addr, data_dir = %args.data_dir.display(), revision = store.revision(), admin_config = ?admin_config, "apiserver serving (TLS)");
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_now = stop.clone();
    namespaces::ensure_default(&store)
        .await
        .map_err(|e| ApiserverError::Open(args.data_dir.clone(), e))?;
    let pods = Arc::new(pods::PodsService::new(
        store.clone(),
        auth.clone(),
        args.cluster.pod_security_default,
        pods::DefaultTolerations {
            not_ready: args.cluster.default_not_ready_toleration_seconds,
            unreachable: args.cluster.default_unreachable_toleration_seconds,
        },
    ));
    let namespaces = Arc::new(namespaces::NamespacesService::new(store.clone()));
    let nodes = Arc::new(nodes::NodesService::new(
        store.clone(),
        auth.clone(),
        args.cluster.cluster_cidr,
        args.node_cidr_mask_size,
    ));
    let events = Arc::new(events::EventsService::new(store.clone()));
    let replicasets = Arc::new(native::NativeRegistry::new(store.clone()));
    let deployments = Arc::new(native::NativeRegistry::new(store.clone()));
    let jobs = Arc::new(native::NativeRegistry::new(store.clone()));
    let service_config = services::ServiceConfig {
        range: args.cluster.service_cluster_ip_range,
    };
    let services = Arc::new(native::NativeRegistry::with_config(
        store.clone(),
        service_config,
    ));
    let endpointslices = Arc::new(native::NativeRegistry::new(store.clone()));
    services::system::ensure(&services, &endpointslices, service_config, addr)
        .await
        .map_err(|e| ApiserverError::Open(args.data_dir.clone(), e))?;
    // The controllers inside the apiserver: if one stops, the apiserver stops and says so
    // (its supervisor, `kubelabd up` or the user, then sees it), rather than serve on
    // with nodes never marked NotReady or events never expired.
    let mut lifecycle = tokio::spawn(node_lifecycle::run(
        store.clone(),
        args.cluster.node_monitor_grace_period,
    ));
    let mut expiry = tokio::spawn(events::expire_events(store, args.event_ttl));
    let grpc = tonic::service::Routes::new(
        PodsServer::from_arc(Arc::new(Grpc::new(pods.clone(), auth.clone())))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        NodesServer::from_arc(Arc::new(Grpc::new(nodes.clone(), auth.clone())))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        NamespacesServer::from_arc(Arc::new(Grpc::new(namespaces.clone(), auth.clone())))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        EventsServer::from_arc(Arc::new(Grpc::new(events.clone(), auth.clone())))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .into_axum_router();
    let rest = Arc::new(
        rest::Rest {
            pods,
            nodes,
            namespaces,
            events,
            replicasets,
            deployments,
            jobs,
            services,
            endpointslices,
            auth,
            address: addr.to_string(),
            inflight: rest::Inflight::new(0),
        }
        .limit_requests(args.max_requests_inflight),
    );
    let rest =
        axum::Router::new().fallback(move |request: axum::http::Request<axum::body::Body>| {
            let rest = rest.clone();
            async move { rest::serve(rest, request).await }
        });
    let tls = serve::tls_config(&server_identity.cert, &server_identity.key)?;
    let server = serve::serve(
        listener,
        tls,
        grpc,
        rest,
        async move { stop.notified().await },
        SHUTDOWN_GRACE,
    );
    tokio::pin!(server);
    tokio::select! {
        _ = &mut server => Ok(()),
        _ = shutdown => {
            stop_now.notify_one();
            server.await;
            Ok(())
        }
        ended = &mut lifecycle => Err(ApiserverError::Stopped("node lifecycle controller", crate::supervise::task_end(ended))),
        ended = &mut expiry => Err(ApiserverError::Stopped("event expiry", crate::supervise::task_end(ended))),
    }
}

/// How long a stopping apiserver lets calls in flight finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ApiserverError {
    #[error("cannot open the store in {0}: {1}")]
    Open(PathBuf, ApiError),
    #[error(
        "cannot listen on {0}: {1} (is another apiserver running? choose another with --listen)"
    )]
    Bind(SocketAddr, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("the {0} stopped: {1}")]
    Stopped(&'static str, String),
    #[error("--service-cluster-ip-range {0} overlaps --cluster-cidr {1}: a Service address would be a pod's; choose ranges apart (e.g. 10.96.0.0/16 and 10.88.0.0/16)")]
    Overlap(node_ipam::Cidr, node_ipam::Cidr),
}

/// An object's labels (empty when it has none).
fn labels_of<T: store::Object>(object: &T) -> &std::collections::HashMap<String, String> {
    static NONE: std::sync::OnceLock<std::collections::HashMap<String, String>> =
        std::sync::OnceLock::new();
    match object.meta() {
        Some(m) => &m.labels,
        None => NONE.get_or_init(Default::default),
    }
}
