//! `kubelab get pods|nodes [NAME] [-o wide|yaml|json|name]`.

use anyhow::bail;
use kubelab_proto::v1::{ListNodesRequest, ListPodsRequest, ObjectKey};

use super::is_pod_kind;
use crate::api::{Api, Connection};
use crate::output;
use crate::OutputFormat;

pub async fn run(
    server: &Connection,
    namespace: &str,
    kind: &str,
    name: Option<String>,
    format: Option<OutputFormat>,
    all_namespaces: bool,
) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    let wide = format == Some(OutputFormat::Wide);
    if is_pod_kind(kind) {
        let pods = match &name {
            Some(n) => vec![api.get_pod(namespace, n).await?],
            None => {
                let namespace = if all_namespaces {
                    String::new()
                } else {
                    namespace.to_string()
                };
                api.pods
                    .list(ListPodsRequest {
                        namespace,
                        node_name: String::new(),
                    })
                    .await
                    .map_err(api.error())?
                    .into_inner()
                    .items
            }
        };
        let k8s: Vec<_> = pods.iter().map(output::to_k8s_pod).collect();
        return print(
            format,
            name.is_some(),
            &k8s,
            |p| format!("pod/{}", p.metadata.name.clone().unwrap_or_default()),
            || {
                if pods.is_empty() {
                    eprintln!(
                        "No resources found in {} namespace.",
                        if all_namespaces { "any" } else { namespace }
                    );
                } else {
                    output::table(&output::pod_rows(&pods, wide, all_namespaces));
                }
            },
        );
    }
    if !matches!(kind, "node" | "nodes" | "no") {
        bail!("unknown resource type {kind:?}: kubelab knows pods (po) and nodes (no)");
    }
    let nodes = match &name {
        Some(n) => vec![api
            .nodes
            .get(ObjectKey {
                namespace: String::new(),
                name: n.clone(),
            })
            .await
            .map_err(api.error())?
            .into_inner()],
        None => {
            api.nodes
                .list(ListNodesRequest {})
                .await
                .map_err(api.error())?
                .into_inner()
                .items
        }
    };
    let k8s: Vec<_> = nodes.iter().map(output::to_k8s_node).collect();
    print(
        format,
        name.is_some(),
        &k8s,
        |n| format!("node/{}", n.metadata.name.clone().unwrap_or_default()),
        || {
            if nodes.is_empty() {
                eprintln!("No nodes registered (start an agent: kubelabd agent --node-name NAME).");
            } else {
                output::table(&output::node_rows(&nodes, wide));
            }
        },
    )
}

/// Prints objects in the asked format; `table` prints the default (and wide) view.
fn print<T: serde::Serialize>(
    format: Option<OutputFormat>,
    single: bool,
    items: &[T],
    name: impl Fn(&T) -> String,
    table: impl FnOnce(),
) -> anyhow::Result<()> {
    // One object prints as itself; several print as a Kubernetes List, as kubectl does.
    let value = match (single, items.first()) {
        (true, Some(item)) => serde_json::to_value(item)?,
        _ => serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items }),
    };
    match format {
        Some(OutputFormat::Json) => println!("{}", serde_json::to_string_pretty(&value)?),
        Some(OutputFormat::Yaml) => print!("{}", serde_yaml::to_string(&value)?),
        Some(OutputFormat::Name) => items.iter().for_each(|i| println!("{}", name(i))),
        Some(OutputFormat::Wide) | None => table(),
    }
    Ok(())
}
