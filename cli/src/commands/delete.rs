//! `kubelab delete pod NAME [--grace-period N] [--force]`: ask for a graceful delete and,
//! like kubectl, wait (through a watch) until the pod is gone.

use std::time::Duration;

use anyhow::bail;
use futures::StreamExt;
use kubelab_proto::v1::{DeletePodRequest, ObjectKey, Pod, WatchEventType};

use super::check_pod_kind;
use crate::api::{Api, Connection};

pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub force: bool,
    pub wait: bool,
}

pub async fn run(
    server: &Connection,
    namespace: &str,
    kind: &str,
    name: &str,
    options: DeleteOptions,
) -> anyhow::Result<()> {
    check_pod_kind(kind)?;
    if options.force && options.grace_period != Some(0) {
        bail!("--force needs --grace-period=0 (it removes the pod without waiting for its containers to stop)");
    }
    let mut api = Api::connect(server).await?;
    let request = DeletePodRequest {
        namespace: namespace.into(),
        name: name.into(),
        grace_period_seconds: options.grace_period,
        force: options.force,
        uid: String::new(),
        resource_version: 0,
    };
    let pod = api
        .pods
        .delete(request)
        .await
        .map_err(api.error())?
        .into_inner();
    if options.wait {
        wait_until_gone(&mut api, &pod).await?;
    }
    println!("pod \"{name}\" deleted");
    Ok(())
}

/// How long a delete waits quietly before it says what it waits for.
const SAY_WAITING_AFTER: Duration = Duration::from_secs(2);

pub async fn wait_until_gone(api: &mut Api, pod: &Pod) -> anyhow::Result<()> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let mut stream = api
        .watch_pods(&meta.namespace, meta.resource_version)
        .await?;
    // The delete may have removed it at once (an unbound pod): look before waiting.
    match api
        .pods
        .get(ObjectKey {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        })
        .await
    {
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
        Ok(p) if p.get_ref().metadata.as_ref().map(|m| &m.uid) != Some(&meta.uid) => return Ok(()),
        _ => {}
    }
    let grace = meta.deletion_grace_period_seconds.max(0) as u64;
    let mut hinted = false;
    let mut told = false;
    loop {
        // A wait longer than a moment is said, with what is awaited; past the grace
        // period (and a little), the node's agent may be gone: say what to do.
        let patience = if told {
            Duration::from_secs(grace + 10)
        } else {
            SAY_WAITING_AFTER
        };
        let event = match tokio::time::timeout(patience, stream.next()).await {
            Ok(Some(event)) => event.map_err(api.error())?,
            Ok(None) => break,
            Err(_) if !told => {
                told = true;
                eprintln!(
                    "waiting up to {grace}s for the containers of pod {:?} to stop after SIGTERM (terminationGracePeriodSeconds; --grace-period N shortens it)",
                    meta.name
                );
                continue;
            }
            Err(_) => {
                if !hinted {
                    let node = pod
                        .spec
                        .as_ref()
                        .map(|s| s.node_name.as_str())
                        .unwrap_or("?");
                    eprintln!(
                        "still waiting for the agent of node {node} to stop pod {:?} (is it running? `kubelab delete pod {} --grace-period=0 --force` removes the pod now)",
                        meta.name, meta.name
                    );
                    hinted = true;
                }
                continue;
            }
        };
        let uid = event
            .object
            .as_ref()
            .and_then(|p| p.metadata.as_ref())
            .map(|m| m.uid.as_str());
        if event.r#type() == WatchEventType::Deleted && uid == Some(meta.uid.as_str()) {
            return Ok(());
        }
    }
    bail!(
        "the apiserver closed the watch before pod {:?} was gone",
        meta.name
    )
}
