//! The Raft layer: everything that knows openraft's types, glued to the
//! [`ledger`](crate::ledger). Only this folder and [`crate::node`] (the facade above it) name
//! openraft.
//!
//! - [`TypeConfig`]: openraft's type configuration. A log entry's payload is a ledger
//!   [`Proposal`] (a command with its request id); its response is the ledger's [`Outcome`].
//!   Nodes are branch ids ([`NodeId`]) and [`BasicNode`]s whose `addr` is the branch's gRPC
//!   address (`host:port`).
//! - The log store behind openraft's storage-v2 traits: in memory ([`log_store::LogStore`])
//!   or on redb ([`durable::DurableLogStore`], beside the snapshot files of a
//!   [`durable::DurableStore`]).
//! - [`state_machine`]: applies committed entries to the ledger; in memory, restored on start
//!   from its latest durable snapshot; watched through an [`state_machine::ApplyObserver`].
//! - [`runtime`]: openraft's async runtime, tokio with a random generator a simulation seeds.
//! - [`network`]: the peer network, openraft's RPCs over the `bank.peer.v1.Peer` gRPC service,
//!   with one cached tonic `Channel` per peer; [`codec`]: how messages are encoded on it. Each
//!   append it sends also carries the course's Project 2 Lamport stamps
//!   ([`crate::lamport`]): the clocks ride on the real peer messages, so a branch's `propagate_*`
//!   events are the appends it really sent and received.
//! - [`disk_space`]: whether the branch's disk has room for its log ([`disk_space::DiskSpace`]):
//!   the reserve checked before a write, shared by the log store and the node's disk task.
//!
//! Nothing here serves customers or knows their APIs (the Lamport stamps aside, which are
//! values handed to it); the [`node`](crate::node) layer uses this to propose writes, serve
//! linearizable reads and change the membership.

pub mod codec;
pub mod disk_space;
pub mod durable;
pub mod log_store;
pub mod network;
pub mod runtime;
pub mod state_machine;

use std::io::Cursor;
use std::time::Duration;

pub use openraft::BasicNode;

use crate::ledger::{Outcome, Proposal};

/// A node's id in Raft: its branch's id.
pub type NodeId = crate::BranchId;

openraft::declare_raft_types!(
    /// openraft's type configuration for the bank.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = runtime::BankRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;

/// At most this many branches vote; the others join as learners, so a 50-branch scenario
/// keeps a quorum of 3 out of 5 while every branch still replicates and applies the log.
pub const VOTERS_MAX: usize = 5;

/// Raft timing for branches on one host or a LAN.
///
/// openraft 0.9 lets a follower that has seen a leader stand for election only after the
/// leader lease (`election_timeout_max`) plus its own random election timeout have passed
/// without word from the leader, and a voter refuses votes until its lease ran out: a dead
/// leader is replaced after 600–800 ms here (it was 2.4–3.2 s with 800–1600 ms). The
/// heartbeat stays at 100 ms because openraft also gives every `AppendEntries` one heartbeat
/// interval: a shorter one times out replication behind a follower's fsync under load.
/// `bench/failover.sh` and `bench/elections.sh` measure both sides.
pub fn raft_config(cluster_name: &str) -> Result<openraft::Config, openraft::ConfigError> {
    let config = openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 200,
        election_timeout_max: 400,
        install_snapshot_timeout: 2_000,
        max_payload_entries: 512,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_LOGS),
        max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT,
        ..Default::default()
    };
    config.validate()
}

/// A snapshot is built every this many applied entries, and the log is purged behind it, so
/// the log (and a restart's replay) stays bounded.
pub const SNAPSHOT_EVERY_LOGS: u64 = 1_000;

/// Entries kept behind a snapshot, so a slightly lagging branch catches up by log rather than
/// by a whole snapshot.
pub const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 200;

/// The log levels of a `bank` process unless `RUST_LOG` says otherwise: warnings, and only
/// errors from openraft, whose warnings are routine (an unreachable peer, a retried append).
pub const LOG_FILTER_DEFAULT: &str = "warn,openraft=error";

/// Deadline of one Raft RPC between branches when openraft gives none.
pub const PEER_RPC_TIMEOUT: Duration = Duration::from_secs(2);
