//! Durable storage on redb: one database file per branch, `DIR/branch.redb`.
//!
//! - Table `log`: index -> openraft `Entry` in postcard, sealed with a CRC32C (log format 2,
//!   [`LOG_FORMAT`]; the `meta` values are JSON). `append` commits a redb write transaction
//!   with `Durability::Immediate` (fsync) *before* it tells openraft the entries are flushed, as
//!   openraft's contract requires: an entry acknowledged to a leader is on disk.
//! - Table `meta`: the vote, the committed log id, the last purged log id, the record of the
//!   latest snapshot ([`SnapshotRecord`]) and the cluster's identity (see [`ClusterIdentity`]).
//! - Snapshots: the ledger in its compact encoding (`crate::ledger`'s snapshot module, 32
//!   bytes per account, checksummed) in `DIR/snapshot-<sequence>.bin`, beside the database
//!   rather than in it, so a snapshot of a million accounts neither bloats the database nor
//!   stays in memory. Written to a `.partial` file, synced, renamed, the directory synced, and
//!   only then recorded in `meta`; older files are removed after.
//!
//! The state machine itself is not written on every apply. On start it is restored from the
//! latest snapshot, and openraft re-applies the committed entries after it (it reads the
//! persisted committed log id); snapshots are taken every
//! [`SNAPSHOT_EVERY_LOGS`](super::SNAPSHOT_EVERY_LOGS) entries and the log is purged behind
//! them, so disk use and replay time stay bounded.
//!
//! A store may also be seeded from a backup ([`seed`]): it then holds a snapshot and a purged
//! log, as a follower's does after it installed a snapshot, and no vote.
//!
//! redb checksums its commits and recovers to the last complete commit after a crash, so a torn
//! tail never surfaces as a half-written entry. A file redb cannot open is reported, never
//! silently replaced: the branch refuses to start.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, RaftLogReader, SnapshotMeta, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::disk_space::{DiskSpace, DISK_RESERVE_DEFAULT_MIB};
use super::{BasicNode, LogId, NodeId, StorageError, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
pub(crate) const SNAPSHOT: &str = "snapshot";
const IDENTITY: &str = "identity";
const REJOIN: &str = "rejoin";
const REMOVED: &str = "removed";
/// How the `log` table's values are encoded ([`LOG_FORMAT`]); absent in a database written
/// before it was recorded, whose entries are JSON.
const LOG_FORMAT_KEY: &str = "log_format";

/// The encoding of log entries this bank writes and reads: 2 is postcard sealed with a
/// CRC32C ([`crate::raft::codec::seal`]); 1, never recorded, was JSON without a checksum.
pub const LOG_FORMAT: u32 = 2;

/// How long [`DurableStore::open`] waits for a database another handle still holds.
const OPEN_RETRY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);
const OPEN_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// redb's page cache (9/10 of it for reads, 1/10 for writes). Its default, 1 GiB, would let a
/// branch's memory grow far past its ledger; the database holds only the log tail (snapshots
/// are files), whose recent entries are what replication reads back, and a read the cache
/// misses is served from the operating system's page cache. At 32 MiB it filled up (30.7 MB
/// measured with a million accounts, the largest part of a branch's memory after its
/// accounts); 4 MiB measured no slower (64-client durable deposits, 2026-12-03: median
/// 4,782 ops/s against 4,823 at 32 MiB, within the runs' spread of 4,154-5,065).
const DATABASE_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// The file name of a branch's database inside its data directory.
pub const DATABASE_FILE: &str = "branch.redb";

/// Why a branch's data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error("cannot create data directory {path}: {cause}")]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot open {path}: {cause}. The file may be damaged or in use by another bank process; this branch will not serve state it cannot trust. Stop the other process, or restore the file, or move it away to start this branch afresh")]
    Open { path: PathBuf, cause: redb::Error },
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: redb::Error },
    #[error("{path}: stored {what} does not decode: {cause}. The file is damaged; this branch will not serve state it cannot trust")]
    Decode {
        path: PathBuf,
        what: &'static str,
        cause: serde_json::Error,
    },
    #[error("{path}: cannot seed it from a backup: {why}")]
    Seed { path: PathBuf, why: String },
    #[error("{path}: the latest snapshot does not load: {why}. This branch will not serve state it cannot trust; restore the data directory, or start the branch afresh with `--rejoin` after moving it away")]
    Snapshot { path: PathBuf, why: String },
    #[error("{path}: the latest snapshot, {file}, is damaged (its checksum does not match its contents). This branch will not serve state it cannot trust; with its peers up it rebuilds itself from them, else restore the data directory, or start the branch afresh with `--rejoin` after moving it away")]
    SnapshotDamaged { path: PathBuf, file: String },
    #[error("{path}: log entry {index} is damaged (its checksum does not match its contents). This branch will not serve a log it cannot trust: move the data directory away and start the branch with `--rejoin` to rebuild it from its peers, or restore it from a backup")]
    LogDamaged { path: PathBuf, index: u64 },
    #[error("{path}: its log is in format {found}, and this bank reads format {LOG_FORMAT} only (format 1, JSON, is from an older bank). Move the data directory away and start the branch with `--rejoin` to rebuild it from its peers, or restore it from a backup")]
    LogFormat { path: PathBuf, found: u32 },
}

impl DurableError {
    /// Whether this is certain damage to the branch's own data: a log entry or the snapshot
    /// failed its checksum. (Not an unreadable or foreign file, a newer format, or an I/O
    /// error, which may be passing or someone else's.)
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            DurableError::LogDamaged { .. } | DurableError::SnapshotDamaged { .. }
        )
    }
}

/// Where the latest snapshot is. Recorded in the `meta` table only once its file is written
/// and synced, so a crash while writing a snapshot leaves the previous one in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    /// The file's name in the data directory: `snapshot-<sequence>.bin`.
    pub file: String,
    /// Its length in bytes (the ledger's encoding carries its own checksum).
    pub len: u64,
    /// Counts the snapshots this data directory has written, for unique file names.
    pub sequence: u64,
}

/// What a data directory belongs to, written once when the cluster is first created and checked
/// on every start, so a branch never joins a cluster its data was not made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    pub branch_id: NodeId,
    pub branch_ids: Vec<NodeId>,
    pub initial_balance_minor_units: u64,
}

/// Recorded by a branch started with `--rejoin` after it lost its data, so the safety rules of
/// rejoining survive a crash in the middle of it (see `VoteGuard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinState {
    /// The highest term any other branch had seen when this branch rejoined: it may have voted
    /// in any term up to this one before it lost its vote record.
    pub term_floor: u64,
    /// Whether it was a voter: it is removed from the membership, added back as a learner,
    /// and promoted back to voter once caught up.
    pub voter: bool,
    /// Whether it has caught up with the leader (applied the leader's read index taken after
    /// it rejoined, so that its log holds every entry committed before it lost its data) and
    /// is a voter again if it was one.
    pub caught_up: bool,
}

/// A snapshot being written; see [`DurableStore::create_snapshot`].
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    file: String,
    partial: PathBuf,
    sequence: u64,
    pub(crate) out: std::io::BufWriter<std::fs::File>,
}

const SNAPSHOT_WRITE_BUFFER_BYTES: usize = 256 * 1024;

fn snapshot_write_error(e: std::io::Error) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

/// A branch's open database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DurableStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
    /// Every write goes through this one thread, in order (see [`Writer`]).
    writer: Arc<Writer>,
    /// Appended entries the writer has not yet committed, readable meanwhile (see
    /// [`DurableLogStore::append`]).
    unflushed: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
    /// The last purged log id once this process has purged: entries up to it are gone for
    /// readers at once, though the writer deletes them later, in chunks.
    purged: Arc<Mutex<Option<LogId>>>,
    /// The room on the disk: the writer holds appends while it is full.
    space: DiskSpace,
}

fn io_error<E: Into<redb::Error>>(e: E) -> StorageError {
    let e: redb::Error = e.into();
    StorageIOError::write(&e).into()
}

fn decode_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read(&e).into()
}

impl DurableStore {
    /// Opens (or creates) the database in `dir`, keeping the default reserve of free space
    /// ([`DISK_RESERVE_DEFAULT_MIB`]).
    pub fn open(dir: &Path) -> Result<DurableStore, DurableError> {
        DurableStore::open_with(dir, DiskSpace::for_dir(dir, DISK_RESERVE_DEFAULT_MIB, None))
    }

    /// Opens (or creates) the database in `dir`, whose writer holds log appends while `space`
    /// says the disk is full.
    pub fn open_with(dir: &Path, space: DiskSpace) -> Result<DurableStore, DurableError> {
        std::fs::create_dir_all(dir).map_err(|cause| DurableError::CreateDir {
            path: dir.to_path_buf(),
            cause,
        })?;
        let path = dir.join(DATABASE_FILE);
        // "Already open" also covers a handle of this process that is still closing (openraft's
        // storage tasks end just after `Raft::shutdown` returns) or a process that is exiting:
        // wait a little for it, bounded, before giving up.
        let deadline = std::time::Instant::now() + OPEN_RETRY_DEADLINE;
        let db = loop {
            match Database::builder()
                .set_cache_size(DATABASE_CACHE_BYTES)
                .create(&path)
            {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(crate::retry::jittered(OPEN_RETRY_PAUSE));
                }
                Err(e) => {
                    return Err(DurableError::Open {
                        path: path.clone(),
                        cause: e.into(),
                    })
                }
            }
        };
        let db = Arc::new(db);
        let unflushed = Arc::default();
        let writer = Writer::start(db.clone(), Arc::clone(&unflushed), &path, space.clone())
            .map_err(|e| DurableError::Open {
                path: path.clone(),
                cause: e.into(),
            })?;
        let store = DurableStore {
            db,
            path: Arc::new(path),
            writer: Arc::new(writer),
            unflushed,
            purged: Arc::default(),
            space,
        };
        // Create the tables, so reads never meet a missing table.
        store
            .write(|tx| {
                tx.open_table(LOG)?;
                tx.open_table(META)?;
                Ok(())
            })
            .map_err(|e| DurableError::Io {
                path: store.path.to_path_buf(),
                cause: e,
            })?;
        store.check_log_format()?;
        store.check_log_entries()?;
        // Entries up to the recorded purged id may remain (deleted in chunks after a purge):
        // readers skip them from the start.
        let purged: Option<Option<LogId>> = store
            .get_meta(LAST_PURGED)
            .map_err(|e| store.describe(e, "last purged log id"))?;
        if let (Some(recorded), Ok(mut slot)) = (purged.flatten(), store.purged.lock()) {
            *slot = Some(recorded);
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The room on this store's disk.
    pub fn disk_space(&self) -> &DiskSpace {
        &self.space
    }

    /// Records [`LOG_FORMAT`] in a new database; refuses one whose log is in another format
    /// (a database with state but no record is format 1, JSON).
    fn check_log_format(&self) -> Result<(), DurableError> {
        let recorded: Option<u32> = self
            .get_meta(LOG_FORMAT_KEY)
            .map_err(|e| self.describe(e, "log format"))?;
        let has_entries = (|| {
            let tx = self.db.begin_read()?;
            let table = tx.open_table(LOG)?;
            let first = table.first()?.is_some();
            Ok::<bool, redb::Error>(first)
        })()
        .map_err(|cause| DurableError::Io {
            path: self.path.to_path_buf(),
            cause,
        })?;
        match recorded {
            Some(LOG_FORMAT) => Ok(()),
            Some(found) => Err(DurableError::LogFormat {
                path: self.path.to_path_buf(),
                found,
            }),
            None if has_entries || self.is_initialized()? => Err(DurableError::LogFormat {
                path: self.path.to_path_buf(),
                found: 1,
            }),
            None => self
                .put_meta(LOG_FORMAT_KEY, &LOG_FORMAT)
                .map_err(|e| self.describe(e, "log format")),
        }
    }

    /// Checks every log entry's checksum (the log is bounded: a snapshot every
    /// [`crate::raft::SNAPSHOT_EVERY_LOGS`] entries purges it). redb's own commit protocol
    /// makes a torn write an uncommitted transaction, so damage found here is certain.
    fn check_log_entries(&self) -> Result<(), DurableError> {
        let io = |cause: redb::Error| DurableError::Io {
            path: self.path.to_path_buf(),
            cause,
        };
        let tx = self.db.begin_read().map_err(|e| io(e.into()))?;
        let table = tx.open_table(LOG).map_err(|e| io(e.into()))?;
        for item in table.iter().map_err(|e| io(e.into()))? {
            let (index, bytes) = item.map_err(|e| io(e.into()))?;
            if !crate::raft::codec::is_intact(bytes.value()) {
                return Err(DurableError::LogDamaged {
                    path: self.path.to_path_buf(),
                    index: index.value(),
                });
            }
        }
        Ok(())
    }

    /// Runs `f` in a write transaction on the writer thread, after every write queued before
    /// it, and waits until it is committed durably (fsync).
    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    ) -> Result<(), redb::Error> {
        self.write_with(f, true)
    }

    fn write_with(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
        durable: bool,
    ) -> Result<(), redb::Error> {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        self.writer.send(Job::Write {
            f: Some(Box::new(f)),
            durable,
            done: Some(done),
        })?;
        match result.recv() {
            Ok(result) => result.map_err(|e| std::io::Error::other(e).into()),
            Err(_) => Err(std::io::Error::other("the database writer thread has stopped").into()),
        }
    }

    pub(crate) fn put_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| StorageError::from(StorageIOError::write(&e)))?;
        self.write(move |tx| {
            tx.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
        .map_err(io_error)
    }

    /// Queues `bytes` for `key` in the `meta` table without waiting, and without an fsync of
    /// its own: for what openraft does not need to survive a crash (the committed id, the
    /// purged id). It commits in order with the writes around it.
    fn put_meta_later(&self, key: &'static str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.writer
            .send(Job::Write {
                f: Some(Box::new(move |tx: &redb::WriteTransaction| {
                    tx.open_table(META)?.insert(key, bytes.as_slice())?;
                    Ok(())
                })),
                durable: false,
                done: None,
            })
            .map_err(io_error)
    }

    pub(crate) fn get_meta<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(io_error)?;
        let table = tx.open_table(META).map_err(io_error)?;
        match table.get(key).map_err(io_error)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(bytes.value())
                .map(Some)
                .map_err(decode_error),
        }
    }

    /// The identity recorded at creation, if any.
    pub fn identity(&self) -> Result<Option<ClusterIdentity>, DurableError> {
        self.get_meta(IDENTITY)
            .map_err(|e| self.describe(e, "identity"))
    }

    pub fn set_identity(&self, identity: &ClusterIdentity) -> Result<(), DurableError> {
        self.put_meta(IDENTITY, identity)
            .map_err(|e| self.describe(e, "identity"))
    }

    /// The rejoin record, if this branch was ever rebuilt with `--rejoin`.
    pub fn rejoin_state(&self) -> Result<Option<RejoinState>, DurableError> {
        self.get_meta(REJOIN)
            .map_err(|e| self.describe(e, "rejoin state"))
    }

    pub fn set_rejoin_state(&self, state: &RejoinState) -> Result<(), DurableError> {
        self.put_meta(REJOIN, state)
            .map_err(|e| self.describe(e, "rejoin state"))
    }

    /// The log index of the membership entry that removed this branch from its cluster, if
    /// the leader told it so.
    pub fn removed(&self) -> Result<Option<u64>, DurableError> {
        self.get_meta(REMOVED)
            .map_err(|e| self.describe(e, "removal"))
    }

    pub fn set_removed(&self, log_index: u64) -> Result<(), DurableError> {
        self.put_meta(REMOVED, &log_index)
            .map_err(|e| self.describe(e, "removal"))
    }

    /// Whether this branch has ever taken part in a cluster: it has a vote or a snapshot (a
    /// branch restored from a backup has a snapshot and no vote yet, see [`seed`]).
    pub fn is_initialized(&self) -> Result<bool, DurableError> {
        let vote: Option<Vote<NodeId>> =
            self.get_meta(VOTE).map_err(|e| self.describe(e, "vote"))?;
        if vote.is_some() {
            return Ok(true);
        }
        let snapshot = self
            .snapshot_record()
            .map_err(|e| self.describe(e, "snapshot record"))?;
        Ok(snapshot.is_some())
    }

    fn describe(&self, e: StorageError, what: &'static str) -> DurableError {
        DurableError::Decode {
            path: self.path.to_path_buf(),
            what,
            cause: serde_json::Error::io(std::io::Error::other(e.to_string())),
        }
    }

    /// The data directory this database lives in.
    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// The record of the latest snapshot, if one was written.
    pub(crate) fn snapshot_record(&self) -> Result<Option<SnapshotRecord>, StorageError> {
        self.get_meta(SNAPSHOT)
    }

    /// Starts writing snapshot number `sequence`: a `.partial` file, buffered. Write the
    /// snapshot to [`SnapshotFile::out`], then [`DurableStore::commit_snapshot`] it.
    pub(crate) fn create_snapshot(&self, sequence: u64) -> Result<SnapshotFile, StorageError> {
        let file = format!("snapshot-{sequence:020}.bin");
        let partial = self.dir().join(format!("{file}.partial"));
        let out = std::fs::File::create(&partial).map_err(snapshot_write_error)?;
        Ok(SnapshotFile {
            file,
            partial,
            sequence,
            out: std::io::BufWriter::with_capacity(SNAPSHOT_WRITE_BUFFER_BYTES, out),
        })
    }

    /// Makes a written snapshot the latest: synced, renamed into place, the directory synced,
    /// and only then recorded. Older snapshot files are removed afterwards (a failure to
    /// remove one is logged; it is only disk space).
    pub(crate) fn commit_snapshot(
        &self,
        snapshot: SnapshotFile,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        len: u64,
    ) -> Result<SnapshotRecord, StorageError> {
        let SnapshotFile {
            file,
            partial,
            sequence,
            out,
        } = snapshot;
        let out = out
            .into_inner()
            .map_err(|e| snapshot_write_error(e.into_error()))?;
        out.sync_all().map_err(snapshot_write_error)?;
        drop(out);
        std::fs::rename(&partial, self.dir().join(&file)).map_err(snapshot_write_error)?;
        std::fs::File::open(self.dir())
            .and_then(|d| d.sync_all())
            .map_err(snapshot_write_error)?;
        let record = SnapshotRecord {
            meta: meta.clone(),
            file,
            len,
            sequence,
        };
        self.put_meta(SNAPSHOT, &record)?;
        self.remove_snapshot_files_but(&record.file);
        Ok(record)
    }

    /// Writes `bytes` (a snapshot received from the leader) as snapshot number `sequence`.
    pub(crate) fn write_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        bytes: &[u8],
        sequence: u64,
    ) -> Result<SnapshotRecord, StorageError> {
        use std::io::Write as _;
        let mut snapshot = self.create_snapshot(sequence)?;
        snapshot
            .out
            .write_all(bytes)
            .map_err(snapshot_write_error)?;
        self.commit_snapshot(snapshot, meta, bytes.len() as u64)
    }

    /// Removes every snapshot file (or partial one) in the data directory except `keep`.
    fn remove_snapshot_files_but(&self, keep: &str) {
        let entries = match std::fs::read_dir(self.dir()) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!("listing {} for old snapshots: {e}", self.dir().display());
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("snapshot-") && name != keep {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!("removing old snapshot {}: {e}", entry.path().display());
                }
            }
        }
    }

    /// The bytes of the snapshot `record` names, checked against its recorded length.
    pub(crate) fn read_snapshot(&self, record: &SnapshotRecord) -> Result<Vec<u8>, StorageError> {
        let path = self.dir().join(&record.file);
        let read_error = |e: std::io::Error| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(record.meta.signature()),
                &std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
            ))
        };
        let bytes = std::fs::read(&path).map_err(read_error)?;
        if bytes.len() as u64 != record.len {
            return Err(read_error(std::io::Error::other(format!(
                "{} bytes, but {} were written",
                bytes.len(),
                record.len
            ))));
        }
        Ok(bytes)
    }

    pub fn log_store(&self) -> DurableLogStore {
        DurableLogStore {
            store: self.clone(),
        }
    }
}

mod log_store;
pub mod seed;
#[cfg(test)]
mod tests;
mod writer;

pub use log_store::DurableLogStore;
pub use seed::Seed;
use writer::{Job, Writer, PURGE_CHUNK_ENTRIES};
