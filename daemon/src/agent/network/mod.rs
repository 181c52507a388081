//! Pod networking through CNI plugins: the kubelet's network plugin role.
//!
//! For each pod with its own network, the agent attaches two networks to the pod's
//! pinned network namespace: `lo` through the `loopback` plugin, and `eth0` through the
//! pod network — by default a `bridge` (one per node, the gateway of the node's pod CIDR)
//! with `host-local` addresses from the pod CIDR the apiserver gave the node; or a
//! configuration list from `--cni-conf`. Traffic leaving the cluster is masqueraded by one
//! rule per node (as Kubernetes' kubenet did), not per pod: pod-to-pod traffic keeps its
//! addresses, and no iptables command runs while a pod starts. What was
//! attached is written to `pods/<uid>/network.json` *before* the plugins run, so that DEL
//! can always be called with the same configuration, even by an agent started again.
//! Owns that record and the plugins' calls; the namespace itself is the sandbox's.

pub mod cni;

/// The pod network's interface inside the pod.
const POD_INTERFACE: &str = "eth0";

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use cni::{Attachment, CniError, Plugins};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error("the node has no pod CIDR (the apiserver gives one at registration; if none was left, the node has a CIDRNotAvailable event: start the apiserver with a larger --cluster-cidr or --node-cidr-mask-size)")]
    NoPodCidr,
    #[error("the pod network gave no IPv4 address (result: {0})")]
    NoAddress(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("iptables: {0}")]
    Iptables(String),
}

/// The agent's networking settings (kept in the agent's `host.json` for `kubelabd reset`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkSettings {
    /// Where plugin executables are looked for, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// A configuration list to use instead of the built-in bridge network.
    pub conf_file: Option<PathBuf>,
    /// The built-in network's bridge (one per node: each holds its node's gateway address).
    pub bridge: String,
    /// The cluster's pod addresses: traffic to them is never masqueraded.
    pub cluster_cidr: String,
    /// host-local's lease directory.
    pub ipam_dir: PathBuf,
    /// The node's network namespace when it is a separate host (`separate_host`): its
    /// bridge, plugins and masquerade rule are there.
    #[serde(default)]
    pub netns: Option<PathBuf>,
}

/// One network attached to a pod: its configuration list, interface, and ADD's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Attached {
    ifname: String,
    config: Value,
    result: Option<Value>,
}

/// `pods/<uid>/network.json`: everything DEL and CHECK need, kept from the ADD.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    container_id: String,
    netns: PathBuf,
    args: String,
    networks: Vec<Attached>,
}

impl Record {
    fn attachment(&self, ifname: &str) -> Attachment {
        Attachment {
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: ifname.to_string(),
            args: self.args.clone(),
        }
    }

    /// The address of the pod network (`eth0`; `lo`'s 127.0.0.1 is not the pod's IP).
    fn pod_ip(&self) -> Option<String> {
        self.networks
            .iter()
            .filter(|n| n.ifname == POD_INTERFACE)
            .filter_map(|n| n.result.as_ref())
            .find_map(cni::first_ipv4)
    }
}

pub struct NetworkManager {
    settings: NetworkSettings,
    plugins: Plugins,
    /// The node's pod CIDR, known once the node is registered.
    pod_cidr: RwLock<String>,
}

impl NetworkManager {
    pub fn new(settings: NetworkSettings) -> Self {
        NetworkManager {
            plugins: Plugins {
                dirs: settings.bin_dirs.clone(),
                timeout: cni::PLUGIN_TIMEOUT,
                netns: settings.netns.clone(),
            },
            settings,
            pod_cidr: RwLock::new(String::new()),
        }
    }

    pub fn set_pod_cidr(&self, cidr: &str) {
        *self.pod_cidr.write().unwrap_or_else(|e| e.into_inner()) = cidr.to_string();
    }

    /// The pod network's configuration list: the file given, or the built-in bridge.
    fn pod_network(&self) -> Result<Value, NetworkError> {
        if let Some(file) = &self.settings.conf_file {
            return Ok(cni::load(file)?);
        }
        let cidr = self
            .pod_cidr
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if cidr.is_empty() {
            return Err(NetworkError::NoPodCidr);
        }
        Ok(json!({
            "cniVersion": "1.0.0",
            "name": "kubelab",
            "plugins": [{
                "type": "bridge",
                "bridge": self.settings.bridge,
                "isGateway": true,
                // Masquerading is the node's one rule (`ensure_masquerade`), not per pod.
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.settings.ipam_dir,
                },
            }],
        }))
    }

    /// Attaches `lo` and `eth0` to the pod's namespace (once: an existing record is
    /// reused) and returns the pod's IP.
    #[tracing::instrument(name = "network", skip_all)]
    pub async fn setup(
        &self,
        container_id: &str,
        pod_args: String,
        netns: &Path,
        record_path: &Path,
    ) -> Result<String, NetworkError> {
        if let Some(done) = read_record(record_path) {
            if let Some(ip) = done.pod_ip() {
                return Ok(ip);
            }
            // An ADD cut short (the agent was killed during it): undo it, then start over.
            self.teardown(record_path).await?;
        }
        let mut record = Record {
            container_id: container_id.to_string(),
            netns: netns.to_path_buf(),
            args: pod_args,
            networks: vec![
                Attached {
                    ifname: "lo".into(),
                    config: cni::single("cni-loopback", json!({"type": "loopback"})),
                    result: None,
                },
                Attached {
                    ifname: POD_INTERFACE.into(),
                    config: self.pod_network()?,
                    result: None,
                },
            ],
        };
        // Written first: whatever the plugins manage to do, DEL will find it.
        write_record(record_path, &record)?;
        let (lo, eth0) = (&record.networks[0], &record.networks[1]);
        let (lo_at, eth0_at) = (record.attachment("lo"), record.attachment(POD_INTERFACE));
        // The two attachments touch different interfaces: they run side by side.
        let (lo_result, eth0_result) = tokio::join!(
            self.plugins.add(&lo.config, &lo_at),
            self.plugins.add(&eth0.config, &eth0_at),
        );
        let added = lo_result
            .and_then(|lo| eth0_result.map(|eth0| (lo, eth0)))
            .map_err(NetworkError::from)
            .and_then(|(lo, eth0)| match cni::first_ipv4(&eth0) {
                Some(ip) => Ok((lo, eth0, ip)),
                None => Err(NetworkError::NoAddress(eth0.to_string())),
            });
        let (lo, eth0, ip) = match added {
            Ok(attached) => attached,
            Err(e) => {
                // Undo what did happen; the error the user sees is the ADD's.
                if let Err(del) = self.teardown(record_path).await {
                    tracing::warn!(error = %del, "cleaning up after a failed ADD");
                }
                return Err(e);
            }
        };
        record.networks[0].result = Some(lo);
        record.networks[1].result = Some(eth0);
        write_record(record_path, &record)?;
        tracing::info!(%ip, "pod network attached");
        Ok(ip)
    }

    /// CHECK: asks the plugins whether the pod's networks are still as ADD left them.
    pub async fn check(&self, record_path: &Path) -> Result<(), NetworkError> {
        let Some(record) = read_record(record_path) else {
            return Ok(());
        };
        for network in &record.networks {
            if let Some(result) = &network.result {
                self.plugins
                    .check(&network.config, &record.attachment(&network.ifname), result)
                    .await?;
            }
        }
        Ok(())
    }

    /// DEL: detaches every network the record names (last attached first), then forgets
    /// the record. Nothing to do when there is no record.
    pub async fn teardown(&self, record_path: &Path) -> Result<(), NetworkError> {
        let Some(record) = read_record(record_path) else {
            return Ok(());
        };
        let mut first_error = None;
        for network in record.networks.iter().rev() {
            let at = record.attachment(&network.ifname);
            if let Err(e) = self
                .plugins
                .del(&network.config, &at, network.result.as_ref())
                .await
            {
                tracing::warn!(ifname = %network.ifname, error = %e, "CNI DEL failed");
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e.into());
        }
        let _ = std::fs::remove_file(record_path);
        tracing::debug!("pod network detached");
        Ok(())
    }

    /// The pod IP a record holds (a re-adopted pod's).
    pub fn pod_ip(record_path: &Path) -> Option<String> {
        read_record(record_path).and_then(|r| r.pod_ip())
    }

    /// Pods' traffic to outside the cluster leaves with the node's address; traffic
    /// between pods (even of different nodes) keeps its own. One rule in nat POSTROUTING:
    /// from this node's pod CIDR, not to the cluster CIDR, MASQUERADE. Each agent keeps
    /// its own (named by its bridge).
    pub async fn ensure_masquerade(&self) -> Result<(), NetworkError> {
        if self.settings.conf_file.is_some() {
            return Ok(()); // a user's own network decides for itself
        }
        if self.iptables("-C").await.is_ok() {
            return Ok(());
        }
        self.iptables("-A").await
    }

    /// The agent is stopping and its pods are gone: removes its masquerade rule and its
    /// bridge (which the bridge plugin makes but never removes). Says which of the two
    /// were there (`kubelabd reset` reports them).
    pub async fn clean_up_node(&self) -> NodeCleanUp {
        if self.settings.conf_file.is_some() {
            return NodeCleanUp::default();
        }
        let masquerade_rule = self.iptables("-D").await.is_ok();
        let bridge = super::separate_host::command_in(self.settings.netns.as_deref(), "ip")
            .args(["link", "del", &self.settings.bridge])
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        tracing::debug!(bridge = %self.settings.bridge, deleted = bridge, "bridge removed");
        NodeCleanUp {
            masquerade_rule,
            bridge: bridge.then(|| self.settings.bridge.clone()),
        }
    }

    async fn iptables(&self, op: &str) -> Result<(), NetworkError> {
        let pod_cidr = self
            .pod_cidr
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if pod_cidr.is_empty() {
            return Err(NetworkError::NoPodCidr);
        }
        let comment = format!(
            "kubelab: masquerade what leaves the cluster ({})",
            self.settings.bridge
        );
        let out = super::separate_host::command_in(self.settings.netns.as_deref(), "iptables")
            // Wait at most 10 s for the xtables lock another program holds.
            .args(["-w", "10", "-t", "nat", op, "POSTROUTING", "-s", &pod_cidr])
            .args(["!", "-d", &self.settings.cluster_cidr])
            .args(["-m", "comment", "--comment", &comment, "-j", "MASQUERADE"])
            .output()
            .await
            .map_err(|e| NetworkError::Iptables(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NetworkError::Iptables(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
}

/// What `clean_up_node` found and removed.
#[derive(Debug, Default)]
pub struct NodeCleanUp {
    pub masquerade_rule: bool,
    pub bridge: Option<String>,
}

fn read_record(path: &Path) -> Option<Record> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn write_record(path: &Path, record: &Record) -> Result<(), NetworkError> {
    let bytes = serde_json::to_vec_pretty(record)
        .map_err(|e| NetworkError::Io(path.into(), std::io::Error::other(e)))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| NetworkError::Io(path.into(), e))
}
