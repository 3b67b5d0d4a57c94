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
//!
//! The same replay checks the reads below linearizable ([`WeakRead`]), which the history
//! checker cannot judge: each must show exactly the balances after the log up to the index the
//! branch had applied when it read (a replica's state, never a mix), and a read-your-writes
//! read must have been served at or after its client's last write.

use std::collections::{BTreeMap, BTreeSet};

use super::customers::{Fate, WeakRead};
use super::record::SimRecord;
use crate::client::ReadLevel;
use crate::ledger::{Command, Ledger, Proposal, RequestId};
use crate::BranchId;

/// Violations of exactly-once application; `converged` is the branches' common ledger.
pub fn check(
    records: &[(BranchId, &SimRecord)],
    writes: &[(RequestId, Fate)],
    reads: &[WeakRead],
    converged: &Ledger,
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut log: BTreeMap<u64, (BranchId, Proposal)> = BTreeMap::new();
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
    // The reads in the order of the index they were served at, each checked once the replay
    // reaches it.
    let mut reads: Vec<&WeakRead> = reads.iter().collect();
    reads.sort_by_key(|read| read.applied_index);
    let mut next_read = 0;
    let mut check_reads_up_to = |index: u64, replayed: &Ledger, violations: &mut Vec<String>| {
        while let Some(read) = reads.get(next_read).filter(|r| r.applied_index < index) {
            next_read += 1;
            let expected: BTreeMap<_, _> = read
                .balances
                .keys()
                .filter_map(|&a| replayed.balance(a).map(|b| (a, b)))
                .collect();
            if expected != read.balances {
                violations.push(format!(
                    "a {:?} read at {} µs saw {:?} at applied index {}, where the log gives {expected:?}",
                    read.level, read.at_us, read.balances, read.applied_index
                ));
            }
            if read.level == ReadLevel::ReadYourWrites && read.applied_index < read.token {
                violations.push(format!(
                    "a read-your-writes read at {} µs was served at index {}, before its client's write at {}",
                    read.at_us, read.applied_index, read.token
                ));
            }
        }
    };
    for (&index, (_, proposal)) in &log {
        check_reads_up_to(index, &replayed, &mut violations);
        in_log.insert(proposal.request_id);
        if let Command::Batch(items) = &proposal.command {
            in_log.extend(items.iter().map(|item| item.request_id));
        }
        replayed.apply_proposal(proposal);
    }
    check_reads_up_to(u64::MAX, &replayed, &mut violations);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sequence: u64) -> RequestId {
        RequestId {
            origin: 7,
            sequence,
        }
    }

    fn proposal(sequence: u64, command: Command) -> Proposal {
        Proposal {
            request_id: id(sequence),
            command,
        }
    }

    fn deposit(amount: u64) -> Command {
        Command::Deposit {
            account: 1,
            amount_minor_units: amount,
        }
    }

    /// A log: open account 1 at 10 (index 1), deposit 5 (index 2), the deposit retried under
    /// its id (index 3), and the ledger that applies it, once or (broken) twice.
    fn log_and_ledger(applied_twice: bool) -> (SimRecord, Ledger) {
        let record = SimRecord::default();
        let log = [
            proposal(
                1,
                Command::Open {
                    account: 1,
                    balance_minor_units: 10,
                    overdraft_limit_minor_units: 0,
                    balance_max_minor_units: 1_000,
                },
            ),
            proposal(2, deposit(5)),
            proposal(2, deposit(5)),
        ];
        let mut ledger = Ledger::new();
        if let Ok(mut journal) = record.journal.lock() {
            for (index, proposal) in (1..).zip(&log) {
                journal.insert(index, proposal.clone());
                let mut applied = proposal.clone();
                if applied_twice {
                    applied.request_id = id(100 + index);
                }
                ledger.apply_proposal(&applied);
            }
        }
        (record, ledger)
    }

    fn read(level: ReadLevel, token: u64, applied_index: u64, balance: i64) -> WeakRead {
        WeakRead {
            level,
            token,
            applied_index,
            balances: BTreeMap::from([(1, balance)]),
            at_us: 0,
        }
    }

    #[test]
    fn a_retry_applied_once_passes_and_twice_is_caught() {
        let writes = [(id(2), Fate::Answered)];
        let (record, ledger) = log_and_ledger(false);
        assert_eq!(
            check(&[(1, &record)], &writes, &[], &ledger),
            Vec::<String>::new()
        );
        let (record, ledger) = log_and_ledger(true);
        assert_eq!(check(&[(1, &record)], &writes, &[], &ledger).len(), 1);
    }

    #[test]
    fn an_answered_write_missing_from_the_log_is_caught() {
        let (record, ledger) = log_and_ledger(false);
        let writes = [(id(3), Fate::Answered), (id(4), Fate::Unknown)];
        assert_eq!(check(&[(1, &record)], &writes, &[], &ledger).len(), 1);
    }

    #[test]
    fn weak_reads_must_show_the_state_at_their_index() {
        let (record, ledger) = log_and_ledger(false);
        let good = [
            read(ReadLevel::Local, 0, 1, 10),
            read(ReadLevel::Local, 0, 2, 15),
            read(ReadLevel::ReadYourWrites, 2, 3, 15),
            read(ReadLevel::ReadYourWrites, 2, 9, 15),
        ];
        assert_eq!(
            check(&[(1, &record)], &[], &good, &ledger),
            Vec::<String>::new()
        );
        let stale_for_its_index = [read(ReadLevel::Local, 0, 2, 10)];
        assert_eq!(
            check(&[(1, &record)], &[], &stale_for_its_index, &ledger).len(),
            1
        );
        let before_its_own_write = [read(ReadLevel::ReadYourWrites, 2, 1, 10)];
        assert_eq!(
            check(&[(1, &record)], &[], &before_its_own_write, &ledger).len(),
            1
        );
    }
}
