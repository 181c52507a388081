//! Socket plumbing shared by kubelab's gRPC servers.

use futures::StreamExt;

/// Accepted connections with Nagle's algorithm off. Without this, a small gRPC answer can
/// wait ~40 ms for the peer's delayed ACK, which alone would double our pod start time.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    })
}
