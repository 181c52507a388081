//! One file per verb, as kubectl has them. Each takes its arguments and an `Api`, and
//! prints what the user asked for; none reaches past the apiserver.

pub mod apply;
pub mod delete;
pub mod describe;
pub mod exec;
pub mod get;
pub mod logs;
pub mod namespace;
pub mod node;
pub mod trace;
pub mod wait;

/// `pod`, `pods` and `po` name the same resource, as in kubectl.
pub fn is_pod_kind(kind: &str) -> bool {
    matches!(kind, "pod" | "pods" | "po")
}

pub fn check_pod_kind(kind: &str) -> anyhow::Result<()> {
    if !is_pod_kind(kind) {
        anyhow::bail!("unknown resource type {kind:?}: this command works on pods (pod, pods, po)");
    }
    Ok(())
}

pub fn check_node_kind(kind: &str) -> anyhow::Result<()> {
    if !matches!(kind, "node" | "nodes" | "no") {
        anyhow::bail!(
            "unknown resource type {kind:?}: this command works on nodes (node, nodes, no)"
        );
    }
    Ok(())
}
