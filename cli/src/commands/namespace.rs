//! `kubelab create namespace NAME`, `kubelab get namespaces [NAME]`, `kubelab label
//! namespace NAME k=v k2-`: the namespaces whose labels choose their pods' Pod Security
//! level (pod-security.kubernetes.io/enforce, .../warn).
//!
//! Talks to the Namespaces service only; relabelling reads, changes and writes back over
//! the version read, as `label node` does.

use anyhow::bail;
use kubelab_proto::v1::{
    ListNamespacesRequest, Namespace, ObjectKey, ObjectMeta, UpdateNamespaceRequest,
};

use crate::api::{Api, Connection};
use crate::output;
use crate::OutputFormat;

/// `namespace`, `namespaces` and `ns` name the same resource, as in kubectl.
pub fn is_namespace_kind(kind: &str) -> bool {
    matches!(kind, "namespace" | "namespaces" | "ns")
}

pub async fn create(server: &Connection, name: &str) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    let namespace = Namespace {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        status: None,
    };
    api.namespaces
        .create(namespace)
        .await
        .map_err(api.error())?;
    println!("namespace/{name} created");
    Ok(())
}

pub async fn get(
    server: &Connection,
    name: Option<String>,
    format: Option<OutputFormat>,
    label_selector: &str,
) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    let namespaces = match &name {
        Some(n) => vec![api
            .namespaces
            .get(ObjectKey {
                namespace: String::new(),
                name: n.clone(),
            })
            .await
            .map_err(api.error())?
            .into_inner()],
        None => {
            api.namespaces
                .list(ListNamespacesRequest {
                    label_selector: label_selector.into(),
                })
                .await
                .map_err(api.error())?
                .into_inner()
                .items
        }
    };
    let k8s: Vec<_> = namespaces.iter().map(output::to_k8s_namespace).collect();
    super::get::print(
        format,
        name.is_some(),
        &k8s,
        |n| format!("namespace/{}", n.metadata.name.clone().unwrap_or_default()),
        || {
            if namespaces.is_empty() {
                eprintln!("No resources found.");
                return;
            }
            output::table(&output::namespace_rows(&namespaces));
        },
    )
}

/// `kubelab label namespace NS k=v k2-`; changing a value needs `--overwrite`, as in kubectl.
pub async fn label(
    server: &Connection,
    name: &str,
    changes: &[String],
    overwrite: bool,
) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    for _ in 0..5 {
        let key = ObjectKey {
            namespace: String::new(),
            name: name.into(),
        };
        let ns = api
            .namespaces
            .get(key)
            .await
            .map_err(api.error())?
            .into_inner();
        let meta = ns.metadata.unwrap_or_default();
        let mut labels = meta.labels;
        super::node::apply_label_changes(&mut labels, changes, overwrite, "namespace", name)?;
        let request = UpdateNamespaceRequest {
            name: name.into(),
            labels,
            resource_version: meta.resource_version,
        };
        match api.namespaces.update(request).await {
            Ok(_) => {
                println!("namespace/{name} {}", super::node::label_verb(changes));
                return Ok(());
            }
            Err(e) if e.code() == tonic::Code::Aborted => continue,
            Err(e) => return Err(api.error()(e)),
        }
    }
    bail!("namespace {name:?} kept changing while we tried to update it: try again")
}
