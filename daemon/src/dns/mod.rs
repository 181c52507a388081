//! `kubelab-dns`: the cluster DNS, CoreDNS's role. A client of the Kubernetes
//! REST API with its own credential (`cluster-dns.conf`, the identity
//! `system:serviceaccount:kube-system:coredns`): it follows the Services and
//! EndpointSlices (informers), keeps the records they give (`records.rs`, rebuilt whole
//! after each change) and answers queries over UDP and TCP with hickory's server
//! (`handler.rs`), forwarding other names to the node's resolvers.
//!
//! Pods ask `kube-dns` (`kube-system`, 10.96.0.10:53, made by the apiserver); this server
//! writes that Service's EndpointSlice with its own address and port, so the service proxy
//! sends the queries here (CoreDNS's pods are found by the EndpointSlice controller;
//! kubelab's DNS is no pod). It listens on the host's address (the default route's), on a
//! free port unless given one, and answers only the pods, the nodes and the host.
//! Owns its socket and that EndpointSlice; it writes nothing else.

mod handler;
pub mod records;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::resolver::config::NameServerConfig;
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::{Catalog, ZoneHandler};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubelab_proto::credential::Credential;

use crate::controllers::client::{Api, Client, ClientError};
use crate::controllers::informer::ServiceInformers;
use records::Records;

/// The EndpointSlice this server keeps for `kube-dns`.
const SLICE: &str = "kube-dns-kubelab";
const NAMESPACE: &str = "kube-system";
/// How long a TCP client may stay idle before its connection is closed.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Changes arriving together are built into records once.
const SETTLE: Duration = Duration::from_millis(20);
/// The slice is checked (and written again if someone removed it) this often.
const REPUBLISH: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct ClusterDnsArgs {
    /// The cluster DNS's credential, as the apiserver wrote it.
    #[arg(long, default_value = "/var/lib/kubelab/apiserver/cluster-dns.conf")]
    pub kubeconfig: PathBuf,
    /// Where to answer, ADDRESS:PORT (default: the host's address on its default route,
    /// and a free port). Pods reach it through kube-dns's cluster IP, port 53.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The pods' addresses, which may ask (besides this host and `--allow`).
    #[arg(long, default_value = "10.88.0.0/16")]
    pub cluster_cidr: ipnet::IpNet,
    /// More networks that may ask (nodes on other hosts).
    #[arg(long)]
    pub allow: Vec<ipnet::IpNet>,
    /// Where other names are forwarded: the name servers of this file.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(transparent)]
    Credential(#[from] kubelab_proto::credential::CredentialError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot listen on {0}: {1} (choose another with --listen ADDRESS:PORT)")]
    Listen(SocketAddr, std::io::Error),
    #[error(
        "no address to serve on: this host has only loopback addresses; give --listen ADDRESS:PORT"
    )]
    NoAddress,
    #[error("the DNS server stopped: {0}")]
    Serve(String),
}

/// The address this host uses to reach other machines (its default route's source): a
/// UDP socket "connected" to an outside address sends nothing, but the kernel picks it.
/// (Documentation addresses, which no one uses: any route the kernel picks for them is
/// the default one.)
/// Without a default route: the first global address `ip` lists.
pub fn host_address() -> Option<IpAddr> {
    let routed = ["198.51.100.1:53", "203.0.113.1:53"]
        .iter()
        .find_map(|outside| {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
            socket.connect(outside).ok()?;
            let ip = socket.local_addr().ok()?.ip();
            (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
        });
    routed.or_else(|| {
        let out = std::process::Command::new("ip")
            .env("PATH", kubelab_proto::DEFAULT_PATH)
            .args(["-4", "-o", "addr", "show", "scope", "global"])
            .output()
            .ok()?;
        // `2: eth0    inet 192.0.2.2/24 brd ...`
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "inet")?;
                words.get(at + 1)?.split('/').next()?.parse().ok()
            })
    })
}

/// Serves until `shutdown`, then removes its endpoint.
pub async fn run(args: ClusterDnsArgs, shutdown: crate::Shutdown) -> Result<(), DnsError> {
    let credential = Credential::load(&args.kubeconfig)?;
    let client = Client::new(&credential)?;
    let listen = match args.listen {
        Some(addr) => addr,
        None => SocketAddr::new(host_address().ok_or(DnsError::NoAddress)?, 0),
    };
    let udp = tokio::net::UdpSocket::bind(listen)
        .await
        .map_err(|e| DnsError::Listen(listen, e))?;
    let local = udp.local_addr().map_err(|e| DnsError::Listen(listen, e))?;
    let tcp = tokio::net::TcpListener::bind(local)
        .await
        .map_err(|e| DnsError::Listen(local, e))?;

    let records = Arc::new(RwLock::new(Arc::new(Records::empty(&args.cluster_domain))));
    tokio::spawn(follow(
        client.clone(),
        records.clone(),
        args.cluster_domain.clone(),
    ));
    let mut allowed = vec![
        args.cluster_cidr,
        ipnet::IpNet::from(local.ip()),
        "127.0.0.0/8".parse().expect("a network"),
    ];
    allowed.extend(args.allow.iter().copied());
    let handler = handler::ClusterDns {
        records,
        forward: forwarder(&args.resolv_conf),
    };
    let mut server = hickory_server::Server::with_access(handler, [], allowed);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT, 32);
    let slices_api = Api::<EndpointSlice>::namespaced(client, NAMESPACE);
    let publisher = tokio::spawn(publish(slices_api.clone(), local));
    println!("cluster DNS answering on {local} (kube-dns's endpoint)");
    tracing::info!(%local, domain = %args.cluster_domain, "cluster DNS running");
    let outcome = tokio::select! {
        _ = shutdown => Ok(()),
        ended = server.block_until_done() => Err(DnsError::Serve(match ended {
            Ok(()) => "its sockets closed".into(),
            Err(e) => e.to_string(),
        })),
    };
    publisher.abort();
    // Queries should no longer come here: the proxy drops the endpoint.
    if let Err(e) = slices_api.delete(SLICE, "Background", None).await {
        tracing::debug!(error = %e, "kube-dns's endpoint was not removed");
    }
    outcome
}

/// Keeps the records as the Services and EndpointSlices change.
async fn follow(client: Client, records: Arc<RwLock<Arc<Records>>>, domain: String) {
    let informers = ServiceInformers::start(&client).await;
    loop {
        let built = Records::build(
            &domain,
            &informers.services.list(),
            &informers.slices.list(),
        );
        *records.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(built);
        tracing::debug!("cluster DNS records rebuilt");
        informers.changed.notified().await;
        tokio::time::sleep(SETTLE).await;
    }
}

/// The forwarder to the name servers of `resolv_conf` (none: other names are refused).
fn forwarder(resolv_conf: &std::path::Path) -> Option<Catalog> {
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    let servers: Vec<NameServerConfig> = crate::agent::dns_config::ResolvConf::parse(&text)
        .nameservers
        .iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .map(NameServerConfig::udp_and_tcp)
        .collect();
    if servers.is_empty() {
        tracing::warn!(file = %resolv_conf.display(), "no name servers to forward to: names outside the cluster will be refused");
        return None;
    }
    // Answers are kept as kubeadm's Corefile keeps them (`cache 30`): at most 30 s, and
    // a name that does not exist at least 5 s (CoreDNS's denial minimum), so the search
    // domains' misses cost the upstream nothing when repeated.
    let mut options = hickory_server::resolver::config::ResolverOpts::default();
    options.positive_max_ttl = Some(Duration::from_secs(30));
    options.negative_min_ttl = Some(Duration::from_secs(5));
    options.negative_max_ttl = Some(Duration::from_secs(30));
    let config = ForwardConfig {
        name_servers: servers,
        options: Some(options),
    };
    let zone = match ForwardZoneHandler::builder_tokio(config).build() {
        Ok(zone) => zone,
        Err(e) => {
            tracing::warn!(error = %e, "no forwarder: names outside the cluster will be refused");
            return None;
        }
    };
    let mut catalog = Catalog::new();
    catalog.upsert(
        hickory_server::proto::rr::LowerName::from(hickory_server::proto::rr::Name::root()),
        vec![Arc::new(zone) as Arc<dyn ZoneHandler>],
    );
    Some(catalog)
}

/// kube-dns's EndpointSlice: this server's address, port `dns` (UDP) and `dns-tcp`.
fn slice(local: SocketAddr) -> EndpointSlice {
    let value = serde_json::json!({
        "metadata": {
            "name": SLICE, "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "cluster-dns.kubelab.dev",
            },
        },
        "addressType": if local.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{
            "addresses": [local.ip().to_string()],
            "conditions": { "ready": true, "serving": true, "terminating": false },
        }],
        "ports": [
            { "name": "dns", "port": local.port(), "protocol": "UDP" },
            { "name": "dns-tcp", "port": local.port(), "protocol": "TCP" },
        ],
    });
    serde_json::from_value(value).unwrap_or_default()
}

/// Writes kube-dns's EndpointSlice, and again whenever it is found missing or different.
async fn publish(api: Api<EndpointSlice>, local: SocketAddr) {
    let wanted = slice(local);
    loop {
        let outcome = match api.get(SLICE).await {
            Ok(current)
                if current.endpoints == wanted.endpoints && current.ports == wanted.ports =>
            {
                Ok(())
            }
            Ok(current) => {
                let mut next = wanted.clone();
                next.metadata.resource_version = current.metadata.resource_version;
                api.replace(SLICE, &next).await.map(|_| ())
            }
            Err(e) if e.is_not_found() => api.create(&wanted).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "kube-dns's endpoint not written; trying again");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::time::sleep(REPUBLISH).await;
    }
}
