//! The backup file: one branch's whole ledger at one applied index, checksummed.
//!
//! `bank backup` writes it from a branch's `bank.admin.v1.Backup` stream (the branch encodes
//! it with [`write`]); `bank restore` seeds a new branch's data directory from it
//! ([`crate::bootstrap::restore`]).
//!
//! ```text
//! magic        8 bytes   "BANKBKUP"
//! version      u32 LE    2
//! header_len   u32 LE    at most 64 KiB
//! header       JSON      {"applied_index": I, "branch_id": N, "accounts": A, "ledger_bytes": L}
//! ledger       L bytes   the ledger's snapshot encoding (`crate::ledger`'s snapshot module:
//!                        accounts, totals and the request log, with its own CRC32C)
//! sha256       32 bytes  SHA-256 of every byte before it
//! ```
//!
//! Version 1 embedded the ledger's snapshot format version 2, whose checksum missed damage;
//! version 2 embeds snapshot format version 3 (CRC32C). The file's own SHA-256 was and is a
//! real checksum, but a version-1 file's ledger is in an encoding this bank no longer reads,
//! so it is refused with [`Damage::OlderVersion`], which says what to do.
//!
//! The ledger is the whole [`Ledger`], its request log included, so a request retried after a
//! restore is still answered its first outcome rather than applied again.
//!
//! Reading ([`decode`], [`read_file`]) checks, in this order: the magic, the version, the
//! SHA-256 (which catches any flipped byte and any truncation), the header, the lengths, and
//! then decodes the ledger with every check of its own (order, invariants) and compares its
//! account count with the header's. It returns an error, never panics.
//!
//! Why a module of its own at the top of the crate: the file is written by the server layer,
//! checked by the client layer (`bank backup`) and read by bootstrap (`bank restore`), so it
//! sits below all three, beside [`crate::rpc`] and [`crate::tls`], and depends only on the
//! ledger. It is not in the ledger itself: the applied index and the source branch are
//! replication facts, and the pure state machine stays free of them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ledger::{Ledger, SnapshotError};
use crate::BranchId;

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"BANKBKUP";
/// The format version this build writes and reads.
pub const VERSION: u32 = 2;
/// A header longer than this is refused (it is about 100 bytes).
const HEADER_BYTES_MAX: u32 = 64 * 1024;
const DIGEST_BYTES: usize = 32;
/// Magic, version, header length.
const PREFIX_BYTES: usize = 8 + 4 + 4;
/// The largest backup file read or written: 4 GiB, about 130 million accounts.
pub const BACKUP_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    /// The Raft log index the ledger reflects: every entry up to it, none after.
    pub applied_index: u64,
    /// The branch it was taken from.
    pub branch_id: BranchId,
    /// How many accounts the ledger holds.
    pub accounts: u64,
    /// The length of the ledger's snapshot encoding.
    pub ledger_bytes: u64,
}

/// A written backup: its header, its whole length and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub header: BackupHeader,
    pub file_bytes: u64,
    pub sha256: [u8; DIGEST_BYTES],
}

impl BackupSummary {
    /// The SHA-256 in lower-case hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A backup read back and checked.
#[derive(Debug, Clone)]
pub struct Backup {
    pub summary: BackupSummary,
    /// The ledger, decoded and checked.
    pub ledger: Ledger,
    /// The ledger's snapshot encoding, as in the file (what a restored branch keeps).
    pub ledger_snapshot: Vec<u8>,
}

/// Why bytes are not a usable backup.
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    #[error("not a bank backup: it does not start with {:?}", std::str::from_utf8(MAGIC).unwrap_or("BANKBKUP"))]
    Magic,
    #[error("backup format version {0} is from an older bank; this bank reads version {VERSION} only (its ledger is in an older snapshot encoding). Take a new backup from a running branch with this bank's `bank backup`; a version-{0} backup restores only with the bank that wrote it")]
    OlderVersion(u32),
    #[error("backup format version {0} is from a newer bank; this bank reads version {VERSION}: restore it with the bank that wrote it")]
    Version(u32),
    #[error("{0} bytes: too short to be a backup (truncated?)")]
    Short(usize),
    #[error("the SHA-256 does not match the contents: the file is damaged or truncated")]
    Checksum,
    #[error("the header is malformed: {0}")]
    Header(String),
    #[error("the lengths do not add up: {0}")]
    Length(String),
    #[error("the ledger does not decode: {0}")]
    Ledger(#[from] SnapshotError),
    #[error("over the {BACKUP_BYTES_MAX}-byte bound on a backup")]
    TooLarge,
}

/// Why a backup file cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: refused: {damage}", path.display())]
    Damaged { path: PathBuf, damage: Damage },
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    out: W,
    context: ring::digest::Context,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.context.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes `ledger`, taken at `applied_index` on branch `branch_id`, as a backup file to `out`
/// (format in the module docs). The ledger is encoded twice, once to learn its length for the
/// header and once into `out`, so no copy of the encoding is held in memory.
pub fn write(
    ledger: &Ledger,
    applied_index: u64,
    branch_id: BranchId,
    out: impl Write,
) -> std::io::Result<BackupSummary> {
    let ledger_bytes = ledger.write_snapshot(std::io::sink())?;
    let header = BackupHeader {
        applied_index,
        branch_id,
        accounts: ledger.accounts().len() as u64,
        ledger_bytes,
    };
    let header_json = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    let header_len = u32::try_from(header_json.len())
        .ok()
        .filter(|len| *len <= HEADER_BYTES_MAX)
        .ok_or_else(|| std::io::Error::other("backup header too long"))?;
    let mut out = Hashing {
        out,
        context: ring::digest::Context::new(&ring::digest::SHA256),
        written: 0,
    };
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&header_len.to_le_bytes())?;
    out.write_all(&header_json)?;
    let written = ledger.write_snapshot(&mut out)?;
    if written != ledger_bytes {
        return Err(std::io::Error::other(format!(
            "the ledger encoded to {written} bytes, then to {ledger_bytes}"
        )));
    }
    let Hashing {
        mut out,
        context,
        written,
    } = out;
    let mut sha256 = [0u8; DIGEST_BYTES];
    sha256.copy_from_slice(context.finish().as_ref());
    out.write_all(&sha256)?;
    out.flush()?;
    Ok(BackupSummary {
        header,
        file_bytes: written + DIGEST_BYTES as u64,
        sha256,
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Reads and checks a backup held in memory (see the module docs for what is checked).
pub fn decode(bytes: &[u8]) -> Result<Backup, Damage> {
    if bytes.len() as u64 > BACKUP_BYTES_MAX {
        return Err(Damage::TooLarge);
    }
    if bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] != MAGIC {
        return Err(Damage::Magic);
    }
    if bytes.len() < PREFIX_BYTES + DIGEST_BYTES {
        return Err(Damage::Short(bytes.len()));
    }
    let version = u32_at(bytes, 8);
    if version < VERSION {
        return Err(Damage::OlderVersion(version));
    }
    if version != VERSION {
        return Err(Damage::Version(version));
    }
    let (body, digest) = bytes.split_at(bytes.len() - DIGEST_BYTES);
    if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != digest {
        return Err(Damage::Checksum);
    }
    let header_len = u32_at(bytes, 12);
    if header_len > HEADER_BYTES_MAX {
        return Err(Damage::Header(format!(
            "{header_len} bytes long, over {HEADER_BYTES_MAX}"
        )));
    }
    let header_end = PREFIX_BYTES + header_len as usize;
    let header_json = body.get(PREFIX_BYTES..header_end).ok_or_else(|| {
        Damage::Length(format!(
            "a header of {header_len} bytes in {} bytes",
            bytes.len()
        ))
    })?;
    let header: BackupHeader =
        serde_json::from_slice(header_json).map_err(|e| Damage::Header(e.to_string()))?;
    let ledger_snapshot = &body[header_end..];
    if ledger_snapshot.len() as u64 != header.ledger_bytes {
        return Err(Damage::Length(format!(
            "the header announces {} bytes of ledger, the file holds {}",
            header.ledger_bytes,
            ledger_snapshot.len()
        )));
    }
    let ledger = Ledger::decode_snapshot(ledger_snapshot)?;
    if ledger.accounts().len() as u64 != header.accounts {
        return Err(Damage::Length(format!(
            "the header announces {} accounts, the ledger holds {}",
            header.accounts,
            ledger.accounts().len()
        )));
    }
    let mut sha256 = [0u8; DIGEST_BYTES];
    sha256.copy_from_slice(digest);
    Ok(Backup {
        summary: BackupSummary {
            header,
            file_bytes: bytes.len() as u64,
            sha256,
        },
        ledger,
        ledger_snapshot: ledger_snapshot.to_vec(),
    })
}

/// Reads and checks the backup file at `path`; every error names it.
pub fn read_file(path: &Path) -> Result<Backup, BackupError> {
    let read_error = |source| BackupError::Read {
        path: path.to_path_buf(),
        source,
    };
    let damaged = |damage| BackupError::Damaged {
        path: path.to_path_buf(),
        damage,
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > BACKUP_BYTES_MAX {
        return Err(damaged(Damage::TooLarge));
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    decode(&bytes).map_err(damaged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Command, Proposal, RequestId};

    fn ledger() -> Ledger {
        let mut ledger = Ledger::new();
        for account in 1..=50u64 {
            let outcome = ledger.apply_proposal(&Proposal {
                request_id: RequestId {
                    origin: 7,
                    sequence: account,
                },
                command: Command::Open {
                    account,
                    balance_minor_units: account * 10,
                    overdraft_limit_minor_units: 0,
                    balance_max_minor_units: i64::MAX as u64,
                },
            });
            assert!(matches!(outcome, crate::ledger::Outcome::Opened { .. }));
        }
        ledger
    }

    fn encoded() -> (Vec<u8>, BackupSummary) {
        let mut bytes = Vec::new();
        let summary = write(&ledger(), 77, 3, &mut bytes).expect("writes");
        (bytes, summary)
    }

    #[test]
    fn a_backup_reads_back_as_written() {
        let (bytes, summary) = encoded();
        assert_eq!(summary.file_bytes, bytes.len() as u64);
        let backup = decode(&bytes).expect("decodes");
        assert_eq!(backup.summary, summary);
        assert_eq!(backup.summary.header.applied_index, 77);
        assert_eq!(backup.summary.header.branch_id, 3);
        assert_eq!(backup.summary.header.accounts, 50);
        assert_eq!(backup.ledger, ledger(), "request log included");
        assert_eq!(summary.sha256_hex().len(), 64);
    }

    /// Every single flipped byte, anywhere, and every truncation are refused.
    #[test]
    fn any_damage_is_refused() {
        let (bytes, _) = encoded();
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            assert!(decode(&damaged).is_err(), "a flipped byte at {at} passed");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len} passed");
        }
        let mut wrong = bytes.clone();
        wrong[..8].copy_from_slice(b"BANKLDG2");
        assert!(matches!(decode(&wrong), Err(Damage::Magic)));
        let mut newer = bytes;
        newer[8] = 3;
        assert!(matches!(decode(&newer), Err(Damage::Version(3))));
    }

    /// A version-1 file, written by the bank before snapshots had CRC32C
    /// (`tests/data/backup-v1.bin` is `encoded()` as it wrote it), is refused with what to do.
    #[test]
    fn an_older_backup_is_refused_with_a_clear_error() {
        let old = include_bytes!("../tests/data/backup-v1.bin");
        let error = decode(old).expect_err("refused");
        assert!(matches!(error, Damage::OlderVersion(1)), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with("backup format version 1 is from an older bank"),
            "{message}"
        );
        assert!(message.contains("bank backup"), "{message}");
    }
}
