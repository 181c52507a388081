//! Nodes as hosts of their own, and the routes between nodes (host-gw).
//!
//! With `--separate-host BRIDGE --node-ip IP`, the node's network is a machine of its
//! own: a network namespace `kl-<node>` (pinned in /run/netns, as `ip netns` does) joined
//! to BRIDGE — a bridge on this host with an address, the nodes' LAN — by a veth, with
//! IP on the LAN and a default route through the bridge's address. Everything of the
//! node's network lives there: its pods' bridge and addresses, its service rules
//! (`KUBE-*`), NodePorts and `hostNetwork` pods; the commands that make them run inside
//! it (`command_in`, through `nsenter`). The agent's own connections (the API, the
//! registry, logs and exec) stay on this host's network, so a lab's loopback registry
//! still serves it; a real second machine needs none of this.
//!
//! With `--node-ip`, the agent keeps host-gw routes (`keep_routes`): in the node's network,
//! every other node's pod CIDR via that node's address (none via a loopback address or
//! its own), read from the Node objects; a separate host also routes its own pod CIDR
//! through its address on this host, which carries the rest of the host's traffic to
//! its pods (the cluster DNS's answers). Pods reach each other's addresses without NAT.
//! Owns the namespace, the veth and those routes; `detach` removes them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kubelab_proto::credential::Credential;
use serde::{Deserialize, Serialize};

use crate::controllers::client::{Api, Client, ClientError};
use crate::controllers::informer::Informer;

/// Routes are checked this often even without a change.
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SeparateHostError {
    #[error("{0}: {1}")]
    Command(String, String),
    #[error("the bridge {0} has no IPv4 address: give it the nodes' LAN address (ip link add {0} type bridge; ip addr add 172.30.0.1/24 dev {0}; ip link set {0} up), or let `kubelabd up --separate-hosts` make it")]
    NoGateway(String),
    #[error("--separate-host needs --node-ip: the node's address on the bridge's network")]
    NoNodeIp,
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A node's own network, as `attach` made it (kept in `host.json` for `kubelabd reset`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeparateHost {
    /// `kl-<node>`, at /run/netns/<netns>.
    pub netns: String,
    /// The host's end of the veth, on `bridge`; the node's end is its `eth0`.
    pub veth: String,
    pub bridge: String,
    pub node_ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

impl SeparateHost {
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

/// `program` to run in the network namespace `netns` (through `nsenter`), or here.
pub fn command_in(
    netns: Option<&Path>,
    program: impl AsRef<std::ffi::OsStr>,
) -> tokio::process::Command {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("nsenter");
            c.arg(format!("--net={}", ns.display()))
                .arg("--")
                .arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    };
    cmd.env("PATH", kubelab_proto::DEFAULT_PATH);
    cmd
}

async fn ip(args: &[&str]) -> Result<String, SeparateHostError> {
    let out = command_in(None, "ip")
        .args(args)
        .output()
        .await
        .map_err(|e| SeparateHostError::Command(format!("ip {}", args.join(" ")), e.to_string()))?;
    if !out.status.success() {
        return Err(SeparateHostError::Command(
            format!("ip {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The bridge's IPv4 address and prefix: the LAN's gateway.
async fn gateway_of(bridge: &str) -> Result<(Ipv4Addr, u8), SeparateHostError> {
    let text = ip(&["-j", "-4", "addr", "show", "dev", bridge]).await?;
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    value
        .pointer("/0/addr_info/0")
        .and_then(|a| {
            let local = a.get("local")?.as_str()?.parse().ok()?;
            let prefix = u8::try_from(a.get("prefixlen")?.as_u64()?).ok()?;
            Some((local, prefix))
        })
        .ok_or_else(|| SeparateHostError::NoGateway(bridge.to_string()))
}

/// Makes (or, after a restart, finds and completes) the node's own network.
pub async fn attach(
    node: &str,
    bridge: &str,
    node_ip: Option<Ipv4Addr>,
) -> Result<SeparateHost, SeparateHostError> {
    let node_ip = node_ip.ok_or(SeparateHostError::NoNodeIp)?;
    let (gateway, prefix) = gateway_of(bridge).await?;
    let hash = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(node.as_bytes())[..4]);
    let host = SeparateHost {
        netns: format!("kl-{node}"),
        veth: format!("klv-{hash}"),
        bridge: bridge.to_string(),
        node_ip,
        prefix,
        gateway,
    };
    let ns = host.netns.as_str();
    if !host.netns_path().exists() {
        ip(&["netns", "add", ns]).await?;
    }
    if ip(&["link", "show", &host.veth]).await.is_err() {
        ip(&[
            "link", "add", &host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])
        .await?;
    }
    ip(&["link", "set", &host.veth, "master", bridge, "up"]).await?;
    let address = format!("{node_ip}/{prefix}");
    for args in [
        vec!["-n", ns, "link", "set", "lo", "up"],
        vec!["-n", ns, "link", "set", "eth0", "up"],
        vec!["-n", ns, "addr", "replace", &address, "dev", "eth0"],
    ] {
        ip(&args).await?;
    }
    let gateway_text = gateway.to_string();
    ip(&[
        "-n",
        ns,
        "route",
        "replace",
        "default",
        "via",
        &gateway_text,
    ])
    .await?;
    // A node routes its pods' traffic.
    ip(&[
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ])
    .await?;
    tracing::info!(netns = ns, %address, %bridge, "the node's network is a host of its own");
    Ok(host)
}

/// Removes the node's network (its pods must be gone): the host's route to its pods, the
/// namespace (and with it everything inside) and the veth.
pub async fn detach(host: &SeparateHost, pod_cidr: &str) -> Vec<String> {
    let mut removed = Vec::new();
    if !pod_cidr.is_empty() && ip(&["route", "del", pod_cidr]).await.is_ok() {
        removed.push(format!("the host's route to {pod_cidr}"));
    }
    if ip(&["netns", "del", &host.netns]).await.is_ok() {
        removed.push(format!("network namespace {}", host.netns));
    }
    if ip(&["link", "del", &host.veth]).await.is_ok() {
        removed.push(format!("veth {}", host.veth));
    }
    removed
}

/// The InternalIP and pod CIDR of a node.
fn address_and_cidr(node: &Node) -> Option<(Ipv4Addr, String)> {
    let cidr = node.spec.as_ref()?.pod_cidr.clone()?;
    let address = node
        .status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()?;
    Some((address, cidr))
}

/// The pod CIDRs routed to other nodes, as `keep_routes` last wrote them.
pub type Routes = Arc<std::sync::Mutex<BTreeSet<String>>>;

/// Removes the routes `keep_routes` wrote on this host's network (a separate host's go
/// with its namespace).
pub async fn remove_routes(routes: &Routes) -> Vec<String> {
    let cidrs: Vec<String> = routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    let mut removed = Vec::new();
    for cidr in cidrs {
        if ip(&["route", "del", &cidr]).await.is_ok() {
            removed.push(format!("the route to {cidr}"));
        }
    }
    removed
}

/// Keeps the host-gw routes, until the task is dropped.
pub async fn keep_routes(
    credential: Credential,
    node_name: String,
    node_ip: Ipv4Addr,
    separate: Option<SeparateHost>,
    pod_cidr: String,
    routes: Routes,
) -> Result<(), SeparateHostError> {
    let client = Client::new(&credential)?;
    let nodes = Informer::<Node>::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let w = wake.clone();
    nodes.on_change(move |_| w.notify_one());
    tokio::spawn(nodes.clone().run(Api::all(client)));
    nodes.wait_synced().await;
    let netns = separate.as_ref().map(|s| s.netns.clone());
    let mut installed: BTreeSet<String> = BTreeSet::new();
    loop {
        if let Some(host) = &separate {
            let via = host.node_ip.to_string();
            if let Err(e) = ip(&["route", "replace", &pod_cidr, "via", &via]).await {
                tracing::warn!(error = %e, "the host has no route to this node's pods");
            }
        }
        let mut wanted = BTreeSet::new();
        for node in nodes.list() {
            if node.metadata.name.as_deref() == Some(node_name.as_str()) {
                continue;
            }
            let Some((address, cidr)) = address_and_cidr(&node) else {
                continue;
            };
            if address.is_loopback() || address == node_ip {
                continue;
            }
            let mut args: Vec<String> = Vec::new();
            if let Some(ns) = &netns {
                args.extend(["-n".to_string(), ns.clone()]);
            }
            args.extend(["route", "replace", &cidr, "via", &address.to_string()].map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match ip(&args).await {
                Ok(_) => {
                    wanted.insert(cidr);
                }
                Err(e) => tracing::warn!(error = %e, %cidr, "no route to that node's pods"),
            }
        }
        for stale in installed.difference(&wanted) {
            let mut args: Vec<&str> = Vec::new();
            if let Some(ns) = &netns {
                args.extend(["-n", ns.as_str()]);
            }
            args.extend(["route", "del", stale.as_str()]);
            let _ = ip(&args).await;
        }
        if wanted != installed {
            tracing::debug!(routes = ?wanted, "routes to the other nodes' pods");
        }
        installed = wanted;
        *routes.lock().unwrap_or_else(|e| e.into_inner()) = installed.clone();
        let _ = tokio::time::timeout(RESYNC, wake.notified()).await;
    }
}

/// `kubelabd up --separate-hosts`' LAN: the bridge, its address (the gateway), and the
/// masquerade rule that lets the nodes' traffic out of this host.
pub const LAN_BRIDGE: &str = "kl-hosts";
pub const LAN_GATEWAY: &str = "172.30.0.1/24";
pub const LAN_NETWORK: &str = "172.30.0.0/24";

async fn lan_masquerade(op: &str, bridge: &str, network: &str) -> Result<(), SeparateHostError> {
    let args = [
        "-w",
        "10",
        "-t",
        "nat",
        op,
        "POSTROUTING",
        "-s",
        network,
        "!",
        "-o",
        bridge,
        "-m",
        "comment",
        "--comment",
        "kubelab: the separate hosts' LAN",
        "-j",
        "MASQUERADE",
    ];
    let out = command_in(None, "iptables")
        .args(args)
        .output()
        .await
        .map_err(|e| SeparateHostError::Command("iptables".into(), e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SeparateHostError::Command(
            format!("iptables {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Makes the nodes' LAN (kept if it is there): a bridge with the gateway's address, and
/// their traffic to elsewhere masqueraded behind this host.
pub async fn make_lan(bridge: &str, gateway: &str, network: &str) -> Result<(), SeparateHostError> {
    if ip(&["link", "show", bridge]).await.is_err() {
        ip(&["link", "add", bridge, "type", "bridge"]).await?;
    }
    ip(&["addr", "replace", gateway, "dev", bridge]).await?;
    ip(&["link", "set", bridge, "up"]).await?;
    if lan_masquerade("-C", bridge, network).await.is_err() {
        lan_masquerade("-A", bridge, network).await?;
    }
    Ok(())
}

/// Removes the nodes' LAN; says what was there.
pub async fn remove_lan(bridge: &str, network: &str) -> Vec<String> {
    let mut removed = Vec::new();
    while lan_masquerade("-D", bridge, network).await.is_ok() {
        removed.push(format!("the masquerade rule of {network}"));
    }
    if ip(&["link", "del", bridge]).await.is_ok() {
        removed.push(format!("bridge {bridge}"));
    }
    removed
}
