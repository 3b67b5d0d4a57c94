//! The model of one account that the linearizability search runs: its state (`Model`), what
//! each operation does to or says about it (`Step`: the bank's rules on opens, minimums and
//! refusals), and the per-account sub-operations (`SubOp`) an operation is split into. Kept
//! apart from the search, which only applies steps and compares states.

/// One account's model state: `None` until opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct AccountState {
    pub(super) balance: i64,
    pub(super) balance_min: i64,
}

pub(super) type Model = Option<AccountState>;

/// What one operation does to, or says about, one account.
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    Open {
        balance: i64,
        balance_min: i64,
        observed: Option<i64>,
    },
    /// A deposit (`floor: false`) or a withdrawal (`floor: true`: refused below the minimum).
    Change {
        delta: i64,
        floor: bool,
        observed: Option<i64>,
    },
    /// `observed: None`: the account did not exist.
    Read { observed: Option<i64> },
    /// Refused: the balance minus `amount` was below the minimum.
    Refused { amount: i64, observed: Option<i64> },
}

impl Step {
    /// The state after this step, or `None` if the step cannot happen in `state`.
    pub(super) fn apply(self, state: Model) -> Option<Model> {
        match (self, state) {
            (
                Step::Open {
                    balance,
                    balance_min,
                    observed,
                },
                None,
            ) => (observed.is_none_or(|b| b == balance) && balance >= balance_min).then_some(Some(
                AccountState {
                    balance,
                    balance_min,
                },
            )),
            (Step::Open { .. }, Some(_)) => None,
            (
                Step::Change {
                    delta,
                    floor,
                    observed,
                },
                Some(state),
            ) => {
                let balance = state.balance.checked_add(delta)?;
                let allowed = (!floor || balance >= state.balance_min)
                    && observed.is_none_or(|b| b == balance);
                allowed.then_some(Some(AccountState { balance, ..state }))
            }
            (Step::Change { .. }, None) => None,
            (Step::Read { observed }, state) => {
                (observed == state.map(|s| s.balance)).then_some(state)
            }
            (Step::Refused { amount, observed }, Some(state)) => {
                let refused = state
                    .balance
                    .checked_sub(amount)
                    .is_none_or(|after| after < state.balance_min);
                (refused && observed.is_none_or(|b| b == state.balance)).then_some(Some(state))
            }
            (Step::Refused { .. }, None) => None,
        }
    }

    /// The balance this step can only happen at (`Some(None)`: the account must not exist), or
    /// `None` if it can happen at several.
    pub(super) fn need(self) -> Option<Option<i64>> {
        match self {
            Step::Open { .. } => Some(None),
            Step::Change {
                delta,
                observed: Some(after),
                ..
            } => after.checked_sub(delta).map(Some),
            Step::Read { observed } => Some(observed),
            Step::Refused {
                observed: Some(balance),
                ..
            } => Some(Some(balance)),
            Step::Change { observed: None, .. } | Step::Refused { observed: None, .. } => None,
        }
    }

    pub(super) fn claim(self) -> String {
        match self {
            Step::Open { balance, .. } => format!("opens it with balance {balance}"),
            Step::Change {
                delta,
                observed: Some(after),
                ..
            } => format!("changes it by {delta} to {after}"),
            Step::Change { delta, .. } => format!("changes it by {delta}"),
            Step::Read {
                observed: Some(balance),
            } => format!("reads balance {balance}"),
            Step::Read { observed: None } => "finds no such account".to_string(),
            Step::Refused {
                amount,
                observed: Some(balance),
            } => format!("is refused taking {amount} for insufficient funds at balance {balance}"),
            Step::Refused { amount, .. } => {
                format!("is refused taking {amount} for insufficient funds")
            }
        }
    }
}

/// Where a sub-operation comes from: an operation, or a branch's final state.
#[derive(Clone, Copy, Debug)]
pub(super) enum Origin {
    Op(usize),
    Final(usize),
}

/// One operation's step on one account, with its interval.
#[derive(Clone, Copy, Debug)]
pub(super) struct SubOp {
    pub(super) origin: Origin,
    pub(super) call_us: u64,
    /// `None`: indeterminate; it may take effect at any time after its call, or never.
    pub(super) return_us: Option<u64>,
    pub(super) step: Step,
}
