//! Whether a branch's disk has room for its log: [`DiskSpace`], shared by the log store (whose
//! writer holds appends while the disk is full) and the node (which refuses customers' writes
//! and stops leading while space is low).
//!
//! A full disk must not reach redb as an error: redb marks its handle failed after any I/O
//! error, and openraft 0.9 stops a node on any storage error. So space is checked *before*
//! writing, against a reserve (as etcd's space quota does), in two levels:
//!
//! - [`Space::Low`]: less than the reserve is free. The branch refuses new writes from
//!   customers (`RESOURCE_EXHAUSTED`, saying why), stops sending heartbeats and standing for
//!   election, so that a branch with room leads, and keeps serving reads. Its log still takes
//!   what the leader replicates, from the reserve.
//! - [`Space::Full`]: less than half the reserve is free (or the disk is full by injection).
//!   The log's writer also holds every append, unsynced and unacknowledged, until space
//!   returns: this branch drops out of the quorum for a while, and nothing it acknowledged is
//!   lost. When space returns, it commits what it held and carries on.
//!
//! The fault can be injected: in the simulator per seed ([`DiskSpace::simulated`]), and on a
//! real branch by a file whose existence means "full" ("low" if that is what it says:
//! `bank branch --simulate-disk-full FILE`), to rehearse a full disk without filling one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// The free space a branch keeps in reserve by default (`bank branch --disk-reserve-mib`).
pub const DISK_RESERVE_DEFAULT_MIB: u64 = 128;

const MIB: u64 = 1024 * 1024;

/// How much room the disk has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Space {
    /// At least the reserve is free.
    Room,
    /// Less than the reserve is free: no new writes are taken.
    Low,
    /// Less than half the reserve is free: the log holds its appends too.
    Full,
}

/// How a [`DiskSpace`] learns the free space.
#[derive(Debug)]
enum Probe {
    /// Memory: always room.
    Unlimited,
    /// The file system of `dir`, against `reserve` bytes; `full_while` names a file whose
    /// existence means the disk is full (an injected fault).
    Dir {
        dir: PathBuf,
        reserve: u64,
        full_while: Option<PathBuf>,
    },
    /// Set from outside ([`DiskSpace::set_simulated`]): the simulator.
    Simulated,
}

#[derive(Debug)]
struct Inner {
    probe: Probe,
    /// The last [`Space`] found, as a `u8`.
    last: AtomicU8,
}

/// The room on a branch's disk. Cheap to clone; clones share their state.
#[derive(Debug, Clone)]
pub struct DiskSpace(Arc<Inner>);

impl Default for DiskSpace {
    fn default() -> Self {
        DiskSpace::unlimited()
    }
}

/// What a probe of the disk found, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceReport {
    pub space: Space,
    /// Free bytes, where a real file system was asked.
    pub free: Option<u64>,
    pub reserve: u64,
    /// Why it counts as full although the file system may have room (an injected fault).
    pub injected: Option<String>,
}

impl std::fmt::Display for SpaceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.injected, self.free) {
            (Some(why), _) => write!(f, "{why}"),
            (None, Some(free)) => write!(
                f,
                "{} MiB free, below its reserve of {} MiB",
                free / MIB,
                self.reserve / MIB
            ),
            (None, None) => write!(f, "no space reported"),
        }
    }
}

impl DiskSpace {
    fn new(probe: Probe) -> DiskSpace {
        DiskSpace(Arc::new(Inner {
            probe,
            last: AtomicU8::new(Space::Room as u8),
        }))
    }

    /// Memory: never full.
    pub fn unlimited() -> DiskSpace {
        DiskSpace::new(Probe::Unlimited)
    }

    /// The file system holding `dir`, keeping `reserve_mib` MiB free; while `full_while` names
    /// a file that exists, the disk counts as full.
    pub fn for_dir(dir: &Path, reserve_mib: u64, full_while: Option<PathBuf>) -> DiskSpace {
        DiskSpace::new(Probe::Dir {
            dir: dir.to_path_buf(),
            reserve: reserve_mib.saturating_mul(MIB),
            full_while,
        })
    }

    /// Full or not as the simulator says ([`DiskSpace::set_simulated`]).
    pub fn simulated() -> DiskSpace {
        DiskSpace::new(Probe::Simulated)
    }

    /// The simulator fills or empties the disk.
    pub fn set_simulated(&self, space: Space) {
        if matches!(self.0.probe, Probe::Simulated) {
            self.0.last.store(space as u8, Ordering::Relaxed);
        }
    }

    /// Whether the space can ever run out (not in memory).
    pub fn is_watched(&self) -> bool {
        !matches!(self.0.probe, Probe::Unlimited)
    }

    /// The space found by the last [`DiskSpace::check`] (no system call).
    pub fn last(&self) -> Space {
        match self.0.last.load(Ordering::Relaxed) {
            0 => Space::Room,
            1 => Space::Low,
            _ => Space::Full,
        }
    }

    /// Asks the file system now (one `statvfs`, and a file lookup if a fault can be injected)
    /// and remembers the answer.
    pub fn check(&self) -> SpaceReport {
        let report = self.probe();
        self.0.last.store(report.space as u8, Ordering::Relaxed);
        report
    }

    fn probe(&self) -> SpaceReport {
        match &self.0.probe {
            Probe::Unlimited => SpaceReport {
                space: Space::Room,
                free: None,
                reserve: 0,
                injected: None,
            },
            Probe::Simulated => {
                let space = self.last();
                let what = if space == Space::Full {
                    "full"
                } else {
                    "low on space"
                };
                SpaceReport {
                    space,
                    free: None,
                    reserve: 0,
                    injected: Some(format!("its disk is {what} (simulated)")),
                }
            }
            Probe::Dir {
                dir,
                reserve,
                full_while,
            } => {
                if let Some(file) = full_while.as_ref().filter(|file| file.exists()) {
                    // "low" in the file: low on space; anything else: full.
                    let low = std::fs::read_to_string(file).is_ok_and(|text| text.trim() == "low");
                    let (space, what) = if low {
                        (Space::Low, "low on space")
                    } else {
                        (Space::Full, "full")
                    };
                    return SpaceReport {
                        space,
                        free: None,
                        reserve: *reserve,
                        injected: Some(format!(
                            "its disk counts as {what} while {} exists (--simulate-disk-full)",
                            file.display()
                        )),
                    };
                }
                let free = match free_bytes(dir) {
                    Ok(free) => free,
                    Err(e) => {
                        // Not knowing is not a reason to stop: redb reports a real failure.
                        tracing::warn!("cannot tell the free space of {}: {e}", dir.display());
                        u64::MAX
                    }
                };
                let space = if free >= *reserve {
                    Space::Room
                } else if free >= reserve / 2 {
                    Space::Low
                } else {
                    Space::Full
                };
                SpaceReport {
                    space,
                    free: Some(free),
                    reserve: *reserve,
                    injected: None,
                }
            }
        }
    }
}

/// The bytes an unprivileged process may still write on the file system of `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_beyond_the_disk_is_low_or_full_and_none_is_room() {
        let dir = tempfile::tempdir().expect("temp dir");
        let roomy = DiskSpace::for_dir(dir.path(), 0, None);
        assert_eq!(roomy.check().space, Space::Room);
        // No disk here has 2^40 MiB free: below half of it.
        let tight = DiskSpace::for_dir(dir.path(), 1 << 40, None);
        let report = tight.check();
        assert_eq!(report.space, Space::Full);
        assert_eq!(tight.last(), Space::Full);
        assert!(report.to_string().contains("below its reserve"), "{report}");
    }

    #[test]
    fn the_injection_file_makes_it_full_while_it_exists() {
        let dir = tempfile::tempdir().expect("temp dir");
        let flag = dir.path().join("full");
        let space = DiskSpace::for_dir(dir.path(), 0, Some(flag.clone()));
        assert_eq!(space.check().space, Space::Room);
        std::fs::write(&flag, b"").expect("write flag");
        let report = space.check();
        assert_eq!(report.space, Space::Full);
        assert!(report.to_string().contains("--simulate-disk-full"));
        std::fs::write(&flag, b"low\n").expect("write flag");
        assert_eq!(space.check().space, Space::Low);
        std::fs::remove_file(&flag).expect("remove flag");
        assert_eq!(space.check().space, Space::Room);
    }

    #[test]
    fn only_a_simulated_disk_is_set_from_outside() {
        let simulated = DiskSpace::simulated();
        simulated.set_simulated(Space::Full);
        assert_eq!(simulated.check().space, Space::Full);
        simulated.set_simulated(Space::Low);
        let low = simulated.check();
        assert_eq!(low.space, Space::Low);
        assert!(low.to_string().contains("low on space"), "{low}");
        simulated.set_simulated(Space::Room);
        assert_eq!(simulated.last(), Space::Room);
        let memory = DiskSpace::unlimited();
        memory.set_simulated(Space::Full);
        assert_eq!(memory.check().space, Space::Room);
    }
}
