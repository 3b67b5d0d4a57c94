//! The client side of `bank.admin.v1.Backup` (`bank backup`): one branch's backup stream,
//! written as it arrives, bounded in size ([`crate::backup::BACKUP_BYTES_MAX`]) and in time.
//! The bytes are the backup file itself; checking them ([`crate::backup::read_file`]) and
//! putting the file in place are the caller's.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::transport::ClientTlsConfig;
use tonic::Code;

use super::{Asked, Cause, ClientError};
use crate::backup::BACKUP_BYTES_MAX;
use crate::proto::admin::backup_client::BackupClient;
use crate::proto::admin::BackupRequest;
use crate::rpc as endpoint;

/// Largest chunk accepted from a branch (it sends at most 1 MiB).
const CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;

fn broken(addr: &str, code: Code, message: String) -> ClientError {
    ClientError::Stream {
        what: "the backup",
        cause: Cause::new(addr, code, message),
    }
}

/// Streams the backup of the branch at `addr` into `out`, all of it within `deadline`;
/// returns the bytes written. `tls`: the cluster's CA and, when the branch serves TLS, the
/// operator's certificate (the branch's own), which the backup service requires.
pub async fn download(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
    connect_timeout: Duration,
    deadline: Duration,
    out: &mut impl Write,
) -> Result<u64, ClientError> {
    let until = Instant::now() + deadline;
    let config = endpoint::EndpointConfig {
        tls,
        connect_timeout,
        keep_alive: None,
    };
    let channel = endpoint::endpoint(addr, &config)
        .map_err(|e| ClientError::BadAddress {
            cause: Cause::bad_address(addr, e),
        })?
        .connect_lazy();
    let mut client = BackupClient::new(channel).max_decoding_message_size(CHUNK_BYTES_MAX);
    let mut request = tonic::Request::new(BackupRequest {});
    request.set_timeout(deadline);
    let failed = |status: tonic::Status| {
        let cause = Cause::status(addr, &status, Some(tls.is_some()));
        if super::retryable(&status) {
            ClientError::Unreachable {
                asked: Asked::Backup,
                cause,
                deadline,
                attempts: 1,
            }
        } else {
            ClientError::Refused {
                asked: Asked::Backup,
                cause,
            }
        }
    };
    let mut chunks = match tokio::time::timeout_at(until, client.backup(request)).await {
        Err(_) => {
            let late = format!("did not answer within {deadline:?}");
            return Err(broken(addr, Code::DeadlineExceeded, late));
        }
        Ok(Err(status)) => return Err(failed(status)),
        Ok(Ok(reply)) => reply.into_inner(),
    };
    let mut written: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout_at(until, chunks.next()).await {
            Err(_) => {
                let late = format!(
                    "did not send the whole backup within {deadline:?} ({written} bytes came)"
                );
                return Err(broken(addr, Code::DeadlineExceeded, late));
            }
            Ok(None) => break,
            Ok(Some(Err(status))) => {
                let why = format!(
                    "broke off after {written} bytes: {} ({:?})",
                    status.message(),
                    status.code()
                );
                return Err(broken(addr, status.code(), why));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        written = written.saturating_add(chunk.data.len() as u64);
        if written > BACKUP_BYTES_MAX {
            let why = format!("sent more than the {BACKUP_BYTES_MAX}-byte bound on a backup");
            return Err(broken(addr, Code::ResourceExhausted, why));
        }
        out.write_all(&chunk.data).map_err(|e| {
            let why = format!("sent a chunk that could not be written here: {e}");
            broken(addr, Code::Unknown, why)
        })?;
    }
    Ok(written)
}
