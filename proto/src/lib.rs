//! kubelab's API types and gRPC stubs, generated from `kubelab/v1/api.proto`.
//!
//! This crate owns the wire format only: no logic lives here, so the apiserver, the
//! scheduler, the agent and the CLI all see the same shapes.

/// The `kubelab.v1` package: objects, requests, and client/server stubs.
pub mod v1 {
    tonic::include_proto!("kubelab.v1");
}

/// Milliseconds since the Unix epoch, the unit of every timestamp in the API.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long a node may go without a heartbeat before it counts as NotReady
/// (Kubernetes' node-monitor-grace-period).
pub const NODE_HEARTBEAT_GRACE_MS: i64 = 40_000;

/// Whether a node is Ready: it said so, and its last heartbeat is recent.
pub fn node_is_ready(node: &v1::Node, now_ms: i64) -> bool {
    node.status
        .as_ref()
        .is_some_and(|s| s.ready && now_ms - s.last_heartbeat_ms < NODE_HEARTBEAT_GRACE_MS)
}
