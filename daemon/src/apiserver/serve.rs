//! One listener, one TLS certificate, two ways in: requests whose `Content-Type` is
//! `application/grpc...` go to the gRPC services (tonic), all others to the Kubernetes
//! REST API (axum), over HTTP/2 or HTTP/1.1 as the client chooses (ALPN).
//!
//! Owns the accept loop, the TLS handshake and the connections; decides nothing about
//! requests.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::ApiserverError;

/// The TLS settings: the apiserver's certificate, HTTP/2 offered first.
pub fn tls_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, ApiserverError> {
    let bad = |what: &str, e: String| ApiserverError::Tls(format!("{what}: {e}"));
    let certs = rustls_pemfile_certs(cert_pem).map_err(|e| bad("certificate", e))?;
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| bad("key", e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad("protocols", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| bad("certificate", e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn rustls_pemfile_certs(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// Whether a request is gRPC (tonic's) rather than REST.
fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Serves `grpc` and `rest` on `listener` until `stop` resolves; connections still open
/// then are given `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    grpc: axum::Router,
    rest: axum::Router,
    stop: impl std::future::Future<Output = ()>,
    grace: std::time::Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
            // Reap finished connections as we go.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        // Without this a small answer can wait ~40 ms for the peer's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let (acceptor, grpc, rest) = (acceptor.clone(), grpc.clone(), rest.clone());
        connections.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let grpc_call = is_grpc(&request);
                    let request = request.map(Body::new);
                    let router = if grpc_call {
                        grpc.clone()
                    } else {
                        rest.clone()
                    };
                    async move { router.oneshot(request).await }
                });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(1000);
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    // Watch streams never end by themselves: give calls in flight a moment, then stop.
    // Every acknowledged write is already on disk, so nothing is lost either way.
    let _ = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}
