//! The exactly-once check: every write a customer had answered was applied exactly once, every
//! write of unknown outcome at most once, every refused one never.
//!
//! The witness is the committed log itself, as the branches applied it: each branch's state
//! machine records every proposal it applies, by log index, with the request ids it was
//! proposed under ([`SimRecord`]; kept outside the host, so a crash loses none). Every committed
//! entry was applied by some branch (a snapshot is only ever built from applied entries), so the
//! union over the branches is the whole committed log. Then:
//! - two branches (or two incarnations of one) that applied different proposals at one index
//!   are a violation (the log is not one log);
//! - a write answered to its customer must be in the log under its request id, and a refused
//!   one must not;
//! - the log replayed into a fresh [`Ledger`], which applies each request id at most once, must
//!   give the converged branches' balances. A branch ledger that applied a retried request a
//!   second time holds other balances (unless the second time changed nothing, which is no harm).

use std::collections::{BTreeMap, BTreeSet};

use super::customers::Fate;
use crate::ledger::{Command, Ledger, Proposal, RequestId};
use crate::replication::store::SimRecord;
use crate::replication::NodeId;

/// Violations of exactly-once application; `converged` is the branches' common ledger.
pub fn check(
    records: &[(NodeId, &SimRecord)],
    writes: &[(RequestId, Fate)],
    converged: &Ledger,
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut log: BTreeMap<u64, (NodeId, Proposal)> = BTreeMap::new();
    for &(id, record) in records {
        if let Ok(conflicts) = record.conflicts.lock() {
            for conflict in conflicts.iter().take(3) {
                violations.push(format!("branch {id} applied two proposals at {conflict}"));
            }
        }
        let Ok(journal) = record.journal.lock() else {
            violations.push(format!("branch {id}'s journal is poisoned"));
            continue;
        };
        for (&index, proposal) in journal.iter() {
            match log.get(&index) {
                Some((other, earlier)) if earlier != proposal => violations.push(format!(
                    "branches {other} and {id} applied different proposals at index {index}: {earlier:?} / {proposal:?}"
                )),
                Some(_) => {}
                None => {
                    log.insert(index, (id, proposal.clone()));
                }
            }
        }
    }

    let mut in_log: BTreeSet<RequestId> = BTreeSet::new();
    let mut replayed = Ledger::new();
    for (_, proposal) in log.values() {
        in_log.insert(proposal.request_id);
        if let Command::Batch(items) = &proposal.command {
            in_log.extend(items.iter().map(|item| item.request_id));
        }
        replayed.apply_proposal(proposal);
    }
    for &(request_id, fate) in writes {
        let logged = in_log.contains(&request_id);
        let wrong = match fate {
            Fate::Answered if !logged => Some("was answered but is not in the committed log"),
            Fate::Refused if logged => Some("was refused but is in the committed log"),
            _ => None,
        };
        if let Some(wrong) = wrong {
            violations.push(format!(
                "request {}:{} {wrong}",
                request_id.origin, request_id.sequence
            ));
        }
    }
    if replayed.state_digest() != converged.state_digest() {
        let accounts: BTreeSet<_> = replayed
            .accounts()
            .keys()
            .chain(converged.accounts().keys())
            .copied()
            .collect();
        let differ: Vec<String> = accounts
            .into_iter()
            .filter(|&a| replayed.balance(a) != converged.balance(a))
            .map(|a| {
                format!(
                    "account {a}: {:?} on the branches, {:?} applying each request id once",
                    converged.balance(a),
                    replayed.balance(a)
                )
            })
            .collect();
        violations.push(format!(
            "the branches' ledger is not the committed log applied with each request id at most once (a request applied twice?): {}",
            differ.join("; ")
        ));
    }
    violations
}
