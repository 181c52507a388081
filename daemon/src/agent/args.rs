//! The agent's command line (the kubelet's flags, where kubelab has them) and the
//! parsers of its labels and taints. Owns parsing only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{dns_config, proxy};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// This node's name (a DNS-1123 subdomain).
    #[arg(long, env = "KUBELAB_NODE_NAME")]
    pub node_name: String,
    /// The bootstrap credential the apiserver wrote: used once, to join the cluster and
    /// get this node's own credential (kept in the root directory as `node.conf`).
    #[arg(long, default_value = "/var/lib/kubelab/apiserver/bootstrap.conf")]
    pub bootstrap_config: PathBuf,
    /// Where this agent keeps images, pods and logs (default /var/lib/kubelab/agents/NODE).
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    /// Where the agent serves logs to the apiserver (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// A registry (HOST:PORT) to speak plain HTTP to. Loopback registries always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// First wait before restarting a crashed container or retrying a failed pull; it
    /// doubles each time (the kubelet's 10s). Tests use short ones.
    #[arg(long, default_value = "10s", value_parser = kubelab_proto::duration::parse)]
    pub backoff_initial: Duration,
    /// The longest back-off (the kubelet's 5m).
    #[arg(long, default_value = "5m", value_parser = kubelab_proto::duration::parse)]
    pub backoff_max: Duration,
    /// A container that ran this long starts its back-off afresh (the kubelet's 10m).
    #[arg(long, default_value = "10m", value_parser = kubelab_proto::duration::parse)]
    pub backoff_reset: Duration,
    /// Most processes a pod may have (the kubelet's podPidsLimit; 0: no limit).
    #[arg(long, default_value_t = 4096)]
    pub pod_pids_limit: i64,
    /// Size at which a container's log file is rotated (containerLogMaxSize), in bytes.
    #[arg(long, default_value_t = 10 << 20)]
    pub container_log_max_bytes: u64,
    /// The most one image layer may inflate to, decompressed (a decompression bomb stops
    /// here), in bytes.
    #[arg(long, default_value_t = 16 << 30)]
    pub max_layer_bytes: u64,
    /// Where CNI plugins are looked for (Debian's, then the upstream default).
    #[arg(long = "cni-bin-dir", default_values = ["/usr/lib/cni", "/opt/cni/bin"])]
    pub cni_bin_dirs: Vec<PathBuf>,
    /// A CNI configuration list (.conflist) for the pod network, instead of the built-in
    /// bridge over the node's pod CIDR.
    #[arg(long)]
    pub cni_conf: Option<PathBuf>,
    /// The built-in network's bridge (default: kl- and a hash of the root directory and
    /// node name, so that every agent on a host has its own).
    #[arg(long)]
    pub cni_bridge: Option<String>,
    /// The cluster's pod addresses (as given to the apiserver): traffic from pods to them
    /// keeps its addresses; traffic elsewhere is masqueraded.
    #[arg(long, default_value = "10.88.0.0/16")]
    pub cluster_cidr: String,
    /// Labels for this node, KEY=VALUE,... (the kubelet's --node-labels), added to
    /// kubernetes.io/hostname and kubernetes.io/os.
    #[arg(long, value_delimiter = ',', value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,
    /// Taints the node registers with, KEY=VALUE:EFFECT,... (the kubelet's
    /// --register-with-taints); kept only when the node is first registered.
    #[arg(long, value_delimiter = ',', value_parser = parse_taint)]
    pub register_with_taints: Vec<kubelab_proto::v1::Taint>,
    /// How often the agent tells the apiserver it is alive (the kubelet's node lease
    /// renews every 10s); keep it well under the apiserver's --node-monitor-grace-period.
    #[arg(long, default_value = "10s", value_parser = kubelab_proto::duration::parse)]
    pub heartbeat_period: Duration,
    /// The service proxy: iptables rules for the Services' cluster IPs and node ports
    /// (kube-proxy's --proxy-mode), or none. One lab per host runs it.
    #[arg(long, value_enum, default_value_t = proxy::ProxyMode::Iptables)]
    pub proxy_mode: proxy::ProxyMode,
    /// Most pods this node takes (the kubelet's --max-pods).
    #[arg(long, default_value_t = 110, value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
    pub max_pods: i64,
    /// A hollow node (like kubemark): registers and reports its pods Running without
    /// running anything. For scale tests and benchmarks only.
    #[arg(long)]
    pub hollow: bool,
    #[command(flatten)]
    pub hollow_shape: crate::hollow::HollowShape,
    #[command(flatten)]
    pub dns: dns_config::DnsArgs,
    /// The node's address among the nodes (the kubelet's --node-ip): its Node's
    /// InternalIP, where the other nodes route its pods (host-gw).
    #[arg(long)]
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// Give the node a network of its own, as if it were another machine, joined to this
    /// bridge (the nodes' LAN, with an address): see `separate_host`.
    #[arg(long, value_name = "BRIDGE")]
    pub separate_host: Option<String>,
}

/// `key=value` into a label.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
        None => Err(format!("invalid label {text:?}: expected KEY=VALUE")),
    }
}

/// `key=value:NoSchedule` (or `key:PreferNoSchedule`, `key:NoExecute`) into a taint.
pub fn parse_taint(text: &str) -> Result<kubelab_proto::v1::Taint, String> {
    let (kv, effect) = text.trim().rsplit_once(':').ok_or_else(|| {
        format!("invalid taint {text:?}: expected KEY=VALUE:EFFECT (effect NoSchedule, PreferNoSchedule or NoExecute)")
    })?;
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    Ok(kubelab_proto::v1::Taint {
        key: key.into(),
        value: value.into(),
        effect: effect.into(),
        time_added_ms: 0,
    })
}
