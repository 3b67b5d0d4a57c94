//! In-memory storage behind openraft's storage-v2 traits.
//!
//! [`LogStore`] keeps the Raft log, the vote and the committed log id; [`StateMachineStore`]
//! wraps the [`Ledger`] and applies committed entries to it in log order. Both are cheap to
//! clone handles over shared state, so the branch's services can read the ledger while
//! openraft drives it.
//!
//! In memory means a restarted branch starts empty and catches up from its peers (by log or by
//! snapshot). Durable storage keeps the same interfaces.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::durable::{DurableError, DurableStore, SnapshotRecord};
use super::{BasicNode, LogId, NodeId, StorageError, TypeConfig};
#[cfg(feature = "simulation")]
use crate::ledger::{Command, Proposal, RequestId};
use crate::ledger::{Ledger, Outcome};

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
fn poisoned<T>(what: &str) -> impl FnOnce(T) -> StorageError + '_ {
    move |_| StorageIOError::read(&std::io::Error::other(format!("{what} lock poisoned"))).into()
}

impl LogStore {
    fn lock(&self) -> Result<MutexGuard<'_, LogData>, StorageError> {
        self.inner.lock().map_err(poisoned("log"))
    }

    /// The simulator's broken disk: forgets the last `count` entries, as a disk that
    /// acknowledged writes before they were synced would after a crash (the committed index
    /// it recorded goes back with them). Only for the simulator's deliberately broken variant.
    #[cfg(feature = "simulation")]
    pub(crate) fn forget_tail(&self, count: usize) {
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

/// What the state machine holds: the ledger plus what Raft needs to know about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachineData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership<NodeId, BasicNode>,
    pub ledger: Ledger,
}

/// The latest snapshot: its bytes (the ledger's snapshot encoding) in memory, or where they
/// are on disk. A durable branch does not keep them in memory: with a million accounts they
/// are 32 MB, read back only when a follower needs them.
#[derive(Debug)]
enum StoredSnapshot {
    Memory {
        meta: SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    },
    Durable(SnapshotRecord),
}

/// The state machine: applies committed entries to the ledger. Clones share the same state.
///
/// With a [`DurableStore`], every snapshot it builds or installs is written to disk, and
/// [`StateMachineStore::restore`] starts from the latest one; openraft then re-applies the
/// committed log entries after it.
#[derive(Debug, Clone, Default)]
pub struct StateMachineStore {
    data: Arc<RwLock<StateMachineData>>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    /// Count of snapshots built or installed, to give each a unique id (and file). Starts from
    /// the restored snapshot's.
    snapshot_count: Arc<Mutex<u64>>,
    durable: Option<DurableStore>,
    /// Commands applied to the ledger, each followed by its invariant assertions (for
    /// `bank_ledger_invariant_checks_total`).
    applies_checked: Arc<AtomicU64>,
    /// What the simulator watches and breaks; `None` outside it.
    #[cfg(feature = "simulation")]
    sim: Option<Arc<SimRecord>>,
}

/// What the simulator (`crate::sim`) records of one branch's state machine, across its crashes:
/// every proposal applied, by log index (the exactly-once check replays them), and how many
/// snapshots were built, installed and restarted from. With `ignore_request_ids`, the
/// deliberately broken variant: the ledger is shown every proposal under a fresh request id of
/// its own, so it cannot recognise a retry and applies it again.
#[cfg(feature = "simulation")]
#[derive(Debug, Default)]
pub struct SimRecord {
    pub ignore_request_ids: bool,
    /// The proposals applied, by log index, as proposed (with their own request ids).
    pub journal: Mutex<BTreeMap<u64, Proposal>>,
    /// Different proposals applied at one index (by two incarnations of this branch).
    pub conflicts: Mutex<Vec<String>>,
    pub snapshots_built: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub restarts_from_snapshot: AtomicU64,
}

#[cfg(feature = "simulation")]
impl SimRecord {
    /// Records `proposal` applied at `index`; returns what the ledger must apply instead, if
    /// anything (the broken variant's rewritten ids).
    fn applying(&self, index: u64, proposal: &Proposal) -> Option<Proposal> {
        if let Ok(mut journal) = self.journal.lock() {
            match journal.get(&index) {
                Some(earlier) if earlier != proposal => {
                    if let Ok(mut conflicts) = self.conflicts.lock() {
                        conflicts.push(format!(
                            "index {index}: applied {earlier:?}, later {proposal:?}"
                        ));
                    }
                }
                Some(_) => {}
                None => {
                    journal.insert(index, proposal.clone());
                }
            }
        }
        self.ignore_request_ids
            .then(|| without_request_ids(proposal, index))
    }
}

/// `proposal` under request ids no one else uses, fresh at every log index (a batch's items
/// included): a ledger fed these cannot tell a retry from a new request. Deterministic, so the
/// broken replicas still agree with each other.
#[cfg(feature = "simulation")]
fn without_request_ids(proposal: &Proposal, index: u64) -> Proposal {
    const ORIGIN: u64 = u64::MAX;
    let stride = crate::ledger::BATCH_ITEMS_MAX as u64 + 1;
    let id = |item: u64| RequestId {
        origin: ORIGIN,
        sequence: index.saturating_mul(stride).saturating_add(item),
    };
    let command = match &proposal.command {
        Command::Batch(items) => Command::Batch(
            items
                .iter()
                .zip(1..)
                .map(|(item, n)| Proposal {
                    request_id: id(n),
                    command: item.command.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    };
    Proposal {
        request_id: id(0),
        command,
    }
}

impl StateMachineStore {
    /// A state machine whose snapshots live in `durable`, starting from the latest of them.
    pub fn restore(durable: DurableStore) -> Result<StateMachineStore, DurableError> {
        let path = durable.path().to_path_buf();
        let refused = |why: String| DurableError::Snapshot {
            path: path.clone(),
            why,
        };
        let record = durable.snapshot_record().map_err(|e| {
            refused(format!(
                "its record does not decode ({e}); a data directory written by a bank from \
                     before 2026-11-25, when snapshots moved to files, is not migrated"
            ))
        })?;
        let store = StateMachineStore {
            durable: Some(durable.clone()),
            ..Default::default()
        };
        if let Some(record) = record {
            let bytes = durable
                .read_snapshot(&record)
                .map_err(|e| refused(e.to_string()))?;
            let ledger = Ledger::decode_snapshot(&bytes)
                .map_err(|e| refused(format!("{}: {e}", record.file)))?;
            let state = StateMachineData {
                last_applied: record.meta.last_log_id,
                last_membership: record.meta.last_membership.clone(),
                ledger,
            };
            if let (Ok(mut current), Ok(mut snapshot), Ok(mut count)) = (
                store.data.write(),
                store.snapshot.lock(),
                store.snapshot_count.lock(),
            ) {
                *current = state;
                *count = record.sequence;
                *snapshot = Some(StoredSnapshot::Durable(record));
            }
        }
        Ok(store)
    }

    /// Keeps `data` as the current snapshot described by `meta`: on disk if durable (only its
    /// record stays in memory), else in memory.
    ///
    /// Hands `data` back, for openraft's copy of the snapshot: a durable branch then holds
    /// one copy of a snapshot's bytes at a time, not two.
    fn keep_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        let sequence = {
            let mut count = self.snapshot_count.lock().map_err(poisoned("snapshot"))?;
            *count += 1;
            *count
        };
        let stored = match &self.durable {
            Some(durable) => {
                StoredSnapshot::Durable(durable.write_snapshot(meta, &data, sequence)?)
            }
            None => StoredSnapshot::Memory {
                meta: meta.clone(),
                data: data.clone(),
            },
        };
        *self.snapshot_lock()? = Some(stored);
        Ok(data)
    }

    /// Reads the applied state. Returns `None` if the lock is poisoned (see [`poisoned`]).
    pub fn read<T>(&self, f: impl FnOnce(&StateMachineData) -> T) -> Option<T> {
        self.data.read().ok().map(|data| f(&data))
    }

    /// How many commands this state machine has applied to its ledger, each followed by the
    /// ledger's invariant assertions.
    pub fn applies_checked(&self) -> u64 {
        self.applies_checked.load(Ordering::Relaxed)
    }

    fn snapshot_lock(&self) -> Result<MutexGuard<'_, Option<StoredSnapshot>>, StorageError> {
        self.snapshot.lock().map_err(poisoned("snapshot"))
    }

    /// A simulated branch's first state machine, recording into `record`.
    #[cfg(feature = "simulation")]
    pub fn simulated(record: Arc<SimRecord>) -> StateMachineStore {
        StateMachineStore {
            sim: Some(record),
            ..Default::default()
        }
    }

    /// The state machine of this branch's next incarnation after a crash: the applied state
    /// was memory and is lost; the snapshot was on "disk" and is kept, shared with this store,
    /// and the new state starts from it (openraft then re-applies the committed log after it).
    #[cfg(feature = "simulation")]
    pub fn restarted(&self) -> Result<StateMachineStore, StorageError> {
        let mut state = StateMachineData::default();
        let mut from_snapshot = false;
        match self.snapshot_lock()?.as_ref() {
            None => {}
            Some(StoredSnapshot::Memory { meta, data }) => {
                let ledger = Ledger::decode_snapshot(data).map_err(|e| {
                    StorageIOError::read_snapshot(Some(meta.signature()), &std::io::Error::other(e))
                })?;
                ledger.assert_invariants_fully();
                state = StateMachineData {
                    last_applied: meta.last_log_id,
                    last_membership: meta.last_membership.clone(),
                    ledger,
                };
                from_snapshot = true;
            }
            Some(StoredSnapshot::Durable(record)) => {
                let why = "a simulated branch keeps its snapshot in memory";
                return Err(StorageIOError::read_snapshot(
                    Some(record.meta.signature()),
                    &std::io::Error::other(why),
                )
                .into());
            }
        }
        if from_snapshot {
            if let Some(sim) = &self.sim {
                sim.restarts_from_snapshot.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(StateMachineStore {
            data: Arc::new(RwLock::new(state)),
            snapshot: self.snapshot.clone(),
            snapshot_count: self.snapshot_count.clone(),
            durable: None,
            applies_checked: Arc::default(),
            sim: self.sim.clone(),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// Encoding is a straight pass over the accounts, under the state machine's read lock
    /// (reads go on; applies wait, about 30 ms for a million accounts). A durable branch
    /// streams it to the snapshot file and syncs after releasing the lock; no copy of the
    /// ledger or of its encoding is held in memory.
    ///
    /// openraft 0.9 uses only the meta of the snapshot this returns (its state machine worker
    /// and its start-up helper both drop the data); followers are sent
    /// [`RaftStateMachine::get_current_snapshot`]'s, which reads the file. So a durable
    /// branch returns the meta with empty data rather than read 32 MB back for nothing. Were
    /// empty data ever installed, it would be refused as "not a ledger snapshot", not applied.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let sequence = self
            .snapshot_count
            .lock()
            .map_err(poisoned("snapshot"))?
            .to_owned()
            + 1;
        let meta_of = move |state: &StateMachineData| SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.last_membership.clone(),
            snapshot_id: match state.last_applied {
                Some(id) => format!("{}-{}-{sequence}", id.leader_id, id.index),
                None => format!("--{sequence}"),
            },
        };
        let Some(durable) = &self.durable else {
            let (meta, data) = {
                let state = self.data.read().map_err(poisoned("state machine"))?;
                let data = state
                    .ledger
                    .encode_snapshot()
                    .map_err(|e| StorageIOError::read_state_machine(&e))?;
                (meta_of(&state), data)
            };
            let data = self.keep_snapshot(&meta, data)?;
            #[cfg(feature = "simulation")]
            if let Some(sim) = &self.sim {
                sim.snapshots_built.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            });
        };
        // Writing and syncing the file is blocking I/O of up to tens of milliseconds: on a
        // thread of its own, not on one of the runtime's workers, where it stalled every other
        // task (64-client deposits: p99 45-54 ms with snapshots, 13-15 ms without).
        let durable = durable.clone();
        let store = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            let mut file = durable.create_snapshot(sequence)?;
            let (meta, len) = {
                let state = store.data.read().map_err(poisoned("state machine"))?;
                let len = state
                    .ledger
                    .write_snapshot(&mut file.out)
                    .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
                (meta_of(&state), len)
            };
            let record = durable.commit_snapshot(file, &meta, len)?;
            *store.snapshot_count.lock().map_err(poisoned("snapshot"))? = sequence;
            *store.snapshot_lock()? = Some(StoredSnapshot::Durable(record));
            Ok::<_, StorageError>(meta)
        })
        .await;
        let meta = match built {
            Ok(meta) => meta?,
            Err(e) => {
                return Err(StorageIOError::write_snapshot(None, &std::io::Error::other(e)).into())
            }
        };
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let state = self.data.read().map_err(poisoned("state machine"))?;
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.data.write().map_err(poisoned("state machine"))?;
        let mut outcomes = Vec::new();
        for entry in entries {
            assert!(
                state.last_applied.map(|id| id.index) < Some(entry.log_id.index),
                "entries are applied once, in log order"
            );
            state.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::NoCommand,
                EntryPayload::Normal(ref proposal) => {
                    #[cfg(feature = "simulation")]
                    let replaced = self
                        .sim
                        .as_ref()
                        .and_then(|sim| sim.applying(entry.log_id.index, proposal));
                    #[cfg(feature = "simulation")]
                    let proposal = replaced.as_ref().unwrap_or(proposal);
                    let outcome = state.ledger.apply_proposal(proposal);
                    self.applies_checked.fetch_add(1, Ordering::Relaxed);
                    outcome
                }
                EntryPayload::Membership(ref membership) => {
                    state.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    Outcome::NoCommand
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let ledger = Ledger::decode_snapshot(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), &std::io::Error::other(e))
        })?;
        let state = StateMachineData {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            ledger,
        };
        // On disk first: if this fails, the old state and snapshot stay in place together.
        drop(self.keep_snapshot(meta, data)?);
        *self.data.write().map_err(poisoned("state machine"))? = state;
        #[cfg(feature = "simulation")]
        if let Some(sim) = &self.sim {
            sim.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let record = match &*self.snapshot_lock()? {
            None => return Ok(None),
            Some(StoredSnapshot::Memory { meta, data }) => {
                return Ok(Some(Snapshot {
                    meta: meta.clone(),
                    snapshot: Box::new(Cursor::new(data.clone())),
                }))
            }
            Some(StoredSnapshot::Durable(record)) => record.clone(),
        };
        // Read outside the lock: a new snapshot may be recorded meanwhile, and this one's file
        // removed; the read then fails and openraft asks again.
        let Some(durable) = &self.durable else {
            return Ok(None);
        };
        let (meta, data) = (record.meta.clone(), durable.read_snapshot(&record)?);
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    struct MemoryStoreBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore> for MemoryStoreBuilder {
        async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
            Ok(((), LogStore::default(), StateMachineStore::default()))
        }
    }

    /// openraft's own storage test suite: the contract every log store and state machine must
    /// keep (membership tracking, vote, append / truncate / purge, snapshots).
    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError> {
        Suite::test_all(MemoryStoreBuilder)
    }
}
