//! `kubelab wait pod NAME --for PHASE`: block, on a watch, until the pod gets there.

use std::time::Duration;

use anyhow::bail;
use futures::StreamExt;
use kubelab_proto::v1::WatchEventType;

use super::check_pod_kind;
use crate::api::{Api, Connection};
use crate::output;

pub async fn run(
    server: &Connection,
    namespace: &str,
    kind: &str,
    name: &str,
    condition: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    check_pod_kind(kind)?;
    let wanted = condition.strip_prefix("phase=").unwrap_or(condition);
    if !["Running", "Succeeded", "Failed", "Ready"].contains(&wanted) {
        bail!("--for {condition:?}: wait for Running, Succeeded, Failed or Ready");
    }
    let mut api = Api::connect(server).await?;
    tokio::time::timeout(timeout, wait_for(&mut api, namespace, name, wanted))
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {timeout:?} waiting for pod {name:?} to be {wanted} (see: kubelab describe pod {name})"))?
}

/// Waits for the pod to reach a phase (or Ready); fails early when it never can.
async fn wait_for(api: &mut Api, namespace: &str, name: &str, wanted: &str) -> anyhow::Result<()> {
    let pod = api.get_pod(namespace, name).await?;
    let from = pod
        .metadata
        .as_ref()
        .map(|m| m.resource_version)
        .unwrap_or(0);
    let mut stream = api.watch_pods(namespace, from).await?;
    let mut pod = pod;
    loop {
        let status = pod.status.clone().unwrap_or_default();
        let ready = !status.container_statuses.is_empty()
            && status.container_statuses.iter().all(|c| c.ready);
        if status.phase == wanted || (wanted == "Ready" && ready) {
            println!("pod/{name} condition met ({wanted})");
            return Ok(());
        }
        if (status.phase == "Succeeded" || status.phase == "Failed") && wanted != status.phase {
            bail!(
                "pod {name:?} ended {} ({}); it will not become {wanted}",
                status.phase,
                output::pod_status_text(&pod)
            );
        }
        // The next change of this pod.
        loop {
            let Some(event) = stream.next().await else {
                bail!("the apiserver closed the watch")
            };
            let event = event.map_err(api.error())?;
            let Some(changed) = event.object.clone() else {
                continue;
            };
            if changed.metadata.as_ref().map(|m| m.name.as_str()) != Some(name) {
                continue;
            }
            if event.r#type() == WatchEventType::Deleted {
                bail!("pod {name:?} was deleted");
            }
            pod = changed;
            break;
        }
    }
}
