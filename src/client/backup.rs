//! The client side of `bank.admin.v1.Backup` (`bank backup`): one branch's backup stream,
//! written as it arrives, bounded in size ([`crate::backup::BACKUP_BYTES_MAX`]) and in time.
//! The bytes are the backup file itself; checking them ([`crate::backup::read_file`]) and
//! putting the file in place are the caller's.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::transport::ClientTlsConfig;

use super::ClientError;
use crate::backup::BACKUP_BYTES_MAX;
use crate::proto::admin::backup_client::BackupClient;
use crate::proto::admin::BackupRequest;
use crate::rpc::{self as endpoint, TlsMismatch};

/// Largest chunk accepted from a branch (it sends at most 1 MiB).
const CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;

fn broken(why: impl Into<String>) -> ClientError {
    ClientError::Stream {
        what: "the backup",
        why: why.into(),
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
            addr: addr.to_string(),
            why: e.reason,
        })?
        .connect_lazy();
    let mut client = BackupClient::new(channel).max_decoding_message_size(CHUNK_BYTES_MAX);
    let mut request = tonic::Request::new(BackupRequest {});
    request.set_timeout(deadline);
    let failed = |status: tonic::Status| {
        let tls_mismatch = TlsMismatch::of(&status, tls.is_some());
        if super::retryable(&status) {
            ClientError::Unavailable {
                deadline,
                attempts: 1,
                last: format!("{addr}: {} ({:?})", status.message(), status.code()),
                tls_mismatch,
            }
        } else {
            ClientError::Refused {
                addr: addr.to_string(),
                status,
                tls_mismatch,
                request_id: None,
            }
        }
    };
    let mut chunks = match tokio::time::timeout_at(until, client.backup(request)).await {
        Err(_) => return Err(broken(format!("{addr} did not answer within {deadline:?}"))),
        Ok(Err(status)) => return Err(failed(status)),
        Ok(Ok(reply)) => reply.into_inner(),
    };
    let mut written: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout_at(until, chunks.next()).await {
            Err(_) => {
                return Err(broken(format!(
                "{addr} did not send the whole backup within {deadline:?} ({written} bytes came)"
            )))
            }
            Ok(None) => break,
            Ok(Some(Err(status))) => {
                return Err(broken(format!(
                    "{addr} broke off after {written} bytes: {} ({:?})",
                    status.message(),
                    status.code()
                )))
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        written = written.saturating_add(chunk.data.len() as u64);
        if written > BACKUP_BYTES_MAX {
            return Err(broken(format!(
                "{addr} sent more than the {BACKUP_BYTES_MAX}-byte bound on a backup"
            )));
        }
        out.write_all(&chunk.data)
            .map_err(|e| broken(format!("writing it: {e}")))?;
    }
    Ok(written)
}
