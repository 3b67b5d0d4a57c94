//! The load generator: concurrent clients driving a running bank, timed and tallied, and the
//! history they record for [`crate::check`]. It owns `bank bench` and Jepsen's bank workload;
//! both run on one driver loop, so every load is picked, timed, paced and recorded the same
//! way. It is apart from [`crate::course`] (the course's scenarios, which replay files of
//! customer events rather than generate load) and knows nothing of how branches are started:
//! it takes their addresses and talks to them through [`crate::client`]. The files:
//!
//! - `driver.rs` ([`driver`]): the one load loop: N concurrent clients for a duration, an
//!   operation count or until stopped, each picking, timing and recording its operations;
//!   also [`driver::drive`], that loop for any system (`bank-etcd-compare`).
//! - `random.rs` ([`random`]): the deterministic generator per client, and bounded pauses.
//! - `measure.rs` ([`measure`]): what a run measures: latency histograms and percentiles by
//!   kind of request, errors by kind, throughput per time bucket.
//! - `history.rs` ([`history`]): the history being recorded for [`crate::check`].
//! - `pacing.rs` ([`pacing`]): open-loop load: operations due at a fixed rate, latency measured
//!   from when each was due (`bank bench --rate`).
//! - `jepsen.rs` ([`jepsen`]): Jepsen's bank workload, recording a history for [`crate::check`].
//! - `bench/` ([`mod@bench`]): `bank bench`: its configuration, the run, the invariant check
//!   (`mod.rs`); one bench client (`client.rs`), the operation mix (`mix.rs`), the report and
//!   its rendering (`summary.rs`), the longest time without an acknowledged write
//!   (`stall.rs`).

pub mod bench;
pub mod driver;
pub mod history;
pub mod jepsen;
pub mod measure;
pub mod pacing;
pub mod random;
