//! Storage faults: what a crash does to the crashed branch's disk, drawn per seed.
//!
//! Each branch's log is a [`LogStore`] on a simulated disk: an append is readable at once, is
//! synced (fsync) after the seed's sync time, and only then acknowledged to Raft. Each crash
//! of the schedule gets one [`DiskFault`], applied when the branch restarts, before it reads its
//! disk: writes not yet synced are kept, lost or torn; or a synced log entry or the snapshot is
//! damaged (a flipped bit or a zeroed block). At most one damage per run, so two branches keep
//! a quorum.
//!
//! What the bank must do, and what the run checks: unsynced and torn writes were never
//! acknowledged, so the restarted branch drops what is torn and goes on; a branch that finds
//! damage in what it had synced refuses to start, with an error naming what is damaged, and
//! the other two carry on (they converge without it). A restart refused with no damage done,
//! or damage done and the branch started anyway, is a violation. The drawn faults are in the
//! run's trace, so a failing seed prints them.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::mix;
use crate::raft::log_store::{Damage, LogStore};
use crate::raft::state_machine::StateMachineStore;

/// What one crash does to the crashed branch's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// Every write survives (the disk's cache reached the platter).
    Intact,
    /// Of the writes not yet synced, the first `kept` survive and the rest are lost.
    LoseUnsynced { kept: usize },
    /// As `LoseUnsynced`, and the next write survives cut short (a torn write).
    TornWrite { kept: usize },
    /// A synced log entry is damaged.
    DamagedLog(Damage, u64),
    /// The snapshot is damaged.
    DamagedSnapshot(Damage, u64),
}

impl fmt::Display for DiskFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskFault::Intact => write!(f, "disk intact"),
            DiskFault::LoseUnsynced { kept } => {
                write!(f, "unsynced writes lost after the first {kept}")
            }
            DiskFault::TornWrite { kept } => {
                write!(
                    f,
                    "unsynced writes lost after the first {kept}, the next one torn"
                )
            }
            DiskFault::DamagedLog(damage, _) => write!(f, "{damage:?} in a synced log entry"),
            DiskFault::DamagedSnapshot(damage, _) => write!(f, "{damage:?} in the snapshot"),
        }
    }
}

/// A seed's storage: how long a sync takes, and what each crash does to the disk (by the
/// crash's turn among the crashes the run does).
#[derive(Debug, Clone)]
pub struct DiskPlan {
    pub sync: Duration,
    pub crashes: Vec<DiskFault>,
    /// The broken variant: the log store ignores its checksums, and every crash damages a
    /// synced log entry.
    pub ignore_checksums: bool,
}

/// Crashes per run are at most six (the schedule's faults); more draws cost nothing.
const CRASHES_DRAWN: usize = 8;

impl DiskPlan {
    /// Drawn from its own stream of the seed, so the rest of a seed's plan is as before.
    pub fn draw(seed: u64, ignore_checksums: bool) -> DiskPlan {
        let mut rng = StdRng::seed_from_u64(mix(seed, 5));
        let sync = Duration::from_millis(rng.gen_range(0..=2));
        let mut damaged = false;
        let crashes = (0..CRASHES_DRAWN)
            .map(|_| {
                let damage = if rng.gen_bool(0.5) {
                    Damage::FlipBit
                } else {
                    Damage::ZeroBlock
                };
                let pick = rng.gen::<u64>();
                let kept = rng.gen_range(0..3usize);
                if ignore_checksums {
                    return DiskFault::DamagedLog(Damage::FlipBit, pick);
                }
                let fault = match rng.gen_range(0..6) {
                    0 | 1 => DiskFault::Intact,
                    2 => DiskFault::LoseUnsynced { kept },
                    3 => DiskFault::TornWrite { kept },
                    4 => DiskFault::DamagedLog(damage, pick),
                    _ => DiskFault::DamagedSnapshot(damage, pick),
                };
                match fault {
                    DiskFault::DamagedLog(..) | DiskFault::DamagedSnapshot(..) if damaged => {
                        DiskFault::Intact
                    }
                    DiskFault::DamagedLog(..) | DiskFault::DamagedSnapshot(..) => {
                        damaged = true;
                        fault
                    }
                    _ => fault,
                }
            })
            .collect();
        DiskPlan {
            sync,
            crashes,
            ignore_checksums,
        }
    }

    /// The fault of the run's `turn`-th crash (from 0).
    pub fn crash(&self, turn: usize) -> DiskFault {
        self.crashes.get(turn).copied().unwrap_or(DiskFault::Intact)
    }

    /// A branch's log on this plan's disk.
    pub fn log(&self) -> LogStore {
        LogStore::simulated_disk(self.sync, self.ignore_checksums)
    }
}

/// What a restart found on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// What the fault did, for the trace.
    pub done: String,
    /// Whether it damaged something synced (a start must then be refused).
    pub damaged: bool,
}

/// Does `fault` to a crashed branch's log and snapshot, before its restart reads them.
pub fn apply(fault: DiskFault, log: &LogStore, disk: &StateMachineStore) -> Restart {
    let mut damaged = false;
    let done = match fault {
        DiskFault::Intact => {
            log.crash(usize::MAX, false);
            fault.to_string()
        }
        DiskFault::LoseUnsynced { kept } => {
            log.crash(kept, false);
            fault.to_string()
        }
        DiskFault::TornWrite { kept } => {
            log.crash(kept, true);
            fault.to_string()
        }
        DiskFault::DamagedLog(damage, pick) => {
            log.crash(usize::MAX, false);
            match log.damage(damage, pick) {
                Some(index) => {
                    damaged = true;
                    format!("{damage:?} in synced log entry {index}")
                }
                None => format!("{damage:?} in the log: no synced entry, nothing done"),
            }
        }
        DiskFault::DamagedSnapshot(damage, pick) => {
            log.crash(usize::MAX, false);
            damaged = disk.damage_snapshot(damage, pick);
            if damaged {
                format!("{damage:?} in the snapshot")
            } else {
                format!("{damage:?} in the snapshot: no snapshot, nothing done")
            }
        }
    };
    Restart { done, damaged }
}
