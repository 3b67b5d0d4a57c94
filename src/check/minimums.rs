//! Check 2, minimum balances: no balance seen anywhere (an ok result, a read, a refusal, a
//! final state) is below its account's minimum. Cheap and local, so it runs before the search
//! and names the exact operation that saw the balance.

use crate::ledger::AccountId;

use super::history::{Observation, Op};
use super::pairing::{Operation, Outcome, Recorded};
use super::violation::{Subject, Violation};

pub(super) fn check_minimums(recorded: &Recorded) -> Result<(), Violation> {
    let minimums = recorded.minimums();
    let check = |account: AccountId, balance: i64, seen_in: &dyn Fn() -> Subject| match minimums
        .get(&account)
    {
        Some(&balance_min) if balance < balance_min => Err(Violation::BelowMinimum {
            account,
            balance,
            balance_min,
            seen_in: seen_in(),
        }),
        _ => Ok(()),
    };
    for operation in &recorded.operations {
        let subject = || operation.subject();
        for (account, balance) in observed_balances(operation) {
            check(account, balance, &subject)?;
        }
    }
    for state in &recorded.finals {
        for (&account, &balance) in &state.balances {
            check(account, balance, &|| Subject::Final {
                branch: state.branch,
            })?;
        }
    }
    Ok(())
}

/// Every (account, balance) an operation's completion reports.
fn observed_balances(operation: &Operation) -> Vec<(AccountId, i64)> {
    match (&operation.op, &operation.outcome) {
        (
            Op::Open { account, .. } | Op::Deposit { account, .. } | Op::Withdraw { account, .. },
            Outcome::Ok(result),
        ) => result.balance.map(|b| (*account, b)).into_iter().collect(),
        (Op::Transfer { from, to, .. }, Outcome::Ok(result)) => {
            let from = result.from_balance.map(|b| (*from, b));
            let to = result.to_balance.map(|b| (*to, b));
            from.into_iter().chain(to).collect()
        }
        (Op::Read { .. }, Outcome::Ok(result)) => result
            .balances
            .iter()
            .flatten()
            .map(|(account, balance)| (*account, *balance))
            .collect(),
        (
            Op::Withdraw { account: from, .. } | Op::Transfer { from, .. },
            Outcome::Fail(Some(Observation::InsufficientFunds {
                balance: Some(balance),
            })),
        ) => vec![(*from, *balance)],
        _ => Vec::new(),
    }
}
