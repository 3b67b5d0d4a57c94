//! What the simulator records of each branch's state machine, through the state machine's
//! [`ApplyObserver`] hook: kept outside the simulated host, so a crash loses none of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::ledger::{Command, Proposal, RequestId};
use crate::raft::state_machine::ApplyObserver;

/// What the simulator (`crate::sim`) records of one branch's state machine, across its crashes:
/// every proposal applied, by log index (the exactly-once check replays them), and how many
/// snapshots were built, installed and restarted from. With `ignore_request_ids`, the
/// deliberately broken variant: the ledger is shown every proposal under a fresh request id of
/// its own, so it cannot recognise a retry and applies it again.
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

impl ApplyObserver for SimRecord {
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

    fn snapshot_built(&self) {
        self.snapshots_built.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot_installed(&self) {
        self.snapshots_installed.fetch_add(1, Ordering::Relaxed);
    }

    fn restarted_from_snapshot(&self) {
        self.restarts_from_snapshot.fetch_add(1, Ordering::Relaxed);
    }
}

/// `proposal` under request ids no one else uses, fresh at every log index (a batch's items
/// included): a ledger fed these cannot tell a retry from a new request. Deterministic, so the
/// broken replicas still agree with each other.
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
