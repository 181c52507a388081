//! `kubelab describe pod NAME`: the pod in detail, and its events as a timeline.

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
    check_pod_kind(kind)?;
    let mut api = Api::connect(server).await?;
    let pod = api.get_pod(namespace, name).await?;
    let meta = pod.metadata.clone().unwrap_or_default();
    let events = api
        .events
        .list(ListEventsRequest {
            namespace: meta.namespace,
            involved_uid: meta.uid,
        })
        .await
        .map_err(api.error())?
        .into_inner()
        .items;
    print!("{}", output::describe_pod(&pod, &events));
    Ok(())
}
