//! `kubelab get pods|nodes|namespaces|events [NAME] [-o wide|yaml|json|name] [-l SELECTOR]
//! [--field-selector spec.nodeName=NODE] [-w]`.
//!
//! `-w` lists, then follows a watch from the list's resource version; when the watch
//! breaks it resumes from the last version seen, and relists when the apiserver says that
//! version has expired — as client-go's reflector does.

use std::time::Duration;

use anyhow::bail;
use futures::StreamExt;
use kubelab_proto::v1::{ListNodesRequest, ListPodsRequest, Pod, WatchRequest};

use super::is_pod_kind;
use crate::api::{Api, Connection};
use crate::output;
use crate::OutputFormat;

pub struct GetOptions {
    pub format: Option<OutputFormat>,
    pub all_namespaces: bool,
    pub label_selector: String,
    pub field_selector: String,
    pub watch: bool,
}

/// `spec.nodeName=NODE` → NODE; the only field selector kubelab serves.
fn node_name_of(field_selector: &str) -> anyhow::Result<String> {
    if field_selector.is_empty() {
        return Ok(String::new());
    }
    match field_selector.split_once('=') {
        Some(("spec.nodeName", node)) => Ok(node.trim_start_matches('=').to_string()),
        _ => bail!(
            "field selector {field_selector:?} is not supported: kubelab knows spec.nodeName=NODE"
        ),
    }
}

pub async fn run(
    server: &Connection,
    namespace: &str,
    kind: &str,
    name: Option<String>,
    options: GetOptions,
) -> anyhow::Result<()> {
    let GetOptions {
        format,
        all_namespaces,
        ..
    } = options;
    if super::namespace::is_namespace_kind(kind) {
        if options.watch || !options.field_selector.is_empty() {
            bail!("-w and --field-selector work on pods only");
        }
        return super::namespace::get(server, name, format, &options.label_selector).await;
    }
    let mut api = Api::connect(server).await?;
    let wide = format == Some(OutputFormat::Wide);
    let node_name = node_name_of(&options.field_selector)?;
    if is_pod_kind(kind) {
        let namespace_to_list = if all_namespaces {
            String::new()
        } else {
            namespace.to_string()
        };
        if options.watch {
            if name.is_some() || !matches!(format, None | Some(OutputFormat::Wide)) {
                bail!("-w lists and watches all the pods asked for as a table: drop NAME and -o (or use -o wide)");
            }
            let request = ListPodsRequest {
                namespace: namespace_to_list,
                node_name,
                label_selector: options.label_selector.clone(),
            };
            return watch_pods(&mut api, request, wide, all_namespaces).await;
        }
        let pods = match &name {
            Some(n) => vec![api.get_pod(namespace, n).await?],
            None => {
                api.pods
                    .list(ListPodsRequest {
                        namespace: namespace_to_list,
                        node_name,
                        label_selector: options.label_selector.clone(),
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
    if matches!(kind, "event" | "events" | "ev") {
        let namespace = if all_namespaces { "" } else { namespace };
        return events(&mut api, namespace, options.watch).await;
    }
    if !matches!(kind, "node" | "nodes" | "no") {
        bail!(
            "unknown resource type {kind:?}: kubelab knows pods (po), nodes (no), namespaces (ns) and events (ev)"
        );
    }
    if options.watch || !node_name.is_empty() {
        bail!("-w and --field-selector work on pods only");
    }
    let nodes = match &name {
        Some(n) => vec![api.get_node(n).await?],
        None => {
            api.nodes
                .list(ListNodesRequest {
                    label_selector: options.label_selector.clone(),
                })
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
            if nodes.is_empty() && !options.label_selector.is_empty() {
                eprintln!("No resources found.");
            } else if nodes.is_empty() {
                eprintln!("No nodes registered (start an agent: kubelabd agent --node-name NAME).");
            } else {
                output::table(&output::node_rows(&nodes, wide));
            }
        },
    )
}

/// Prints objects in the asked format; `table` prints the default (and wide) view.
pub fn print<T: serde::Serialize>(
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
        Some(OutputFormat::Yaml) => print!("{}", yaml_serde::to_string(&value)?),
        Some(OutputFormat::Name) => items.iter().for_each(|i| println!("{}", name(i))),
        Some(OutputFormat::Wide) | None => table(),
    }
    Ok(())
}

/// Lists, prints the table, then prints a row for every change; resumes a broken watch
/// from the last version seen, relists an expired one. Runs until interrupted.
async fn watch_pods(
    api: &mut Api,
    list: ListPodsRequest,
    wide: bool,
    all_namespaces: bool,
) -> anyhow::Result<()> {
    let mut table = output::Table::new();
    let mut print_rows = |pods: &[Pod], header: bool| {
        let rows = output::pod_rows(pods, wide, all_namespaces);
        let rows = if header { &rows[..] } else { &rows[1..] };
        // The header and the listed rows are laid out together, so that they line up;
        // later rows widen the columns only if they must.
        for row in rows {
            table.fit(row);
        }
        for row in rows {
            println!("{}", table.line(row));
        }
    };
    let mut first = true;
    'relist: loop {
        let listed = api
            .pods
            .list(list.clone())
            .await
            .map_err(api.error())?
            .into_inner();
        print_rows(&listed.items, first);
        first = false;
        let mut revision = listed.resource_version;
        loop {
            let request = WatchRequest {
                from_revision: revision,
                namespace: list.namespace.clone(),
                node_name: list.node_name.clone(),
                label_selector: list.label_selector.clone(),
            };
            let broken = match api.pods.watch(request).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.next().await {
                            Some(Ok(event)) => {
                                let Some(pod) = event.object else { continue };
                                revision = pod
                                    .metadata
                                    .as_ref()
                                    .map(|m| m.resource_version)
                                    .unwrap_or(revision);
                                // Like kubectl -w, a delete prints the pod's last state.
                                print_rows(std::slice::from_ref(&pod), false);
                            }
                            Some(Err(status)) => break status,
                            None => break tonic::Status::unavailable("the watch ended"),
                        }
                    }
                }
                Err(status) => status,
            };
            match broken.code() {
                // Too far behind for the apiserver's history: start again from a list.
                tonic::Code::OutOfRange => {
                    eprintln!("watch expired ({}): relisting", broken.message());
                    continue 'relist;
                }
                // The apiserver restarting: resume where we were.
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ => return Err(api.error()(broken)),
            }
        }
    }
}

/// `get events [-w]`: kubectl's columns, oldest first; with `-w`, each new or repeated
/// event as it is recorded (relisting if the watch expires).
async fn events(api: &mut Api, namespace: &str, watch: bool) -> anyhow::Result<()> {
    loop {
        let listed = api
            .events
            .list(kubelab_proto::v1::ListEventsRequest {
                namespace: namespace.into(),
                involved_uid: String::new(),
            })
            .await
            .map_err(api.error())?
            .into_inner();
        if listed.items.is_empty() && !watch {
            eprintln!("No events found.");
            return Ok(());
        }
        output::table(&output::event_rows(&listed.items));
        if !watch {
            return Ok(());
        }
        let request = WatchRequest {
            from_revision: listed.resource_version,
            namespace: namespace.into(),
            ..Default::default()
        };
        let mut stream = api
            .events
            .watch(request)
            .await
            .map_err(api.error())?
            .into_inner();
        let broken = loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    if let Some(e) = event.object {
                        println!("{}", output::event_row(&e).join("   "));
                    }
                }
                Some(Err(status)) => break status,
                None => break tonic::Status::unavailable("the watch ended"),
            }
        };
        if broken.code() != tonic::Code::OutOfRange {
            return Err(api.error()(broken));
        }
        eprintln!("watch expired ({}): relisting", broken.message());
    }
}
