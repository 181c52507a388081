//! A pod's `/etc/resolv.conf`, as the kubelet's DNS configurer makes it from the pod's
//! `dnsPolicy` and `dnsConfig`, the node's resolv.conf and the agent's `--cluster-dns` /
//! `--cluster-domain`:
//!
//! - `ClusterFirst` (the default): the cluster DNS only, the search list
//!   `<ns>.svc.<domain> svc.<domain> <domain>` then the node's, and `options ndots:5`; a
//!   `hostNetwork` pod gets `Default` instead, and an agent without `--cluster-dns` falls
//!   back to `Default` (saying so: the kubelet's `MissingClusterDNS`).
//! - `ClusterFirstWithHostNet`: `ClusterFirst`, `hostNetwork` or not.
//! - `Default`: the node's (loopback name servers dropped for a pod with its own network,
//!   which cannot reach them; kubelab's choice, written down in docs/kubernetes-api.md).
//! - `None`: only what `dnsConfig` gives.
//!
//! `dnsConfig` is added last (name servers and searches appended without duplicates,
//! options merged by name, the pod's winning), then Kubernetes' limits are applied: 3
//! name servers, 32 search domains, 2,048 characters. Pure: owns that text, nothing else.

use std::net::IpAddr;

use kubelab_proto::v1::PodSpec;

const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCH_PATHS: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;
const MAX_DOMAIN: usize = 253;

/// The agent's DNS flags, the kubelet's.
#[derive(Clone, Debug, clap::Args)]
pub struct DnsArgs {
    /// The cluster DNS's address(es), written into pods' resolv.conf (`kubelabd up` gives
    /// the kube-dns Service's, the tenth address of the service range).
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain: pods search `<ns>.svc.<domain>`, `svc.<domain>`, `<domain>`.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The node's resolver configuration, for `dnsPolicy: Default` (default:
    /// /etc/resolv.conf, or systemd-resolved's upstream list when it names only its
    /// loopback stub, as kubeadm chooses).
    #[arg(long)]
    pub resolv_conf: Option<std::path::PathBuf>,
}

/// The agent's DNS settings (the kubelet's `--cluster-dns`, `--cluster-domain`,
/// `--resolv-conf`).
#[derive(Clone, Debug, Default)]
pub struct DnsSettings {
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub resolv_conf: std::path::PathBuf,
}

impl DnsSettings {
    pub fn from_args(args: &DnsArgs) -> DnsSettings {
        let resolv_conf = args.resolv_conf.clone().unwrap_or_else(|| {
            let etc = std::path::PathBuf::from("/etc/resolv.conf");
            let resolved = std::path::PathBuf::from("/run/systemd/resolve/resolv.conf");
            let text = std::fs::read_to_string(&etc).unwrap_or_default();
            let stub_only = ResolvConf::parse(&text)
                .nameservers
                .iter()
                .all(|s| s.starts_with("127."));
            if stub_only && resolved.exists() {
                resolved
            } else {
                etc
            }
        });
        DnsSettings {
            cluster_dns: args.cluster_dns.clone(),
            cluster_domain: args.cluster_domain.trim_end_matches('.').to_string(),
            resolv_conf,
        }
    }

    /// The node's resolv.conf, read now (it can change while the agent runs).
    pub fn node_resolv_conf(&self) -> ResolvConf {
        ResolvConf::parse(&std::fs::read_to_string(&self.resolv_conf).unwrap_or_default())
    }
}

/// The parts of a resolv.conf the kubelet keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `ndots:5` is `("ndots", Some("5"))`; `rotate` is `("rotate", None)`.
    pub options: Vec<(String, Option<String>)>,
}

impl ResolvConf {
    /// Reads a resolv.conf as glibc (and the kubelet) do: every `nameserver` line counts;
    /// the last `search` (or `domain`) line and the last `options` line win.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(String::from)),
                Some("search" | "domain") => {
                    conf.searches = words.map(|w| w.trim_end_matches('.').to_string()).collect()
                }
                Some("options") => conf.options = words.map(option).collect(),
                _ => {}
            }
        }
        conf
    }

    /// The file, in the order container runtimes write it: search, nameserver, options.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for server in &self.nameservers {
            out.push_str(&format!("nameserver {server}\n"));
        }
        if !self.options.is_empty() {
            let options: Vec<String> = self
                .options
                .iter()
                .map(|(name, value)| match value {
                    Some(v) => format!("{name}:{v}"),
                    None => name.clone(),
                })
                .collect();
            out.push_str(&format!("options {}\n", options.join(" ")));
        }
        out
    }
}

fn option(word: &str) -> (String, Option<String>) {
    match word.split_once(':') {
        Some((name, value)) => (name.to_string(), Some(value.to_string())),
        None => (word.to_string(), None),
    }
}

/// The pod's resolv.conf, and a warning when the policy could not be followed.
pub fn pod_resolv_conf(
    spec: &PodSpec,
    namespace: &str,
    node: &ResolvConf,
    settings: &DnsSettings,
) -> (ResolvConf, Option<String>) {
    let mut warning = None;
    let cluster_first = match spec.dns_policy.as_str() {
        "ClusterFirstWithHostNet" => true,
        "Default" | "None" => false,
        _ => !spec.host_network,
    };
    let mut conf = if spec.dns_policy == "None" {
        ResolvConf::default()
    } else if cluster_first && !settings.cluster_dns.is_empty() {
        let domain = &settings.cluster_domain;
        let mut searches = if domain.is_empty() {
            Vec::new()
        } else {
            vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ]
        };
        append_new(&mut searches, &node.searches);
        ResolvConf {
            nameservers: settings.cluster_dns.iter().map(IpAddr::to_string).collect(),
            searches,
            options: vec![("ndots".into(), Some("5".into()))],
        }
    } else {
        if cluster_first {
            warning = Some("kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.".to_string());
        }
        let mut conf = node.clone();
        if !spec.host_network {
            conf.nameservers
                .retain(|s| !(s.starts_with("127.") || s == "::1"));
        }
        conf
    };
    if let Some(config) = &spec.dns_config {
        append_new(&mut conf.nameservers, &config.nameservers);
        let searches: Vec<String> = config
            .searches
            .iter()
            .map(|s| s.trim_end_matches('.').to_string())
            .collect();
        append_new(&mut conf.searches, &searches);
        for o in &config.options {
            match conf.options.iter_mut().find(|(name, _)| *name == o.name) {
                Some(existing) => existing.1 = o.value.clone(),
                None => conf.options.push((o.name.clone(), o.value.clone())),
            }
        }
    }
    fit_limits(&mut conf);
    (conf, warning)
}

fn append_new(list: &mut Vec<String>, more: &[String]) {
    for item in more {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

/// Kubernetes' limits: extra name servers and search domains are dropped.
fn fit_limits(conf: &mut ResolvConf) {
    conf.nameservers.truncate(MAX_NAMESERVERS);
    conf.searches.retain(|s| s.len() <= MAX_DOMAIN);
    conf.searches.truncate(MAX_SEARCH_PATHS);
    while conf.searches.join(" ").len() > MAX_SEARCH_CHARS {
        conf.searches.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelab_proto::v1::{PodDnsConfig, PodDnsConfigOption};

    fn settings() -> DnsSettings {
        DnsSettings {
            cluster_dns: vec!["10.96.0.10".parse().expect("an IP")],
            cluster_domain: "cluster.local".into(),
            resolv_conf: Default::default(),
        }
    }

    fn node() -> ResolvConf {
        ResolvConf::parse(
            "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch lab.example.\noptions edns0 trust-ad\n",
        )
    }

    fn spec(policy: &str, host_network: bool) -> PodSpec {
        PodSpec {
            dns_policy: policy.into(),
            host_network,
            ..Default::default()
        }
    }

    #[test]
    fn cluster_first_gives_the_cluster_dns_and_three_search_domains() {
        let (conf, warning) = pod_resolv_conf(&spec("", false), "team", &node(), &settings());
        assert_eq!(warning, None);
        assert_eq!(
            conf.render(),
            "search team.svc.cluster.local svc.cluster.local cluster.local lab.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        let (with_host_net, _) = pod_resolv_conf(
            &spec("ClusterFirstWithHostNet", true),
            "team",
            &node(),
            &settings(),
        );
        assert_eq!(with_host_net, conf);
    }

    #[test]
    fn default_and_host_network_take_the_nodes() {
        let (host, _) = pod_resolv_conf(&spec("ClusterFirst", true), "a", &node(), &settings());
        assert_eq!(host, node());
        let (own, _) = pod_resolv_conf(&spec("Default", false), "a", &node(), &settings());
        assert_eq!(own.nameservers, ["192.0.2.53"]);
        assert_eq!(own.options, node().options);
        let (fallback, warning) =
            pod_resolv_conf(&spec("", false), "a", &node(), &DnsSettings::default());
        assert_eq!(fallback.nameservers, ["192.0.2.53"]);
        assert!(warning.is_some_and(|w| w.contains("Falling back")));
    }

    #[test]
    fn dns_config_is_added_last_and_limits_apply() {
        let mut s = spec("None", false);
        s.dns_config = Some(PodDnsConfig {
            nameservers: vec!["1.1.1.1".into()],
            searches: vec![
                "ns1.svc.cluster-domain.example".into(),
                "my.dns.search.suffix".into(),
            ],
            options: vec![
                PodDnsConfigOption {
                    name: "ndots".into(),
                    value: Some("2".into()),
                },
                PodDnsConfigOption {
                    name: "edns0".into(),
                    value: None,
                },
            ],
        });
        let (conf, _) = pod_resolv_conf(&s, "a", &node(), &settings());
        assert_eq!(
            conf.render(),
            "search ns1.svc.cluster-domain.example my.dns.search.suffix\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"
        );
        s.dns_policy = String::new();
        s.dns_config = Some(PodDnsConfig {
            nameservers: vec![
                "10.96.0.10".into(),
                "1.1.1.1".into(),
                "1.0.0.1".into(),
                "8.8.8.8".into(),
            ],
            searches: vec![],
            options: vec![PodDnsConfigOption {
                name: "ndots".into(),
                value: Some("1".into()),
            }],
        });
        let (conf, _) = pod_resolv_conf(&s, "a", &node(), &settings());
        assert_eq!(conf.nameservers, ["10.96.0.10", "1.1.1.1", "1.0.0.1"]);
        assert_eq!(conf.options, [("ndots".to_string(), Some("1".to_string()))]);
    }
}
