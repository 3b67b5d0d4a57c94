//! `bank.admin.v1.Backup` (`proto/bank/admin/v1/backup.proto`): a consistent backup of a live
//! branch, while writes go on.
//!
//! The branch takes a read index and waits until it has applied it (so the backup holds every
//! write acknowledged before the call), then clones the whole ledger, request log included, in
//! one short critical section of the state machine's read lock, noting the applied index of
//! that copy. Applies resume at once; the copy is encoded outside the lock, on a blocking
//! thread, as a backup file ([`crate::backup`]), in chunks of at most [`BACKUP_CHUNK_BYTES`]
//! through a channel of [`BACKUP_CHUNKS_QUEUED_MAX`]: a slow reader holds back the encoder,
//! never the branch. The encoder ends when the file is sent or the caller goes away.
//!
//! Guarded like the peer service (one [`super::auth::PeerAuth`] interceptor around it): under
//! TLS, only a caller with a certificate signed by the cluster's CA.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::error::ServiceError;
use crate::node::{Branch, REQUEST_DEADLINE};
use crate::proto::admin::backup_server::BackupServer;
use crate::proto::admin::{BackupChunk, BackupRequest};

/// The largest chunk of a backup stream.
pub const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;

/// Chunks encoded ahead of the caller at most.
pub const BACKUP_CHUNKS_QUEUED_MAX: usize = 4;

type BackupChunks = ReceiverStream<Result<BackupChunk, Status>>;

/// Serves `bank.admin.v1.Backup` on one branch.
pub struct BackupService {
    branch: Branch,
}

impl BackupService {
    pub fn new(branch: Branch) -> Self {
        BackupService { branch }
    }

    /// The tonic server wrapping this service.
    pub fn into_server(self) -> BackupServer<Self> {
        BackupServer::new(self)
    }

    /// The read index, the copy, and the encoder started; the stream of its chunks.
    async fn start(&self) -> Result<BackupChunks, ServiceError> {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let read_index = self.branch.read_index(deadline).await?;
        self.branch.wait_applied(read_index, deadline).await?;
        let (ledger, applied_index) = self.branch.read_state(|state| {
            (
                state.ledger.clone(),
                state.last_applied.map_or(0, |id| id.index),
            )
        })?;
        let (sender, receiver) = mpsc::channel(BACKUP_CHUNKS_QUEUED_MAX);
        let id = self.branch.id;
        // Owned by the stream: it ends once every chunk is sent, or at the first send after
        // the caller dropped the stream.
        drop(tokio::task::spawn_blocking(move || {
            let mut out = ChunkSender {
                sender: sender.clone(),
                buffer: Vec::with_capacity(BACKUP_CHUNK_BYTES),
            };
            let written = crate::backup::write(&ledger, applied_index, id, &mut out)
                .and_then(|summary| out.send_buffer().map(|()| summary));
            match written {
                Ok(summary) => tracing::info!(
                    branch = id,
                    applied_index,
                    accounts = summary.header.accounts,
                    bytes = summary.file_bytes,
                    "backup sent"
                ),
                Err(e) => {
                    tracing::warn!(branch = id, "backup not sent: {e}");
                    let error = ServiceError::Backup(e.to_string());
                    // The caller may be gone already: nothing more to tell then.
                    let _ = sender.blocking_send(Err(Status::from(error)));
                }
            }
        }));
        Ok(ReceiverStream::new(receiver))
    }
}

#[tonic::async_trait]
impl crate::proto::admin::backup_server::Backup for BackupService {
    type BackupStream = BackupChunks;

    async fn backup(
        &self,
        _request: Request<BackupRequest>,
    ) -> Result<Response<BackupChunks>, Status> {
        self.start().await.map(Response::new).map_err(Status::from)
    }
}

/// Cuts what is written into chunks of at most [`BACKUP_CHUNK_BYTES`] and sends each through
/// the bounded channel, waiting for room (it runs on a blocking thread).
struct ChunkSender {
    sender: mpsc::Sender<Result<BackupChunk, Status>>,
    buffer: Vec<u8>,
}

impl ChunkSender {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(BACKUP_CHUNK_BYTES));
        self.sender
            .blocking_send(Ok(BackupChunk { data }))
            .map_err(|_| std::io::Error::other("the caller stopped reading the backup"))
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = BACKUP_CHUNK_BYTES - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() >= BACKUP_CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(n)
    }

    /// Sends nothing: the last chunk goes once the whole file is written (the ledger's encoder
    /// flushes mid-file, and chunks stay full).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
