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
//!
//! Half the seeds also fill one branch's disk for a while ([`FullDisk`]; that branch, or the
//! leader when it starts): low on space (it refuses writes and stops leading) or full (its log
//! also holds every append, unsynced). The run's judges must pass as on any seed, and the
//! branches must converge once the disk has room again.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{mix, FAULTS_END, FAULTS_START};
use crate::raft::disk_space::{DiskSpace, Space};
use crate::raft::log_store::{Damage, LogStore};
use crate::raft::state_machine::StateMachineStore;
use crate::BranchId;

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
    /// A disk that fills for a while, if any.
    pub full: Option<FullDisk>,
}

/// One branch's disk low on space, or full, for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullDisk {
    pub start: Duration,
    pub end: Duration,
    /// Whose disk: a branch, or (`None`) the leader when it starts.
    pub branch: Option<BranchId>,
    /// [`Space::Low`] or [`Space::Full`].
    pub space: Space,
}

impl fmt::Display for FullDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whose = match self.branch {
            Some(id) => format!("branch {id}'s disk"),
            None => "the leader's disk".to_string(),
        };
        write!(
            f,
            "{whose} {:?} from {}ms to {}ms",
            self.space,
            self.start.as_millis(),
            self.end.as_millis()
        )
    }
}

impl FullDisk {
    /// Half the seeds get one, from their own stream of the seed.
    fn draw(seed: u64) -> Option<FullDisk> {
        let mut rng = StdRng::seed_from_u64(mix(seed, 6));
        if rng.gen_bool(0.5) {
            return None;
        }
        let window_ms = u64::try_from((FAULTS_END - FAULTS_START).as_millis()).unwrap_or(1);
        let start = FAULTS_START + Duration::from_millis(rng.gen_range(0..window_ms));
        let end = start + Duration::from_millis(rng.gen_range(300..=3_000));
        let branch = match rng.gen_range(0..=super::BRANCHES) {
            0 => None,
            id => Some(id),
        };
        let space = if rng.gen_bool(0.5) {
            Space::Low
        } else {
            Space::Full
        };
        Some(FullDisk {
            start,
            end: end.min(FAULTS_END),
            branch,
            space,
        })
    }
}

/// Where a run's [`FullDisk`] is: not begun, on a branch's disk, or over.
#[derive(Debug, Default)]
pub struct FullDiskState {
    on: Option<DiskSpace>,
    over: bool,
}

impl FullDiskState {
    /// Starts or ends the fault at simulated time `elapsed`; says what it did, if anything.
    /// `leader` tells who leads now; `disk` gives a branch's disk.
    pub fn tick(
        &mut self,
        fault: Option<FullDisk>,
        elapsed: Duration,
        leader: impl FnOnce() -> Option<BranchId>,
        disk: impl FnOnce(BranchId) -> Option<DiskSpace>,
    ) -> Option<String> {
        let fault = fault?;
        if self.over {
            return None;
        }
        match &self.on {
            None if elapsed >= fault.start => {
                let Some(id) = fault.branch.or_else(leader) else {
                    self.over = true;
                    return Some("no leader: no disk filled".to_string());
                };
                let space = disk(id)?;
                space.set_simulated(fault.space);
                self.on = Some(space);
                Some(format!("branch {id}'s disk {:?}", fault.space))
            }
            Some(space) if elapsed >= fault.end => {
                space.set_simulated(Space::Room);
                self.on = None;
                self.over = true;
                Some("the disk has room again".to_string())
            }
            _ => None,
        }
    }
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
            full: FullDisk::draw(seed),
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
