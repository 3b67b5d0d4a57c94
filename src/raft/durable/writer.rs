//! The database's one writer thread: every write to redb, in order, committed in runs that
//! share one fsync.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::raft::disk_space::{DiskSpace, Space};

/// Purged entries deleted per commit at most (see [`Job::Purge`]).
pub(super) const PURGE_CHUNK_ENTRIES: u64 = 32;

/// Write jobs waiting for the writer at most: an append beyond them waits (back-pressure).
const WRITE_JOBS_MAX: usize = 256;
/// Jobs committed together in one transaction (one fsync) at most.
const WRITE_JOBS_PER_COMMIT_MAX: usize = 64;
/// While the disk is full, how often the writer looks again (jittered).
const FULL_DISK_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) type WriteFn =
    Box<dyn FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send>;

/// A write for the writer thread.
pub(super) enum Job {
    /// Log entries (index, log id, encoded): openraft is told through `callback` once they are
    /// committed durably.
    Append {
        entries: Vec<(LogId, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    /// Any other write; `done` hears the result once it is committed. `durable: false` (the
    /// committed log id, which openraft does not require to survive a crash) does not by
    /// itself make a commit wait for an fsync.
    Write {
        f: Option<WriteFn>,
        durable: bool,
        done: Option<std::sync::mpsc::SyncSender<Result<(), String>>>,
    },
    /// Deletes the purged entries `from..=to`: one chunk of a purge (see
    /// [`DurableLogStore::purge`]). At most one per commit, so appends never wait behind a
    /// large deletion. Not durable by itself and answers no one.
    Purge { from: u64, to: u64 },
}

/// The database's only writer: a thread that takes jobs in order and commits each run of
/// queued jobs (up to [`WRITE_JOBS_PER_COMMIT_MAX`]) as one redb transaction with one fsync.
///
/// Why a thread: an append used to commit and fsync inside openraft's core task, on a runtime
/// worker, which the fsync then held from every other task of the branch. Now an append
/// returns once its entries are queued and readable, the fsync blocks only this thread, and
/// queued writes share fsyncs. (openraft 0.9's core still awaits `LogFlushed` before it goes
/// on, replication of the entry included: the leader's fsync and a follower's follow one
/// another, see `crate::node`'s group committer.) Writes stay in order because there is one
/// queue: a truncate or purge queued after an append is committed after it.
///
/// Dropping it (with the last clone of the store) stops the thread and waits for it, so the
/// database is closed by the time the store is gone, as it was without the thread: a restart
/// in the same process, or a test that inspects the file, never races a closing handle.
///
/// While the disk is [full](crate::raft::disk_space), a commit with log entries in it waits,
/// and every job behind it: nothing is acknowledged that is not synced, and order is kept.
#[derive(Debug)]
pub(super) struct Writer {
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set when the store is dropped: a commit held for a full disk gives up.
    stopping: Arc<AtomicBool>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the database writer thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Append { entries, .. } => write!(f, "Append({} entries)", entries.len()),
            Job::Write { durable, .. } => write!(f, "Write(durable: {durable})"),
            Job::Purge { from, to } => write!(f, "Purge({from}..={to})"),
        }
    }
}

impl Writer {
    pub(super) fn start(
        db: Arc<Database>,
        unflushed: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
        path: &Path,
        space: DiskSpace,
    ) -> Result<Writer, std::io::Error> {
        let (jobs, queue) = std::sync::mpsc::sync_channel(WRITE_JOBS_MAX);
        let stopping = Arc::new(AtomicBool::new(false));
        let room = Room {
            space,
            stopping: stopping.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("redb-writer {}", path.display()))
            .spawn(move || Writer::run(&db, &unflushed, &queue, &room))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
            stopping,
        })
    }

    /// Runs until every sender (every clone of the store) is gone.
    fn run(
        db: &Database,
        unflushed: &Mutex<BTreeMap<u64, Entry<TypeConfig>>>,
        queue: &std::sync::mpsc::Receiver<Job>,
        room: &Room,
    ) {
        // A purge chunk taken from the queue while the commit being built already has one.
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match queue.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            let mut purging = matches!(first, Job::Purge { .. });
            let mut jobs = vec![first];
            while jobs.len() < WRITE_JOBS_PER_COMMIT_MAX {
                match queue.try_recv() {
                    Ok(job @ Job::Purge { .. }) if purging => {
                        carried = Some(job);
                        break;
                    }
                    Ok(job) => {
                        purging |= matches!(job, Job::Purge { .. });
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            let appends = jobs.iter().any(|job| matches!(job, Job::Append { .. }));
            let result = match appends.then(|| room.wait()).flatten() {
                Some(why) => Err(why),
                None => Writer::commit(db, &mut jobs).map_err(|e| e.to_string()),
            };
            for job in jobs {
                match job {
                    Job::Append { entries, callback } => {
                        if result.is_ok() {
                            // Committed entries are read from the database from now on; an
                            // entry replaced meanwhile (truncated, re-appended) has another
                            // log id and stays.
                            let mut unflushed = match unflushed.lock() {
                                Ok(unflushed) => unflushed,
                                Err(poisoned) => poisoned.into_inner(),
                            };
                            for (log_id, _) in &entries {
                                if unflushed.get(&log_id.index).map(|e| e.log_id) == Some(*log_id) {
                                    unflushed.remove(&log_id.index);
                                }
                            }
                        }
                        callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                    }
                    Job::Write { done, .. } => {
                        if let Some(done) = done {
                            // The caller may have given up waiting; nothing to tell then.
                            let _ = done.send(result.clone());
                        }
                    }
                    Job::Purge { from, to } => {
                        if let Err(e) = &result {
                            // Only disk space: the entries are below the purged id, never read.
                            tracing::warn!("deleting purged log entries {from}..={to}: {e}");
                        }
                    }
                }
            }
        }
    }

    fn commit(db: &Database, jobs: &mut [Job]) -> Result<(), redb::Error> {
        let durable = jobs.iter().any(|job| match job {
            Job::Append { .. } => true,
            Job::Write { durable, .. } => *durable,
            Job::Purge { .. } => false,
        });
        let mut tx = db.begin_write()?;
        // Not `Durability::Eventual`: on Linux redb syncs the file for it just as for
        // `Immediate` (it differs only on macOS), which cost every committed-id update and
        // every purge chunk a full fsync (about 0.2 ms each, measured). `None` writes no
        // header and syncs nothing; the next `Immediate` commit makes it durable, in order.
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        for job in jobs.iter_mut() {
            match job {
                Job::Append { entries, .. } => {
                    let mut table = tx.open_table(LOG)?;
                    for (log_id, bytes) in entries.iter() {
                        table.insert(log_id.index, bytes.as_slice())?;
                    }
                }
                Job::Write { f, .. } => {
                    if let Some(f) = f.take() {
                        f(&tx)?;
                    }
                }
                Job::Purge { from, to } => {
                    tx.open_table(LOG)?.retain_in(*from..=*to, |_, _| false)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Queues `job`; waits while the queue is full.
    pub(super) fn send(&self, job: Job) -> Result<(), redb::Error> {
        let stopped = || std::io::Error::other("the database writer thread has stopped").into();
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|_| stopped()),
            None => Err(stopped()),
        }
    }
}

/// What the writer needs to wait out a full disk.
struct Room {
    space: DiskSpace,
    stopping: Arc<AtomicBool>,
}

impl Room {
    /// Waits while the disk is full; `Some(why)` if the store stopped meanwhile (the held
    /// jobs then fail, unsynced, as a crash would leave them).
    fn wait(&self) -> Option<String> {
        let report = self.space.check();
        if report.space < Space::Full {
            return None;
        }
        tracing::warn!("{report}: log appends wait until space is freed");
        let started = std::time::Instant::now();
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return Some(format!("stopped while the disk was full ({report})"));
            }
            std::thread::sleep(crate::retry::jittered(FULL_DISK_RECHECK));
            if self.space.check().space < Space::Full {
                tracing::warn!(
                    "space on the disk again after {:?}: log appends go on",
                    started.elapsed()
                );
                return None;
            }
        }
    }
}
