//! `kubelab apply -f FILE|DIR|-`: create the manifests' pods; say "unchanged" for
//! identical ones.

use std::path::Path;

use anyhow::{bail, Context};
use kubelab_proto::v1::{ObjectKey, PodSpec};

use crate::api::{Api, Connection};
use crate::manifest;

/// The manifests `-f` names, each with how to name it in an error: standard input
/// (`-`), a file, or every `*.yaml`, `*.yml` and `*.json` of a directory, in name order,
/// as kubectl reads them.
pub fn read_manifests(file: &Path) -> anyhow::Result<Vec<(String, String)>> {
    if file.as_os_str() == "-" {
        let text = std::io::read_to_string(std::io::stdin())
            .context("reading the manifest from standard input")?;
        return Ok(vec![("<stdin>".into(), text)]);
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    if !file.is_dir() {
        return Ok(vec![(file.display().to_string(), read(file)?)]);
    }
    let mut paths: Vec<_> = std::fs::read_dir(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!(
            "no manifests (*.yaml, *.yml, *.json) in the directory {}",
            file.display()
        );
    }
    paths
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect()
}

pub async fn run(server: &Connection, namespace: &str, file: &Path) -> anyhow::Result<()> {
    let mut pods = Vec::new();
    for (label, text) in read_manifests(file)? {
        let (found, warnings) = manifest::parse_pods(&text).context(label)?;
        for w in warnings {
            eprintln!("warning: {w} is not supported by kubelab yet and is ignored");
        }
        pods.extend(found);
    }
    let mut api = Api::connect(server).await?;
    for mut pod in pods {
        let meta = pod.metadata.get_or_insert_with(Default::default);
        if meta.namespace.is_empty() {
            meta.namespace = namespace.to_string();
        }
        let key = ObjectKey {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        };
        match api.pods.create(pod.clone()).await {
            Ok(response) => {
                print_warnings(response.metadata());
                println!("pod/{} created", key.name);
            }
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                let existing = api.get_pod(&key.namespace, &key.name).await?;
                if same_spec(
                    pod.spec.unwrap_or_default(),
                    existing.spec.unwrap_or_default(),
                ) {
                    println!("pod/{} unchanged", key.name);
                } else {
                    let name = key.name;
                    bail!("pod {name:?} already exists with a different spec; a pod's spec cannot be changed: delete it first (kubelab delete pod {name})");
                }
            }
            Err(s) => return Err(api.error()(s)),
        }
    }
    Ok(())
}

/// The apiserver's warnings (Kubernetes' `299 - "text"` form), printed as kubectl prints
/// them: `Warning: text` on standard error.
fn print_warnings(metadata: &tonic::metadata::MetadataMap) {
    for value in metadata.get_all("warning") {
        if let Ok(header) = value.to_str() {
            eprintln!("Warning: {}", warning_text(header));
        }
    }
}

/// `299 - "would violate \"x\""` → `would violate "x"`; anything else as it is.
fn warning_text(header: &str) -> String {
    let Some(quoted) = header
        .strip_prefix("299 - \"")
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return header.to_string();
    };
    let mut text = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.extend(chars.next()),
            c => text.push(c),
        }
    }
    text
}

/// Whether the spec the user wrote matches the stored one, ignoring what the API filled in
/// (defaults, the node the scheduler chose).
fn same_spec(mut wanted: PodSpec, mut current: PodSpec) -> bool {
    current.node_name.clear();
    wanted.node_name.clear();
    let wanted_all = wanted
        .init_containers
        .iter_mut()
        .chain(&mut wanted.containers);
    let current_all = current.init_containers.iter().chain(&current.containers);
    for (w, c) in wanted_all.zip(current_all) {
        if w.image_pull_policy.is_empty() {
            w.image_pull_policy = c.image_pull_policy.clone();
        }
        for (wp, cp) in w.ports.iter_mut().zip(&c.ports) {
            if wp.protocol.is_empty() {
                wp.protocol = cp.protocol.clone();
            }
        }
    }
    if wanted.restart_policy.is_empty() {
        wanted.restart_policy = current.restart_policy.clone();
    }
    // Compared as Kubernetes writes them: an unset field and its default are one (the
    // default tolerations included).
    kubelab_proto::k8s::pod_spec(&wanted) == kubelab_proto::k8s::pod_spec(&current)
}

#[cfg(test)]
mod tests {
    #[test]
    fn warnings_are_unquoted_as_kubectl_shows_them() {
        assert_eq!(
            super::warning_text(r#"299 - "would violate PodSecurity \"restricted:latest\": x""#),
            r#"would violate PodSecurity "restricted:latest": x"#
        );
        assert_eq!(super::warning_text("plain"), "plain");
    }
}
