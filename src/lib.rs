//! `bank`: a replicated bank. Branches are gRPC servers that each hold a full replica of the
//! ledger; customers are gRPC clients. Every state change goes through one Raft log
//! (`openraft`), so every branch applies the same operations in the same order and shows the
//! same balances.
//!
//! # Layout
//!
//! ```text
//! customer --Branch.MsgDelivery--> service::CustomerService --> branch::Branch
//! client::Client --bank.v1.Accounts--> accounts::AccountsService --> branch::Branch
//!     Branch::submit ----propose (or forward to the leader)----> openraft
//!     Branch::read_balance --read index, wait until applied----> local replica
//! openraft --AppendEntries/Vote/InstallSnapshot over bank.peer.v1.Peer--> other branches
//! openraft --apply in log order--> replication::store::StateMachineStore --> ledger::Ledger
//! ```
//!
//! - [`ledger`]: the pure state machine (no I/O, no clock); asserts its invariants.
//! - [`replication`]: openraft's type config, log and state-machine stores, peer network.
//! - [`branch`]: one replica; writes through the leader, linearizable reads from the replica.
//! - [`service`]: the gRPC services and the one mapping of errors to gRPC statuses; also
//!   serves `grpc.health.v1.Health` and server reflection.
//! - [`health`]: watches a branch's Raft metrics: its health status and its Raft gauges.
//! - [`metrics`]: the process's Prometheus registry (requests, latencies, Raft state) and its
//!   HTTP `/metrics` endpoint.
//! - [`accounts`]: the `bank.v1.Accounts` service: many accounts, transfers, batches, request
//!   ids from the customer, read levels.
//! - [`tls`]: `bank certs` (a test CA and branch certificates) and the rustls configurations
//!   of a TLS branch: customers over TLS, mutual TLS between branches.
//! - [`auth`]: who may call what: the peer service only with a cluster certificate, the
//!   customer APIs with bearer tokens restricted to accounts.
//! - [`client`]: a `bank.v1` client library that retries safely (same request id) across
//!   branches, bounded by a deadline.
//! - [`cluster`]: a whole cluster in one process (bootstrap, settle, shutdown).
//! - [`standalone`]: one branch per process (`bank branch`): resume, create or refuse.
//! - [`status`]: `bank status`: every branch's role, indexes, lag and digest.
//! - [`scenario`]: the course's `input.json` / `output.json` formats.
//! - [`customer`]: runs a scenario's customers against branches over gRPC.
//! - [`check`]: a Jepsen-style history checker (`bank check`): linearizability per account,
//!   conservation, minimum balances, convergence.
//! - [`bench`]: `bank bench`: throughput, latency percentiles, errors, invariant check.
//! - [`workload`]: Jepsen's bank workload on `bank.v1`, recording a history for [`check`].
//! - [`proto`]: generated gRPC code.
//! - `sim` (feature `simulation`): the whole cluster inside turmoil, deterministic per seed.

// openraft's error types (StorageError, RaftError, ConfigError) are large and fixed by its
// traits; boxing them at every storage call would only hide that.
#![allow(clippy::result_large_err)]

pub mod bootstrap;
pub mod check;
pub mod client;
pub mod ledger;
pub mod node;
pub mod raft;
pub mod server;
#[cfg(feature = "simulation")]
pub mod sim;
pub mod tls;
pub mod workload;

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
    /// The bank's own accounts API, `proto/bank/v1/bank.proto` (`bank.v1.Accounts`).
    pub mod v1 {
        tonic::include_proto!("bank.v1");
    }
    /// Every file in `proto/`, compiled (an encoded `FileDescriptorSet`): what server
    /// reflection answers with.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/bank_descriptor.bin"));
}
