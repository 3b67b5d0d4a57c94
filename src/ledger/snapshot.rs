//! The ledger's snapshot encoding: compact, fixed-width accounts and a CRC32C checksum.
//!
//! A snapshot is the whole ledger. With a million accounts the first encoding (the ledger as
//! JSON, format version 1) took about 100 bytes per account, was written twice per snapshot
//! and parsed slowly; this one takes 32 bytes per account and is read and written with
//! straight copies.
//!
//! ```text
//! magic       8 bytes   "BANKLDG3" (the 3 is the format version)
//! accounts    u64 LE    the number of accounts
//! account     32 bytes  per account, ids strictly increasing:
//!                       id u64, balance i64, balance_min i64, balance_max i64 (all LE)
//! header      JSON      totals and the request log (bounded by REQUEST_IDS_MAX ids)
//! header_len  u32 LE
//! checksum    u32 LE    CRC32C (Castagnoli) of every byte before it
//! ```
//!
//! Version 2 had the same layout with a home-made 64-bit multiply-xor checksum, which missed
//! damage: flipping the top bit of any two words left it unchanged. CRC32C always detects a
//! burst of damage up to 32 bits long and any one, two or three flipped bits in a snapshot of
//! up to 2³¹ bits (256 MiB, about eight million accounts); other damage escapes it with
//! probability about 2⁻³². It detects damage, not tampering: peers are authenticated by TLS,
//! not by this. Older versions are refused with [`SnapshotError::OlderVersion`], which says
//! what to do; they are not read, so a damaged one can never be trusted on its weak checksum.
//!
//! It is written as a stream ([`Ledger::write_snapshot`]), so a durable branch writes it
//! straight to its file without holding a second copy of the ledger in memory; the header
//! comes last so its length need not be known before it is written.
//!
//! Decoding checks everything a damaged or hostile snapshot could get wrong: the magic and
//! version, every length against the bytes present, the checksum, increasing ids, and then
//! every ledger invariant ([`Ledger::check_invariants_fully`]). It returns an error, never
//! panics, and never allocates more than the input's own size suggests.

use serde::{Deserialize, Serialize};

use super::{Account, Countdown, InvariantViolation, Ledger, RequestLog};

/// The magic without its last byte, the format version's digit.
const MAGIC_STEM: &[u8; 7] = b"BANKLDG";
/// The format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 3;
const MAGIC: &[u8; 8] = b"BANKLDG3";
const ACCOUNT_BYTES: usize = 32;
/// Magic, account count, header length, checksum.
const FIXED_BYTES: usize = 8 + 8 + 4 + 4;
const CHECKSUM_BYTES: usize = 4;

/// Why bytes are not a ledger snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a ledger snapshot (expected it to start with {expected:?})")]
    Magic { expected: &'static str },
    #[error("snapshot format version {version} is from an older bank; this bank reads version {SNAPSHOT_VERSION} only, whose checksum (CRC32C) catches damage the older one missed. Rebuild this branch's data from its peers: move its data directory away and start the branch with `--rejoin`; or restore it from a backup written by this bank (`bank backup`, then `bank restore`)")]
    OlderVersion { version: u32 },
    #[error("snapshot format version {version} is from a newer bank; this bank reads version {SNAPSHOT_VERSION}: run the newer bank")]
    NewerVersion { version: u32 },
    #[error("the snapshot is truncated or has trailing bytes: {0}")]
    Length(String),
    #[error("the snapshot's checksum does not match its contents: it is damaged")]
    Checksum,
    #[error("the snapshot's header does not decode: {0}")]
    Header(serde_json::Error),
    #[error("the snapshot's accounts are out of order: account {next} follows account {previous}")]
    Order { previous: u64, next: u64 },
    #[error("the snapshot's ledger breaks an invariant: {0}")]
    Invariant(InvariantViolation),
}

// By hand, not `#[from]`: the message shows the cause, so it is not also its `source()`.
impl From<serde_json::Error> for SnapshotError {
    fn from(error: serde_json::Error) -> Self {
        SnapshotError::Header(error)
    }
}

#[derive(Serialize)]
struct HeaderRef<'a> {
    opened_total_minor_units: u128,
    deposited_total_minor_units: u128,
    withdrawn_total_minor_units: u128,
    balances_total_minor_units: i128,
    requests: &'a RequestLog,
}

#[derive(Deserialize)]
struct Header {
    opened_total_minor_units: u128,
    deposited_total_minor_units: u128,
    withdrawn_total_minor_units: u128,
    balances_total_minor_units: i128,
    requests: RequestLog,
}

/// Passes bytes to `out`, computing their CRC32C and counting them.
struct Summed<W> {
    out: W,
    crc: u32,
    len: u64,
}

impl<W: std::io::Write> std::io::Write for Summed<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(bytes)?;
        let written_bytes = bytes.get(..written).unwrap_or(bytes);
        self.crc = crc32c::crc32c_append(self.crc, written_bytes);
        self.len += written_bytes.len() as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The format version `bytes` announce, if they look like any version of a snapshot: the
/// digit after "BANKLDG", or 1 for the JSON of version 1 (an object).
fn announced_version(bytes: &[u8]) -> Option<u32> {
    if let Some(digit) = bytes.strip_prefix(MAGIC_STEM).and_then(|rest| rest.first()) {
        return char::from(*digit).to_digit(10);
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    // 0x7b opens a JSON object: version 1 was one.
    (first == Some(&0x7b)).then_some(1)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    i64::from_le_bytes(word)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

impl Ledger {
    /// Writes the ledger as a snapshot (format in the module docs) to `out`; returns the bytes
    /// written. `out` should be buffered: accounts are written 32 bytes at a time.
    pub fn write_snapshot(&self, out: impl std::io::Write) -> std::io::Result<u64> {
        use std::io::Write as _;
        let mut out = Summed {
            out,
            crc: 0,
            len: 0,
        };
        out.write_all(MAGIC)?;
        out.write_all(&(self.accounts.len() as u64).to_le_bytes())?;
        for (id, account) in self.accounts.iter() {
            let mut record = [0u8; ACCOUNT_BYTES];
            record[..8].copy_from_slice(&id.to_le_bytes());
            record[8..16].copy_from_slice(&account.balance_minor_units.to_le_bytes());
            record[16..24].copy_from_slice(&account.balance_min_minor_units.to_le_bytes());
            record[24..].copy_from_slice(&account.balance_max_minor_units.to_le_bytes());
            out.write_all(&record)?;
        }
        let before_header = out.len;
        serde_json::to_writer(
            &mut out,
            &HeaderRef {
                opened_total_minor_units: self.opened_total_minor_units,
                deposited_total_minor_units: self.deposited_total_minor_units,
                withdrawn_total_minor_units: self.withdrawn_total_minor_units,
                balances_total_minor_units: self.balances_total_minor_units,
                requests: &self.requests,
            },
        )?;
        let header_len = u32::try_from(out.len - before_header)
            .map_err(|_| std::io::Error::other("snapshot header over 4 GiB"))?;
        out.write_all(&header_len.to_le_bytes())?;
        let Summed { mut out, crc, len } = out;
        out.write_all(&crc.to_le_bytes())?;
        out.flush()?;
        Ok(len + CHECKSUM_BYTES as u64)
    }

    /// The ledger as snapshot bytes, in memory.
    pub fn encode_snapshot(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(FIXED_BYTES + ACCOUNT_BYTES * self.accounts.len());
        self.write_snapshot(&mut out)?;
        Ok(out)
    }

    /// A ledger from [`Ledger::encode_snapshot`]'s bytes, checked (see the module docs).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Ledger, SnapshotError> {
        match announced_version(bytes) {
            Some(SNAPSHOT_VERSION) => {}
            Some(version @ 1..SNAPSHOT_VERSION) => {
                return Err(SnapshotError::OlderVersion { version })
            }
            Some(version) if version > SNAPSHOT_VERSION => {
                return Err(SnapshotError::NewerVersion { version })
            }
            _ if bytes.len() < MAGIC.len() => {
                return Err(SnapshotError::Length(format!(
                    "{} bytes, fewer than the {FIXED_BYTES} of an empty snapshot",
                    bytes.len()
                )))
            }
            _ => {
                return Err(SnapshotError::Magic {
                    expected: "BANKLDG3",
                })
            }
        }
        if bytes.len() < FIXED_BYTES {
            return Err(SnapshotError::Length(format!(
                "{} bytes, fewer than the {FIXED_BYTES} of an empty snapshot",
                bytes.len()
            )));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        if crc32c::crc32c(body) != u32_at(checksum, 0) {
            return Err(SnapshotError::Checksum);
        }
        let count = u64_at(body, 8);
        let header_len = u32_at(body, body.len() - 4) as usize;
        // magic + count + accounts + header + header_len = body.
        let accounts_len = (body.len() - 20).checked_sub(header_len).ok_or_else(|| {
            SnapshotError::Length(format!(
                "a header of {header_len} bytes does not fit in {} bytes",
                bytes.len()
            ))
        })?;
        let records = &body[16..16 + accounts_len];
        let header: Header = serde_json::from_slice(&body[16 + accounts_len..body.len() - 4])?;
        if records.len() % ACCOUNT_BYTES != 0 || (records.len() / ACCOUNT_BYTES) as u64 != count {
            return Err(SnapshotError::Length(format!(
                "{count} accounts announced, {} bytes of accounts present",
                records.len()
            )));
        }
        let mut accounts = super::Accounts::new();
        let mut previous: Option<u64> = None;
        for record in records.chunks_exact(ACCOUNT_BYTES) {
            let id = u64_at(record, 0);
            if let Some(previous) = previous.filter(|p| *p >= id) {
                return Err(SnapshotError::Order { previous, next: id });
            }
            previous = Some(id);
            // Ids increase, so each insert goes at the end, filling chunks whole.
            accounts.insert_new(
                id,
                &Account {
                    balance_minor_units: i64_at(record, 8),
                    balance_min_minor_units: i64_at(record, 16),
                    balance_max_minor_units: i64_at(record, 24),
                },
            );
        }
        let ledger = Ledger {
            accounts,
            opened_total_minor_units: header.opened_total_minor_units,
            deposited_total_minor_units: header.deposited_total_minor_units,
            withdrawn_total_minor_units: header.withdrawn_total_minor_units,
            balances_total_minor_units: header.balances_total_minor_units,
            requests: header.requests,
            applies_since_full_check: Countdown::default(),
        };
        ledger
            .check_invariants_fully()
            .map_err(SnapshotError::Invariant)?;
        Ok(ledger)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Command, Outcome, Proposal, RequestId};
    use super::*;

    fn ledger_with_history() -> Ledger {
        let mut ledger = Ledger::new();
        let mut sequence = 0;
        let mut apply = |ledger: &mut Ledger, command: Command| {
            sequence += 1;
            ledger.apply_proposal(&Proposal {
                request_id: RequestId {
                    origin: 7,
                    sequence,
                },
                command,
            })
        };
        for account in 1..=50u64 {
            let opened = apply(
                &mut ledger,
                Command::Open {
                    account,
                    balance_minor_units: account * 10,
                    overdraft_limit_minor_units: account % 3,
                    balance_max_minor_units: 1_000_000,
                },
            );
            assert!(matches!(opened, Outcome::Opened { .. }), "{opened:?}");
        }
        apply(
            &mut ledger,
            Command::Transfer {
                from: 3,
                to: 40,
                amount_minor_units: 25,
            },
        );
        apply(
            &mut ledger,
            Command::Withdraw {
                account: 5,
                amount_minor_units: 51,
            },
        );
        ledger
    }

    #[test]
    fn a_snapshot_decodes_to_the_same_ledger() {
        let ledger = ledger_with_history();
        let bytes = ledger.encode_snapshot().expect("encode");
        let decoded = Ledger::decode_snapshot(&bytes).expect("decode");
        assert_eq!(decoded, ledger);
        assert_eq!(decoded.state_digest(), ledger.state_digest());
        let empty = Ledger::new();
        let decoded =
            Ledger::decode_snapshot(&empty.encode_snapshot().expect("encode")).expect("decode");
        assert_eq!(decoded, empty);
    }

    /// A writer that takes at most three bytes a call.
    struct Trickle(Vec<u8>);

    impl std::io::Write for Trickle {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let n = bytes.len().min(3);
            self.0.extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The checksum of a stream does not depend on how the stream was cut into writes.
    #[test]
    fn the_checksum_ignores_how_writes_are_split() {
        let ledger = ledger_with_history();
        let whole = ledger.encode_snapshot().expect("encode");
        let mut trickle = Trickle(Vec::new());
        let written = ledger.write_snapshot(&mut trickle).expect("write");
        assert_eq!(written, whole.len() as u64);
        assert_eq!(trickle.0, whole);
        assert_eq!(
            crc32c::crc32c(&whole[..whole.len() - 4]).to_le_bytes(),
            whole[whole.len() - 4..]
        );
    }

    /// Version 2's checksum missed every pair of flipped top bits (bit 63) across its 64-bit
    /// words. Here every such pair in a real snapshot must fail the checksum itself (or the
    /// magic, for the first word), not only a later check.
    #[test]
    fn every_pair_of_flipped_top_bits_fails_the_checksum() {
        let mut bytes = ledger_with_history().encode_snapshot().expect("encode");
        let words = bytes.len() / 8;
        let mut missed = Vec::new();
        for i in 0..words {
            bytes[8 * i + 7] ^= 0x80;
            for j in i + 1..words {
                bytes[8 * j + 7] ^= 0x80;
                match Ledger::decode_snapshot(&bytes) {
                    Err(SnapshotError::Checksum) => {}
                    Err(SnapshotError::Magic { .. }) if i == 0 => {}
                    other => missed.push((i, j, other.map(|_| ()).err())),
                }
                bytes[8 * j + 7] ^= 0x80;
            }
            bytes[8 * i + 7] ^= 0x80;
        }
        assert!(
            missed.is_empty(),
            "{} of {} pairs of words missed, first {:?}",
            missed.len(),
            words * (words - 1) / 2,
            missed.first()
        );
        assert!(Ledger::decode_snapshot(&bytes).is_ok(), "restored");
    }

    #[test]
    fn every_flipped_or_missing_byte_is_refused() {
        let mut bytes = ledger_with_history().encode_snapshot().expect("encode");
        for at in 0..bytes.len() {
            for mask in [0xFF, 0x01] {
                bytes[at] ^= mask;
                assert!(
                    Ledger::decode_snapshot(&bytes).is_err(),
                    "byte {at} xor {mask:#04x} was accepted"
                );
                bytes[at] ^= mask;
            }
        }
        for len in 0..bytes.len() {
            assert!(Ledger::decode_snapshot(&bytes[..len]).is_err(), "{len}");
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 32]);
        assert!(Ledger::decode_snapshot(&longer).is_err());
    }

    /// Bytes with a valid checksum but a broken ledger (a balance below its minimum, which
    /// also breaks the totals) are refused by the invariant check, not trusted.
    #[test]
    fn a_well_formed_snapshot_of_a_broken_ledger_is_refused() {
        let mut ledger = ledger_with_history();
        assert!(ledger.accounts.set_balance(2, -1_000));
        let bytes = ledger.encode_snapshot().expect("encode");
        match Ledger::decode_snapshot(&bytes) {
            Err(SnapshotError::Invariant(why)) => {
                assert!(why.to_string().contains("account 2"), "{why}")
            }
            other => panic!("expected an invariant error, got {other:?}"),
        }
    }

    /// Format version 1 (the ledger as JSON) and version 2 (written by the bank before
    /// CRC32C: `tests/data/snapshot-v2.bin` is `ledger_with_history` as it wrote it) are
    /// refused with what to do; a newer version is refused as newer.
    #[test]
    fn older_and_newer_formats_are_refused_with_a_clear_error() {
        let json = serde_json::to_vec(&ledger_with_history()).expect("json");
        let version_2 = include_bytes!("../../tests/data/snapshot-v2.bin");
        for (version, bytes) in [(1, &json[..]), (2, &version_2[..])] {
            let error = Ledger::decode_snapshot(bytes).expect_err("refused");
            assert!(
                matches!(error, SnapshotError::OlderVersion { version: v } if v == version),
                "{error:?}"
            );
            let message = error.to_string();
            let expected = format!("snapshot format version {version} is from an older bank");
            assert!(message.starts_with(&expected), "{message}");
            assert!(message.contains("--rejoin"), "{message}");
            assert!(message.contains("bank restore"), "{message}");
        }
        let mut newer = ledger_with_history().encode_snapshot().expect("encode");
        newer[7] = b'4';
        let error = Ledger::decode_snapshot(&newer).expect_err("refused");
        assert!(
            error.to_string().contains("version 4 is from a newer bank"),
            "{error}"
        );
        let error = Ledger::decode_snapshot(b"PNG\x89 not a snapshot at all").expect_err("refused");
        assert!(matches!(error, SnapshotError::Magic { .. }), "{error:?}");
    }
}
