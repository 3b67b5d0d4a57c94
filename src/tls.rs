//! TLS for `bank branch`: certificates, and the rustls configurations built from them.
//!
//! A branch serves customers and peers on one port. With TLS on, that port speaks only TLS:
//! - the branch presents its certificate (`--tls-cert`, `--tls-key`) to everyone;
//! - it asks every client for a certificate signed by the cluster's CA (`--tls-ca`), but a
//!   client may present none (customers have none). A client certificate *not* signed by the
//!   cluster's CA fails the handshake;
//! - the peer service (`bank.peer.v1.Peer`: votes, log entries, snapshots, membership, status)
//!   then refuses every call on a connection that presented no verified certificate
//!   ([`crate::server::auth::PeerAuth`], UNAUTHENTICATED). So a process without a certificate from the
//!   cluster's CA cannot join, vote or inject log entries, while customers still reach the
//!   customer APIs with server-authenticated TLS only.
//! - branch-to-branch channels ([`crate::raft::network::Peers`]) connect over `https`,
//!   trust only the cluster's CA and present the branch's certificate (mutual TLS).
//!
//! [`generate`] (`bank certs`) makes a test CA and one certificate for every branch, valid for
//! both server and client authentication, with subject alternative names for `127.0.0.1`,
//! `::1`, `localhost` and each `--host`. Peers connect by IP address: rustls checks the
//! address against the certificate's IP address SANs, so a branch on another host needs its
//! address given with `--host`.
//!
//! Files are read and checked when a branch or a client starts; an error names the file.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The CA's certificate, given to branches and customers as `--tls-ca`.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key: needed only to sign more certificates; keep it off the branches.
pub const CA_KEY_FILE: &str = "ca.key";
/// The branches' certificate (server and client authentication), `--tls-cert`.
pub const BRANCH_CERT_FILE: &str = "branch.pem";
/// The branches' private key, `--tls-key`.
pub const BRANCH_KEY_FILE: &str = "branch.key";

/// How long generated certificates are valid (from a day before they were made, against
/// clock skew).
const VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
const BACKDATE: Duration = Duration::from_secs(24 * 3600);

/// Bound on one TLS handshake at a branch: a client that stalls it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error(
        "{} exists already; pass --force to overwrite it (and its siblings), or choose another --out",
        path.display()
    )]
    Exists { path: PathBuf },
    #[error("--host {host:?} is neither an IP address nor a valid DNS name: {why}")]
    BadHost { host: String, why: String },
    #[error("generating certificates: {0}")]
    Generate(String),
    #[error("{0}")]
    Incomplete(String),
    #[error("the TLS configuration does not load: {0}")]
    Config(String),
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The files [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub branch_cert: PathBuf,
    pub branch_key: PathBuf,
}

impl CertFiles {
    /// The file names [`generate`] uses in `dir`.
    pub fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            ca_cert: dir.join(CA_CERT_FILE),
            ca_key: dir.join(CA_KEY_FILE),
            branch_cert: dir.join(BRANCH_CERT_FILE),
            branch_key: dir.join(BRANCH_KEY_FILE),
        }
    }

    /// What a branch needs: its certificate and key, and the CA.
    pub fn branch_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.branch_cert.clone(),
            key: self.branch_key.clone(),
            ca: self.ca_cert.clone(),
        }
    }
}

/// Makes a new test CA in `out` (created if missing) and one branch certificate signed by it,
/// with SANs for loopback and every entry of `hosts` (IP addresses or DNS names). Refuses to
/// overwrite any of the four files unless `force`. Private keys are written with mode 0600.
pub fn generate(out: &Path, hosts: &[String], force: bool) -> Result<CertFiles, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let files = CertFiles::in_dir(out);
    let paths = [
        &files.ca_cert,
        &files.ca_key,
        &files.branch_cert,
        &files.branch_key,
    ];
    if !force {
        if let Some(existing) = paths.iter().find(|path| path.exists()) {
            return Err(TlsError::Exists {
                path: existing.to_path_buf(),
            });
        }
    }
    let mut names: Vec<String> = vec!["127.0.0.1".into(), "::1".into(), "localhost".into()];
    for host in hosts {
        // What a client will check the certificate against: an IP address or a DNS name.
        rustls_pki_types::ServerName::try_from(host.as_str()).map_err(|e| TlsError::BadHost {
            host: host.clone(),
            why: e.to_string(),
        })?;
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let generate_error = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let now = SystemTime::now();
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    let not_after = now.checked_add(VALIDITY).unwrap_or(now);

    let ca_key = KeyPair::generate().map_err(generate_error)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(generate_error)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bank test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before.into();
    ca_params.not_after = not_after.into();
    let ca_cert = ca_params.self_signed(&ca_key).map_err(generate_error)?;

    let branch_key = KeyPair::generate().map_err(generate_error)?;
    let mut branch_params = CertificateParams::new(names).map_err(generate_error)?;
    branch_params
        .distinguished_name
        .push(DnType::CommonName, "bank branch");
    branch_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    branch_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    branch_params.use_authority_key_identifier_extension = true;
    branch_params.not_before = not_before.into();
    branch_params.not_after = not_after.into();
    let issuer = Issuer::new(ca_params, &ca_key);
    let branch_cert = branch_params
        .signed_by(&branch_key, &issuer)
        .map_err(generate_error)?;

    std::fs::create_dir_all(out).map_err(|e| file_error(out, format!("cannot create: {e}")))?;
    write_file(&files.ca_cert, &ca_cert.pem(), false, force)?;
    write_file(&files.ca_key, &ca_key.serialize_pem(), true, force)?;
    write_file(&files.branch_cert, &branch_cert.pem(), false, force)?;
    write_file(&files.branch_key, &branch_key.serialize_pem(), true, force)?;
    Ok(files)
}

/// Writes `contents` to a new file at `path` (mode 0600 if `secret`). With `overwrite`, an
/// existing file is replaced (removed first, so a new key never inherits looser permissions).
fn write_file(path: &Path, contents: &str, secret: bool, overwrite: bool) -> Result<(), TlsError> {
    if overwrite {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(path, format!("cannot replace: {e}"))),
        }
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            file_error(path, format!("cannot create: {e}"))
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(path, format!("cannot write: {e}")))
}

/// A branch's TLS files: its certificate and key, and the cluster's CA.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// From the `--tls-cert`, `--tls-key` and `--tls-ca` options: all three or none.
    pub fn from_options(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, TlsError> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles { cert, key, ca })),
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    (cert.is_none(), "--tls-cert"),
                    (key.is_none(), "--tls-key"),
                    (ca.is_none(), "--tls-ca"),
                ]
                .iter()
                .filter(|(absent, _)| *absent)
                .map(|(_, name)| *name)
                .collect();
                Err(TlsError::Incomplete(format!(
                    "TLS needs --tls-cert, --tls-key and --tls-ca together; missing {} \
                     (make test files with `bank certs --out DIR`)",
                    missing.join(", ")
                )))
            }
        }
    }
}

/// A branch's loaded TLS: how it serves, and how it calls its peers.
#[derive(Debug, Clone)]
pub struct BranchTls {
    pub server: ServerTlsConfig,
    pub peer_client: ClientTlsConfig,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))
}

/// Reads a PEM file of one or more certificates, checked.
fn read_certificates(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(path)?;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(file_error(
            path,
            "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(pem)
}

/// Reads a PEM private key file, checked.
fn read_private_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        file_error(
            path,
            format!("holds no PEM private key (expected -----BEGIN PRIVATE KEY-----): {e}"),
        )
    })?;
    Ok(pem)
}

/// Loads and checks a branch's TLS files, and builds both configurations now, so that a
/// mismatched key or a bad file stops the branch at start, not at its first connection.
pub fn load_branch(files: &TlsFiles) -> Result<BranchTls, TlsError> {
    let cert = read_certificates(&files.cert)?;
    let key = read_private_key(&files.key)?;
    let ca = Certificate::from_pem(read_certificates(&files.ca)?);
    let identity = Identity::from_pem(cert, key);
    let server = ServerTlsConfig::new()
        .identity(identity.clone())
        .client_ca_root(ca.clone())
        // Customers have no certificate; the peer service refuses their connections itself.
        .client_auth_optional(true)
        .timeout(HANDSHAKE_TIMEOUT);
    tonic::transport::Server::builder()
        .tls_config(server.clone())
        .map_err(|e| {
            TlsError::Config(format!(
                "{} and {} do not make a server identity (does the key belong to the \
                 certificate?): {}",
                files.cert.display(),
                files.key.display(),
                error_chain(&e)
            ))
        })?;
    let peer_client = ClientTlsConfig::new()
        .ca_certificate(ca)
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    check_client(&peer_client)?;
    Ok(BranchTls {
        server,
        peer_client,
    })
}

/// A client's TLS: trust the cluster's CA; present `identity` (certificate, key) if given
/// (needed for the peer service, e.g. `bank status`).
pub fn load_client(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientTlsConfig, TlsError> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read_certificates(ca)?))
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(
            read_certificates(cert)?,
            read_private_key(key)?,
        ));
    }
    check_client(&config)?;
    Ok(config)
}

/// Builds a connector from `config` once, so that its errors show now.
fn check_client(config: &ClientTlsConfig) -> Result<(), TlsError> {
    tonic::transport::Endpoint::from_static("https://127.0.0.1")
        .tls_config(config.clone())
        .map(|_| ())
        .map_err(|e| TlsError::Config(format!("client TLS: {}", error_chain(&e))))
}

/// An error and its sources, joined: tonic's transport errors say little on their own.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_load_and_are_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        let files =
            generate(&out, &["bank.example".into(), "10.1.2.3".into()], false).expect("generate");
        let tls = load_branch(&files.branch_files()).expect("the generated files load");
        drop(tls);
        load_client(&files.ca_cert, None).expect("a customer's TLS loads");
        let again = generate(&out, &[], false).expect_err("refuses to overwrite");
        assert!(matches!(again, TlsError::Exists { .. }), "{again}");
        generate(&out, &[], true).expect("--force overwrites");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [&files.ca_key, &files.branch_key] {
                let mode = std::fs::metadata(key).expect("key").permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            }
        }
    }

    #[test]
    fn bad_hosts_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = generate(dir.path(), &["not a host!".into()], false).expect_err("bad host");
        assert!(error.to_string().contains("not a host!"), "{error}");

        let files = generate(dir.path(), &[], false).expect("generate");
        let missing = TlsFiles {
            key: dir.path().join("nope.key"),
            ..files.branch_files()
        };
        let error = load_branch(&missing).expect_err("missing key");
        assert!(error.to_string().contains("nope.key"), "{error}");
        let not_pem = TlsFiles {
            ca: files.branch_key.clone(),
            ..files.branch_files()
        };
        let error = load_branch(&not_pem).expect_err("a key is not a certificate");
        assert!(error.to_string().contains(BRANCH_KEY_FILE), "{error}");
        // The CA's key does not belong to the branch's certificate.
        let mismatched = TlsFiles {
            key: files.ca_key.clone(),
            ..files.branch_files()
        };
        assert!(load_branch(&mismatched).is_err());
    }

    #[test]
    fn tls_options_come_all_three_or_none() {
        assert!(matches!(TlsFiles::from_options(None, None, None), Ok(None)));
        let error = TlsFiles::from_options(Some("c.pem".into()), None, Some("ca.pem".into()))
            .expect_err("no key");
        assert!(error.to_string().contains("--tls-key"), "{error}");
        assert!(!error.to_string().contains("--tls-ca,"), "{error}");
    }
}
