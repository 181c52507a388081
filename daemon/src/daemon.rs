//! What every kubelab daemon binary does around its work (`kubelabd`, `kubelab-dns`): its
//! logging, the log filter and the shutdown signal. Owns nothing else.

/// Logs to stderr, filtered by `log_filter`; in colour only on a terminal (log files,
/// such as the lab's .lab/up.log, stay plain text).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `RUST_LOG` (default `info`), with the chattiest libraries kept at `info` unless named:
/// `RUST_LOG=debug` should read as the story of what kubelab did, not of sled's page cache.
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let mut filter = tracing_subscriber::EnvFilter::new(&spec);
    for noisy in [
        "sled",
        "h2",
        "hyper",
        "hyper_util",
        "tower",
        "tonic",
        "reqwest",
        "rustls",
        "rustls_platform_verifier",
        "oci_client",
    ] {
        if !spec.contains(noisy) {
            if let Ok(directive) = format!("{noisy}=info").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
