//! Who may call what on a branch.
//!
//! - **Branches** ([`PeerAuth`]): with TLS on, every call to the peer service
//!   (`bank.peer.v1.Peer`) must come on a connection that presented a certificate signed by
//!   the cluster's CA (verified during the TLS handshake, see [`crate::tls`]); otherwise it is
//!   refused with UNAUTHENTICATED before any handler runs. It is one interceptor around the
//!   whole peer server, so a new peer RPC is covered without anything to remember.
//! - **Customers** ([`Tokens`]): with `bank branch --tokens FILE`, every call to the customer
//!   APIs (`bank.v1.Accounts`, and the original `Branch.MsgDelivery`) needs the metadata
//!   `authorization: Bearer <token>`. A missing or unknown token is UNAUTHENTICATED; a known
//!   token touching an account outside its list is PERMISSION_DENIED, and the whole request is
//!   refused before anything is proposed (a transfer needs both accounts, a batch every item's
//!   accounts, a read every account asked). `MsgDelivery` acts on the original shared account
//!   ([`crate::ledger::ORIGINAL_ACCOUNT`]), so it needs a token allowed that account.
//!
//! # The token file
//!
//! ```json
//! {"tokens": [
//!   {"name": "alice", "token": "k3J9...at least 16 characters", "accounts": [1, 2]},
//!   {"name": "ops",   "token": "Zq81...at least 16 characters", "accounts": "all"}
//! ]}
//! ```
//!
//! `name` labels the token in logs and errors (never the token itself); `token` is a secret
//! of 16 to 256 visible ASCII characters (e.g. `openssl rand -hex 32`); `accounts` is a list
//! of account numbers or `"all"`. Names and tokens are unique.
//!
//! Tokens are kept only as SHA-256 digests and looked up by the digest of the presented
//! token, so no comparison ever runs over the secret's bytes (no timing side channel on it).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tonic::{Request, Status};

use super::error::{AuthError, ServiceError};

/// Bounds on a token's length, in characters.
pub const TOKEN_LENGTH_MIN: usize = 16;
pub const TOKEN_LENGTH_MAX: usize = 256;

/// At most this many tokens in one file.
pub const TOKENS_MAX: usize = 10_000;

/// Refuses peer calls on connections without a verified cluster certificate; see the module
/// documentation. `required` is false for a branch without TLS (nothing to check against).
#[derive(Debug, Clone, Copy)]
pub struct PeerAuth {
    pub required: bool,
}

impl tonic::service::Interceptor for PeerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.required {
            return Ok(request);
        }
        // rustls verified any certificate the client presented against the cluster's CA
        // during the handshake (one it could not verify failed the handshake): presenting one
        // here means presenting a valid one.
        match request.peer_certs() {
            Some(certificates) if !certificates.is_empty() => Ok(request),
            _ => {
                // Counted in the metrics (`outcome="unauthenticated"`); logged at debug only,
                // so that a flood of refused calls cannot flood the logs.
                tracing::debug!(
                    remote = ?request.remote_addr(),
                    "refused a peer call without a cluster certificate"
                );
                Err(ServiceError::from(AuthError::NoCertificate).into())
            }
        }
    }
}

/// What one token may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    All,
    Accounts(BTreeSet<u64>),
}

/// A known token: its name and what it may touch.
#[derive(Debug, Clone)]
pub struct Grant {
    pub name: String,
    pub access: Access,
}

impl Grant {
    /// PERMISSION_DENIED unless every account in `accounts` is allowed.
    pub fn allow(&self, accounts: impl IntoIterator<Item = u64>) -> Result<(), AuthError> {
        let Access::Accounts(allowed) = &self.access else {
            return Ok(());
        };
        let forbidden: BTreeSet<u64> = accounts
            .into_iter()
            .filter(|account| !allowed.contains(account))
            .collect();
        if forbidden.is_empty() {
            return Ok(());
        }
        let forbidden: Vec<String> = forbidden.iter().map(u64::to_string).collect();
        Err(AuthError::Forbidden {
            name: self.name.clone(),
            accounts: forbidden.join(", "),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("{}: cannot read: {why}", path.display())]
    Read { path: PathBuf, why: String },
    #[error("{}: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    token: String,
    accounts: serde_json::Value,
}

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token).as_ref());
    out
}

/// The bearer tokens a branch accepts; see the module documentation.
#[derive(Debug, Clone)]
pub struct Tokens {
    by_digest: HashMap<Digest, Grant>,
}

impl Tokens {
    /// Reads and checks a token file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokensError::Read {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        Tokens::parse(&text).map_err(|why| TokensError::Invalid {
            path: path.to_path_buf(),
            why,
        })
    }

    /// Parses a token file's text; the error says what to fix.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokensFile = serde_json::from_str(text).map_err(|e| {
            format!(
                "{e}; expected {{\"tokens\": [{{\"name\": ..., \"token\": ..., \
                 \"accounts\": [1, 2] or \"all\"}}]}}"
            )
        })?;
        if file.tokens.is_empty() || file.tokens.len() > TOKENS_MAX {
            return Err(format!(
                "holds {} tokens; give 1 to {TOKENS_MAX}",
                file.tokens.len()
            ));
        }
        let mut by_digest = HashMap::new();
        let mut names = BTreeSet::new();
        for (position, entry) in file.tokens.into_iter().enumerate() {
            let at = format!("token {position} ({:?})", entry.name);
            if entry.name.is_empty() || !names.insert(entry.name.clone()) {
                return Err(format!("{at}: every token needs a unique, non-empty name"));
            }
            let length = entry.token.chars().count();
            if !(TOKEN_LENGTH_MIN..=TOKEN_LENGTH_MAX).contains(&length)
                || !entry.token.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(format!(
                    "{at}: a token is {TOKEN_LENGTH_MIN} to {TOKEN_LENGTH_MAX} visible ASCII \
                     characters (no spaces); make one with e.g. `openssl rand -hex 32`"
                ));
            }
            let access = match &entry.accounts {
                serde_json::Value::String(all) if all == "all" => Access::All,
                serde_json::Value::Array(items) if !items.is_empty() => Access::Accounts(
                    items
                        .iter()
                        .map(|item| item.as_u64())
                        .collect::<Option<BTreeSet<u64>>>()
                        .ok_or_else(|| {
                            format!("{at}: accounts must be account numbers (integers >= 0)")
                        })?,
                ),
                _ => {
                    return Err(format!(
                        "{at}: accounts must be \"all\" or a non-empty list of account numbers"
                    ))
                }
            };
            let grant = Grant {
                name: entry.name,
                access,
            };
            if by_digest
                .insert(digest(entry.token.as_bytes()), grant)
                .is_some()
            {
                return Err(format!("{at}: the same token is listed twice"));
            }
        }
        Ok(Tokens { by_digest })
    }

    /// How many tokens are known.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The grant of the request's bearer token: UNAUTHENTICATED if there is none, it is
    /// malformed, or it is unknown.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<&Grant, AuthError> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or(AuthError::NoToken)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(AuthError::MalformedToken)?;
        self.by_digest
            .get(&digest(token.trim().as_bytes()))
            .ok_or(AuthError::UnknownToken)
    }

    /// Authenticates the request and checks that its token may touch every one of `accounts`.
    pub fn authorize<T>(
        &self,
        request: &Request<T>,
        accounts: impl IntoIterator<Item = u64>,
    ) -> Result<(), AuthError> {
        self.authenticate(request)?.allow(accounts)
    }
}

/// `authorize` when tokens are configured; everything is allowed when they are not.
pub fn authorize<T>(
    tokens: Option<&Tokens>,
    request: &Request<T>,
    accounts: impl IntoIterator<Item = u64>,
) -> Result<(), AuthError> {
    match tokens {
        Some(tokens) => tokens.authorize(request, accounts),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"tokens": [
        {"name": "alice", "token": "alice-secret-0123456789", "accounts": [1, 2]},
        {"name": "ops", "token": "ops-secret-0123456789abc", "accounts": "all"}
    ]}"#;

    fn with_token(token: &str) -> Request<()> {
        let mut request = Request::new(());
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        request
    }

    fn code(result: Result<(), AuthError>) -> Option<tonic::Code> {
        result.err().map(|error| ServiceError::from(error).code())
    }

    #[test]
    fn tokens_allow_their_accounts_only() {
        let tokens = Tokens::parse(FILE).expect("parses");
        assert_eq!(tokens.len(), 2);
        let alice = with_token("alice-secret-0123456789");
        assert_eq!(code(tokens.authorize(&alice, [1, 2])), None);
        assert_eq!(
            code(tokens.authorize(&alice, [1, 3])),
            Some(tonic::Code::PermissionDenied)
        );
        let ops = with_token("ops-secret-0123456789abc");
        assert_eq!(code(tokens.authorize(&ops, [7, 99])), None);
        assert_eq!(
            code(tokens.authorize(&Request::new(()), [1])),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(tokens.authorize(&with_token("alice-secret-012345678X"), [1])),
            Some(tonic::Code::Unauthenticated)
        );
        let mut basic = Request::new(());
        basic
            .metadata_mut()
            .insert("authorization", "Basic abc".parse().expect("ascii"));
        assert_eq!(
            code(tokens.authorize(&basic, [1])),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(code(authorize(None, &Request::new(()), [5])), None);
    }

    #[test]
    fn malformed_token_files_say_what_to_fix() {
        let error = |text: &str| Tokens::parse(text).expect_err(text);
        assert!(error(r#"{"tokens": []}"#).contains("1 to"));
        assert!(
            error(r#"{"tokens": [{"name": "a", "token": "short", "accounts": "all"}]}"#)
                .contains("16 to 256")
        );
        assert!(error(
            r#"{"tokens": [{"name": "a", "token": "0123456789abcdefg", "accounts": "some"}]}"#
        )
        .contains("\"all\""));
        assert!(error(
            r#"{"tokens": [{"name": "a", "token": "0123456789abcdefg", "accounts": [-1]}]}"#
        )
        .contains("account numbers"));
        assert!(error(
            r#"{"tokens": [{"name": "a", "token": "0123456789abcdefg", "accounts": [1]},
                          {"name": "b", "token": "0123456789abcdefg", "accounts": [2]}]}"#
        )
        .contains("twice"));
        assert!(error(
            r#"{"tokens": [{"name": "a", "token": "0123456789abcdefg", "accounts": [1]},
                          {"name": "a", "token": "0123456789abcdefh", "accounts": [2]}]}"#
        )
        .contains("unique"));
        assert!(error("not json").contains("expected"));
    }

    #[test]
    fn the_peer_check_needs_a_certificate_only_with_tls() {
        use tonic::service::Interceptor;
        let mut open = PeerAuth { required: false };
        assert!(open.call(Request::new(())).is_ok());
        let mut closed = PeerAuth { required: true };
        let refused = closed.call(Request::new(())).expect_err("no certificate");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
}
