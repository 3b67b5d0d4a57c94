//! gRPC over turmoil's simulated TCP: a client connector for tonic `Channel`s and a server-side
//! stream type for [`crate::server::serve_incoming`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// HTTP/2 keepalive on simulated channels. turmoil's TCP never retransmits: a segment dropped
/// by a partition or by message loss stalls that connection for good, so a dead connection must
/// be noticed and replaced. (Real TCP retransmits; production sets no keepalive.)
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// How long HTTP/2 remembers a stream it reset (e.g. a call that timed out). h2 measures it on
/// the wall clock (`std::time::Instant`), not tokio's: with its 1 s default, whether a late
/// frame for such a stream is ignored or tears the connection down depended on how fast the
/// machine ran the seed, and a seed did not always replay. Longer than any run, it never
/// expires in one; the count bound (h2's 50 streams) still forgets the oldest, deterministically.
const RESET_STREAM_REMEMBERED: Duration = Duration::from_secs(3_600);

/// A lazily connected channel to `endpoint`'s host over turmoil's network.
pub fn connect_lazy(endpoint: Endpoint) -> Channel {
    endpoint
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .http2_reset_stream_duration(RESET_STREAM_REMEMBERED)
        .connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "uri without host"))?
                .to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = turmoil::net::TcpStream::connect((host, port)).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }))
}

/// A server-side simulated TCP connection, as tonic's server wants it.
pub struct SimStream(pub turmoil::net::TcpStream);

impl Connected for SimStream {
    type ConnectInfo = Option<SocketAddr>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.peer_addr().ok()
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections accepted on `listener`, for [`crate::server::serve_incoming`].
pub fn incoming(
    listener: turmoil::net::TcpListener,
) -> impl tokio_stream::Stream<Item = io::Result<SimStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener
            .accept()
            .await
            .map(|(stream, _peer)| SimStream(stream));
        Some((accepted, listener))
    })
}

/// Reaches a branch's peers over turmoil's network: injected into its [`Peers`].
///
/// [`Peers`]: crate::raft::network::Peers
#[derive(Debug, Clone, Copy, Default)]
pub struct SimConnector;

impl crate::raft::network::Connector for SimConnector {
    fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        connect_lazy(endpoint)
    }
}
