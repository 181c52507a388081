//! `kubelab cordon|uncordon|drain NODE`: keep new pods off a node, let them back, or empty it.
//!
//! Changes a node's spec the way kubectl does: read it, change it, and write it back only
//! if nobody changed it meanwhile (the write names the resource version it read; on a
//! conflict it reads again). Draining deletes the node's pods through the API; the node's
//! agent stops them.

use std::time::Duration;

use anyhow::bail;
use kubelab_proto::v1::{DeletePodRequest, ListPodsRequest, ObjectKey, UpdateNodeRequest};

use crate::api::{Api, Connection};

/// Sets `spec.unschedulable`; says whether it changed.
async fn set_unschedulable(api: &mut Api, name: &str, unschedulable: bool) -> anyhow::Result<bool> {
    // A few tries: each conflict means someone else wrote the node between our read and write.
    for _ in 0..5 {
        let node = api
            .nodes
            .get(ObjectKey {
                namespace: String::new(),
                name: name.into(),
            })
            .await
            .map_err(api.error())?
            .into_inner();
        let meta = node.metadata.clone().unwrap_or_default();
        let mut spec = node.spec.clone().unwrap_or_default();
        if spec.unschedulable == unschedulable {
            return Ok(false);
        }
        spec.unschedulable = unschedulable;
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
    pub timeout: u64,
}

pub async fn drain(server: &Connection, name: &str, options: DrainOptions) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    if set_unschedulable(&mut api, name, true).await? {
        println!("node/{name} cordoned");
    } else {
        println!("node/{name} already cordoned");
    }
    let pods = api
        .pods
        .list(ListPodsRequest {
            node_name: name.into(),
            ..Default::default()
        })
        .await
        .map_err(api.error())?
        .into_inner()
        .items;
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
    match tokio::time::timeout(Duration::from_secs(options.timeout), wait_all).await {
        Ok(done) => done?,
        Err(_) => bail!(
            "drain did not complete within {}s: the node's agent did not stop its pods in time (is it running?); the node stays cordoned",
            options.timeout
        ),
    }
    println!("node/{name} drained");
    Ok(())
}
