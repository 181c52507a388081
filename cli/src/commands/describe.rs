//! `kubelab describe pod NAME`: the pod in detail, and its events as a timeline;
//! `kubelab describe node NAME`: the node, its pods and what they take, its events.

use kubelab_proto::v1::ListEventsRequest;

use super::check_pod_kind;
use crate::api::{Api, Connection};
use crate::output;

pub async fn run(
    server: &Connection,
    namespace: &str,
    kind: &str,
    name: &str,
) -> anyhow::Result<()> {
    if matches!(kind, "node" | "nodes" | "no") {
        return node(server, name).await;
    }
    check_pod_kind(kind)?;
    let mut api = Api::connect(server).await?;
    let (pod, events) = api.pod_and_events(namespace, name).await?;
    print!("{}", output::describe_pod(&pod, &events));
    Ok(())
}

async fn node(server: &Connection, name: &str) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    let node = api.get_node(name).await?;
    let pods = api.pods_on_node(name).await?;
    let uid = node
        .metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default();
    let events = api
        .events
        .list(ListEventsRequest {
            namespace: String::new(),
            involved_uid: uid,
        })
        .await
        .map_err(api.error())?
        .into_inner()
        .items;
    print!("{}", output::describe_node(&node, &pods, &events));
    Ok(())
}
