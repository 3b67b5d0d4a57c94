//! Property tests: random sequences of opens, deposits, withdrawals, transfers, batches, retries
//! and reused ids over a few accounts, checked against a small model of the request-id rules.
//!
//! Proptest keeps the seeds of past failures in `proptest-regressions/ledger/properties.txt`,
//! named after this file, and replays them first.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::requests::RequestLimits;
use super::*;

const ACCOUNTS: u64 = 4;
const ORIGINS: u64 = 3;
/// The origin of the opening proposals every run starts with.
const SETUP_ORIGIN: u64 = 100;

fn amount() -> impl Strategy<Value = u64> {
    // Multiples of 50 land exactly on the setup's limits (also multiples of 50) often.
    prop_oneof![
        8 => (0u64..8).prop_map(|k| k * 50),
        6 => 0u64..300,
        1 => Just(i64::MAX as u64),
        1 => Just(i64::MAX as u64 + 1),
        1 => Just(u64::MAX),
    ]
}

/// A command that is not a batch. Account `ACCOUNTS - 1` is never opened by the setup.
fn command() -> impl Strategy<Value = Command> {
    let account = 0..ACCOUNTS;
    prop_oneof![
        1 => (account.clone(), 0u64..500, prop_oneof![0u64..300, Just(u64::MAX)], prop_oneof![0u64..1_000, Just(i64::MAX as u64)])
            .prop_map(|(account, balance, overdraft, max)| Command::Open {
                account,
                balance_minor_units: balance,
                overdraft_limit_minor_units: overdraft,
                balance_max_minor_units: max,
            }),
        3 => (account.clone(), amount()).prop_map(|(account, amount_minor_units)| Command::Deposit { account, amount_minor_units }),
        3 => (account.clone(), amount()).prop_map(|(account, amount_minor_units)| Command::Withdraw { account, amount_minor_units }),
        5 => (account.clone(), account, amount()).prop_map(|(from, to, amount_minor_units)| Command::Transfer { from, to, amount_minor_units }),
    ]
}

/// One step of a run; ids are assigned when the run is built (increasing per origin).
#[derive(Debug, Clone)]
enum Step {
    Fresh(u64, Command),
    Batch(u64, Vec<BatchItem>),
    /// Retry an earlier proposal (index modulo how many there are).
    Retry(usize),
    /// An earlier proposal's id with another command.
    Reuse(usize, Command),
}

#[derive(Debug, Clone)]
enum BatchItem {
    Fresh(u64, Command),
    /// An earlier proposal as an item (a nested batch if it was a batch).
    Retry(usize),
}

fn batch_item() -> impl Strategy<Value = BatchItem> {
    prop_oneof![
        6 => (0..ORIGINS, command()).prop_map(|(origin, command)| BatchItem::Fresh(origin, command)),
        1 => any::<usize>().prop_map(BatchItem::Retry),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..ORIGINS, command()).prop_map(|(origin, command)| Step::Fresh(origin, command)),
        2 => (0..ORIGINS, prop::collection::vec(batch_item(), 0..6)).prop_map(|(origin, items)| Step::Batch(origin, items)),
        2 => any::<usize>().prop_map(Step::Retry),
        1 => (any::<usize>(), command()).prop_map(|(index, command)| Step::Reuse(index, command)),
    ]
}

/// Turns steps into proposals, after a setup that opens accounts `0..ACCOUNTS - 1`.
fn build(steps: &[Step]) -> Vec<Proposal> {
    let mut sequences: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_id = |origin: u64| {
        let sequence = sequences.entry(origin).or_insert(0);
        *sequence += 1;
        RequestId {
            origin,
            sequence: *sequence,
        }
    };
    let mut proposals: Vec<Proposal> = (0..ACCOUNTS - 1)
        .map(|account| Proposal {
            request_id: next_id(SETUP_ORIGIN),
            command: Command::Open {
                account,
                balance_minor_units: 100 * account,
                overdraft_limit_minor_units: 50 * account,
                balance_max_minor_units: 200 + 100 * account,
            },
        })
        .collect();
    for step in steps {
        let proposal = match step {
            Step::Fresh(origin, command) => Proposal {
                request_id: next_id(*origin),
                command: command.clone(),
            },
            Step::Batch(origin, items) => {
                let request_id = next_id(*origin);
                let items = items
                    .iter()
                    .map(|item| match item {
                        BatchItem::Fresh(origin, command) => Proposal {
                            request_id: next_id(*origin),
                            command: command.clone(),
                        },
                        BatchItem::Retry(index) => proposals[index % proposals.len()].clone(),
                    })
                    .collect();
                Proposal {
                    request_id,
                    command: Command::Batch(items),
                }
            }
            Step::Retry(index) => proposals[index % proposals.len()].clone(),
            Step::Reuse(index, command) => Proposal {
                request_id: proposals[index % proposals.len()].request_id,
                command: command.clone(),
            },
        };
        proposals.push(proposal);
    }
    proposals
}

/// An unbounded model of the request-id rules (the window is never reached in these runs)
/// and of the money that came in and went out.
#[derive(Default)]
struct Model {
    requests: BTreeMap<RequestId, (Command, Outcome)>,
    money_minor_units: i128,
}

impl Model {
    /// Checks one proposal's outcome and the ledger change it made, and learns from it.
    fn check(&mut self, proposal: &Proposal, outcome: &Outcome, before: &Ledger, after: &Ledger) {
        if let Some((command, first)) = self.requests.get(&proposal.request_id) {
            if *command == proposal.command {
                if let (Command::Batch(items), Outcome::Batch(_)) = (command, first) {
                    // A replayed batch answers its items' remembered outcomes.
                    let Outcome::Batch(outcomes) = outcome else {
                        panic!("a replayed batch answered {outcome:?}");
                    };
                    for (item, item_outcome) in items.iter().zip(outcomes) {
                        let (_, remembered) = &self.requests[&item.request_id];
                        let expected = if self.requests[&item.request_id].0 == item.command {
                            remembered.clone()
                        } else {
                            Outcome::RequestIdReused
                        };
                        assert_eq!(item_outcome, &expected);
                    }
                } else {
                    assert_eq!(outcome, first, "a retry answers the first outcome");
                }
            } else {
                assert_eq!(outcome, &Outcome::RequestIdReused);
            }
            assert_eq!(after, before, "a retry or reused id changes nothing");
            return;
        }
        match (&proposal.command, outcome) {
            (Command::Batch(items), Outcome::Batch(outcomes)) => {
                assert!(!items.is_empty() && items.len() <= BATCH_ITEMS_MAX);
                assert_eq!(items.len(), outcomes.len());
                // Item by item against a ledger that applies them one at a time.
                let mut stepwise = before.clone();
                for (item, item_outcome) in items.iter().zip(outcomes) {
                    let item_before = stepwise.clone();
                    assert_eq!(&stepwise.apply_proposal(item), item_outcome);
                    self.check(item, item_outcome, &item_before, &stepwise);
                }
                assert_eq!(stepwise.accounts(), after.accounts());
                assert_eq!(stepwise.state_digest(), after.state_digest());
            }
            (Command::Batch(items), Outcome::InvalidBatch) => {
                assert!(
                    items.is_empty()
                        || items
                            .iter()
                            .any(|item| matches!(item.command, Command::Batch(_)))
                );
                assert_eq!(after.accounts(), before.accounts());
            }
            (Command::Batch(_), other) => panic!("a batch answered {other:?}"),
            (command, outcome) => self.check_one(command, outcome, before, after),
        }
        self.requests.insert(
            proposal.request_id,
            (proposal.command.clone(), outcome.clone()),
        );
    }

    fn check_one(&mut self, command: &Command, outcome: &Outcome, before: &Ledger, after: &Ledger) {
        let balance = |ledger: &Ledger, account: AccountId| ledger.balance(account);
        match (command, outcome) {
            (
                Command::Open {
                    account,
                    balance_minor_units,
                    ..
                },
                Outcome::Opened {
                    balance_minor_units: opened,
                },
            ) => {
                assert_eq!(i128::from(*opened), i128::from(*balance_minor_units));
                assert_eq!(balance(before, *account), None);
                self.money_minor_units += i128::from(*opened);
            }
            (
                Command::Deposit {
                    account,
                    amount_minor_units,
                },
                Outcome::Deposited {
                    balance_minor_units,
                },
            ) => {
                let was = balance(before, *account).expect("deposited into an open account");
                assert_eq!(
                    i128::from(*balance_minor_units),
                    i128::from(was) + i128::from(*amount_minor_units)
                );
                self.money_minor_units += i128::from(*amount_minor_units);
            }
            (
                Command::Withdraw {
                    account,
                    amount_minor_units,
                },
                Outcome::Withdrawn {
                    balance_minor_units,
                },
            ) => {
                let was = balance(before, *account).expect("withdrawn from an open account");
                assert_eq!(
                    i128::from(*balance_minor_units),
                    i128::from(was) - i128::from(*amount_minor_units)
                );
                self.money_minor_units -= i128::from(*amount_minor_units);
            }
            (
                Command::Transfer {
                    from,
                    to,
                    amount_minor_units,
                },
                Outcome::Transferred {
                    from_balance_minor_units,
                    to_balance_minor_units,
                },
            ) => {
                let amount = i128::from(*amount_minor_units);
                let from_was = balance(before, *from).expect("from is open");
                let to_was = balance(before, *to).expect("to is open");
                assert_eq!(
                    i128::from(*from_balance_minor_units),
                    i128::from(from_was) - amount
                );
                assert_eq!(
                    i128::from(*to_balance_minor_units),
                    i128::from(to_was) + amount
                );
                // Only the two accounts changed.
                let mut expected: BTreeMap<_, _> = before.accounts().iter().collect();
                for (account, balance) in [
                    (from, from_balance_minor_units),
                    (to, to_balance_minor_units),
                ] {
                    if let Some(entry) = expected.get_mut(account) {
                        entry.balance_minor_units = *balance;
                    }
                }
                assert!(after.accounts().iter().eq(expected));
            }
            (_, outcome) => {
                assert!(
                    matches!(
                        outcome,
                        Outcome::InsufficientFunds { .. }
                            | Outcome::BalanceLimitExceeded { .. }
                            | Outcome::AccountExists { .. }
                            | Outcome::UnknownAccount { .. }
                            | Outcome::InvalidAmount
                    ),
                    "{command:?} answered {outcome:?}"
                );
                assert_eq!(
                    after.accounts(),
                    before.accounts(),
                    "a refusal changes nothing"
                );
            }
        }
        check_refusal_was_needed(command, outcome, before);
    }
}

/// A refusal that carries a balance carries the balance, before the command, of the account
/// that refused, and the refusal was needed: the change really breaks that account's limit.
fn check_refusal_was_needed(command: &Command, outcome: &Outcome, before: &Ledger) {
    if let Outcome::InsufficientFunds {
        balance_minor_units,
    }
    | Outcome::BalanceLimitExceeded {
        balance_minor_units,
    } = outcome
    {
        let account = match command {
            Command::Deposit { account, .. } | Command::Withdraw { account, .. } => *account,
            Command::Transfer { from, .. }
                if matches!(outcome, Outcome::InsufficientFunds { .. }) =>
            {
                *from
            }
            Command::Transfer { to, .. } => *to,
            other => panic!("{other:?} answered {outcome:?}"),
        };
        assert_eq!(before.balance(account), Some(*balance_minor_units));
        // The refusal was needed: the change really breaks the account's limit.
        let Some(limits) = before.accounts().get(account) else {
            panic!("{command:?} answered {outcome:?} for an account that is not open");
        };
        let Some(amount) = amount_of(command) else {
            panic!("{command:?} answered {outcome:?}");
        };
        let breaks_limit = if matches!(outcome, Outcome::InsufficientFunds { .. }) {
            i128::from(*balance_minor_units) - amount < i128::from(limits.balance_min_minor_units)
        } else {
            i128::from(*balance_minor_units) + amount > i128::from(limits.balance_max_minor_units)
        };
        assert!(breaks_limit, "{command:?} refused needlessly: {outcome:?}");
    }
}

fn amount_of(command: &Command) -> Option<i128> {
    match command {
        Command::Deposit {
            amount_minor_units, ..
        }
        | Command::Withdraw {
            amount_minor_units, ..
        }
        | Command::Transfer {
            amount_minor_units, ..
        } => Some(i128::from(*amount_minor_units)),
        Command::Open { .. } | Command::Batch(_) => None,
    }
}

fn assert_money_and_limits(ledger: &Ledger, model: &Model) {
    let mut sum: i128 = 0;
    for (_, account) in ledger.accounts().iter() {
        assert!(account.balance_min_minor_units <= account.balance_minor_units);
        assert!(account.balance_minor_units <= account.balance_max_minor_units);
        sum += i128::from(account.balance_minor_units);
    }
    assert_eq!(sum, model.money_minor_units, "money is conserved");
}

fn apply_all(ledger: &mut Ledger, proposals: &[Proposal]) -> Vec<Outcome> {
    proposals
        .iter()
        .map(|p| {
            let outcome = ledger.apply_proposal(p);
            // The full pass after every apply here, not only every FULL_CHECK_EVERY.
            ledger.assert_invariants_fully();
            outcome
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Every outcome agrees with the model: money conserved, limits held, refusals change
    /// nothing, retries answer their first outcome, batches equal their items one by one.
    #[test]
    fn outcomes_agree_with_the_model(steps in prop::collection::vec(step(), 1..60)) {
        let proposals = build(&steps);
        let mut ledger = Ledger::new();
        let mut model = Model::default();
        for proposal in &proposals {
            let before = ledger.clone();
            let outcome = ledger.apply_proposal(proposal);
            model.check(proposal, &outcome, &before, &ledger);
            assert_money_and_limits(&ledger, &model);
        }
    }

    /// Replaying any prefix of the log changes nothing and answers the same outcomes.
    #[test]
    fn replaying_a_prefix_changes_nothing(
        steps in prop::collection::vec(step(), 1..60),
        prefix in any::<prop::sample::Index>(),
    ) {
        let proposals = build(&steps);
        let mut ledger = Ledger::new();
        let outcomes = apply_all(&mut ledger, &proposals);
        let snapshot = serde_json::to_string(&ledger).expect("serialises");
        let prefix = prefix.index(proposals.len() + 1);
        let replayed = apply_all(&mut ledger, &proposals[..prefix]);
        prop_assert_eq!(&replayed[..], &outcomes[..prefix]);
        prop_assert_eq!(serde_json::to_string(&ledger).expect("serialises"), snapshot);
    }

    /// Two ledgers fed the same proposals serialise identically; a snapshot restores one.
    #[test]
    fn ledgers_are_deterministic(steps in prop::collection::vec(step(), 1..60)) {
        let proposals = build(&steps);
        let mut first = Ledger::new();
        let mut second = Ledger::new();
        prop_assert_eq!(apply_all(&mut first, &proposals), apply_all(&mut second, &proposals));
        let json = serde_json::to_string(&first).expect("serialises");
        prop_assert_eq!(&json, &serde_json::to_string(&second).expect("serialises"));
        prop_assert_eq!(first.state_digest(), second.state_digest());
        let restored: Ledger = serde_json::from_str(&json).expect("deserialises");
        prop_assert_eq!(&restored, &first);
    }

    /// With a tiny window, forgotten ids expire: replaying the whole log applies nothing,
    /// and every replayed outcome is the first one or `RequestIdExpired`.
    #[test]
    fn expired_ids_never_apply_again(
        steps in prop::collection::vec(step(), 1..60),
        request_ids_max in 1usize..8,
    ) {
        let proposals = build(&steps);
        let mut ledger = Ledger::new();
        ledger.requests.limits = RequestLimits { request_ids_max, origins_max: ORIGINS_MAX };
        let outcomes = apply_all(&mut ledger, &proposals);
        let accounts = ledger.accounts().clone();
        for (proposal, first) in proposals.iter().zip(&outcomes) {
            let again = ledger.apply_proposal(proposal);
            let expected_or_expired = |again: &Outcome, first: &Outcome| {
                again == first || *again == Outcome::RequestIdExpired
            };
            match (&again, first) {
                (Outcome::Batch(again), Outcome::Batch(first)) => {
                    for (again, first) in again.iter().zip(first) {
                        prop_assert!(expected_or_expired(again, first), "{:?} then {:?}", first, again);
                    }
                }
                (again, first) => prop_assert!(expected_or_expired(again, first), "{:?} then {:?}", first, again),
            }
            prop_assert_eq!(ledger.accounts(), &accounts);
        }
    }
}
