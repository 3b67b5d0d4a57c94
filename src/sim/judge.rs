//! The judge of a finished run: the history (with each branch's final state) through
//! [`crate::check`], the original customers' calls, exactly-once application, convergence.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::customers::{self, Records};
use super::record::SimRecord;
use super::{exactly_once, original_account, Convergence, HostState, Plan, Stats};
use crate::check::HistoryEvent;
use crate::ledger::{AccountId, ORIGINAL_ACCOUNT};
use crate::BranchId;

/// What the judge found after a run.
pub(super) struct Judged {
    pub(super) history: Vec<HistoryEvent>,
    pub(super) final_states: Vec<(BranchId, Option<u64>, u64)>,
    pub(super) stats: Stats,
    pub(super) violations: Vec<String>,
}

/// Judges a finished run: the history (with each branch's final state) through
/// [`crate::check`], the original customers' calls, exactly-once application, convergence.
pub(super) fn judge(
    plan: &Plan,
    hosts: &BTreeMap<BranchId, HostState>,
    records: &Records,
    converged: Convergence,
) -> Judged {
    let accounts = &plan.accounts;
    let mut history: Vec<HistoryEvent> = vec![HistoryEvent::Init {
        balances: std::iter::once((ORIGINAL_ACCOUNT, accounts.original))
            .chain(accounts.bank.iter().map(|(&a, &b)| (a, b)))
            .collect(),
        balances_min: BTreeMap::new(),
    }];
    history.extend(records.history.events());
    let writes = records.writes.borrow().clone();
    let weak_reads = records.weak_reads.borrow().clone();
    let mut violations: Vec<String> = records.unexpected.borrow().iter().cloned().collect();
    let mut stats = Stats {
        writes_answered: writes
            .iter()
            .filter(|(_, fate)| *fate == customers::Fate::Answered)
            .count() as u64,
        writes_unknown: writes
            .iter()
            .filter(|(_, fate)| *fate == customers::Fate::Unknown)
            .count() as u64,
        weak_reads: weak_reads.len() as u64,
        original_calls: original_account::count(&history, ORIGINAL_ACCOUNT),
        refused_starts: hosts.values().filter(|state| state.refused.get()).count() as u64,
        ..Stats::default()
    };
    for state in hosts.values() {
        stats.snapshots_built += state.record.snapshots_built.load(Ordering::Relaxed);
        stats.snapshots_installed += state.record.snapshots_installed.load(Ordering::Relaxed);
        stats.restarts_from_snapshot += state.record.restarts_from_snapshot.load(Ordering::Relaxed);
    }
    let mut final_states = Vec::new();
    match converged.borrow_mut().take() {
        Some(Ok(states)) => {
            final_states = states
                .iter()
                .map(|(id, s, _)| {
                    (
                        *id,
                        s.last_applied.map(|l| l.index),
                        s.ledger.state_digest(),
                    )
                })
                .collect();
            stats.branches_purged = states.iter().filter(|(_, _, p)| p.is_some()).count() as u64;
            for (id, state, _) in &states {
                let balances = history_accounts(&history)
                    .into_iter()
                    .filter_map(|a| state.ledger.balance(a).map(|b| (a, b)))
                    .collect();
                history.push(HistoryEvent::Final {
                    branch: *id,
                    balances,
                    digest: Some(format!("{:016x}", state.ledger.state_digest())),
                });
            }
            match states.first() {
                Some((_, state, _)) => {
                    match state.ledger.balance(ORIGINAL_ACCOUNT) {
                        Some(balance) => violations.extend(original_account::judge(
                            &history,
                            ORIGINAL_ACCOUNT,
                            accounts.original,
                            balance,
                        )),
                        None => {
                            violations.push("the original account was never opened".to_string())
                        }
                    }
                    let records: Vec<(BranchId, &SimRecord)> = hosts
                        .iter()
                        .map(|(&id, host)| (id, host.record.as_ref()))
                        .collect();
                    violations.extend(exactly_once::check(
                        &records,
                        &writes,
                        &weak_reads,
                        &state.ledger,
                    ));
                }
                None => violations.push("no branch to compare".to_string()),
            }
        }
        Some(Err(why)) => violations.push(why),
        None => violations.push("the run ended before the branches were compared".to_string()),
    }
    let checked = crate::check::History::from_events(history.clone());
    if let Err(violation) = crate::check::check(&checked) {
        violations.push(format!("bank::check: {violation}"));
    }
    Judged {
        history,
        final_states,
        stats,
        violations,
    }
}

/// The accounts in the history's `init`.
fn history_accounts(history: &[HistoryEvent]) -> Vec<AccountId> {
    history
        .iter()
        .find_map(|event| match event {
            HistoryEvent::Init { balances, .. } => Some(balances.keys().copied().collect()),
            _ => None,
        })
        .unwrap_or_default()
}
