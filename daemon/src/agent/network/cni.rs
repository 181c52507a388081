//! Calling CNI plugins exactly as the CNI specification (1.0.0) says.
//!
//! A plugin is an executable found in the plugin directories by its `type`. It gets the
//! operation in environment variables (`CNI_COMMAND` = ADD, DEL or CHECK,
//! `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`) and the network
//! configuration as JSON on stdin; it answers a result (ADD) or nothing (DEL, CHECK) on
//! stdout, or, failing, exits non-zero with an error object `{code, msg, details}`. A
//! configuration *list* runs its plugins in order for ADD and CHECK, each one given the
//! result so far as `prevResult`, and in reverse order for DEL. Owns no state.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin:?} not found in {dirs} (install Debian's containernetworking-plugins, or set --cni-bin-dir)")]
    NotFound { plugin: String, dirs: String },
    #[error("plugin type={plugin:?} failed ({}): {message}", command.to_lowercase())]
    Plugin {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("CNI configuration: {0}")]
    Config(String),
    #[error("running CNI plugin {0:?}: {1}")]
    Io(String, std::io::Error),
    #[error("CNI plugin {plugin:?} ({}) did not answer within {timeout:?} and was killed", command.to_lowercase())]
    Timeout {
        plugin: String,
        command: &'static str,
        timeout: std::time::Duration,
    },
}

/// How long one plugin call may take. The kubelet gives a whole sandbox operation a few
/// minutes; one local bridge call takes milliseconds, so a plugin still running after
/// this is hung, and must not hold a pod's start or delete forever.
pub const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What one call is about: which container, which namespace, which interface.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `K8S_POD_NAMESPACE=…;K8S_POD_NAME=…`, as the kubelet passes them.
    pub args: String,
}

/// Plugin executables, looked up by type in these directories, in order.
pub struct Plugins {
    pub dirs: Vec<PathBuf>,
    /// Each call's limit (`PLUGIN_TIMEOUT`): past it the plugin is killed.
    pub timeout: std::time::Duration,
    /// The node's network namespace when it is a separate host: plugins run there.
    pub netns: Option<PathBuf>,
}

impl Plugins {
    fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        let valid = !plugin.is_empty() && !plugin.contains('/') && plugin != "." && plugin != "..";
        self.dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| valid && p.is_file())
            .ok_or_else(|| CniError::NotFound {
                plugin: plugin.to_string(),
                dirs: self
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            })
    }

    /// ADD for a configuration list; returns the final result.
    pub async fn add(&self, list: &Value, at: &Attachment) -> Result<Value, CniError> {
        let mut result: Option<Value> = None;
        for plugin in plugins_of(list)? {
            let out = self
                .invoke("ADD", &plugin_config(list, plugin, result.as_ref()), at)
                .await?;
            result = Some(out);
        }
        result.ok_or_else(|| CniError::Config("the list has no plugins".into()))
    }

    /// CHECK for a configuration list, with the result ADD gave.
    pub async fn check(
        &self,
        list: &Value,
        at: &Attachment,
        result: &Value,
    ) -> Result<(), CniError> {
        for plugin in plugins_of(list)? {
            self.invoke("CHECK", &plugin_config(list, plugin, Some(result)), at)
                .await?;
        }
        Ok(())
    }

    /// DEL for a configuration list, last plugin first. Every plugin is asked even when
    /// one fails (releasing an address must not depend on removing an interface); the
    /// first failure is returned.
    pub async fn del(
        &self,
        list: &Value,
        at: &Attachment,
        result: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first_error = None;
        for plugin in plugins_of(list)?.iter().rev() {
            if let Err(e) = self
                .invoke("DEL", &plugin_config(list, plugin, result), at)
                .await
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn invoke(
        &self,
        command: &'static str,
        config: &Value,
        at: &Attachment,
    ) -> Result<Value, CniError> {
        let plugin = config["type"].as_str().unwrap_or_default().to_string();
        let exe = self.find(&plugin)?;
        let path = std::env::join_paths(&self.dirs).unwrap_or_default();
        tracing::debug!(%plugin, command, ifname = %at.ifname, "calling CNI plugin");
        let io = |e| CniError::Io(plugin.clone(), e);
        let mut child = crate::agent::separate_host::command_in(self.netns.as_deref(), &exe)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &at.container_id)
            .env("CNI_NETNS", &at.netns)
            .env("CNI_IFNAME", &at.ifname)
            .env("CNI_ARGS", &at.args)
            .env("CNI_PATH", path)
            // Plugins call iptables and friends.
            .env("PATH", kubelab_proto::DEFAULT_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io)?;
        let input = serde_json::to_vec(config).map_err(|e| CniError::Config(e.to_string()))?;
        let stdin = child.stdin.take();
        let call = async move {
            if let Some(mut stdin) = stdin {
                stdin.write_all(&input).await?;
            }
            child.wait_with_output().await
        };
        // On time-out the call's future, and with it the child, is dropped: kill_on_drop
        // ends the plugin.
        let out = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| CniError::Timeout {
                plugin: plugin.clone(),
                command,
                timeout: self.timeout,
            })?
            .map_err(io)?;
        if out.status.success() {
            if out.stdout.iter().all(|b| b.is_ascii_whitespace()) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&out.stdout).map_err(|e| CniError::Plugin {
                plugin,
                command,
                message: format!("unreadable result: {e}"),
            });
        }
        // The plugin's own words: its error object, else whatever it printed.
        let error: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let message = match (error["msg"].as_str(), error["details"].as_str()) {
            (Some(msg), Some(details)) if !details.is_empty() => format!("{msg}: {details}"),
            (Some(msg), _) => msg.to_string(),
            _ => {
                let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
                if text.is_empty() {
                    format!("exited with {}", out.status)
                } else {
                    text
                }
            }
        };
        Err(CniError::Plugin {
            plugin,
            command,
            message,
        })
    }
}

fn plugins_of(list: &Value) -> Result<&Vec<Value>, CniError> {
    list["plugins"]
        .as_array()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| CniError::Config("a configuration list needs \"plugins\"".into()))
}

/// One plugin's configuration as the spec builds it from the list: the list's
/// `cniVersion` and `name`, the plugin's own fields, and `prevResult` when there is one.
fn plugin_config(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut config = plugin.clone();
    config["cniVersion"] = list["cniVersion"].clone();
    config["name"] = list["name"].clone();
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        config["prevResult"] = prev.clone();
    }
    config
}

/// The first IPv4 address of a result (`ips[].address`, without its prefix length).
pub fn first_ipv4(result: &Value) -> Option<String> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let address = ip["address"].as_str()?;
        let (addr, _) = address.split_once('/')?;
        addr.parse::<std::net::Ipv4Addr>()
            .ok()
            .map(|a| a.to_string())
    })
}

/// A configuration list with one plugin (how a single-plugin `.conf` is run).
pub fn single(name: &str, plugin: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]})
}

/// Reads a configuration list (`.conflist`) or a single configuration (`.conf`).
pub fn load(path: &Path) -> Result<Value, CniError> {
    let text =
        std::fs::read(path).map_err(|e| CniError::Config(format!("{}: {e}", path.display())))?;
    let value: Value = serde_json::from_slice(&text)
        .map_err(|e| CniError::Config(format!("{}: {e}", path.display())))?;
    if value["plugins"].is_array() {
        return Ok(value);
    }
    if value["type"].is_string() {
        let name = value["name"].as_str().unwrap_or("kubelab").to_string();
        let mut list = single(&name, value.clone());
        list["cniVersion"] = value["cniVersion"].clone();
        return Ok(list);
    }
    Err(CniError::Config(format!(
        "{}: neither a configuration list (\"plugins\") nor a plugin configuration (\"type\")",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_configs_are_built_from_the_list() {
        let list = json!({"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "bridge", "bridge": "b0"}]});
        let config = plugin_config(&list, &list["plugins"][0], Some(&json!({"ips": []})));
        assert_eq!(config["name"], "net");
        assert_eq!(config["cniVersion"], "1.0.0");
        assert_eq!(config["bridge"], "b0");
        assert_eq!(config["prevResult"], json!({"ips": []}));
        assert!(plugin_config(&list, &list["plugins"][0], None)
            .get("prevResult")
            .is_none());
    }

    /// A plugin that hangs is killed at the time-out and the call says so; it does not
    /// hold the pod's setup or teardown forever.
    #[tokio::test]
    async fn a_hung_plugin_is_killed_at_the_timeout() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let plugin = dir.path().join("hang");
        std::fs::write(&plugin, "#!/bin/sh\nexec sleep 600\n").expect("plugin");
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let plugins = Plugins {
            dirs: vec![dir.path().into()],
            timeout: std::time::Duration::from_millis(300),
            netns: None,
        };
        let list = json!({"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "hang"}]});
        let at = Attachment {
            container_id: "c".into(),
            netns: "/proc/self/ns/net".into(),
            ifname: "eth0".into(),
            args: String::new(),
        };
        let started = std::time::Instant::now();
        let err = plugins.del(&list, &at, None).await.expect_err("timed out");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            err.to_string()
                .contains("(del) did not answer within 300ms and was killed"),
            "{err}"
        );
    }

    #[test]
    fn the_pod_ip_is_read_from_the_result() {
        let result = json!({"ips": [{"address": "fd00::2/64"}, {"interface": 2, "address": "10.88.1.7/24", "gateway": "10.88.1.1"}]});
        assert_eq!(first_ipv4(&result).as_deref(), Some("10.88.1.7"));
        assert_eq!(first_ipv4(&json!({})), None);
    }
}
