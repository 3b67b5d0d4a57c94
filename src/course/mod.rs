//! The course project (ASU CSE 531): its scenario files, a whole `bank run` of one, and the
//! Lamport output files of Project 2. The course's customers replay the events a file lists,
//! in order, through the original `Branch.MsgDelivery` API, and the output is the course's own
//! JSON; nothing here generates load ([`crate::load`] does). It sits above
//! [`crate::bootstrap`]: a run starts its own cluster on loopback ([`crate::bootstrap::local`]).
//! The clocks themselves ride on the peer messages, below Raft, in [`crate::lamport`]; this
//! folder only writes out what they logged. The files:
//!
//! - `scenario.rs` ([`scenario`]): the scenario files, `input.json` and `output.json`, of the
//!   three projects: parsed and validated once, output rendered and written atomically.
//! - `runner.rs` ([`runner`]): the course runner: customers over real gRPC, and
//!   [`runner::run_scenario`], a whole `bank run` (cluster, customers, output, final balances).
//! - `lamport.rs` ([`lamport`]): Project 2's three output parts (customer, branch and all
//!   events) from the clocks' logs, and where `bank run` writes them.

pub mod lamport;
pub mod runner;
pub mod scenario;
