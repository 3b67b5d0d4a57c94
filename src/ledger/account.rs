//! Accounts: an account's id, its balance and the limits that balance must stay within.
//!
//! Every deposit, withdrawal and transfer asks `Account::balance_after` whether the new balance
//! stays within the account's limits, so the limits are checked in one place, exactly (in
//! `i128`) and before anything changes; see the ledger's module docs on accounts and money.

use serde::{Deserialize, Serialize};

/// Identifies an account. The original course project keeps a single shared balance: that is
/// [`ORIGINAL_ACCOUNT`].
pub type AccountId = u64;

/// The account behind the original `Branch.MsgDelivery` API.
pub const ORIGINAL_ACCOUNT: AccountId = 0;

/// The original API carries balances as `int32`, so its account can never hold more.
pub const ORIGINAL_BALANCE_MAX: u64 = i32::MAX as u64;

/// An open account: its balance and its limits (`balance_min <= 0 <= balance_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance_minor_units: i64,
    /// `<= 0`: minus the overdraft limit.
    pub balance_min_minor_units: i64,
    /// `>= 0`.
    pub balance_max_minor_units: i64,
}

/// Why a balance change was refused.
pub(super) enum LimitBreach {
    BelowMin,
    AboveMax,
}

impl Account {
    /// The balance after adding `delta`, if it stays within this account's limits. `i128`
    /// holds any `i64 ± u64` exactly.
    pub(super) fn balance_after(&self, delta_minor_units: i128) -> Result<i64, LimitBreach> {
        let after = i128::from(self.balance_minor_units)
            .checked_add(delta_minor_units)
            .ok_or(if delta_minor_units < 0 {
                LimitBreach::BelowMin
            } else {
                LimitBreach::AboveMax
            })?;
        if after < i128::from(self.balance_min_minor_units) {
            return Err(LimitBreach::BelowMin);
        }
        if after > i128::from(self.balance_max_minor_units) {
            return Err(LimitBreach::AboveMax);
        }
        // Within [min, max], both `i64`: the conversion cannot fail.
        i64::try_from(after).map_err(|_| LimitBreach::AboveMax)
    }
}
