//! A branch whose disk is low on space (see [`crate::raft::disk_space`]): it refuses new
//! writes, and stops sending heartbeats and standing for election, so that a branch with room
//! leads; it keeps serving reads. When space returns it takes writes and leads again.
//!
//! openraft 0.9 has no leadership transfer: a leader that stops its heartbeats is how it hands
//! over. Its followers time out, elect one of themselves, and the old leader steps down when
//! it hears of the new term. (A leader whose log append is already held by a full disk sends
//! nothing at all: its core waits for the append, and the followers elect without it too.)

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{Branch, BranchError, Replica};
use crate::raft::disk_space::{Space, SpaceReport};

/// How often a branch looks at its disk's free space (jittered).
const DISK_CHECK_EVERY: Duration = Duration::from_millis(200);

impl Replica {
    /// Looks at the disk every [`DISK_CHECK_EVERY`] until the Raft node stops, and steps back
    /// from leading while space is low.
    pub(super) fn watch_disk(&self) {
        if !self.space.is_watched() {
            return;
        }
        let replica = self.clone();
        tokio::spawn(async move {
            let mut metrics = replica.raft.metrics();
            let mut low = false;
            loop {
                let next = Instant::now() + crate::retry::jittered(DISK_CHECK_EVERY);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(next) => break,
                        changed = metrics.changed() => if changed.is_err() {
                            return; // the Raft node stopped
                        },
                    }
                }
                let report = replica.space.check();
                let now_low = report.space >= Space::Low;
                if now_low != low {
                    low = now_low;
                    replica.step_back(low, &report);
                }
            }
        });
    }

    /// Heartbeats and elections off while the disk is low, back on (elections as wanted)
    /// when it has room.
    fn step_back(&self, low: bool, report: &SpaceReport) {
        let config = self.raft.runtime_config();
        config.heartbeat(!low);
        config.elect(!low && self.elections_wanted.load(Ordering::Relaxed));
        if low {
            tracing::warn!(
                branch = self.id,
                "{report}: refusing writes and leaving leadership to a branch with room"
            );
        } else {
            tracing::warn!(branch = self.id, "disk has room again: taking writes");
        }
    }

    /// Whether this branch may stand for election now: as wanted, unless its disk is low.
    pub(super) fn set_elections(&self, wanted: bool) {
        self.elections_wanted.store(wanted, Ordering::Relaxed);
        let low = self.space.last() >= Space::Low;
        self.raft.runtime_config().elect(wanted && !low);
    }
}

impl Branch {
    /// Refuses a new write while this branch's disk is low on space.
    pub(super) fn refuse_if_disk_low(&self) -> Result<(), BranchError> {
        let space = &self.replica.space;
        if space.last() < Space::Low {
            return Ok(());
        }
        let report = space.check();
        if report.space < Space::Low {
            return Ok(());
        }
        Err(BranchError::DiskFull {
            branch: self.id,
            why: report.to_string(),
        })
    }
}
