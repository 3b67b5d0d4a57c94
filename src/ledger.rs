//! The ledger: the bank's pure, deterministic state machine.
//!
//! Every branch holds one `Ledger` and applies the same [`Command`]s in the same (Raft log)
//! order, so every branch holds the same balances. `apply` does no I/O, reads no clock and draws
//! no random number: that is what makes replicas identical. Business failures (insufficient
//! funds, a balance over its limit, an unknown account) are [`Outcome`]s, not errors: they are
//! replicated results like any other and never make replicas diverge.
//!
//! After every apply the ledger asserts its invariants (TigerBeetle-style: assertions are
//! documentation that runs). A broken invariant means a bug in this file, and a replica that
//! continued past it would spread wrong balances, so it panics instead:
//! - every balance is within `0..=balance_max` (balances are `u64`, so never negative);
//! - the sum of all balances equals money opened + deposited − withdrawn.
//!
//! Money is integer minor units (`u64`), arithmetic is checked, never floats.
//!
//! Every command arrives in a [`Proposal`] with a [`RequestId`]. The ledger remembers the last
//! [`REQUEST_IDS_MAX`] request ids with their outcomes, so a proposal retried with the same id
//! (after a timeout or a leader change) is applied at most once and answers its first outcome.
//! An id older than that window is forgotten and would apply again: retries must happen within
//! it (branches retry for seconds, far inside it).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Identifies an account. The original course project keeps a single shared balance: that is
/// [`ORIGINAL_ACCOUNT`].
pub type AccountId = u64;

/// The account behind the original `Branch.MsgDelivery` API.
pub const ORIGINAL_ACCOUNT: AccountId = 0;

/// The original API carries balances as `int32`, so its account can never hold more.
pub const ORIGINAL_BALANCE_MAX: u64 = i32::MAX as u64;

/// At most this many request ids are remembered (oldest forgotten first, in log order).
pub const REQUEST_IDS_MAX: usize = 100_000;

/// Identifies one request for exactly-once application: `origin` is unique per proposer
/// incarnation (random), `sequence` counts that proposer's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub origin: u64,
    pub sequence: u64,
}

/// What goes into the Raft log: a command and the id that makes retrying it safe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub request_id: RequestId,
    pub command: Command,
}

/// A state change, proposed through Raft and applied by every branch in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create an account with an opening balance. Refused if it exists.
    Open {
        account: AccountId,
        balance_minor_units: u64,
        balance_max_minor_units: u64,
    },
    Deposit {
        account: AccountId,
        amount_minor_units: u64,
    },
    Withdraw {
        account: AccountId,
        amount_minor_units: u64,
    },
}

/// The replicated result of applying one command (or one non-command log entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Opened {
        balance_minor_units: u64,
    },
    Deposited {
        balance_minor_units: u64,
    },
    Withdrawn {
        balance_minor_units: u64,
    },
    /// A withdrawal larger than the balance; nothing changed.
    InsufficientFunds {
        balance_minor_units: u64,
    },
    /// A deposit that would take the balance over its limit; nothing changed.
    BalanceLimitExceeded {
        balance_minor_units: u64,
    },
    /// `Open` of an account that exists; nothing changed.
    AccountExists {
        balance_minor_units: u64,
    },
    UnknownAccount,
    /// A request id seen before with a different command; nothing changed.
    RequestIdReused,
    /// A zero amount, or an opening balance above its own limit; nothing changed.
    InvalidAmount,
    /// Log entries that carry no command (Raft's blank and membership entries).
    NoCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance_minor_units: u64,
    pub balance_max_minor_units: u64,
}

/// All accounts plus the running totals the conservation invariant is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    accounts: BTreeMap<AccountId, Account>,
    /// Sums are `u128`: a `u64` balance per account cannot overflow them in any realistic run.
    opened_total_minor_units: u128,
    deposited_total_minor_units: u128,
    withdrawn_total_minor_units: u128,
    /// Remembered requests: origin -> sequence -> (command, outcome). Nested maps of integer
    /// keys so the ledger serialises to plain JSON in snapshots.
    requests: BTreeMap<u64, BTreeMap<u64, (Command, Outcome)>>,
    /// The remembered request ids, oldest first, for eviction.
    requests_order: VecDeque<RequestId>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn balance(&self, account: AccountId) -> Option<u64> {
        self.accounts.get(&account).map(|a| a.balance_minor_units)
    }

    pub fn accounts(&self) -> &BTreeMap<AccountId, Account> {
        &self.accounts
    }

    /// Applies a proposal at most once per request id: a repeated id answers the outcome of
    /// its first application and changes nothing. Deterministic.
    pub fn apply_proposal(&mut self, proposal: &Proposal) -> Outcome {
        let RequestId { origin, sequence } = proposal.request_id;
        if let Some((command, outcome)) = self.requests.get(&origin).and_then(|s| s.get(&sequence))
        {
            return if *command == proposal.command {
                outcome.clone()
            } else {
                Outcome::RequestIdReused
            };
        }
        let outcome = self.apply(&proposal.command);
        self.requests
            .entry(origin)
            .or_default()
            .insert(sequence, (proposal.command.clone(), outcome.clone()));
        self.requests_order.push_back(proposal.request_id);
        while self.requests_order.len() > REQUEST_IDS_MAX {
            if let Some(oldest) = self.requests_order.pop_front() {
                if let Some(sequences) = self.requests.get_mut(&oldest.origin) {
                    sequences.remove(&oldest.sequence);
                    if sequences.is_empty() {
                        self.requests.remove(&oldest.origin);
                    }
                }
            }
        }
        outcome
    }

    /// Applies one command. Deterministic: the same ledger and command give the same outcome
    /// and the same new ledger on every branch.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let outcome = match *command {
            Command::Open {
                account,
                balance_minor_units,
                balance_max_minor_units,
            } => self.open(account, balance_minor_units, balance_max_minor_units),
            Command::Deposit {
                account,
                amount_minor_units,
            } => self.deposit(account, amount_minor_units),
            Command::Withdraw {
                account,
                amount_minor_units,
            } => self.withdraw(account, amount_minor_units),
        };
        self.assert_invariants();
        outcome
    }

    fn open(&mut self, account: AccountId, balance: u64, balance_max: u64) -> Outcome {
        if let Some(existing) = self.accounts.get(&account) {
            return Outcome::AccountExists {
                balance_minor_units: existing.balance_minor_units,
            };
        }
        if balance > balance_max {
            return Outcome::InvalidAmount;
        }
        self.accounts.insert(
            account,
            Account {
                balance_minor_units: balance,
                balance_max_minor_units: balance_max,
            },
        );
        self.opened_total_minor_units += u128::from(balance);
        Outcome::Opened {
            balance_minor_units: balance,
        }
    }

    fn deposit(&mut self, account: AccountId, amount: u64) -> Outcome {
        if amount == 0 {
            return Outcome::InvalidAmount;
        }
        let Some(entry) = self.accounts.get_mut(&account) else {
            return Outcome::UnknownAccount;
        };
        let balance_before = entry.balance_minor_units;
        match balance_before.checked_add(amount) {
            Some(balance) if balance <= entry.balance_max_minor_units => {
                entry.balance_minor_units = balance;
                self.deposited_total_minor_units += u128::from(amount);
                Outcome::Deposited {
                    balance_minor_units: balance,
                }
            }
            _ => Outcome::BalanceLimitExceeded {
                balance_minor_units: balance_before,
            },
        }
    }

    fn withdraw(&mut self, account: AccountId, amount: u64) -> Outcome {
        if amount == 0 {
            return Outcome::InvalidAmount;
        }
        let Some(entry) = self.accounts.get_mut(&account) else {
            return Outcome::UnknownAccount;
        };
        let balance_before = entry.balance_minor_units;
        match balance_before.checked_sub(amount) {
            Some(balance) => {
                entry.balance_minor_units = balance;
                self.withdrawn_total_minor_units += u128::from(amount);
                Outcome::Withdrawn {
                    balance_minor_units: balance,
                }
            }
            None => Outcome::InsufficientFunds {
                balance_minor_units: balance_before,
            },
        }
    }

    /// Panics if an invariant does not hold: see the module documentation for why.
    fn assert_invariants(&self) {
        let mut sum: u128 = 0;
        for (id, account) in &self.accounts {
            assert!(
                account.balance_minor_units <= account.balance_max_minor_units,
                "ledger invariant broken: account {id} holds {} over its limit {}",
                account.balance_minor_units,
                account.balance_max_minor_units
            );
            sum += u128::from(account.balance_minor_units);
        }
        let expected = (self.opened_total_minor_units + self.deposited_total_minor_units)
            .checked_sub(self.withdrawn_total_minor_units);
        assert_eq!(
            Some(sum),
            expected,
            "ledger invariant broken: balances sum to {sum}, but opened {} + deposited {} - withdrawn {}",
            self.opened_total_minor_units,
            self.deposited_total_minor_units,
            self.withdrawn_total_minor_units
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_with(balance: u64) -> Ledger {
        let mut ledger = Ledger::new();
        let outcome = ledger.apply(&Command::Open {
            account: ORIGINAL_ACCOUNT,
            balance_minor_units: balance,
            balance_max_minor_units: ORIGINAL_BALANCE_MAX,
        });
        assert_eq!(
            outcome,
            Outcome::Opened {
                balance_minor_units: balance
            }
        );
        ledger
    }

    fn deposit(amount: u64) -> Command {
        Command::Deposit {
            account: ORIGINAL_ACCOUNT,
            amount_minor_units: amount,
        }
    }

    fn withdraw(amount: u64) -> Command {
        Command::Withdraw {
            account: ORIGINAL_ACCOUNT,
            amount_minor_units: amount,
        }
    }

    #[test]
    fn project_1_sequence() {
        let mut ledger = ledger_with(400);
        assert_eq!(
            ledger.apply(&deposit(170)),
            Outcome::Deposited {
                balance_minor_units: 570
            }
        );
        assert_eq!(
            ledger.apply(&withdraw(70)),
            Outcome::Withdrawn {
                balance_minor_units: 500
            }
        );
        assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(500));
    }

    #[test]
    fn overdraw_is_an_outcome_and_changes_nothing() {
        let mut ledger = ledger_with(100);
        let before = ledger.clone();
        assert_eq!(
            ledger.apply(&withdraw(101)),
            Outcome::InsufficientFunds {
                balance_minor_units: 100
            }
        );
        assert_eq!(ledger, before);
        assert_eq!(
            ledger.apply(&withdraw(100)),
            Outcome::Withdrawn {
                balance_minor_units: 0
            }
        );
    }

    #[test]
    fn deposit_over_the_int32_limit_is_refused_not_wrapped() {
        let mut ledger = ledger_with(ORIGINAL_BALANCE_MAX - 5);
        let before = ledger.clone();
        assert_eq!(
            ledger.apply(&deposit(6)),
            Outcome::BalanceLimitExceeded {
                balance_minor_units: ORIGINAL_BALANCE_MAX - 5
            }
        );
        assert_eq!(ledger, before);
        assert_eq!(
            ledger.apply(&deposit(5)),
            Outcome::Deposited {
                balance_minor_units: ORIGINAL_BALANCE_MAX
            }
        );
    }

    #[test]
    fn u64_overflow_is_refused() {
        let mut ledger = Ledger::new();
        ledger.apply(&Command::Open {
            account: 7,
            balance_minor_units: u64::MAX - 1,
            balance_max_minor_units: u64::MAX,
        });
        assert_eq!(
            ledger.apply(&Command::Deposit {
                account: 7,
                amount_minor_units: 2
            }),
            Outcome::BalanceLimitExceeded {
                balance_minor_units: u64::MAX - 1
            }
        );
    }

    #[test]
    fn zero_amounts_unknown_accounts_and_reopen_are_refused() {
        let mut ledger = ledger_with(10);
        let before = ledger.clone();
        assert_eq!(ledger.apply(&deposit(0)), Outcome::InvalidAmount);
        assert_eq!(ledger.apply(&withdraw(0)), Outcome::InvalidAmount);
        assert_eq!(
            ledger.apply(&Command::Deposit {
                account: 99,
                amount_minor_units: 1
            }),
            Outcome::UnknownAccount
        );
        assert_eq!(
            ledger.apply(&Command::Open {
                account: ORIGINAL_ACCOUNT,
                balance_minor_units: 5,
                balance_max_minor_units: 5
            }),
            Outcome::AccountExists {
                balance_minor_units: 10
            }
        );
        assert_eq!(ledger, before);
    }

    #[test]
    fn a_repeated_request_id_applies_once() {
        let mut ledger = ledger_with(100);
        let proposal = Proposal {
            request_id: RequestId {
                origin: 7,
                sequence: 1,
            },
            command: deposit(50),
        };
        let first = ledger.apply_proposal(&proposal);
        assert_eq!(
            first,
            Outcome::Deposited {
                balance_minor_units: 150
            }
        );
        assert_eq!(ledger.apply_proposal(&proposal), first);
        assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(150));
        let reused = Proposal {
            request_id: proposal.request_id,
            command: withdraw(50),
        };
        assert_eq!(ledger.apply_proposal(&reused), Outcome::RequestIdReused);
        assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(150));
        // The same sequence from another origin is another request.
        let other = Proposal {
            request_id: RequestId {
                origin: 8,
                sequence: 1,
            },
            command: deposit(50),
        };
        assert_eq!(
            ledger.apply_proposal(&other),
            Outcome::Deposited {
                balance_minor_units: 200
            }
        );
    }

    #[test]
    fn remembered_request_ids_are_bounded() {
        let mut ledger = ledger_with(0);
        let total = REQUEST_IDS_MAX as u64 + 10;
        for sequence in 0..total {
            ledger.apply_proposal(&Proposal {
                request_id: RequestId {
                    origin: 1,
                    sequence,
                },
                command: deposit(1),
            });
        }
        assert_eq!(ledger.requests_order.len(), REQUEST_IDS_MAX);
        assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(total));
        // The oldest ids are forgotten, the newest still deduplicate.
        let newest = Proposal {
            request_id: RequestId {
                origin: 1,
                sequence: total - 1,
            },
            command: deposit(1),
        };
        assert_eq!(
            ledger.apply_proposal(&newest),
            Outcome::Deposited {
                balance_minor_units: total
            }
        );
        assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(total));
    }

    /// A deterministic pseudo-random walk: the balance never goes negative and always equals
    /// the opening balance plus successful deposits minus successful withdrawals.
    #[test]
    fn random_walk_conserves_money() {
        let mut ledger = ledger_with(1_000);
        let mut expected: u64 = 1_000;
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let amount = seed % 300 + 1;
            if seed % 2 == 0 {
                if let Outcome::Deposited { .. } = ledger.apply(&deposit(amount)) {
                    expected += amount;
                }
            } else {
                match ledger.apply(&withdraw(amount)) {
                    Outcome::Withdrawn { .. } => expected -= amount,
                    Outcome::InsufficientFunds {
                        balance_minor_units,
                    } => assert!(balance_minor_units < amount),
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
            assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(expected));
        }
    }
}
