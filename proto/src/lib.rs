//! kubelab's API types and gRPC stubs, generated from `kubelab/v1/api.proto`.
//!
//! This crate owns the wire formats — the messages gRPC carries and, in `k8s`, their
//! Kubernetes JSON shapes — so the apiserver, the scheduler, the agent and the CLI
//! all see the same shapes, plus the few small rules every component must agree on (when a
//! node counts as Ready, which registries are spoken to over plain HTTP, how an image
//! reference reads (`image_ref`), how a duration is written (`duration`), how an error
//! chain reads on one line). Nothing else.

#![forbid(unsafe_code)]

pub mod credential;
pub mod duration;
pub mod image_ref;
pub mod k8s;
pub mod kubeconfig;
pub mod quantity;

/// The `kubelab.v1` package: objects, requests, and client/server stubs.
pub mod v1 {
    tonic::include_proto!("kubelab.v1");
}

/// The inputs `make fuzz` kept for `target` (`fuzz/corpus/TARGET/`), for the tests that
/// replay them beside each parser. Panics (it is for tests) when there are none.
pub fn fuzz_corpus(target: &str) -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let inputs: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(!inputs.is_empty(), "no fuzz corpus in {}", dir.display());
    inputs
}

/// The corpus inputs of `target` that are text (the others cannot reach a text parser).
pub fn fuzz_corpus_texts(target: &str) -> Vec<String> {
    fuzz_corpus(target)
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect()
}

/// The PATH a container gets when its image sets none (the `PATH=` entry of an image's
/// Env, as Docker and containerd default it), and the one kubelab runs host tools with.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `PATH=` and `DEFAULT_PATH`: the entry for an image's or a container's Env.
pub fn default_path_env() -> String {
    format!("PATH={DEFAULT_PATH}")
}

/// Milliseconds since the Unix epoch, the unit of every timestamp in the API.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whether a node is Ready: the apiserver's node lifecycle controller turns this off when
/// the agent stops heartbeating (after `--node-monitor-grace-period`).
pub fn node_is_ready(node: &v1::Node) -> bool {
    node.status.as_ref().is_some_and(|s| s.ready)
}

/// Whether a registry host (`127.0.0.1:5000`, `localhost:5000`, `[::1]:5000`) is on this
/// machine. Such registries are spoken to over plain HTTP, as Docker does for 127.0.0.0/8.
pub fn is_loopback_registry(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error and its causes on one line: `error sending request: connection refused`.
/// Network libraries often keep the useful part (the cause) out of their top message.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        assert!(is_loopback_registry("127.0.0.1:5000"));
        assert!(is_loopback_registry("127.8.0.1:5000"));
        assert!(is_loopback_registry("localhost:5000"));
        assert!(is_loopback_registry("[::1]:5000"));
        assert!(!is_loopback_registry("docker.io"));
        assert!(!is_loopback_registry("10.0.0.1:5000"));
    }
}
