//! Seeding an empty store from a backup (`bank restore`): the disk of a branch of a new
//! cluster that starts from a ledger snapshot rather than from an empty log.
//!
//! What is written is exactly what a follower's disk holds after it installed a snapshot from
//! its leader and purged its log behind it, with no vote yet:
//! - the snapshot file (`snapshot-<n>.bin`, the ledger's encoding as in the backup) and its
//!   record, at log id `(term 0, index I)`, `I` the backup's applied index, with the new
//!   cluster's membership (its voters and learners, each with its address) as of that id;
//! - the last purged log id and the committed log id, both that same id: the log is empty and
//!   begins after `I`;
//! - no vote: the branch has voted in no term, and the first election is for term 1.
//!
//! On the next start [`StateMachineStore::restore`](crate::raft::state_machine::StateMachineStore::restore)
//! loads the ledger from the snapshot and openraft sees a log that ends at `I`, applied up to
//! it. Every branch of the new cluster seeded from the same backup holds the same log id and
//! the same ledger, so any of them may be elected and the others' logs match its own.
//!
//! The record of the snapshot is written last, after the purged and committed ids, so it is
//! the commit point: a store seeded half-way has no snapshot record and no vote, and a branch
//! never resumes from it (the restore removes the directory on any error anyway).

use std::collections::{BTreeMap, BTreeSet};

use openraft::{CommittedLeaderId, Membership, SnapshotMeta, StoredMembership};

use super::*;

/// What a restored branch starts from.
#[derive(Debug, Clone, Copy)]
pub struct Seed<'a> {
    /// The ledger's snapshot encoding (checked by the caller: it must decode).
    pub ledger_snapshot: &'a [u8],
    /// The log index the ledger reflects.
    pub applied_index: u64,
    /// The new cluster's voters and learners: id -> `host:port`.
    pub voters: &'a BTreeMap<NodeId, String>,
    pub learners: &'a BTreeMap<NodeId, String>,
}

impl DurableStore {
    /// Writes `seed` into this store, which must be empty (no vote, no snapshot, no log, no
    /// identity). See the module documentation for what is written.
    pub fn seed(&self, seed: &Seed<'_>) -> Result<(), DurableError> {
        let path = self.path.to_path_buf();
        let refused = |why: String| DurableError::Seed {
            path: path.clone(),
            why,
        };
        let log_state_empty = self
            .get_meta::<Option<LogId>>(LAST_PURGED)
            .map_err(|e| refused(e.to_string()))?
            .flatten()
            .is_none();
        if self.is_initialized()? || self.identity()?.is_some() || !log_state_empty {
            return Err(refused("it already holds a branch's state".to_string()));
        }
        if seed.voters.is_empty() {
            return Err(refused("a cluster needs at least one voter".to_string()));
        }
        let log_id = LogId::new(CommittedLeaderId::new(0, 0), seed.applied_index);
        let voter_ids: BTreeSet<NodeId> = seed.voters.keys().copied().collect();
        let nodes: BTreeMap<NodeId, BasicNode> = seed
            .voters
            .iter()
            .chain(seed.learners)
            .map(|(&id, addr)| (id, BasicNode::new(addr)))
            .collect();
        let meta = SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(
                Some(log_id),
                Membership::new(vec![voter_ids], nodes),
            ),
            snapshot_id: format!("{}-{}-1", log_id.leader_id, log_id.index),
        };
        let stored = |e: StorageError| refused(e.to_string());
        self.put_meta(LAST_PURGED, &Some(log_id)).map_err(stored)?;
        self.put_meta(COMMITTED, &Some(log_id)).map_err(stored)?;
        if let Ok(mut purged) = self.purged.lock() {
            *purged = Some(log_id);
        }
        self.write_snapshot(&meta, seed.ledger_snapshot, 1)
            .map_err(stored)?;
        Ok(())
    }
}
