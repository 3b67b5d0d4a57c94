//! Every decoder of outside input under generated input: scenario files, history files, token
//! files, ledger snapshots, backup files and peer messages (config files are in the binary:
//! `src/cli/config.rs` has its own proptest module). Each decoder gets arbitrary bytes and
//! structure-aware mutations of valid samples (flipped, set, removed and inserted bytes, JSON
//! and TOML tokens spliced in, pieces of the sample copied elsewhere, truncations); a binary
//! format whose checksum would stop every mutation at the door is also fed mutations with the
//! checksum made right again, so the checks behind it are reached. An error is the right
//! answer; a panic fails the test, with the input proptest shrank it to.
//!
//! 10,000 cases per run by default; `PROPTEST_CASES=1000000 cargo test --release --test
//! decoders_fuzz -- snapshot` runs a million against one decoder.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};

use bank::ledger::{Command, Ledger, Outcome, Proposal, RequestId};
use bank::proto::peer::RaftPayload;
use bank::raft::codec;
use bank::raft::{BasicNode, NodeId, TypeConfig};

/// Cases per run: `PROPTEST_CASES`, else 10,000.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(10_000);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `decode` (whether it accepted the input) on `config().cases` inputs from
/// `strategy`; fails with the shrunk input if it panics. Prints the count, how many were
/// accepted (mutations that still decode show they reach past the syntax) and the time.
fn run(name: &str, strategy: impl Strategy<Value = Vec<u8>>, decode: impl Fn(&[u8]) -> bool) {
    let config = config();
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let accepted = std::cell::Cell::new(0u64);
    let start = Instant::now();
    let result = runner.run(&strategy, |bytes| {
        if decode(&bytes) {
            accepted.set(accepted.get() + 1);
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{name}: {failure}");
    }
    let accepted = accepted.get();
    eprintln!(
        "{name}: {cases} cases, {accepted} accepted, in {:.2?}",
        start.elapsed()
    );
}

/// Arbitrary bytes, mostly short.
fn arbitrary() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 0..4096),
    ]
}

/// Tokens of the text formats, spliced into samples.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\\",
    "\\u",
    "\\ud800",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "-0",
    "1e999",
    "-1e999",
    "0.5",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "170141183460469231731687303715884105728",
    "\"\"",
    "[]",
    "{}",
    "\n",
    "\r\n",
    " ",
    "=",
    "#",
    "'",
    "\"\"\"",
    "[[",
    "]]",
    "\u{0}",
    "\u{feff}",
    "é",
    "\u{10ffff}",
    "\"type\"",
    "\"id\"",
    "\"all\"",
    "\"Batch\"",
    "\"Normal\"",
    "\"Membership\"",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: Index,
        mask: u8,
    },
    Set {
        at: Index,
        byte: u8,
    },
    Remove {
        at: Index,
        len: usize,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Token {
        at: Index,
        token: &'static str,
    },
    /// Copies `len` bytes from `from` to `to` (a duplicated field, a repeated record).
    Copy {
        from: Index,
        len: usize,
        to: Index,
    },
    Truncate {
        at: Index,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        1 => (any::<Index>(), 1..64usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        3 => (any::<Index>(), prop::sample::select(TOKENS))
            .prop_map(|(at, token)| Mutation::Token { at, token }),
        1 => (any::<Index>(), 1..128usize, any::<Index>())
            .prop_map(|(from, len, to)| Mutation::Copy { from, len, to }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

/// `sample` with `mutations` applied in order.
fn mutate(sample: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = sample.to_vec();
    for mutation in mutations {
        // Positions are drawn over the bytes as they are now, end included.
        let at = |index: &Index| index.index(bytes.len() + 1);
        match mutation {
            Mutation::Flip { at: i, mask } if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= mask;
            }
            Mutation::Set { at: i, byte } if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] = *byte;
            }
            Mutation::Remove { at: i, len } => {
                let start = at(i);
                let end = (start + len).min(bytes.len());
                bytes.drain(start..end);
            }
            Mutation::Insert { at: i, bytes: new } => {
                let i = at(i);
                bytes.splice(i..i, new.iter().copied());
            }
            Mutation::Token { at: i, token } => {
                let i = at(i);
                bytes.splice(i..i, token.bytes());
            }
            Mutation::Copy { from, len, to } => {
                let start = at(from);
                let piece = bytes[start..(start + len).min(bytes.len())].to_vec();
                let to = at(to);
                bytes.splice(to..to, piece);
            }
            Mutation::Truncate { at: i } => {
                let i = at(i);
                bytes.truncate(i);
            }
            Mutation::Flip { .. } | Mutation::Set { .. } => {}
        }
    }
    bytes
}

/// One of `samples`, mutated one to eight times.
fn mutated(samples: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!samples.is_empty());
    (
        prop::sample::select(samples),
        prop::collection::vec(mutation(), 1..8),
    )
        .prop_map(|(sample, mutations)| mutate(&sample, &mutations))
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn file(path: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn scenario_files() {
    let samples = vec![
        file("examples/scenarios/p1.json"),
        file("examples/scenarios/p3.json"),
        file("examples/scenarios/concurrent.json"),
    ];
    for sample in &samples {
        bank::course::scenario::Scenario::parse(&text(sample), "sample").expect("a sample");
    }
    let decode =
        |bytes: &[u8]| bank::course::scenario::Scenario::parse(&text(bytes), "fuzz").is_ok();
    run("scenario, arbitrary", arbitrary(), decode);
    run("scenario, mutated", mutated(samples), decode);
}

#[test]
fn history_files() {
    let samples = vec![
        file("tests/testdata/histories/passing.jsonl"),
        file("tests/testdata/histories/stale_read.jsonl"),
    ];
    for sample in &samples {
        bank::check::History::parse(&text(sample)).expect("a sample");
    }
    let decode = |bytes: &[u8]| {
        // What `bank check` does with a history: parse it, then judge it.
        match bank::check::History::parse(&text(bytes)) {
            Ok(history) => bank::check::check(&history).is_ok(),
            Err(_) => false,
        }
    };
    run("history, arbitrary", arbitrary(), decode);
    run("history, mutated", mutated(samples), decode);
}

#[test]
fn token_files() {
    let sample = br#"{"tokens": [
        {"name": "teller", "token": "0123456789abcdef0123456789abcdef", "accounts": "all"},
        {"name": "alice", "token": "fedcba9876543210fedcba9876543210", "accounts": [1, 2, 7]}
    ]}"#
    .to_vec();
    bank::server::auth::Tokens::parse(&text(&sample)).expect("a sample");
    let decode = |bytes: &[u8]| bank::server::auth::Tokens::parse(&text(bytes)).is_ok();
    run("tokens, arbitrary", arbitrary(), decode);
    run("tokens, mutated", mutated(vec![sample]), decode);
}

fn proposal(sequence: u64, command: Command) -> Proposal {
    Proposal {
        request_id: RequestId {
            origin: 3,
            sequence,
        },
        command,
    }
}

/// A ledger with accounts, an overdraft, transfers and a request log.
fn ledger() -> Ledger {
    let mut ledger = Ledger::new();
    let commands = (1..=6u64)
        .map(|account| Command::Open {
            account,
            balance_minor_units: account * 100,
            overdraft_limit_minor_units: account % 2 * 50,
            balance_max_minor_units: 10_000,
        })
        .chain([
            Command::Transfer {
                from: 1,
                to: 2,
                amount_minor_units: 120,
            },
            Command::Withdraw {
                account: 3,
                amount_minor_units: 7,
            },
        ]);
    for (sequence, command) in (1..).zip(commands) {
        ledger.apply_proposal(&proposal(sequence, command));
    }
    ledger
}

/// `bytes` with their CRC32C (the last 4 bytes) made right again, if long enough.
fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(body) = bytes.len().checked_sub(4) {
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
    bytes
}

#[test]
fn ledger_snapshots() {
    let samples = vec![
        ledger().encode_snapshot().expect("encode"),
        Ledger::new().encode_snapshot().expect("encode"),
    ];
    let decode = |bytes: &[u8]| Ledger::decode_snapshot(bytes).is_ok();
    run("snapshot, arbitrary", arbitrary(), decode);
    // With the checksum left alone, only a mutation that undid itself may be accepted.
    run("snapshot, mutated", mutated(samples.clone()), |bytes| {
        let accepted = decode(bytes);
        assert!(
            !accepted || samples.iter().any(|s| s == bytes),
            "damage passed"
        );
        accepted
    });
    run(
        "snapshot, mutated with the checksum made right",
        mutated(samples).prop_map(with_crc),
        decode,
    );
}

/// `bytes` with their SHA-256 (the last 32 bytes) made right again, if long enough.
fn with_sha256(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(body) = bytes.len().checked_sub(32) {
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes[..body]);
        bytes[body..].copy_from_slice(digest.as_ref());
    }
    bytes
}

#[test]
fn backup_files() {
    let mut sample = Vec::new();
    bank::backup::write(&ledger(), 41, 2, &mut sample).expect("write");
    bank::backup::decode(&sample).expect("a sample");
    let decode = |bytes: &[u8]| bank::backup::decode(bytes).is_ok();
    run("backup, arbitrary", arbitrary(), decode);
    // With the SHA-256 left alone, only a mutation that undid itself may be accepted.
    run("backup, mutated", mutated(vec![sample.clone()]), |bytes| {
        let accepted = decode(bytes);
        assert!(!accepted || bytes == sample, "damage passed");
        accepted
    });
    run(
        "backup, mutated with the SHA-256 made right",
        mutated(vec![sample]).prop_map(with_sha256),
        decode,
    );
}

mod peer {
    use super::*;
    use openraft::error::{Infallible, InstallSnapshotError, RaftError};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::{
        CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership,
        Vote,
    };

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn membership() -> Membership<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> = (1..=4)
            .map(|id| (id, BasicNode::new(format!("127.0.0.1:700{id}"))))
            .collect();
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
    }

    fn payload<T: serde::Serialize>(value: &T) -> Vec<u8> {
        codec::encode(value).expect("encode").encoded
    }

    /// A valid payload of every kind a branch decodes from a peer, requests and replies.
    pub(super) fn samples() -> Vec<Vec<u8>> {
        let vote = Vote::new_committed(2, 1);
        let batch = Command::Batch(vec![
            proposal(
                8,
                Command::Deposit {
                    account: 1,
                    amount_minor_units: 5,
                },
            ),
            proposal(
                9,
                Command::Transfer {
                    from: 1,
                    to: 2,
                    amount_minor_units: 3,
                },
            ),
        ]);
        let entries: Vec<Entry<TypeConfig>> = vec![
            Entry {
                log_id: log_id(2, 6),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 7),
                payload: EntryPayload::Normal(proposal(7, batch.clone())),
            },
            Entry {
                log_id: log_id(2, 8),
                payload: EntryPayload::Membership(membership()),
            },
        ];
        let append = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(log_id(1, 5)),
            entries,
            leader_commit: Some(log_id(1, 5)),
        };
        let install = InstallSnapshotRequest::<TypeConfig> {
            vote,
            meta: SnapshotMeta {
                last_log_id: Some(log_id(2, 8)),
                last_membership: StoredMembership::new(Some(log_id(2, 8)), membership()),
                snapshot_id: "2-1-8-1".to_string(),
            },
            offset: 0,
            data: ledger().encode_snapshot().expect("encode"),
            done: true,
        };
        type Reply<T, E = Infallible> = Result<T, RaftError<NodeId, E>>;
        vec![
            payload(&append),
            payload(&VoteRequest::new(vote, Some(log_id(2, 8)))),
            payload(&install),
            payload(&proposal(10, batch)),
            payload(&vec![proposal(
                11,
                Command::Open {
                    account: 9,
                    balance_minor_units: 1,
                    overdraft_limit_minor_units: 0,
                    balance_max_minor_units: 10,
                },
            )]),
            payload(&bank::node::MemberChange::Forget { id: 4 }),
            payload(&bank::node::MemberChange::Add {
                id: 5,
                address: "127.0.0.1:7005".to_string(),
            }),
            payload(&Reply::<_, Infallible>::Ok(
                AppendEntriesResponse::<NodeId>::Success,
            )),
            payload(&Reply::<_, Infallible>::Ok(VoteResponse::new(
                vote,
                Some(log_id(2, 8)),
                true,
            ))),
            payload(&Reply::<_, InstallSnapshotError>::Ok(
                InstallSnapshotResponse { vote },
            )),
            payload(&Outcome::Deposited {
                balance_minor_units: 12,
            }),
            payload(&(
                vec![Outcome::Deposited {
                    balance_minor_units: 3,
                }],
                44u64,
            )),
        ]
    }

    /// Decodes `bytes` as every payload a branch receives from a peer; whether any accepted it
    /// (the protobuf around it aside).
    pub(super) fn decode_all(bytes: &[u8]) -> bool {
        type Reply<T, E = Infallible> = Result<T, RaftError<NodeId, E>>;
        let mut ok = false;
        // The payload's other fields (main adds a Lamport one) stay at their defaults.
        #[allow(clippy::needless_update)]
        let payload = RaftPayload {
            encoded: bytes.to_vec(),
            ..RaftPayload::default()
        };
        ok |= codec::decode::<AppendEntriesRequest<TypeConfig>>(&payload).is_ok();
        ok |= codec::decode::<VoteRequest<NodeId>>(&payload).is_ok();
        ok |= codec::decode::<InstallSnapshotRequest<TypeConfig>>(&payload).is_ok();
        ok |= codec::decode::<Proposal>(&payload).is_ok();
        ok |= codec::decode::<Vec<Proposal>>(&payload).is_ok();
        ok |= codec::decode::<bank::node::MemberChange>(&payload).is_ok();
        ok |= codec::decode::<Reply<AppendEntriesResponse<NodeId>>>(&payload).is_ok();
        ok |= codec::decode::<Reply<VoteResponse<NodeId>>>(&payload).is_ok();
        ok |=
            codec::decode::<Reply<InstallSnapshotResponse<NodeId>, InstallSnapshotError>>(&payload)
                .is_ok();
        ok |= codec::decode::<Outcome>(&payload).is_ok();
        ok |= codec::decode::<(Vec<Outcome>, u64)>(&payload).is_ok();
        ok |= codec::decode::<Result<bank::node::MembersChanged, bank::node::MemberRefused>>(
            &payload,
        )
        .is_ok();
        // The protobuf around the payload, as the peer service receives it (not counted: a
        // protobuf decoder accepts most bytes).
        let _ = <RaftPayload as prost::Message>::decode(bytes);
        ok
    }
}

#[test]
fn peer_messages() {
    let samples = peer::samples();
    run("peer messages, arbitrary", arbitrary(), peer::decode_all);
    run("peer messages, mutated", mutated(samples), peer::decode_all);
}
