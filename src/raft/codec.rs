//! How Raft messages, forwarded writes and log entries are encoded: openraft's and the ledger's
//! own serde types in [postcard](https://docs.rs/postcard), a compact binary serde format
//! (varint integers, no field names), inside a `bank.peer.v1.RaftPayload` on the wire and as
//! the value of each entry in the durable log.
//!
//! Binary, not JSON: a full batch entry (8,190 deposits) is 1,029,886 bytes as JSON and 122,613
//! here (8.4 times smaller), so replication and a lagging follower's catch-up move fewer bytes and spend less
//! time encoding. postcard is not self-describing: both ends must run the same types, which
//! holds inside one cluster (a mixed-version cluster is not supported), and the durable log
//! records which encoding its entries use (`raft::durable`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::proto::peer::RaftPayload;

/// A value that does not encode, or bytes that do not decode as the expected type.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(postcard::Error);

/// Encodes a value in the binary format.
pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(value).map_err(CodecError)
}

/// Decodes a value from the binary format; trailing bytes are an error (they mean the bytes
/// were not written as this type).
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, _rest)) => Err(CodecError(postcard::Error::DeserializeBadEncoding)),
        Err(e) => Err(CodecError(e)),
    }
}

/// How many bytes `value` encodes to, without keeping them.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, CodecError> {
    let mut counted = ByteCount(0);
    postcard::to_io(value, &mut counted).map_err(CodecError)?;
    Ok(counted.0)
}

/// A writer that only counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(bytes.len());
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of a checksum in front of a sealed value.
const SEAL_BYTES: usize = 4;

/// Why stored bytes are not a sealed value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SealError {
    #[error("its CRC32C checksum does not match its contents ({len} bytes): it is damaged")]
    Damaged { len: usize },
    #[error("it passes its checksum but does not decode: {0}")]
    Decode(CodecError),
}

/// A value as it is stored in a log: the CRC32C (Castagnoli, little-endian) of its encoding,
/// then the encoding. A flipped bit, a zeroed block or a torn (cut short) write is caught
/// before the bytes are decoded: CRC32C always detects a burst of damage up to 32 bits long
/// and any one, two or three flipped bits in a value of up to 2³¹ bits, and other damage
/// escapes it with probability about 2⁻³².
pub fn seal<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let encoded = to_bytes(value)?;
    let mut sealed = Vec::with_capacity(SEAL_BYTES + encoded.len());
    sealed.extend_from_slice(&crc32c::crc32c(&encoded).to_le_bytes());
    sealed.extend_from_slice(&encoded);
    Ok(sealed)
}

/// Whether `sealed` passes its checksum.
pub fn is_intact(sealed: &[u8]) -> bool {
    match sealed.split_first_chunk::<SEAL_BYTES>() {
        Some((crc, encoded)) => u32::from_le_bytes(*crc) == crc32c::crc32c(encoded),
        None => false,
    }
}

/// Checks the checksum of a [`seal`]ed value, then decodes it.
pub fn unseal<T: DeserializeOwned>(sealed: &[u8]) -> Result<T, SealError> {
    if !is_intact(sealed) {
        return Err(SealError::Damaged { len: sealed.len() });
    }
    from_bytes(&sealed[SEAL_BYTES..]).map_err(SealError::Decode)
}

/// Decodes a [`seal`]ed value without checking its checksum: what a store that ignores its
/// checksum does. Only the simulator's deliberately broken variant uses it, to show that the
/// check matters.
pub fn unseal_unchecked<T: DeserializeOwned>(sealed: &[u8]) -> Result<T, SealError> {
    let encoded = sealed.get(SEAL_BYTES..).unwrap_or_default();
    from_bytes(encoded).map_err(SealError::Decode)
}

/// Encodes a value for a `RaftPayload`.
pub fn encode<T: Serialize>(value: &T) -> Result<RaftPayload, CodecError> {
    Ok(RaftPayload {
        encoded: to_bytes(value)?,
        lamport: None,
    })
}

/// Decodes a `RaftPayload`.
pub fn decode<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, CodecError> {
    from_bytes(&payload.encoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Command, Proposal, RequestId, BATCH_ITEMS_MAX};
    use crate::raft::TypeConfig;

    /// A full batch entry (8,190 deposits, as `bank bench --batch 8190` writes them).
    fn full_batch_entry() -> openraft::Entry<TypeConfig> {
        let id = |sequence| RequestId {
            origin: u64::MAX / 3,
            sequence,
        };
        let items = (0..BATCH_ITEMS_MAX as u64)
            .map(|n| Proposal {
                request_id: id(n + 1),
                command: Command::Deposit {
                    account: n,
                    amount_minor_units: 100,
                },
            })
            .collect();
        openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 12_345),
            payload: openraft::EntryPayload::Normal(Proposal {
                request_id: id(0),
                command: Command::Batch(items),
            }),
        }
    }

    #[test]
    fn entries_round_trip_and_are_much_smaller_than_json() {
        let entry = full_batch_entry();
        let bytes = to_bytes(&entry).expect("encode");
        assert_eq!(encoded_len(&entry).expect("measure"), bytes.len());
        let back: openraft::Entry<TypeConfig> = from_bytes(&bytes).expect("decode");
        assert_eq!(back, entry);
        let json = serde_json::to_vec(&entry).expect("json").len();
        // Measured: 122,613 bytes against 1,029,886 as JSON (8.4 times smaller).
        assert!(bytes.len() * 4 < json, "{} vs {json} as JSON", bytes.len());
    }

    #[test]
    fn trailing_or_missing_bytes_do_not_decode() {
        let bytes = to_bytes(&full_batch_entry()).expect("encode");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(from_bytes::<openraft::Entry<TypeConfig>>(&longer).is_err());
        assert!(from_bytes::<openraft::Entry<TypeConfig>>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_sealed_entry_with_any_byte_damaged_or_cut_short_is_refused() {
        let entry = openraft::Entry::<TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(2, 1), 7),
            payload: openraft::EntryPayload::Normal(Proposal {
                request_id: RequestId {
                    origin: 9,
                    sequence: 1,
                },
                command: Command::Deposit {
                    account: 3,
                    amount_minor_units: 250,
                },
            }),
        };
        let sealed = seal(&entry).expect("seal");
        let back: openraft::Entry<TypeConfig> = unseal(&sealed).expect("intact");
        assert_eq!(back, entry);
        for at in 0..sealed.len() {
            for bit in 0..8 {
                let mut damaged = sealed.clone();
                damaged[at] ^= 1 << bit;
                assert!(
                    !is_intact(&damaged),
                    "bit {bit} of byte {at} flipped unnoticed"
                );
            }
            assert!(!is_intact(&sealed[..at]), "cut to {at} bytes unnoticed");
        }
        // What a store that ignores its checksum reads from a damaged amount: another value.
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last - 1] ^= 1;
        let read = unseal_unchecked::<openraft::Entry<TypeConfig>>(&damaged);
        assert!(read.is_ok_and(|read| read != entry));
    }
}
