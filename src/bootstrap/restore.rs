//! Restoring a branch of a new cluster from a backup file (`bank restore`).
//!
//! The backup is read and checked whole ([`crate::backup::read_file`]) before anything is
//! written; the data directory must be absent or empty. The store is then seeded
//! ([`crate::raft::durable::seed`]) with the backup's ledger as a snapshot at its applied index
//! and the new cluster's membership: this branch and its `--peer`s (the first
//! [`VOTERS_MAX`](crate::raft::VOTERS_MAX) ids vote, as in a created cluster; the others are
//! learners), and stamped with its identity (this branch of those branches, initial balance 0,
//! the default of `bank branch --balance`). On any error the directory is left as it was found
//! (absent, or empty).
//!
//! `bank branch` then *resumes* from it like any branch with state: no cluster is created and
//! the genesis entry is not proposed again (the shared account is in the restored ledger), a
//! leader is elected among the voters and serves the restored balances. Restore every branch
//! of the new cluster from the same file with the same peer list, or one branch alone (no
//! peers) and add others later as learners.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{check_identity, ClusterError};
use crate::backup::{read_file, BackupError, BackupSummary};
use crate::node::voters_and_learners;
use crate::raft::durable::{ClusterIdentity, DurableError, DurableStore, Seed};
use crate::BranchId;

/// What to restore where.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// The backup file.
    pub backup: PathBuf,
    /// The new branch's data directory: absent or empty.
    pub data_dir: PathBuf,
    /// The new branch's id.
    pub id: BranchId,
    /// The address the new branch will listen on (`host:port`), as its peers reach it.
    pub listen: String,
    /// Every other branch of the new cluster: id -> `host:port`.
    pub peers: BTreeMap<BranchId, String>,
}

/// A restored data directory.
#[derive(Debug, Clone)]
pub struct Restored {
    pub backup: BackupSummary,
    pub voters: Vec<BranchId>,
    pub learners: Vec<BranchId>,
}

/// Why a restore was refused or failed; nothing was left in the data directory.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("--id must be a positive integer")]
    ZeroId,
    #[error("--peer lists this branch's own id {0}; list only the other branches")]
    PeerIsSelf(BranchId),
    #[error("{}: the data directory is not empty; restore only into a new or empty directory (existing data is never overwritten)", path.display())]
    NotEmpty { path: PathBuf },
    #[error("{}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] DurableError),
    #[error(transparent)]
    Identity(#[from] ClusterError),
}

/// Restores `config.backup` into `config.data_dir`; see the module documentation.
pub fn restore(config: &RestoreConfig) -> Result<Restored, RestoreError> {
    if config.id == 0 {
        return Err(RestoreError::ZeroId);
    }
    if config.peers.contains_key(&config.id) {
        return Err(RestoreError::PeerIsSelf(config.id));
    }
    let backup = read_file(&config.backup)?;
    let created = prepare(&config.data_dir)?;
    let mut addresses = config.peers.clone();
    addresses.insert(config.id, config.listen.clone());
    let (voters, learners) = voters_and_learners(addresses.clone());
    let seeded = (|| {
        let store = DurableStore::open(&config.data_dir)?;
        store.seed(&Seed {
            ledger_snapshot: &backup.ledger_snapshot,
            applied_index: backup.summary.header.applied_index,
            voters: &voters,
            learners: &learners,
        })?;
        check_identity(
            &store,
            &ClusterIdentity {
                branch_id: config.id,
                branch_ids: addresses.keys().copied().collect(),
                initial_balance_minor_units: 0,
            },
        )?;
        Ok::<_, RestoreError>(())
    })();
    if let Err(e) = seeded {
        undo(&config.data_dir, created);
        return Err(e);
    }
    Ok(Restored {
        backup: backup.summary,
        voters: voters.into_keys().collect(),
        learners: learners.into_keys().collect(),
    })
}

/// Makes sure `dir` exists and is empty; whether it was created here.
fn prepare(dir: &Path) -> Result<bool, RestoreError> {
    let io = |source| RestoreError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(false),
            Some(_) => Err(RestoreError::NotEmpty {
                path: dir.to_path_buf(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)?;
            Ok(true)
        }
        Err(e) => Err(io(e)),
    }
}

/// Leaves `dir` as [`prepare`] found it: removed if it created it, else emptied.
fn undo(dir: &Path, created: bool) {
    let removed = if created {
        std::fs::remove_dir_all(dir)
    } else {
        std::fs::read_dir(dir).and_then(|entries| {
            entries.flatten().try_for_each(|entry| {
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(path)
                } else {
                    std::fs::remove_file(path)
                }
            })
        })
    };
    if let Err(e) = removed {
        tracing::warn!("cleaning up {} after a failed restore: {e}", dir.display());
    }
}
