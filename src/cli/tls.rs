//! How a client command (`bank account`, `bank bench`, `bank status`) reaches a secured
//! cluster: the `--tls-*` options ([`TlsArgs`]), `--token` ([`client_token`]), and the hint
//! printed when TLS is on at one end only ([`with_hint`]), from the library's typed
//! [`TlsMismatch`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tonic::transport::ClientTlsConfig;

use bank::client::{TlsMismatch, Token};

/// How a client reaches a TLS cluster.
#[derive(clap::Args)]
pub struct TlsArgs {
    /// The cluster's CA certificate (PEM): connect with TLS and trust only it.
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate to present (PEM), with --tls-key and --tls-ca.
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The client TLS configuration these options ask for, checked; `None`: plaintext.
    pub fn load(&self) -> Result<Option<ClientTlsConfig>> {
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together: give both or neither"),
        };
        match &self.tls_ca {
            Some(ca) => Ok(Some(bank::tls::load_client(ca, identity)?)),
            None if identity.is_some() => {
                bail!("--tls-cert needs --tls-ca (the CA that signed the branches' certificate)")
            }
            None => Ok(None),
        }
    }
}

/// `--token` as a client token, checked.
pub fn client_token(token: Option<&str>) -> Result<Option<Token>> {
    token
        .map(|token| Token::new(token.trim()))
        .transpose()
        .context("--token / BANK_TOKEN")
}

/// `error`, with what to do about it when it shows TLS on one end only (`mismatch`, as the
/// library's error reports it).
pub fn with_hint(mismatch: Option<TlsMismatch>, error: impl Into<anyhow::Error>) -> anyhow::Error {
    let error = error.into();
    match mismatch {
        Some(TlsMismatch::BranchServesTls) => {
            error.context("the branch may serve TLS only: give --tls-ca (see `bank certs`)")
        }
        Some(TlsMismatch::BranchServesPlaintext) => {
            error.context("the branch may not serve TLS: leave out --tls-ca")
        }
        None => error,
    }
}
