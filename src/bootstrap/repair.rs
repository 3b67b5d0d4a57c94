//! A branch that finds its own data damaged rebuilds itself from its peers.
//!
//! "Damaged" means certain: a log entry or the latest snapshot failed its checksum
//! ([`DurableError::is_damage`]). An unreadable or foreign file, a format from another version
//! or an I/O error is not taken for damage: the branch refuses to start as before, since
//! moving such data aside could throw away what is only passing trouble.
//!
//! With damage found, the branch does what an operator would do by hand: it checks that the
//! cluster can rebuild it (every peer answers and one has state: what `--rejoin` requires),
//! moves its data directory aside (renamed `<dir>.damaged-<unix seconds>`, kept for a post
//! mortem, never deleted), and starts on an empty one as `--rejoin` does: it never votes on
//! what it no longer knows, is caught up by its peers, and is promoted back. If the peers
//! cannot rebuild it, the damage error stands and nothing is moved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::survey::survey_for_rejoin;
use super::ClusterError;
use crate::raft::durable::{DurableError, DurableStore};
use crate::raft::network::Peers;
use crate::raft::state_machine::StateMachineStore;
use crate::BranchId;

/// Checks the data directory of branch `id`; if it is damaged and the peers can rebuild it,
/// moves it aside and returns true: the branch must then start as `--rejoin` does.
pub(super) async fn set_damage_aside(
    id: BranchId,
    data_dir: &Path,
    book: &Peers,
    peers: &BTreeMap<BranchId, String>,
) -> Result<bool, ClusterError> {
    let damage = match check(data_dir) {
        Ok(()) => return Ok(false),
        Err(e) if e.is_damage() => e,
        Err(e) => return Err(e.into()),
    };
    if peers.is_empty() {
        return Err(damage.into());
    }
    tracing::error!(
        branch = id,
        "{damage}; asking the peers whether they can rebuild it"
    );
    if let Err(why) = survey_for_rejoin(book, peers, id).await {
        tracing::error!(branch = id, "the peers cannot rebuild it: {why}");
        return Err(damage.into());
    }
    let aside = aside_path(data_dir).ok_or_else(|| ClusterError::Branch {
        id,
        what: format!(
            "{damage}; the data directory {} has no name to rename it by",
            data_dir.display()
        ),
    })?;
    let moved = std::fs::rename(data_dir, &aside)
        .and_then(|()| std::fs::create_dir_all(data_dir))
        .map_err(|e| ClusterError::Branch {
            id,
            what: format!(
                "{damage}; moving {} aside to {} failed: {e}",
                data_dir.display(),
                aside.display()
            ),
        });
    moved?;
    tracing::warn!(
        branch = id,
        "damaged data moved to {}; rebuilding from the peers as --rejoin does",
        aside.display()
    );
    Ok(true)
}

/// Opens the data directory as a start would: every log entry and the latest snapshot checked.
fn check(data_dir: &Path) -> Result<(), DurableError> {
    if !data_dir.join(crate::raft::durable::DATABASE_FILE).exists() {
        return Ok(());
    }
    let store = DurableStore::open(data_dir)?;
    StateMachineStore::restore(store)?;
    Ok(())
}

/// `<dir>.damaged-<unix seconds>` beside `data_dir`.
fn aside_path(data_dir: &Path) -> Option<PathBuf> {
    let name = data_dir.file_name()?.to_string_lossy().into_owned();
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    Some(data_dir.with_file_name(format!("{name}.damaged-{seconds}")))
}
