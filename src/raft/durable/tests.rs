//! Tests of the durable store.

use openraft::testing::{StoreBuilder, Suite};

use super::*;
use crate::raft::state_machine::StateMachineStore;

struct DurableStoreBuilder;

impl StoreBuilder<TypeConfig, DurableLogStore, StateMachineStore, tempfile::TempDir>
    for DurableStoreBuilder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, DurableLogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::from(StorageIOError::write(&e)))?;
        let store = DurableStore::open(dir.path())
            .map_err(|e| StorageError::from(StorageIOError::write(&e)))?;
        let state_machine = StateMachineStore::restore(store.clone())
            .map_err(|e| StorageError::from(StorageIOError::write(&e)))?;
        Ok((dir, store.log_store(), state_machine))
    }
}

/// openraft's storage test suite against the redb store.
#[test]
fn openraft_storage_suite_on_redb() -> Result<(), StorageError> {
    Suite::test_all(DurableStoreBuilder)
}

#[test]
fn a_damaged_file_is_refused_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(DATABASE_FILE),
        b"this is not a redb database at all, not even close",
    )
    .expect("write junk");
    match DurableStore::open(dir.path()) {
        Ok(_) => panic!("a damaged file was accepted"),
        Err(e) => assert!(
            e.to_string()
                .contains("will not serve state it cannot trust"),
            "{e}"
        ),
    }
    let junk = std::fs::read(dir.path().join(DATABASE_FILE)).expect("still there");
    assert!(
        junk.starts_with(b"this is not"),
        "the damaged file was overwritten"
    );
}

#[tokio::test]
async fn log_vote_and_snapshot_survive_reopening() {
    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;

    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = DurableStore::open(dir.path()).expect("open");
        let mut log = store.log_store();
        let vote = Vote::new(3, 1);
        log.save_vote(&vote).await.expect("vote");
        let mut state_machine = StateMachineStore::restore(store.clone()).expect("restore");
        let snapshot = state_machine.build_snapshot().await.expect("snapshot");
        assert!(snapshot.meta.last_log_id.is_none());
    }
    let store = DurableStore::open(dir.path()).expect("reopen");
    assert!(store.is_initialized().expect("read"));
    let mut log = store.log_store();
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 1)));
    let mut state_machine = StateMachineStore::restore(store).expect("restore");
    assert!(state_machine
        .get_current_snapshot()
        .await
        .expect("snapshot")
        .is_some());
}

/// Applies `count` account openings to `state_machine` as log entries after `index`.
async fn open_accounts(state_machine: &mut StateMachineStore, index: u64, count: u64) {
    use crate::ledger::{Command, Proposal, RequestId};
    use openraft::storage::RaftStateMachine;
    let entries = (1..=count).map(|n| Entry::<TypeConfig> {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index + n),
        payload: openraft::EntryPayload::Normal(Proposal {
            request_id: RequestId {
                origin: 9,
                sequence: index + n,
            },
            command: Command::Open {
                account: index + n,
                balance_minor_units: n,
                overdraft_limit_minor_units: 0,
                balance_max_minor_units: 1_000,
            },
        }),
    });
    state_machine.apply(entries).await.expect("apply");
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("snapshot-"))
        .collect();
    files.sort();
    files
}

/// A restarted branch starts from its latest snapshot file; older files are removed; a
/// damaged file is refused with an error that names it, never loaded or replaced.
#[tokio::test]
async fn the_latest_snapshot_file_is_restored_and_a_damaged_one_refused() {
    use openraft::RaftSnapshotBuilder;

    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = {
        let store = DurableStore::open(dir.path()).expect("open");
        let mut state_machine = StateMachineStore::restore(store).expect("restore");
        open_accounts(&mut state_machine, 0, 20).await;
        state_machine
            .build_snapshot()
            .await
            .expect("first snapshot");
        open_accounts(&mut state_machine, 20, 5).await;
        let built = state_machine
            .build_snapshot()
            .await
            .expect("second snapshot");
        assert_eq!(built.meta.last_log_id.map(|id| id.index), Some(25));
        state_machine
            .read(|state| state.ledger.clone())
            .expect("read")
    };
    let files = snapshot_files(dir.path());
    assert_eq!(files, vec!["snapshot-00000000000000000002.bin"]);

    let store = DurableStore::open(dir.path()).expect("reopen");
    let restored = StateMachineStore::restore(store).expect("restore");
    let (applied, restored_ledger) = restored
        .read(|state| (state.last_applied, state.ledger.clone()))
        .expect("read");
    assert_eq!(applied.map(|id| id.index), Some(25));
    assert_eq!(restored_ledger, ledger);
    drop(restored);

    let path = dir.path().join(&files[0]);
    let mut bytes = std::fs::read(&path).expect("read snapshot");
    bytes[20] ^= 1;
    std::fs::write(&path, &bytes).expect("damage snapshot");
    let store = DurableStore::open(dir.path()).expect("reopen");
    match StateMachineStore::restore(store) {
        Ok(_) => panic!("a damaged snapshot was loaded"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("checksum") && e.contains(&files[0]), "{e}");
        }
    }
    assert_eq!(std::fs::read(&path).expect("still there"), bytes);
}

/// A seeded store reads back as a follower's after it installed a snapshot and purged its
/// log: the snapshot at (term 0, I) with the new membership, the log empty up to I, no vote.
#[tokio::test]
async fn a_seeded_store_looks_like_an_installed_snapshot() {
    use openraft::storage::RaftStateMachine;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = crate::ledger::Ledger::new();
    let opened = ledger.apply(&crate::ledger::Command::Open {
        account: 9,
        balance_minor_units: 120,
        overdraft_limit_minor_units: 0,
        balance_max_minor_units: 1_000,
    });
    assert!(matches!(opened, crate::ledger::Outcome::Opened { .. }));
    let bytes = ledger.encode_snapshot().expect("encode");
    let voters: BTreeMap<NodeId, String> = [(1, "127.0.0.1:7001".to_string())].into();
    let learners: BTreeMap<NodeId, String> = [(8, "127.0.0.1:7008".to_string())].into();
    let seed = Seed {
        ledger_snapshot: &bytes,
        applied_index: 4_321,
        voters: &voters,
        learners: &learners,
    };
    {
        let store = DurableStore::open(dir.path()).expect("open");
        assert!(!store.is_initialized().expect("read"));
        store.seed(&seed).expect("seed");
        assert!(store.seed(&seed).is_err(), "a second seed is refused");
    }
    let store = DurableStore::open(dir.path()).expect("reopen");
    assert!(
        store.is_initialized().expect("read"),
        "a seeded store has state"
    );
    let mut log = store.log_store();
    assert_eq!(log.read_vote().await.expect("vote"), None);
    let state = log.get_log_state().await.expect("log state");
    let expected = LogId::new(openraft::CommittedLeaderId::new(0, 0), 4_321);
    assert_eq!(state.last_purged_log_id, Some(expected));
    assert_eq!(state.last_log_id, Some(expected));
    let mut state_machine = StateMachineStore::restore(store).expect("restore");
    let (applied, membership) = state_machine.applied_state().await.expect("applied");
    assert_eq!(applied, Some(expected));
    let voter_ids: Vec<NodeId> = membership.membership().voter_ids().collect();
    assert_eq!(voter_ids, vec![1]);
    let learner_ids: Vec<NodeId> = membership.membership().learner_ids().collect();
    assert_eq!(learner_ids, vec![8]);
    assert_eq!(
        state_machine.read(|state| state.ledger.clone()),
        Some(ledger)
    );
}

#[test]
fn a_log_from_an_older_bank_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = DurableStore::open(dir.path()).expect("a new store");
        // What an older bank left: a vote, a JSON entry in the log, no format record.
        store
            .put_meta(VOTE, &Vote::<NodeId>::new(1, 1))
            .expect("vote");
        store
            .write(|tx| {
                tx.open_table(LOG)?
                    .insert(1, br#"{"log_id":{}}"#.as_slice())?;
                tx.open_table(META)?.remove(LOG_FORMAT_KEY)?;
                Ok(())
            })
            .expect("write as an older bank did");
    }
    match DurableStore::open(dir.path()) {
        Ok(_) => panic!("a JSON log was opened as if it were binary"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("format 1"), "{message}");
            assert!(message.contains("--rejoin"), "{message}");
        }
    }
    // A store of this version opens again.
    let fresh = tempfile::tempdir().expect("tempdir");
    drop(DurableStore::open(fresh.path()).expect("new"));
    DurableStore::open(fresh.path()).expect("reopened");
}

/// A data directory whose latest snapshot is in an older format (version 2, written by the
/// bank before CRC32C: `tests/data/snapshot-v2.bin`) is refused at start with an error that
/// names the file and says what to do, not a panic.
#[test]
fn an_older_snapshot_format_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = include_bytes!("../../../tests/data/snapshot-v2.bin");
    let voters: BTreeMap<NodeId, String> = [(1, "127.0.0.1:7001".to_string())].into();
    let seed = Seed {
        ledger_snapshot: old,
        applied_index: 52,
        voters: &voters,
        learners: &BTreeMap::new(),
    };
    DurableStore::open(dir.path())
        .expect("open")
        .seed(&seed)
        .expect("seed");
    let store = DurableStore::open(dir.path()).expect("reopen");
    let error = match StateMachineStore::restore(store) {
        Ok(_) => panic!("an old snapshot was loaded"),
        Err(error) => error.to_string(),
    };
    for expected in [
        "snapshot-00000000000000000001.bin",
        "snapshot format version 2 is from an older bank",
        "--rejoin",
    ] {
        assert!(error.contains(expected), "{expected:?} not in: {error}");
    }
}

/// Every log entry is checked when the store opens: a flipped bit in any byte of a stored
/// entry is refused with the file and the entry named, and the branch does not start on it.
#[test]
fn a_damaged_log_entry_is_refused_at_open_naming_it() {
    let entry = |index| openraft::Entry::<TypeConfig> {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Blank,
    };
    let sealed = crate::raft::codec::seal(&entry(2)).expect("seal");
    for at in 0..sealed.len() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = DurableStore::open(dir.path()).expect("a new store");
            let mut damaged = sealed.clone();
            damaged[at] ^= 0x10;
            store
                .write(move |tx| {
                    let mut table = tx.open_table(LOG)?;
                    for index in 1..=3 {
                        let bytes = crate::raft::codec::seal(&entry(index)).unwrap_or_default();
                        table.insert(index, bytes.as_slice())?;
                    }
                    table.insert(2, damaged.as_slice())?;
                    Ok(())
                })
                .expect("write");
        }
        match DurableStore::open(dir.path()) {
            Ok(_) => panic!("byte {at} of entry 2 damaged, and the store opened"),
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains("log entry 2 is damaged"), "{message}");
                assert!(message.contains(DATABASE_FILE), "{message}");
                assert!(message.contains("--rejoin"), "{message}");
            }
        }
    }
}
