//! gRPC plumbing under every outbound call: the one way this crate opens a channel to a branch
//! ([`endpoint`]), the one bound on a call ([`within`]), and what a failed call says about TLS
//! being on at one end only ([`TlsMismatch`]).
//!
//! Every caller (the peer network [`crate::raft::network::Peers`], the accounts
//! [`Client`](crate::client::Client), [`status`](crate::client::status), the course client
//! [`course`](crate::client::course)) builds its endpoints with [`endpoint`]: `https`
//! when a TLS configuration is given, `http` otherwise (unless the address names its scheme),
//! the TLS configuration, a connect timeout, `TCP_NODELAY`, and HTTP/2 keep-alive pings if asked
//! for. Whether the channel connects lazily or at once is the caller's choice.
//!
//! [`TlsMismatch::of`] reads a failed call's error chain by type, never by its text: HTTP/2's own
//! `GOAWAY` (plaintext HTTP/2 sent to a TLS port reads the server's TLS record as a malformed
//! frame), or rustls's `InvalidContentType` (TLS sent to a plaintext port reads HTTP/2 bytes as a
//! corrupt TLS record). The client edge reads it in one place, where it records a failed call's
//! cause ([`crate::client::Cause`]), so callers (the CLI) match on a value.
//!
//! [`within`] bounds a call client side: every gRPC call a branch or a client makes, the peer
//! network's included, waits at most its deadline.

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use tonic::transport::{ClientTlsConfig, Endpoint};

/// The response metadata in which a branch names the leader's address as it knows it (its own
/// when it leads): `bank.v1` clients send their writes there first
/// ([`crate::client::Client`]). Only a hint: any branch still forwards a write to the leader.
pub const LEADER_METADATA: &str = "bank-leader";

/// How [`endpoint`] builds an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig<'a> {
    /// TLS to the branch (`https`); `None`: plaintext (`http`).
    pub tls: Option<&'a ClientTlsConfig>,
    /// Bound on opening the connection.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings on an open connection; `None`: no pings.
    pub keep_alive: Option<Duration>,
}

impl EndpointConfig<'static> {
    /// Plaintext, this connect timeout, no keep-alive pings.
    pub fn plaintext(connect_timeout: Duration) -> Self {
        EndpointConfig {
            tls: None,
            connect_timeout,
            keep_alive: None,
        }
    }
}

/// An address [`endpoint`] cannot use, and why (tonic's words).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidAddress {
    pub reason: String,
}

/// An endpoint for the branch at `addr` (`host:port`, or with its own `scheme://`).
pub fn endpoint(addr: &str, config: &EndpointConfig<'_>) -> Result<Endpoint, InvalidAddress> {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(uri).map_err(|e| InvalidAddress {
        reason: e.to_string(),
    })?;
    if let Some(tls) = config.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| InvalidAddress {
                reason: crate::tls::error_chain(&e),
            })?;
    }
    endpoint = endpoint
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    if let Some(interval) = config.keep_alive {
        endpoint = endpoint.http2_keep_alive_interval(interval);
    }
    Ok(endpoint)
}

/// TLS on one end of a connection only, as a failed call shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMismatch {
    /// This client spoke plaintext and the branch answered with something that is not
    /// HTTP/2: the branch likely serves TLS only.
    BranchServesTls,
    /// This client spoke TLS and the branch answered with something that is not a TLS
    /// record: the branch likely serves plaintext.
    BranchServesPlaintext,
}

impl TlsMismatch {
    /// What `error` (a failed call or connection; its whole source chain is read, by type) says
    /// about TLS, for a client that used TLS if `tls`. `None`: nothing points at TLS.
    pub fn of(error: &(dyn Error + 'static), tls: bool) -> Option<TlsMismatch> {
        let mut next = Some(error);
        while let Some(error) = next {
            if !tls && is_http2_refused_locally(error) {
                return Some(TlsMismatch::BranchServesTls);
            }
            if tls && is_corrupt_tls_record(error) {
                return Some(TlsMismatch::BranchServesPlaintext);
            }
            next = error.source();
        }
        None
    }
}

/// This side's HTTP/2 closed the connection (`GOAWAY`) because the peer's bytes broke the
/// protocol, as a TLS record read as an HTTP/2 frame does.
fn is_http2_refused_locally(error: &(dyn Error + 'static)) -> bool {
    error
        .downcast_ref::<h2::Error>()
        .is_some_and(|h2| h2.is_go_away() && h2.is_library())
}

/// rustls found no TLS record where one should be (`InvalidContentType`), as when HTTP/2 bytes
/// come back; rustls's error travels inside an `io::Error`, which hides it from `source()`.
fn is_corrupt_tls_record(error: &(dyn Error + 'static)) -> bool {
    let rustls = error.downcast_ref::<rustls::Error>().or_else(|| {
        error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    });
    matches!(
        rustls,
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        ))
    )
}

/// Awaits a gRPC call for at most `timeout`, client side. `Request::set_timeout` only tells the
/// server (`grpc-timeout`); a peer that accepted the connection but never answers (paused,
/// wedged, or a port held open mid-handshake) would otherwise hold the caller until TCP or the
/// HTTP/2 keep-alive gives up.
pub async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(CallError::Status),
        Err(_) => Err(CallError::Timeout(timeout)),
    }
}

/// How a call bounded by [`within`] failed: the peer answered with an error, or not in time.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{}", .0.message())]
    Status(tonic::Status),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl CallError {
    /// The gRPC code of the failure (`DeadlineExceeded` for no answer in time).
    pub fn code(&self) -> tonic::Code {
        match self {
            CallError::Status(status) => status.code(),
            CallError::Timeout(_) => tonic::Code::DeadlineExceeded,
        }
    }

    /// What went wrong, for people.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_follows_tls_unless_the_address_names_one() {
        let plain = EndpointConfig::plaintext(Duration::from_secs(1));
        let built = endpoint("127.0.0.1:7001", &plain).expect("a valid address");
        assert_eq!(built.uri().to_string(), "http://127.0.0.1:7001/");
        let named = endpoint("http://[::1]:7001", &plain).expect("a valid address");
        assert_eq!(named.uri().host(), Some("[::1]"));
        assert!(endpoint("bad^addr", &plain).is_err());
    }

    #[test]
    fn a_corrupt_tls_record_inside_an_io_error_is_recognised_only_with_tls() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert_eq!(
            TlsMismatch::of(&io, true),
            Some(TlsMismatch::BranchServesPlaintext)
        );
        assert_eq!(TlsMismatch::of(&io, false), None);
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::MissingData("x")),
        );
        assert_eq!(TlsMismatch::of(&other, true), None);
    }

    #[test]
    fn an_error_that_only_mentions_tls_in_its_text_is_not_a_mismatch() {
        let status = tonic::Status::internal("h2 protocol error: InvalidContentType");
        assert_eq!(TlsMismatch::of(&status, false), None);
        assert_eq!(TlsMismatch::of(&status, true), None);
    }
}
