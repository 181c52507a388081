//! Reading Kubernetes Pod manifests (YAML, one or more documents) into kubelab's API
//! objects, through the same decoding and conversion the apiserver's REST side uses
//! (`kubelab_proto::k8s`): a manifest that works here works on a real cluster. Fields
//! kubelab does not act on yet are named in warnings rather than silently dropped; a
//! field Kubernetes does not have (a typo) is an error naming the nearest known one, as
//! kubectl's default validation refuses it. Owns no I/O beyond the text it is given.

use kubelab_proto::k8s::{self, k8s_openapi::api::core::v1 as k8s_core};
use kubelab_proto::v1 as api;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Yaml(String),
    #[error("document {0}: kind {1:?} is not supported: kubelab runs Pods only (apiVersion: v1, kind: Pod)")]
    Kind(usize, String),
    #[error("document {0}: apiVersion {1:?} is not supported for Pods: use apiVersion: v1")]
    ApiVersion(usize, String),
    #[error("document {0}: {1}")]
    Field(usize, String),
    #[error("no Pod found in the file (is it empty?)")]
    Empty,
    /// Fields Kubernetes does not have: a typo, as kubectl's default validation says.
    #[error("document {0}: Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: {1}")]
    Unknown(usize, String),
}

/// `unknown field "spec.containers[0].comand" (did you mean "command"?)`, for each.
fn unknown_fields(paths: &[String]) -> String {
    paths
        .iter()
        .map(|path| match k8s::nearest_field(path) {
            Some(near) => format!("unknown field {path:?} (did you mean {near:?}?)"),
            None => format!("unknown field {path:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pods in a (possibly multi-document) YAML file, with warnings for ignored fields.
pub fn parse_pods(text: &str) -> Result<(Vec<api::Pod>, Vec<String>), ManifestError> {
    let mut pods = Vec::new();
    let mut warnings = Vec::new();
    for (i, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = yaml_serde::Value::deserialize(document)
            .map_err(|e| ManifestError::Yaml(yaml_error(&e)))?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        if kind != "Pod" {
            return Err(ManifestError::Kind(
                n,
                if kind.is_empty() {
                    "(missing)".into()
                } else {
                    kind
                },
            ));
        }
        let version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if version != "v1" {
            return Err(ManifestError::ApiVersion(n, version.to_string()));
        }
        let json =
            serde_json::to_vec(&value).map_err(|e| ManifestError::Field(n, e.to_string()))?;
        let decoded = k8s::decode::<k8s_core::Pod>(&json)
            .map_err(|e| ManifestError::Field(n, e.to_string()))?;
        let pod = k8s::pod_from_k8s(decoded.object).map_err(|e| ManifestError::Field(n, e.0))?;
        if !decoded.unknown.is_empty() {
            return Err(ManifestError::Unknown(n, unknown_fields(&decoded.unknown)));
        }
        let kept = serde_json::to_value(k8s::pod(&pod)).unwrap_or_default();
        warnings.extend(k8s::unsupported(&decoded.value, &kept));
        pods.push(pod);
    }
    if pods.is_empty() {
        return Err(ManifestError::Empty);
    }
    Ok((pods, warnings))
}

fn yaml_error(e: &yaml_serde::Error) -> String {
    match e.location() {
        Some(l) => format!(
            "invalid YAML at line {} column {}: {}",
            l.line(),
            l.column(),
            e.to_string().split(" at line").next().unwrap_or_default()
        ),
        None => format!("invalid YAML: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_manifest_converts_and_unknown_fields_are_named() {
        let (pods, warnings) = parse_pods(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  hostIPC: true\n  shareProcessNamespace: true\n  securityContext:\n    seccompProfile: {type: RuntimeDefault}\n    sysctls: [{name: net.ipv4.tcp_syncookies, value: '1'}]\n  containers:\n  - name: c\n    image: busybox:1\n    args: [sleep, '1']\n    ports: [{containerPort: 80, hostPort: 8080}]\n    stdin: true\n    securityContext: {procMount: Unmasked, appArmorProfile: {type: Unconfined}}\n",
        )
        .unwrap();
        let spec = pods[0].spec.as_ref().unwrap();
        assert_eq!(spec.containers[0].args, ["sleep", "1"]);
        assert!(spec.host_ipc);
        assert_eq!(spec.containers[0].ports[0].host_port, 8080);
        let pod_sc = spec.security_context.as_ref().unwrap();
        assert_eq!(
            pod_sc.seccomp_profile.as_ref().unwrap().r#type,
            "RuntimeDefault"
        );
        assert_eq!(pod_sc.sysctls[0].name, "net.ipv4.tcp_syncookies");
        let sc = spec.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.proc_mount, "Unmasked");
        assert_eq!(sc.app_armor_profile.as_ref().unwrap().r#type, "Unconfined");
        assert_eq!(
            warnings,
            ["spec.containers[0].stdin", "spec.shareProcessNamespace"]
        );
    }

    /// What `make fuzz` found worth keeping replays here: every input parses or is
    /// refused, none panics.
    #[test]
    fn the_fuzz_corpus_replays_without_panics() {
        for text in kubelab_proto::fuzz_corpus_texts("manifest") {
            let _ = parse_pods(&text);
        }
    }

    #[test]
    fn a_misspelt_field_is_refused_with_the_nearest_name() {
        let e = parse_pods(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: c\n    image: x\n    comand: [sh]\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "document 1: Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.containers[0].comand\" (did you mean \"command\"?)"
        );
    }

    #[test]
    fn broken_yaml_names_the_line() {
        let e = parse_pods("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "{e}");
        let e = parse_pods("apiVersion: apps/v1\nkind: Deployment\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Deployment"), "{e}");
    }
}
