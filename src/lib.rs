//! `bank`: a replicated bank. Branches are gRPC servers that each hold a full replica of the
//! ledger; customers are gRPC clients. Every state change goes through one Raft log
//! (`openraft`), so every branch applies the same operations in the same order and shows the
//! same balances.
//!
//! # Layout
//!
//! One folder per layer; each names what it owns in its `//!` doc. The map runs from the top
//! down: a layer uses only layers below it, and `→` names every one it uses (its imports, all
//! of them). Layers in one group (between two `│` lines) use none of each other.
//!
//! ```text
//! cli (binary) ─ parses, prints, exit codes → report, grade, course, bootstrap, web, server,
//!   │            load, raft, client, check, backup, ledger, tls
//!   │
//! report ──── pictures as self-contained HTML: a checked history, a bench run, a P2 run's
//!   │          clocks with what the grader blames → check, load, grade
//!   │
//! grade ───── course outputs (P1, P2 Lamport clocks, P3) graded strictly → course (the
//!   │          scenario files it grades against)
//!   │
//! course ──── the course project: scenario files, the runner (`bank run`, a cluster on
//!   │          loopback), Project 2's output files → bootstrap, client, lamport, ledger
//! sim ─────── (feature `simulation`) the whole cluster inside turmoil → bootstrap, server,
//!   │          node, raft, client, load (the history recorder), check, retry, ledger
//!   │
//! bootstrap ─ starts branches: a local cluster, a standalone branch, a rejoin, a join, a
//!   │          restore; genesis → server, node, raft, backup, retry, tls, ledger
//! web ─────── the HTTP listener: /metrics, the live page and its event stream, the page's
//!   │          buttons (through a control the cli wires in) → server, client
//!   │
//! server ──── gRPC services: course API, bank.v1, peer, members, backup, health; auth,
//!   │          admission, metrics; the one error → Status mapping → node, backup, lamport,
//!   │          rpc, ledger
//!   │
//! node ────── the Branch facade: writes (forward, retry, group commit), linearizable reads,
//!   │          membership (checked member changes), peer calls, Raft state as plain values
//!   │          → raft, lamport, retry, ledger
//! load ────── the load generator: `bank bench`, Jepsen's bank workload, one driver loop, the
//!   │          history it records → client, check, ledger
//!   │
//! raft ────── openraft's glue: type config, log stores (memory, redb), state machine, peer
//!   │          network, codec, runtime → lamport, retry, rpc, ledger
//! client ──── bank.v1 client, course client, cluster status, members, backup; the one
//!   │          client error → backup, lamport, retry, rpc, ledger
//!   │
//! lamport ─── the course's Project 2 clocks: per-process Lamport clocks and event logs,
//!   │          carried on the real peer messages → ledger (whose request ids it labels)
//! check ───── Jepsen-style history checker: the history format, linearizability per
//!   │          account, money, minimum balances, convergence → ledger
//! backup ──── the backup file format: written by server, checked by client, restored by
//!   │          bootstrap → ledger
//! rpc ─────── under every outbound call: the one endpoint builder, the one bound on a call
//!   │          → tls
//!   │
//! ledger ──── the pure state machine: accounts, commands, request ids, snapshots
//! retry ───── the jittered pauses of every retry loop, from a generator a simulation seeds
//! tls ─────── TLS files and configurations
//! ```
//!
//! Tests reach further than their code: `report`'s tests read course scenario files
//! (`course`). `lamport` (the clocks, below Raft) and `course::lamport` (the output files of a
//! whole run, above `bootstrap`) are apart on purpose: the clocks ride on every peer message,
//! the files are written once by `bank run`.
//!
//! A customer's write: `server::course` (or `server::accounts`) validates it and calls
//! [`node::Branch::submit`]; the branch group-commits it and proposes it to openraft, or
//! forwards it to the leader over `bank.peer.v1.Peer`; openraft replicates it
//! (`raft::network`) and applies it in log order (`raft::state_machine`) to the
//! [`ledger::Ledger`]; the outcome comes back as the reply. A read waits for the leader's read
//! index and is served from the local replica.
//!
//! - [`ledger`]: the pure state machine (no I/O, no clock); asserts its invariants.
//! - [`raft`]: everything that knows openraft's types, below the facade.
//! - [`node`]: one branch's replica behind [`node::Branch`], built by
//!   [`node::BranchBuilder`] — with [`raft`], the only code that names openraft.
//! - [`server`]: the services a branch serves; [`server::error`] is the only place a gRPC
//!   status is built.
//! - [`bootstrap`]: creating, resuming, refusing, rejoining and joining clusters, and
//!   restoring a branch from a backup; the genesis entry.
//! - [`client`]: what customers and operators call branches with.
//! - [`course`]: the course project (ASU CSE 531): its scenario files and their runner,
//!   `bank run`, and Project 2's Lamport output files.
//! - [`load`]: the load generator: `bank bench` and Jepsen's bank workload on one driver
//!   loop, and the history they record for [`check`].
//! - [`web`]: the HTTP listener (`--http`): `/metrics` and a live page of the cluster.
//! - [`check`]: linearizability per account, conservation, minimum balances, convergence.
//! - [`grade`]: `bank grade p1|p2|p3`: course outputs checked strictly against their inputs,
//!   with the course's own graders' score beside.
//! - [`report`]: `bank check --html` and `bank bench --html`: a history drawn with what the
//!   checker blames, a run's throughput and latency distribution; inline SVG, escaped.
//! - [`retry`]: jittered retry pauses ([`retry::backoff`]) and the seedable generator they
//!   and Raft's election timeouts are drawn from.
//! - [`rpc`]: the one endpoint builder and the one bound on a call, for every outbound call.
//! - [`tls`]: `bank certs` and the rustls configurations of branches and clients.
//! - [`backup`]: the backup file (`bank backup`, `bank restore`): format, writing, checking.
//! - [`proto`]: generated gRPC code.
//! - `sim` (feature `simulation`): the whole cluster inside turmoil, deterministic per seed;
//!   it plugs into the layers through their hooks (an apply observer, a connector), never
//!   through code of theirs that knows it; its customers record their history as `load`
//!   does, on simulated time.

// openraft's error types (StorageError, RaftError, ConfigError) are large and fixed by its
// traits; boxing them at every storage call would only hide that.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod bootstrap;
pub mod check;
pub mod client;
pub mod course;
pub mod grade;
pub mod lamport;
pub mod ledger;
pub mod load;
pub mod node;
pub mod raft;
pub mod report;
pub mod retry;
pub mod rpc;
pub mod server;
#[cfg(feature = "simulation")]
pub mod sim;
pub mod tls;
pub mod web;

/// A branch's id: the `id` of a branch in a scenario file, `--id` of `bank branch`, and the
/// branch's Raft node id ([`raft::NodeId`] is this type).
pub type BranchId = u64;

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
    /// Operators' API, `proto/bank/admin/v1/` (`bank.admin.v1`): membership at runtime
    /// (`Members`) and backups (`Backup`).
    pub mod admin {
        tonic::include_proto!("bank.admin.v1");
    }
    /// Every file in `proto/`, compiled (an encoded `FileDescriptorSet`): what server
    /// reflection answers with.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/bank_descriptor.bin"));
}
