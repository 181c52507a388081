//! `kubelab delete pod NAME... | pod/NAME... | pods --all | -f FILE [--grace-period N]
//! [--force]`: ask for a graceful delete of each pod and, like kubectl, wait (through a
//! watch) until it is gone.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use kubelab_proto::v1::{DeletePodRequest, ObjectKey, Pod, WatchEventType};

use super::check_pod_kind;
use crate::api::{Api, Connection};

/// What `delete` was asked to remove, in kubectl's forms.
pub struct Targets {
    /// `pod`, `pods`, `po`, or `pod/NAME`.
    pub kind: Option<String>,
    pub names: Vec<String>,
    /// `-f FILE|DIR|-`: the pods its manifests name.
    pub file: Option<std::path::PathBuf>,
    /// `--all`: every pod of the namespace.
    pub all: bool,
}

/// The pods `targets` name, as (namespace, name); `default_namespace` when a manifest
/// names none.
async fn resolve(
    api: &mut Api,
    default_namespace: &str,
    targets: Targets,
) -> anyhow::Result<Vec<(String, String)>> {
    let ns = |n: &str| (default_namespace.to_string(), n.to_string());
    if let Some(file) = &targets.file {
        if targets.kind.is_some() || !targets.names.is_empty() || targets.all {
            bail!("delete -f FILE takes no other pods: kubelab delete -f FILE, or kubelab delete pod NAME");
        }
        let mut out = Vec::new();
        for (label, text) in super::apply::read_manifests(file)? {
            let (pods, _) = crate::manifest::parse_pods(&text).context(label)?;
            for pod in pods {
                let meta = pod.metadata.unwrap_or_default();
                let namespace = if meta.namespace.is_empty() {
                    default_namespace.to_string()
                } else {
                    meta.namespace
                };
                out.push((namespace, meta.name));
            }
        }
        return Ok(out);
    }
    let Some(kind) = targets.kind else {
        bail!("what to delete? kubelab delete pod NAME, delete pod/NAME, delete pods --all, or delete -f FILE");
    };
    // `pod/NAME` forms, each naming its own pod.
    if kind.contains('/') {
        let mut out = Vec::new();
        for item in std::iter::once(&kind).chain(&targets.names) {
            let Some((k, name)) = item.split_once('/') else {
                bail!("{item:?}: with pod/NAME, name every pod that way (pod/a pod/b)");
            };
            check_pod_kind(k)?;
            out.push(ns(name));
        }
        return Ok(out);
    }
    check_pod_kind(&kind)?;
    if targets.all {
        if !targets.names.is_empty() {
            bail!("--all deletes every pod of the namespace: name no pod with it");
        }
        let pods = api.list_pods(default_namespace).await?;
        return Ok(pods
            .into_iter()
            .filter_map(|p| p.metadata)
            .map(|m| (m.namespace, m.name))
            .collect());
    }
    if targets.names.is_empty() {
        bail!("which pod? kubelab delete pod NAME (or --all for every pod of the namespace)");
    }
    Ok(targets.names.iter().map(|n| ns(n)).collect())
}

/// `kubelab delete` in every form kubectl has for pods: each pod deleted, then, like
/// kubectl, waited for until it is gone.
pub async fn run_many(
    server: &Connection,
    namespace: &str,
    targets: Targets,
    options: DeleteOptions,
) -> anyhow::Result<()> {
    if options.force && options.grace_period != Some(0) {
        bail!("--force needs --grace-period=0 (it removes the pod without waiting for its containers to stop)");
    }
    let mut api = Api::connect(server).await?;
    let pods = resolve(&mut api, namespace, targets).await?;
    if pods.is_empty() {
        println!("No resources found");
        return Ok(());
    }
    for (ns, name) in pods {
        delete_one(&mut api, &ns, &name, &options).await?;
    }
    Ok(())
}

pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub force: bool,
    pub wait: bool,
}

async fn delete_one(
    api: &mut Api,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
) -> anyhow::Result<()> {
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
        wait_until_gone(api, &pod).await?;
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
