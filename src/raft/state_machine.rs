//! The state machine behind openraft's storage-v2 trait: applies committed entries to the
//! [`Ledger`] in log order, builds and installs snapshots (in memory, or as files of a
//! [`DurableStore`]). A cheap-to-clone handle over shared state, so the branch reads the ledger
//! while openraft drives it.
//!
//! An [`ApplyObserver`] may watch every apply and snapshot: the simulator (`crate::sim`)
//! records through one, and its deliberately broken variants rewrite proposals through one. It
//! is the only way in: nothing here knows the simulator.

use std::fmt::Debug;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::durable::{DurableError, DurableStore, SnapshotRecord};
use super::log_store::poisoned;
use super::{BasicNode, LogId, NodeId, StorageError, TypeConfig};
use crate::ledger::{Ledger, Outcome, Proposal};

/// Watches a state machine: every proposal it applies, every snapshot it builds or installs,
/// every restart from a snapshot. The hook through which the simulator records a branch across
/// its crashes, and through which a deliberately broken variant (a ledger that ignores request
/// ids) is built to show the simulator catches it.
pub trait ApplyObserver: Debug + Send + Sync + 'static {
    /// `proposal` is about to be applied at log `index`. Returns what the ledger must apply
    /// instead, if anything (`None`: the proposal itself; only a broken variant replaces it).
    fn applying(&self, index: u64, proposal: &Proposal) -> Option<Proposal>;
    /// A snapshot was built.
    fn snapshot_built(&self) {}
    /// A snapshot from the leader was installed.
    fn snapshot_installed(&self) {}
    /// A restarted state machine began from its kept snapshot.
    fn restarted_from_snapshot(&self) {}
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
    /// Who watches every apply and snapshot (the simulator); `None`: no one.
    observer: Option<Arc<dyn ApplyObserver>>,
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
            let ledger = Ledger::decode_snapshot(&bytes).map_err(|e| match e {
                crate::ledger::SnapshotError::Checksum => DurableError::SnapshotDamaged {
                    path: path.clone(),
                    file: record.file.clone(),
                },
                e => refused(format!("{}: {e}", record.file)),
            })?;
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

    /// Reads the applied state. Returns `None` if the lock is poisoned (a thread panicked holding it).
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

    /// An in-memory state machine whose applies and snapshots `observer` watches.
    pub fn observed(observer: Arc<dyn ApplyObserver>) -> StateMachineStore {
        StateMachineStore {
            observer: Some(observer),
            ..Default::default()
        }
    }

    /// Damages the in-memory snapshot's bytes, as a damaged disk would (the simulator's storage
    /// faults); whether there was a snapshot to damage.
    pub fn damage_snapshot(&self, damage: super::log_store::Damage, pick: u64) -> bool {
        let Ok(mut snapshot) = self.snapshot_lock() else {
            return false;
        };
        match snapshot.as_mut() {
            Some(StoredSnapshot::Memory { data, .. }) if !data.is_empty() => {
                damage.apply(data, pick);
                true
            }
            _ => false,
        }
    }

    /// The state machine of this in-memory branch's next incarnation after a crash (the
    /// simulator's restarts): the applied state was memory and is lost; the snapshot was on
    /// "disk" and is kept, shared with this store, and the new state starts from it (openraft
    /// then re-applies the committed log after it).
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
            if let Some(observer) = &self.observer {
                observer.restarted_from_snapshot();
            }
        }
        Ok(StateMachineStore {
            data: Arc::new(RwLock::new(state)),
            snapshot: self.snapshot.clone(),
            snapshot_count: self.snapshot_count.clone(),
            durable: None,
            applies_checked: Arc::default(),
            observer: self.observer.clone(),
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
            if let Some(observer) = &self.observer {
                observer.snapshot_built();
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
                    let replaced = self
                        .observer
                        .as_ref()
                        .and_then(|observer| observer.applying(entry.log_id.index, proposal));
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
        if let Some(observer) = &self.observer {
            observer.snapshot_installed();
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
    use crate::raft::log_store::LogStore;

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
