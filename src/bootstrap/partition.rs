//! Cutting branches of a local cluster off from each other, without touching Raft: every
//! branch reaches its peers through a [`PartitionConnector`] that refuses to connect while
//! either end is cut off, and breaks an open connection on its next read or write. Raft then
//! sees what it would see of a network partition: calls that fail, retried until healed.
//!
//! Only the peer network goes through it (votes, appends, forwarded writes, read indexes);
//! customers and `bank status` still reach a cut-off branch, so its rising term shows.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::raft::network::Connector;
use crate::BranchId;

/// Bound on one TCP connect to a peer.
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);

/// Which branches are cut off; shared by every branch's connector.
#[derive(Debug, Default)]
pub struct Partition {
    /// Fast path: nothing is cut (no lock on every read and write).
    any: AtomicBool,
    cut: RwLock<BTreeSet<BranchId>>,
}

impl Partition {
    pub fn cut(&self, id: BranchId) {
        let mut cut = self.cut.write().unwrap_or_else(|p| p.into_inner());
        cut.insert(id);
        self.any.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self, id: BranchId) {
        let mut cut = self.cut.write().unwrap_or_else(|p| p.into_inner());
        cut.remove(&id);
        self.any.store(!cut.is_empty(), Ordering::SeqCst);
    }

    pub fn is_cut(&self, id: BranchId) -> bool {
        self.any.load(Ordering::SeqCst)
            && self
                .cut
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&id)
    }

    /// The branches cut off now.
    pub fn cut_off(&self) -> Vec<BranchId> {
        let cut = self.cut.read().unwrap_or_else(|p| p.into_inner());
        cut.iter().copied().collect()
    }

    /// Whether `from` may not reach `to`.
    fn separates(&self, from: BranchId, to: Option<BranchId>) -> bool {
        self.any.load(Ordering::Relaxed)
            && (self.is_cut(from) || to.is_some_and(|to| self.is_cut(to)))
    }
}

/// Branch `from`'s way to its peers: TCP, unless the [`Partition`] separates them.
#[derive(Debug, Clone)]
pub struct PartitionConnector {
    pub from: BranchId,
    pub partition: Arc<Partition>,
    /// `host:port` -> branch id, to know whom a connection goes to.
    pub branches: Arc<BTreeMap<String, BranchId>>,
}

fn refused() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, "cut off (on purpose)")
}

impl Connector for PartitionConnector {
    fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        let connector = self.clone();
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
            let connector = connector.clone();
            async move {
                let host = uri
                    .host()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
                let port = uri.port_u16().unwrap_or(80);
                let to = connector.branches.get(&format!("{host}:{port}")).copied();
                if connector.partition.separates(connector.from, to) {
                    return Err(refused());
                }
                let stream =
                    tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect((host, port)))
                        .await
                        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect"))??;
                stream.set_nodelay(true)?;
                Ok::<_, io::Error>(TokioIo::new(CuttableStream {
                    stream,
                    from: connector.from,
                    to,
                    partition: connector.partition,
                }))
            }
        }))
    }
}

/// A connection that fails as soon as the partition separates its ends.
struct CuttableStream {
    stream: TcpStream,
    from: BranchId,
    to: Option<BranchId>,
    partition: Arc<Partition>,
}

impl CuttableStream {
    fn check(&self) -> io::Result<()> {
        if self.partition.separates(self.from, self.to) {
            Err(refused())
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Partition;

    #[test]
    fn a_cut_branch_is_separated_both_ways_until_healed() {
        let partition = Partition::default();
        assert!(!partition.separates(1, Some(2)));
        partition.cut(2);
        assert!(partition.separates(1, Some(2)));
        assert!(partition.separates(2, Some(1)));
        assert!(!partition.separates(1, Some(3)));
        partition.heal(2);
        assert!(!partition.separates(2, Some(1)));
    }
}
