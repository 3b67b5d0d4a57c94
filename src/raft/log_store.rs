//! The Raft log in memory, behind openraft's storage-v2 log trait: what `bank run` and the
//! tests use. A restarted in-memory branch starts empty and catches up from its peers (by log
//! or by snapshot); [`super::durable`] keeps the same interface on disk.
//!
//! Entries are kept as the durable log keeps them, [`sealed`](super::codec::seal) (a CRC32C in
//! front of the encoding), so the simulator can model a disk on this store: an fsync that takes
//! time ([`LogStore::simulated_disk`]), and what a crash or a damaged disk leaves behind
//! ([`LogStore::crash`], [`LogStore::damage`]), found by [`LogStore::recover`] as a real
//! restart would find it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, RaftLogReader, StorageIOError, Vote};

use super::codec::{is_intact, seal, unseal, unseal_unchecked};
use super::disk_space::{DiskSpace, Space};
use super::{LogId, NodeId, StorageError, TypeConfig};

/// One stored entry: its id (the key, as the durable log's index is) and its sealed bytes.
#[derive(Debug, Clone)]
struct Stored {
    log_id: LogId,
    sealed: Vec<u8>,
}

#[derive(Debug, Default)]
struct LogData {
    last_purged: Option<LogId>,
    entries: BTreeMap<u64, Stored>,
    /// Entries up to this index are synced: acknowledged to openraft, and kept by a crash.
    synced: Option<u64>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
}

impl LogData {
    fn last(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.last_purged)
    }
}

/// How the simulated disk under a [`LogStore`] behaves.
#[derive(Debug, Clone, Default)]
struct Disk {
    /// How long a sync (fsync) takes; an append is acknowledged only after it.
    sync: Duration,
    /// A store that ignores its checksums: the simulator's deliberately broken variant.
    ignore_checksums: bool,
    /// Whether the disk is full: appends are not synced (nor acknowledged) meanwhile.
    space: DiskSpace,
}

/// While the simulated disk is full, how often an append looks again.
const FULL_DISK_RECHECK: Duration = Duration::from_millis(5);

/// The Raft log in memory. Clones share the same log.
#[derive(Debug, Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<LogData>>,
    disk: Disk,
}

/// Damage done to stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// One bit flipped.
    FlipBit,
    /// Up to 16 bytes set to zero, as a block a disk lost.
    ZeroBlock,
}

impl Damage {
    /// Does it to `bytes`, at a place `pick` chooses.
    pub fn apply(self, bytes: &mut [u8], pick: u64) {
        if bytes.is_empty() {
            return;
        }
        let at = (pick % bytes.len() as u64) as usize;
        match self {
            Damage::FlipBit => bytes[at] ^= 1 << ((pick >> 32) % 8),
            Damage::ZeroBlock => {
                let end = (at + 16).min(bytes.len());
                // A block of zeros where there were zeros already is no damage: flip one.
                if bytes[at..end].iter().all(|&b| b == 0) {
                    bytes[at] = 0xff;
                } else {
                    bytes[at..end].fill(0);
                }
            }
        }
    }
}

/// What a restart found wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log entry {index} is damaged (its checksum does not match its contents); it had been synced, so this branch will not serve it")]
pub struct LogDamaged {
    pub index: u64,
}

/// A poisoned lock means a thread panicked while holding it, e.g. on a broken ledger
/// invariant; the data behind it can no longer be trusted, so storage reports an error and
/// openraft stops this node instead of serving it.
pub(super) fn poisoned<T>(what: &str) -> impl FnOnce(T) -> StorageError + '_ {
    move |_| StorageIOError::read(&std::io::Error::other(format!("{what} lock poisoned"))).into()
}

impl LogStore {
    /// A log on a simulated disk whose sync takes `sync`; with `ignore_checksums`, a store
    /// that reads damaged entries as if they were whole (a deliberately broken variant).
    pub fn simulated_disk(sync: Duration, ignore_checksums: bool) -> LogStore {
        LogStore {
            inner: Arc::default(),
            disk: Disk {
                sync,
                ignore_checksums,
                space: DiskSpace::simulated(),
            },
        }
    }

    /// Whether this store's disk is full (the simulator sets it).
    pub fn disk_space(&self) -> &DiskSpace {
        &self.disk.space
    }

    fn lock(&self) -> Result<MutexGuard<'_, LogData>, StorageError> {
        self.inner.lock().map_err(poisoned("log"))
    }

    fn read(&self, stored: &Stored) -> Result<Entry<TypeConfig>, StorageError> {
        let read = if self.disk.ignore_checksums {
            unseal_unchecked(&stored.sealed)
        } else {
            unseal(&stored.sealed)
        };
        read.map_err(|e| {
            let why = format!("log entry {}: {e}", stored.log_id.index);
            StorageIOError::read_logs(&std::io::Error::other(why)).into()
        })
    }

    /// A crash, as the disk sees it: of the entries appended but not yet synced, the first
    /// `kept` survive whole; with `torn`, the next one survives cut short (a torn write); the
    /// rest are gone. Synced entries and the vote are kept.
    pub fn crash(&self, kept: usize, torn: bool) {
        let Ok(mut log) = self.lock() else { return };
        let first_unsynced = log.synced.map_or(0, |synced| synced + 1);
        let unsynced: Vec<u64> = log
            .entries
            .range(first_unsynced..)
            .map(|(&i, _)| i)
            .collect();
        for (n, index) in unsynced.into_iter().enumerate() {
            if n < kept {
                continue;
            }
            if n == kept && torn {
                if let Some(stored) = log.entries.get_mut(&index) {
                    let half = stored.sealed.len() / 2;
                    stored.sealed.truncate(half);
                }
                continue;
            }
            log.entries.remove(&index);
        }
    }

    /// Damages the bytes of one synced entry, chosen by `pick`; returns its index, or `None`
    /// if no entry is synced.
    pub fn damage(&self, damage: Damage, pick: u64) -> Option<u64> {
        let mut log = self.lock().ok()?;
        let synced = log.synced?;
        let indexes: Vec<u64> = log.entries.range(..=synced).map(|(&i, _)| i).collect();
        let index = *indexes.get((pick % indexes.len().max(1) as u64) as usize)?;
        let stored = log.entries.get_mut(&index)?;
        damage.apply(&mut stored.sealed, pick.rotate_left(17));
        Some(index)
    }

    /// What a restart does before serving the log: checks every entry. A damaged entry after
    /// the last synced one is the torn end of a write that was never acknowledged: it and any
    /// entry after it are dropped. A damaged synced entry is certain damage: an error, and the
    /// branch must not start on this log. A store that ignores its checksums checks nothing.
    pub fn recover(&self) -> Result<(), LogDamaged> {
        let Ok(mut log) = self.lock() else {
            return Ok(());
        };
        if self.disk.ignore_checksums {
            return Ok(());
        }
        let synced = log.synced;
        let damaged = log
            .entries
            .iter()
            .find(|(_, stored)| !is_intact(&stored.sealed))
            .map(|(&index, _)| index);
        if let Some(index) = damaged {
            if Some(index) <= synced {
                return Err(LogDamaged { index });
            }
            log.entries.split_off(&index);
        }
        // What survived is on the disk now.
        log.synced = log.entries.last_key_value().map(|(&index, _)| index);
        let last = log.last();
        if log.committed > last {
            log.committed = last;
        }
        Ok(())
    }

    /// A broken disk, for fault injection: forgets the last `count` entries, as a disk that
    /// acknowledged writes before they were synced would after a crash (the committed index
    /// it recorded goes back with them). Only the simulator's deliberately broken variant
    /// calls it, to show that its checks catch the loss.
    pub fn forget_tail(&self, count: usize) {
        let Ok(mut log) = self.lock() else { return };
        for _ in 0..count {
            if log.entries.pop_last().is_none() {
                break;
            }
        }
        let last = log.last();
        log.synced = log.synced.min(last.map(|l| l.index));
        if log.committed > last {
            log.committed = last;
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let log = self.lock()?;
        log.entries
            .range(range)
            .map(|(_, stored)| self.read(stored))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.lock()?;
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: log.last(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.lock()?.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock()?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.lock()?.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock()?.committed)
    }

    /// Stores the entries, readable at once; then, on a simulated disk, waits for room on a
    /// full disk and for the sync (a crash meanwhile leaves them unsynced) and only then marks
    /// them synced and tells openraft, as a durable store does.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut last = None;
        {
            let mut log = self.lock()?;
            for entry in entries {
                let sealed =
                    seal(&entry).map_err(|e| StorageError::from(StorageIOError::write_logs(&e)))?;
                last = Some(entry.log_id.index);
                log.entries.insert(
                    entry.log_id.index,
                    Stored {
                        log_id: entry.log_id,
                        sealed,
                    },
                );
            }
        }
        // A full disk syncs nothing: the append waits (a crash meanwhile loses it).
        while self.disk.space.last() == Space::Full {
            tokio::time::sleep(FULL_DISK_RECHECK).await;
        }
        if !self.disk.sync.is_zero() {
            tokio::time::sleep(self.disk.sync).await;
        }
        {
            let mut log = self.lock()?;
            // A truncation while syncing took the entries away: nothing of them to mark.
            let present = log.entries.last_key_value().map(|(&index, _)| index);
            log.synced = log.synced.max(last.min(present));
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock()?;
        log.entries.split_off(&log_id.index);
        log.synced = log.synced.min(log_id.index.checked_sub(1));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock()?;
        assert!(
            log.last_purged.map(|p| p.index) <= Some(log_id.index),
            "purge must move forward"
        );
        log.last_purged = Some(log_id);
        let kept = log.entries.split_off(&(log_id.index + 1));
        log.entries = kept;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// Stores entries `indexes` as synced (as appends acknowledged by openraft would be).
    fn synced(store: &LogStore, indexes: std::ops::RangeInclusive<u64>) {
        let mut log = store.lock().expect("lock");
        for index in indexes {
            let sealed = seal(&entry(index)).expect("seal");
            let log_id = entry(index).log_id;
            log.entries.insert(index, Stored { log_id, sealed });
            log.synced = Some(index);
        }
    }

    fn unsynced(store: &LogStore, indexes: std::ops::RangeInclusive<u64>) {
        let mut log = store.lock().expect("lock");
        for index in indexes {
            let sealed = seal(&entry(index)).expect("seal");
            let log_id = entry(index).log_id;
            log.entries.insert(index, Stored { log_id, sealed });
        }
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store
            .lock()
            .expect("lock")
            .entries
            .keys()
            .copied()
            .collect()
    }

    #[test]
    fn a_crash_keeps_synced_entries_and_a_torn_unsynced_end_is_dropped() {
        let store = LogStore::simulated_disk(Duration::from_millis(1), false);
        synced(&store, 1..=3);
        unsynced(&store, 4..=7);
        store.crash(2, true);
        assert_eq!(indexes(&store), vec![1, 2, 3, 4, 5, 6], "6 is there, torn");
        store
            .recover()
            .expect("a torn unsynced write is not damage");
        assert_eq!(indexes(&store), vec![1, 2, 3, 4, 5]);
        assert_eq!(store.lock().expect("lock").synced, Some(5));
    }

    #[test]
    fn damage_to_a_synced_entry_stops_the_restart_unless_checksums_are_ignored() {
        for damage in [Damage::FlipBit, Damage::ZeroBlock] {
            for pick in 0..50u64 {
                let store = LogStore::simulated_disk(Duration::ZERO, false);
                synced(&store, 1..=4);
                let index = store
                    .damage(damage, pick * 7919)
                    .expect("an entry to damage");
                assert_eq!(
                    store.recover(),
                    Err(LogDamaged { index }),
                    "{damage:?} {pick}"
                );

                let broken = LogStore::simulated_disk(Duration::ZERO, true);
                synced(&broken, 1..=4);
                broken.damage(damage, pick * 7919);
                assert_eq!(broken.recover(), Ok(()), "the broken store checks nothing");
            }
        }
    }
}
