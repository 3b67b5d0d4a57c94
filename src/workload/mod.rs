//! Load on a running bank, and the formats it is described in. The files:
//!
//! - `driver.rs` ([`driver`]): the one load loop: N concurrent clients for a duration, an
//!   operation count or until stopped, each picking, timing and recording its operations;
//!   also [`driver::drive`], that loop for any system (`bank-etcd-compare`).
//! - `random.rs` ([`random`]): the deterministic generator per client, and bounded pauses.
//! - `history.rs` ([`history`]): the history being recorded for [`crate::check`].
//! - `bench.rs` ([`mod@bench`]): `bank bench`: its configuration, the run, the invariant check;
//!   with `bench_client.rs` (one bench client: requests and tallies), `mix.rs` (the operation
//!   mix), `report.rs` (the report and its rendering) and `stall.rs` (the longest time without
//!   an acknowledged write).
//! - `pacing.rs` ([`pacing`]): open-loop load: operations due at a fixed rate, latency measured
//!   from when each was due (`bank bench --rate`).
//! - `jepsen.rs` ([`jepsen`]): Jepsen's bank workload, recording a history for [`crate::check`].
//! - `scenario.rs` ([`scenario`]), `course.rs` ([`course`]): the course's scenario files and
//!   their runner.

pub mod bench;
mod bench_client;
pub mod course;
pub mod driver;
pub mod history;
pub mod jepsen;
pub mod lamport;
mod mix;
pub mod pacing;
pub mod random;
mod report;
pub mod scenario;
mod stall;
