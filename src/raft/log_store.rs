//! The Raft log in memory, behind openraft's storage-v2 log trait: what `bank run` and the
//! tests use. A restarted in-memory branch starts empty and catches up from its peers (by log
//! or by snapshot); [`super::durable`] keeps the same interface on disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, RaftLogReader, StorageIOError, Vote};

use super::{LogId, NodeId, StorageError, TypeConfig};

#[derive(Debug, Default)]
struct LogData {
    last_purged: Option<LogId>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
}

/// The Raft log in memory. Clones share the same log.
#[derive(Debug, Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<LogData>>,
}

/// A poisoned lock means a thread panicked while holding it, e.g. on a broken ledger
/// invariant; the data behind it can no longer be trusted, so storage reports an error and
/// openraft stops this node instead of serving it.
pub(super) fn poisoned<T>(what: &str) -> impl FnOnce(T) -> StorageError + '_ {
    move |_| StorageIOError::read(&std::io::Error::other(format!("{what} lock poisoned"))).into()
}

impl LogStore {
    fn lock(&self) -> Result<MutexGuard<'_, LogData>, StorageError> {
        self.inner.lock().map_err(poisoned("log"))
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
        let last = log
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(log.last_purged);
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
        Ok(log.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.lock()?;
        let last = log
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(log.last_purged);
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: last,
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

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        {
            let mut log = self.lock()?;
            for entry in entries {
                log.entries.insert(entry.log_id.index, entry);
            }
        }
        // In memory, an entry is "flushed" as soon as it is in the map.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock()?;
        log.entries.split_off(&log_id.index);
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
