//! `bank`: a replicated bank. Branches are gRPC servers that each hold a full replica of the
//! ledger; customers are gRPC clients. Every state change goes through one Raft log
//! (`openraft`), so every branch applies the same operations in the same order and shows the
//! same balances.
//!
//! # Layout
//!
//! ```text
//! customer --Branch.MsgDelivery--> service::CustomerService --> branch::Branch
//!     Branch::submit ----propose (or forward to the leader)----> openraft
//!     Branch::read_balance --read index, wait until applied----> local replica
//! openraft --AppendEntries/Vote/InstallSnapshot over bank.peer.v1.Peer--> other branches
//! openraft --apply in log order--> replication::store::StateMachineStore --> ledger::Ledger
//! ```
//!
//! - [`ledger`]: the pure state machine (no I/O, no clock); asserts its invariants.
//! - [`replication`]: openraft's type config, log and state-machine stores, peer network.
//! - [`branch`]: one replica; writes through the leader, linearizable reads from the replica.
//! - [`service`]: the gRPC services and the one mapping of errors to gRPC statuses.
//! - [`cluster`]: a whole cluster in one process (bootstrap, settle, shutdown).
//! - [`standalone`]: one branch per process (`bank branch`): resume, create or refuse.
//! - [`scenario`]: the course's `input.json` / `output.json` formats.
//! - [`customer`]: runs a scenario's customers against branches over gRPC.
//! - [`proto`]: generated gRPC code.
//! - `sim` (feature `simulation`): the whole cluster inside turmoil, deterministic per seed.

// openraft's error types (StorageError, RaftError, ConfigError) are large and fixed by its
// traits; boxing them at every storage call would only hide that.
#![allow(clippy::result_large_err)]

pub mod branch;
pub mod cluster;
pub mod customer;
pub mod ledger;
pub mod replication;
pub mod scenario;
pub mod service;
#[cfg(feature = "simulation")]
pub mod sim;
pub mod standalone;

/// Code generated from `proto/` by `build.rs`.
pub mod proto {
    /// The original course API, `proto/banks.proto` (no package: `/Branch/MsgDelivery`).
    pub mod customer {
        tonic::include_proto!("_");
    }
    /// Branch-to-branch traffic, `proto/bank/peer/v1/peer.proto`.
    pub mod peer {
        tonic::include_proto!("bank.peer.v1");
    }
}
