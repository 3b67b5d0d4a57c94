//! Check 3, convergence: every branch's final state has the same balances and the same digest.
//! Linearizability then takes the first final state as a read of every account after
//! everything else, which is only sound once the branches agree.

use std::collections::BTreeSet;

use crate::ledger::AccountId;

use super::pairing::FinalState;
use super::violation::Violation;

pub(super) fn check_convergence(finals: &[FinalState]) -> Result<(), Violation> {
    let Some((first, others)) = finals.split_first() else {
        return Ok(());
    };
    for other in others {
        let accounts: BTreeSet<&AccountId> =
            first.balances.keys().chain(other.balances.keys()).collect();
        for &account in accounts {
            let balance = first.balances.get(&account).copied();
            let other_balance = other.balances.get(&account).copied();
            if balance != other_balance {
                return Err(Violation::Divergence {
                    branch: first.branch,
                    other_branch: other.branch,
                    account,
                    balance,
                    other_balance,
                });
            }
        }
        if first.digest != other.digest {
            return Err(Violation::DigestMismatch {
                branch: first.branch,
                other_branch: other.branch,
                digest: first.digest.clone(),
                other_digest: other.digest.clone(),
            });
        }
    }
    Ok(())
}
