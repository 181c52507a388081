//! What an agent leaves on the host outside its files, and its removal when the agent
//! cannot do it itself (it was killed, or the machine lost power): `kubelabd reset`.
//!
//! A running agent writes `host.json` in its root directory once registered: its node
//! name, its network settings and the pod CIDR its masquerade rule names. `reset` reads it
//! and removes, with the agent's own code, what a stopping agent would have removed:
//! each pod's containers and shims, network (CNI DEL: veth, address lease), pinned
//! namespaces, mounts, cgroups, files and logs, then the node's masquerade rule and
//! bridge. It holds the root's lock throughout, so it never runs beside a live agent.
//! Stored objects are the apiserver's and stay: an agent started again on this root
//! starts the pods the API still binds to its node afresh.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::network::{NetworkManager, NetworkSettings};
use super::runtime::RuntimeService;
use super::AgentError;

const HOST_RECORD: &str = "host.json";

/// `host.json`: what the agent put on the host beyond its root directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct HostRecord {
    pub node_name: String,
    pub network: NetworkSettings,
    pub pod_cidr: String,
    /// The node's own network, when it is a separate host.
    #[serde(default)]
    pub separate_host: Option<super::separate_host::SeparateHost>,
}

/// Writes `<root>/host.json` (replacing it whole, so a crash leaves the old or the new).
pub fn write_host_record(root: &Path, record: &HostRecord) -> Result<(), AgentError> {
    let path = root.join(HOST_RECORD);
    let bytes = serde_json::to_vec_pretty(record)
        .map_err(|e| AgentError::Io(path.clone(), std::io::Error::other(e)))?;
    let tmp = root.join("host.json.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| AgentError::Io(path, e))
}

/// Whether `dir` is an agent's root directory (it has the agent's lock file).
pub fn is_agent_root(dir: &Path) -> bool {
    dir.join("agent.lock").is_file()
}

/// Removes what the agent of `root` left on the host; returns one line per thing removed.
/// Fails without touching anything when an agent is running on `root`.
pub async fn reset(root: &Path) -> Result<Vec<String>, AgentError> {
    let _lock = super::lock_root_dir(root).map_err(|e| match e {
        AgentError::RootDirInUse(dir) => AgentError::StillRunning(dir, running_agents(root)),
        other => other,
    })?;
    let record: Option<HostRecord> = std::fs::read(root.join(HOST_RECORD))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // Without a record (an agent that never registered), the node's name is the root's
    // directory name in kubelab's layouts (`agents/NODE`), and there is no rule or bridge.
    let node_name = match &record {
        Some(r) => r.node_name.clone(),
        None => root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let runtime = Arc::new(RuntimeService::new(
        root.to_path_buf(),
        node_name.clone(),
        0,
    )?);
    let network = record.as_ref().map(|r| {
        let network = NetworkManager::new(r.network.clone());
        network.set_pod_cidr(&r.pod_cidr);
        network
    });
    let mut removed = Vec::new();
    for uid in runtime.pods_on_disk() {
        let pod = pod_name(root, &uid).unwrap_or_else(|| format!("uid {uid}"));
        if let Some(network) = &network {
            if let Err(e) = network.teardown(&runtime.network_record(&uid)).await {
                tracing::warn!(%pod, error = %e, "CNI DEL failed; removing the namespace anyway");
            }
        }
        let stopped = {
            let runtime = runtime.clone();
            crate::blocking::off_thread(move || runtime.remove_orphan(&uid)).await
        };
        removed.push(format!(
            "node {node_name}: pod {pod}: {stopped} process(es) stopped; its network, mounts, cgroups and files removed"
        ));
    }
    if let Some(network) = &network {
        let node = network.clean_up_node().await;
        if node.masquerade_rule {
            removed.push(format!("node {node_name}: its iptables masquerade rule"));
        }
        if let Some(bridge) = node.bridge {
            removed.push(format!("node {node_name}: its bridge {bridge}"));
        }
    }
    if let Some(record) = &record {
        if let Some(host) = &record.separate_host {
            for what in super::separate_host::detach(host, &record.pod_cidr).await {
                removed.push(format!("node {node_name}: {what}"));
            }
        }
    }
    Ok(removed)
}

/// The pod's `namespace/name`, from its log directory (`<ns>_<name>_<uid>`).
fn pod_name(root: &Path, uid: &str) -> Option<String> {
    std::fs::read_dir(root.join("logs"))
        .ok()?
        .flatten()
        .find_map(|e| {
            let dir = e.file_name().to_string_lossy().into_owned();
            let rest = dir.strip_suffix(&format!("_{uid}"))?;
            let (ns, name) = rest.split_once('_')?;
            Some(format!("{ns}/{name}"))
        })
}

/// The pids of agents running with `root` as their root directory.
fn running_agents(root: &Path) -> Vec<i32> {
    let root = PathBuf::from(root);
    super::runtime::processes_mentioning(&root.display().to_string())
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|arg| arg == b"agent")
        })
        .collect()
}
