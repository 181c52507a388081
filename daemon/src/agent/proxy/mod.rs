//! The service proxy: kube-proxy's role in each agent, in iptables mode. It follows the
//! Services and EndpointSlices (informers over REST, with the node's credential) and,
//! shortly after any change and every 30 s, rewrites its chains as a whole with one
//! `iptables-restore --noflush` (`rules.rs` writes the text), so the kernel sends a
//! cluster IP's connections to the ready endpoints. The agent removes the chains when it
//! stops (`clean_up`), as does `kubelabd reset` after a crash.
//!
//! Every node of a lab writes the same rules; two labs on one host would share the
//! `KUBE-*` chains, so a host runs one lab's proxy at a time (`--proxy-mode none` for the
//! others). Owns the `KUBE-*` chains and the jumps to them; nothing else in iptables.

pub mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubelab_proto::credential::Credential;
use tokio::io::AsyncWriteExt;

use crate::controllers::client::{Client, ClientError};
use crate::controllers::informer::ServiceInformers;
use rules::ServicePort;

/// Changes arriving together are written once.
const SETTLE: Duration = Duration::from_millis(50);
/// Rules are rewritten this often even without a change (kube-proxy's
/// `--iptables-sync-period`), repairing what someone else changed.
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyMode {
    /// Program iptables (kube-proxy's iptables mode).
    Iptables,
    /// No service proxy on this node.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}: {1}")]
    Command(String, String),
}

/// Follows Services and EndpointSlices and keeps the rules, until the task is dropped.
/// `netns`: the node's network namespace when it is a separate host.
pub async fn run(
    credential: Credential,
    cluster_cidr: String,
    netns: Option<PathBuf>,
) -> Result<(), ProxyError> {
    let client = Client::new(&credential)?;
    let ServiceInformers {
        services,
        slices,
        changed: wake,
    } = ServiceInformers::start(&client).await;
    loop {
        let ports = service_ports(&services.list(), &slices.list());
        match sync(netns.as_deref(), &ports, &cluster_cidr).await {
            Ok(()) => tracing::debug!(ports = ports.len(), "service rules written"),
            Err(e) => tracing::warn!(error = %e, "service rules not written; trying again"),
        }
        let _ = tokio::time::timeout(RESYNC, wake.notified()).await;
        tokio::time::sleep(SETTLE).await;
    }
}

/// Each port of each Service with a cluster IP, and its ready endpoints.
fn service_ports(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Vec<ServicePort> {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        if let Some(name) = labels.get("kubernetes.io/service-name") {
            let ns = slice.metadata.namespace.clone().unwrap_or_default();
            by_service
                .entry((ns, name.clone()))
                .or_default()
                .push(slice);
        }
    }
    let mut ports = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        if ip.is_empty() || ip == "None" || spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let own = by_service.get(&(ns.clone(), name.clone()));
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10800)
        });
        for port in spec.ports.iter().flatten() {
            let port_name = port.name.clone().unwrap_or_default();
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            let endpoints: BTreeSet<String> = own
                .into_iter()
                .flatten()
                .flat_map(|slice| {
                    let number = slice
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.clone().unwrap_or_default() == port_name)
                        .and_then(|p| p.port);
                    slice.endpoints.iter().flatten().filter_map(move |e| {
                        let ready = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                        let address = e.addresses.first()?;
                        let number = number?;
                        ready.then(|| format!("{address}:{number}"))
                    })
                })
                .collect();
            ports.push(ServicePort {
                name: if port_name.is_empty() {
                    format!("{ns}/{name}")
                } else {
                    format!("{ns}/{name}:{port_name}")
                },
                cluster_ip: ip.clone(),
                port: port.port,
                protocol: protocol.to_lowercase(),
                node_port: port.node_port.filter(|p| *p > 0),
                affinity_seconds: affinity,
                endpoints: endpoints.into_iter().collect(),
            });
        }
    }
    ports
}

/// Runs `program` in the node's network (`netns`, a separate host's; else this host's).
async fn command(
    netns: Option<&Path>,
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, ProxyError> {
    let what = format!("{program} {}", args.join(" "));
    let mut child = crate::agent::separate_host::command_in(netns, program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| ProxyError::Command(what.clone(), e.to_string()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| ProxyError::Command(what.clone(), e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| ProxyError::Command(what.clone(), e.to_string()))?;
    if !out.status.success() {
        return Err(ProxyError::Command(
            what,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `KUBE-` chains of a table as `iptables-save` lists them.
async fn kube_chains(
    netns: Option<&Path>,
    table: &str,
    prefixes: &[&str],
) -> Result<BTreeSet<String>, ProxyError> {
    let saved = command(netns, "iptables-save", &["-t", table], None).await?;
    Ok(saved
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| prefixes.iter().any(|p| c.starts_with(p)))
        .map(str::to_string)
        .collect())
}

async fn sync(
    netns: Option<&Path>,
    ports: &[ServicePort],
    cluster_cidr: &str,
) -> Result<(), ProxyError> {
    let stale = kube_chains(netns, "nat", &["KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-"]).await?;
    let text = rules::restore_text(ports, cluster_cidr, &stale);
    command(
        netns,
        "iptables-restore",
        &["--noflush", "--wait"],
        Some(&text),
    )
    .await?;
    for jump in rules::JUMPS {
        if command(netns, "iptables", &jump_args(jump, &["-C"]), None)
            .await
            .is_err()
        {
            command(netns, "iptables", &jump_args(jump, &["-I", "1"]), None).await?;
        }
    }
    Ok(())
}

/// `iptables` arguments for a jump from a built-in chain to ours: `how` is `-C` (check),
/// `-I 1` (insert first) or `-D` (delete). New connections only, in the filter table.
fn jump_args<'a>(
    (table, builtin, target, comment): &'a (&str, &str, &str, &str),
    how: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["-w", "-t", table];
    if let Some((verb, rest)) = how.split_first() {
        args.extend([*verb, builtin]);
        args.extend(rest);
    }
    args.extend(["-m", "comment", "--comment", comment]);
    if *table == "filter" {
        args.extend(["-m", "conntrack", "--ctstate", "NEW"]);
    }
    args.extend(["-j", target]);
    args
}

/// Removes the jumps and every `KUBE-` chain this proxy writes (the agent stopping,
/// `kubelabd reset`); what is already gone is no error. Returns what was removed.
pub async fn clean_up(netns: Option<&Path>) -> Vec<String> {
    let mut removed = Vec::new();
    for jump @ (table, builtin, target, _) in rules::JUMPS {
        while command(netns, "iptables", &jump_args(jump, &["-D"]), None)
            .await
            .is_ok()
        {
            removed.push(format!("{table} {builtin} -> {target}"));
        }
    }
    for table in ["nat", "filter"] {
        let prefixes = [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
            "KUBE-SVC-",
            "KUBE-SEP-",
            "KUBE-EXT-",
        ];
        let Ok(chains) = kube_chains(netns, table, &prefixes).await else {
            continue;
        };
        if chains.is_empty() {
            continue;
        }
        let mut text = format!("*{table}\n");
        for c in &chains {
            text.push_str(&format!(":{c} - [0:0]\n"));
        }
        for c in &chains {
            text.push_str(&format!("-X {c}\n"));
        }
        text.push_str("COMMIT\n");
        if command(
            netns,
            "iptables-restore",
            &["--noflush", "--wait"],
            Some(&text),
        )
        .await
        .is_ok()
        {
            removed.push(format!("{table}: {} KUBE chain(s)", chains.len()));
        }
    }
    removed
}
