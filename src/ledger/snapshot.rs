//! The ledger's snapshot encoding: compact, fixed-width accounts and a checksum.
//!
//! A snapshot is the whole ledger. With a million accounts the former encoding (the ledger as
//! JSON) took about 100 bytes per account, was written twice per snapshot and parsed slowly;
//! this one takes 32 bytes per account and is read and written with straight copies.
//!
//! ```text
//! magic       8 bytes   "BANKLDG2" (the 2 is the format version)
//! accounts    u64 LE    the number of accounts
//! account     32 bytes  per account, ids strictly increasing:
//!                       id u64, balance i64, balance_min i64, balance_max i64 (all LE)
//! header      JSON      totals and the request log (bounded by REQUEST_IDS_MAX ids)
//! header_len  u32 LE
//! checksum    u64 LE    of every byte before it (see `Checksum`)
//! ```
//!
//! It is written as a stream ([`Ledger::write_snapshot`]), so a durable branch writes it
//! straight to its file without holding a second copy of the ledger in memory; the header
//! comes last so its length need not be known before it is written.
//!
//! Decoding checks everything a damaged or hostile snapshot could get wrong: the magic, every
//! length against the bytes present, the checksum, increasing ids, and then every ledger
//! invariant ([`Ledger::check_invariants_fully`]). It returns an error, never panics, and never
//! allocates more than the input's own size suggests.

use serde::{Deserialize, Serialize};

use super::{Account, Countdown, InvariantViolation, Ledger, RequestLog};

const MAGIC: &[u8; 8] = b"BANKLDG2";
const ACCOUNT_BYTES: usize = 32;
/// Magic, account count, header length, checksum.
const FIXED_BYTES: usize = 8 + 4 + 8 + 8;

/// Why bytes are not a ledger snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a ledger snapshot of this format (expected it to start with {expected:?}); it may have been written by another version of bank")]
    Magic { expected: &'static str },
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

/// The snapshot's checksum: FNV-1a's multiply-xor over 64-bit little-endian words (the bytes
/// after the last whole word are zero-padded into one more), then the length. Each step is a
/// bijection of the state for a given word, so any change confined to one word is always
/// detected, and other damage with probability about 1 - 2⁻⁶⁴. Word-wise it runs near memory
/// speed (a million accounts in a few milliseconds), unlike byte-wise FNV. It detects damage,
/// not tampering: peers are authenticated by TLS, not by this.
struct Checksum {
    state: u64,
    pending: [u8; 8],
    pending_len: usize,
    len: u64,
}

impl Checksum {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Checksum {
            state: Self::OFFSET,
            pending: [0; 8],
            pending_len: 0,
            len: 0,
        }
    }

    fn word(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(Self::PRIME);
    }

    fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.pending_len > 0 {
            let take = (8 - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.pending));
            self.pending_len = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.word(u64_at(word, 0));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    fn finish(mut self) -> u64 {
        if self.pending_len > 0 {
            self.pending[self.pending_len..].fill(0);
            self.word(u64::from_le_bytes(self.pending));
        }
        let len = self.len;
        self.word(len);
        self.state
    }
}

/// Passes bytes to `out`, checksumming them and counting them.
struct Summed<W> {
    out: W,
    checksum: Checksum,
}

impl<W: std::io::Write> std::io::Write for Summed<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(bytes)?;
        self.checksum.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
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

impl Ledger {
    /// Writes the ledger as a snapshot (format in the module docs) to `out`; returns the bytes
    /// written. `out` should be buffered: accounts are written 32 bytes at a time.
    pub fn write_snapshot(&self, out: impl std::io::Write) -> std::io::Result<u64> {
        use std::io::Write as _;
        let mut out = Summed {
            out,
            checksum: Checksum::new(),
        };
        out.write_all(MAGIC)?;
        out.write_all(&(self.accounts.len() as u64).to_le_bytes())?;
        for (id, account) in &self.accounts {
            let mut record = [0u8; ACCOUNT_BYTES];
            record[..8].copy_from_slice(&id.to_le_bytes());
            record[8..16].copy_from_slice(&account.balance_minor_units.to_le_bytes());
            record[16..24].copy_from_slice(&account.balance_min_minor_units.to_le_bytes());
            record[24..].copy_from_slice(&account.balance_max_minor_units.to_le_bytes());
            out.write_all(&record)?;
        }
        let before_header = out.checksum.len;
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
        let header_len = u32::try_from(out.checksum.len - before_header)
            .map_err(|_| std::io::Error::other("snapshot header over 4 GiB"))?;
        out.write_all(&header_len.to_le_bytes())?;
        let Summed {
            mut out, checksum, ..
        } = out;
        let len = checksum.len + 8;
        out.write_all(&checksum.finish().to_le_bytes())?;
        out.flush()?;
        Ok(len)
    }

    /// The ledger as snapshot bytes, in memory.
    pub fn encode_snapshot(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(FIXED_BYTES + ACCOUNT_BYTES * self.accounts.len());
        self.write_snapshot(&mut out)?;
        Ok(out)
    }

    /// A ledger from [`Ledger::encode_snapshot`]'s bytes, checked (see the module docs).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Ledger, SnapshotError> {
        if bytes.len() < FIXED_BYTES {
            return Err(SnapshotError::Length(format!(
                "{} bytes, fewer than the {FIXED_BYTES} of an empty snapshot",
                bytes.len()
            )));
        }
        if &bytes[..8] != MAGIC {
            return Err(SnapshotError::Magic {
                expected: "BANKLDG2",
            });
        }
        let (body, checksum) = bytes.split_at(bytes.len() - 8);
        let mut summed = Checksum::new();
        summed.update(body);
        if summed.finish() != u64_at(checksum, 0) {
            return Err(SnapshotError::Checksum);
        }
        let count = u64_at(body, 8);
        let mut word = [0u8; 4];
        word.copy_from_slice(&body[body.len() - 4..]);
        let header_len = u32::from_le_bytes(word) as usize;
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
        let mut accounts = std::collections::BTreeMap::new();
        let mut previous: Option<u64> = None;
        for record in records.chunks_exact(ACCOUNT_BYTES) {
            let id = u64_at(record, 0);
            if let Some(previous) = previous.filter(|p| *p >= id) {
                return Err(SnapshotError::Order { previous, next: id });
            }
            previous = Some(id);
            // Ids increase, so each insert goes at the end of the map.
            accounts.insert(
                id,
                Account {
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

    /// The checksum of a stream does not depend on how the stream was cut into writes.
    #[test]
    fn the_checksum_ignores_how_writes_are_split() {
        let bytes: Vec<u8> = (0..1_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let mut whole = Checksum::new();
        whole.update(&bytes);
        let whole = whole.finish();
        for cut in [1, 3, 7, 8, 9, 13, 64, 999] {
            let mut pieces = Checksum::new();
            for piece in bytes.chunks(cut) {
                pieces.update(piece);
            }
            assert_eq!(pieces.finish(), whole, "cut every {cut}");
        }
        let mut shorter = Checksum::new();
        shorter.update(&bytes[..999]);
        assert_ne!(shorter.finish(), whole);
    }

    #[test]
    fn every_flipped_or_missing_byte_is_refused() {
        let bytes = ledger_with_history().encode_snapshot().expect("encode");
        for at in (0..bytes.len()).step_by(7) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x20;
            assert!(
                Ledger::decode_snapshot(&damaged).is_err(),
                "a flipped byte at {at} was accepted"
            );
        }
        for len in [0, 7, 27, bytes.len() / 2, bytes.len() - 1] {
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
        if let Some(account) = ledger.accounts.get_mut(&2) {
            account.balance_minor_units = -1_000;
        }
        let bytes = ledger.encode_snapshot().expect("encode");
        match Ledger::decode_snapshot(&bytes) {
            Err(SnapshotError::Invariant(why)) => {
                assert!(why.to_string().contains("account 2"), "{why}")
            }
            other => panic!("expected an invariant error, got {other:?}"),
        }
    }

    #[test]
    fn the_old_json_format_is_refused_with_a_clear_error() {
        let mut json = serde_json::to_vec(&ledger_with_history()).expect("json");
        json.extend_from_slice(&[b' '; 64]);
        let error = Ledger::decode_snapshot(&json).expect_err("refused");
        assert!(error.to_string().contains("another version"), "{error}");
    }
}
