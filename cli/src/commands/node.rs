//! `kubelab cordon|uncordon|drain NODE`: keep new pods off a node, let them back, or empty
//! it; `kubelab label|taint node NODE ...`: what the scheduler matches pods against.
//!
//! Changes a node's labels and spec the way kubectl does: read it, change it, and write it back only
//! if nobody changed it meanwhile (the write names the resource version it read; on a
//! conflict it reads again). Draining deletes the node's pods through the API; the node's
//! agent stops them.

use std::time::Duration;

use anyhow::bail;
use std::collections::HashMap;

use kubelab_proto::v1::{DeletePodRequest, NodeSpec, Taint, UpdateNodeRequest};

use crate::api::{Api, Connection};

/// Reads the node, lets `change` edit its labels and spec (returning whether it changed
/// anything, or an error), and writes it back over the version read; on a conflict (someone
/// wrote the node in between) it starts again. Says whether anything changed.
async fn update_node(
    api: &mut Api,
    name: &str,
    mut change: impl FnMut(&mut HashMap<String, String>, &mut NodeSpec) -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    for _ in 0..5 {
        let node = api.get_node(name).await?;
        let mut meta = node.metadata.clone().unwrap_or_default();
        let mut spec = node.spec.clone().unwrap_or_default();
        if !change(&mut meta.labels, &mut spec)? {
            return Ok(false);
        }
        let request = UpdateNodeRequest {
            name: name.into(),
            labels: meta.labels,
            spec: Some(spec),
            resource_version: meta.resource_version,
        };
        match api.nodes.update(request).await {
            Ok(_) => return Ok(true),
            Err(e) if e.code() == tonic::Code::Aborted => continue,
            Err(e) => return Err(api.error()(e)),
        }
    }
    bail!("node {name:?} kept changing while we tried to update it: try again")
}

/// Sets `spec.unschedulable`; says whether it changed.
async fn set_unschedulable(api: &mut Api, name: &str, unschedulable: bool) -> anyhow::Result<bool> {
    update_node(api, name, |_, spec| {
        let changed = spec.unschedulable != unschedulable;
        spec.unschedulable = unschedulable;
        Ok(changed)
    })
    .await
}

/// `kubelab label node NODE k=v k2- ...`: sets or (with a trailing `-`) removes labels. As
/// kubectl, changing an existing label's value needs `--overwrite`.
pub async fn label(
    server: &Connection,
    name: &str,
    changes: &[String],
    overwrite: bool,
) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    update_node(&mut api, name, |labels, _| {
        apply_label_changes(labels, changes, overwrite, "node", name)?;
        Ok(true)
    })
    .await?;
    println!("node/{name} {}", label_verb(changes));
    Ok(())
}

/// What kubectl says a label change did: `unlabeled` when it only removed labels.
pub fn label_verb(changes: &[String]) -> &'static str {
    if !changes.is_empty() && changes.iter().all(|c| c.ends_with('-')) {
        "unlabeled"
    } else {
        "labeled"
    }
}

/// Sets `KEY=VALUE` and removes `KEY-` labels, as kubectl label does: changing an existing
/// label's value needs `overwrite`. `kind` and `name` say whose labels, in the error.
pub fn apply_label_changes(
    labels: &mut HashMap<String, String>,
    changes: &[String],
    overwrite: bool,
    kind: &str,
    name: &str,
) -> anyhow::Result<()> {
    for c in changes {
        if let Some(key) = c.strip_suffix('-') {
            labels.remove(key);
            continue;
        }
        let Some((key, value)) = c.split_once('=') else {
            bail!("invalid label {c:?}: expected KEY=VALUE, or KEY- to remove it");
        };
        match labels.get(key) {
            Some(old) if old != value && !overwrite => bail!(
                "{kind} {name:?} already has a value ({old}) for label {key:?}: add --overwrite to change it"
            ),
            _ => {
                labels.insert(key.into(), value.into());
            }
        }
    }
    Ok(())
}

/// `kubelab taint node NODE key=value:Effect key2:Effect- ...`: adds or (with a trailing
/// `-`) removes taints, as kubectl taint does.
pub async fn taint(server: &Connection, name: &str, changes: &[String]) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    update_node(&mut api, name, |_, spec| {
        for c in changes {
            let (text, remove) = match c.strip_suffix('-') {
                Some(t) => (t, true),
                None => (c.as_str(), false),
            };
            let (key_value, effect) = match text.rsplit_once(':') {
                Some((kv, effect)) => (kv, effect),
                None if remove => (text, ""),
                None => bail!("invalid taint {c:?}: expected KEY=VALUE:EFFECT (NoSchedule, PreferNoSchedule or NoExecute), or KEY:EFFECT- to remove it"),
            };
            let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
            if remove {
                let before = spec.taints.len();
                spec.taints
                    .retain(|t| !(t.key == key && (effect.is_empty() || t.effect == effect)));
                if spec.taints.len() == before {
                    bail!("taint {text:?} not found on node {name:?}");
                }
                continue;
            }
            // A taint is known by its key and effect: a new value replaces the old one.
            spec.taints.retain(|t| !(t.key == key && t.effect == effect));
            spec.taints.push(Taint {
                key: key.into(),
                value: value.into(),
                effect: effect.into(),
                time_added_ms: 0,
            });
        }
        Ok(true)
    })
    .await?;
    // As kubectl says it: only removals untaint, both kinds modify.
    let removals = changes.iter().filter(|c| c.ends_with('-')).count();
    let verb = match (removals, changes.len() - removals) {
        (0, _) => "tainted",
        (_, 0) => "untainted",
        _ => "modified",
    };
    println!("node/{name} {verb}");
    Ok(())
}

pub async fn cordon(server: &Connection, name: &str, cordon: bool) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    let changed = set_unschedulable(&mut api, name, cordon).await?;
    let verb = if cordon { "cordoned" } else { "uncordoned" };
    if changed {
        println!("node/{name} {verb}");
    } else {
        println!("node/{name} already {verb}");
    }
    Ok(())
}

pub struct DrainOptions {
    pub force: bool,
    pub grace_period: Option<i64>,
    pub timeout: Duration,
}

pub async fn drain(server: &Connection, name: &str, options: DrainOptions) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    if set_unschedulable(&mut api, name, true).await? {
        println!("node/{name} cordoned");
    } else {
        println!("node/{name} already cordoned");
    }
    let pods = api.pods_on_node(name).await?;
    let running: Vec<_> = pods
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .is_none_or(|s| s.phase != "Succeeded" && s.phase != "Failed")
        })
        .collect();
    let names: Vec<String> = running
        .iter()
        .filter_map(|p| p.metadata.as_ref())
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .collect();
    // kubelab has no controllers: every pod is a bare pod, which nothing recreates once
    // deleted. kubectl asks for --force before deleting those, and so do we.
    if !names.is_empty() && !options.force {
        bail!(
            "cannot delete Pods that declare no controller (use --force to override): {}",
            names.join(", ")
        );
    }
    for pod in &running {
        let meta = pod.metadata.clone().unwrap_or_default();
        println!("evicting pod {}/{}", meta.namespace, meta.name);
        let request = DeletePodRequest {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            grace_period_seconds: options.grace_period,
            ..Default::default()
        };
        match api.pods.delete(request).await {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::NotFound => {}
            Err(e) => return Err(api.error()(e)),
        }
    }
    let wait_all = async {
        for pod in &running {
            super::delete::wait_until_gone(&mut api, pod).await?;
            let meta = pod.metadata.clone().unwrap_or_default();
            println!("pod/{} evicted", meta.name);
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(options.timeout, wait_all).await {
        Ok(done) => done?,
        Err(_) => bail!(
            "drain did not complete within {:?}: the node's agent did not stop its pods in time (is it running?); the node stays cordoned",
            options.timeout
        ),
    }
    println!("node/{name} drained");
    Ok(())
}
