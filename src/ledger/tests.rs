//! Unit tests of the ledger: worked examples of every command, refusal, request-id rule and
//! batch rule, plus the pinned fingerprint and digest values that must never change by accident.

use super::requests::RequestLimits;
use super::*;

fn id(origin: u64, sequence: u64) -> RequestId {
    RequestId { origin, sequence }
}

fn proposal(origin: u64, sequence: u64, command: Command) -> Proposal {
    Proposal {
        request_id: id(origin, sequence),
        command,
    }
}

fn open(account: AccountId, balance: u64, overdraft_limit: u64, balance_max: u64) -> Command {
    Command::Open {
        account,
        balance_minor_units: balance,
        overdraft_limit_minor_units: overdraft_limit,
        balance_max_minor_units: balance_max,
    }
}

fn ledger_with(balance: u64) -> Ledger {
    let mut ledger = Ledger::new();
    let outcome = ledger.apply(&open(ORIGINAL_ACCOUNT, balance, 0, ORIGINAL_BALANCE_MAX));
    assert_eq!(
        outcome,
        Outcome::Opened {
            balance_minor_units: i64::try_from(balance).expect("test balance fits i64")
        }
    );
    ledger
}

fn ledger_with_limits(request_ids_max: usize, origins_max: usize) -> Ledger {
    assert!(request_ids_max > 0 && origins_max > 0);
    let mut ledger = Ledger::new();
    ledger.requests.limits = RequestLimits {
        request_ids_max,
        origins_max,
    };
    ledger
}

fn deposit(amount: u64) -> Command {
    deposit_to(ORIGINAL_ACCOUNT, amount)
}

fn deposit_to(account: AccountId, amount: u64) -> Command {
    Command::Deposit {
        account,
        amount_minor_units: amount,
    }
}

fn withdraw(amount: u64) -> Command {
    withdraw_from(ORIGINAL_ACCOUNT, amount)
}

fn withdraw_from(account: AccountId, amount: u64) -> Command {
    Command::Withdraw {
        account,
        amount_minor_units: amount,
    }
}

fn transfer(from: AccountId, to: AccountId, amount: u64) -> Command {
    Command::Transfer {
        from,
        to,
        amount_minor_units: amount,
    }
}

/// Accounts 1 (balance 100, overdraft 50, max 1,000) and 2 (balance 10, no overdraft,
/// max 200).
fn two_accounts() -> Ledger {
    let mut ledger = Ledger::new();
    assert_eq!(
        ledger.apply(&open(1, 100, 50, 1_000)),
        Outcome::Opened {
            balance_minor_units: 100
        }
    );
    assert_eq!(
        ledger.apply(&open(2, 10, 0, 200)),
        Outcome::Opened {
            balance_minor_units: 10
        }
    );
    ledger
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
    let max = i64::from(i32::MAX);
    assert_eq!(
        ledger.apply(&deposit(6)),
        Outcome::BalanceLimitExceeded {
            balance_minor_units: max - 5
        }
    );
    assert_eq!(ledger, before);
    assert_eq!(
        ledger.apply(&deposit(5)),
        Outcome::Deposited {
            balance_minor_units: max
        }
    );
    assert_eq!(
        ledger.apply(&deposit(u64::MAX)),
        Outcome::BalanceLimitExceeded {
            balance_minor_units: max
        }
    );
}

#[test]
fn open_validates_its_figures() {
    let mut ledger = Ledger::new();
    let too_big = i64::MAX as u64 + 1;
    for command in [
        open(1, 11, 0, 10),
        open(1, too_big, 0, u64::MAX),
        open(1, 0, too_big, 10),
        open(1, 0, 0, too_big),
        open(1, u64::MAX, u64::MAX, u64::MAX),
    ] {
        assert_eq!(
            ledger.apply(&command),
            Outcome::InvalidAmount,
            "{command:?}"
        );
    }
    assert_eq!(ledger, Ledger::new());
    assert_eq!(
        ledger.apply(&open(1, i64::MAX as u64, i64::MAX as u64, i64::MAX as u64)),
        Outcome::Opened {
            balance_minor_units: i64::MAX
        }
    );
    assert_eq!(
        ledger.accounts().get(1),
        Some(Account {
            balance_minor_units: i64::MAX,
            balance_min_minor_units: -i64::MAX,
            balance_max_minor_units: i64::MAX,
        })
    );
    assert_eq!(
        ledger.apply(&open(1, 0, 0, 0)),
        Outcome::AccountExists {
            balance_minor_units: i64::MAX
        }
    );
}

#[test]
fn an_overdraft_goes_down_to_its_limit_and_no_further() {
    let mut ledger = two_accounts();
    assert_eq!(
        ledger.apply(&withdraw_from(1, 150)),
        Outcome::Withdrawn {
            balance_minor_units: -50
        }
    );
    let before = ledger.clone();
    assert_eq!(
        ledger.apply(&withdraw_from(1, 1)),
        Outcome::InsufficientFunds {
            balance_minor_units: -50
        }
    );
    assert_eq!(ledger, before);
    assert_eq!(
        ledger.apply(&deposit_to(1, 60)),
        Outcome::Deposited {
            balance_minor_units: 10
        }
    );
}

#[test]
fn amounts_beyond_i64_are_exact_never_wrapped() {
    let mut ledger = Ledger::new();
    let max = i64::MAX as u64;
    ledger.apply(&open(1, 0, max, max));
    ledger.apply(&withdraw_from(1, max));
    assert_eq!(ledger.balance(1), Some(-i64::MAX));
    let before = ledger.clone();
    // -i64::MAX + u64::MAX = i64::MAX + 1: over the max.
    assert_eq!(
        ledger.apply(&deposit_to(1, u64::MAX)),
        Outcome::BalanceLimitExceeded {
            balance_minor_units: -i64::MAX
        }
    );
    assert_eq!(
        ledger.apply(&withdraw_from(1, u64::MAX)),
        Outcome::InsufficientFunds {
            balance_minor_units: -i64::MAX
        }
    );
    assert_eq!(ledger, before);
    // An amount above i64::MAX that lands inside the limits is applied exactly.
    assert_eq!(
        ledger.apply(&deposit_to(1, max + 2)),
        Outcome::Deposited {
            balance_minor_units: 2
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
        ledger.apply(&deposit_to(99, 1)),
        Outcome::UnknownAccount { account: 99 }
    );
    assert_eq!(
        ledger.apply(&withdraw_from(98, 1)),
        Outcome::UnknownAccount { account: 98 }
    );
    assert_eq!(
        ledger.apply(&open(ORIGINAL_ACCOUNT, 5, 0, 5)),
        Outcome::AccountExists {
            balance_minor_units: 10
        }
    );
    assert_eq!(ledger, before);
}

#[test]
fn a_transfer_moves_money_atomically() {
    let mut ledger = two_accounts();
    assert_eq!(
        ledger.apply(&transfer(1, 2, 140)),
        Outcome::Transferred {
            from_balance_minor_units: -40,
            to_balance_minor_units: 150
        }
    );
    assert_eq!(ledger.balance(1), Some(-40));
    assert_eq!(ledger.balance(2), Some(150));
    assert_eq!(
        ledger.apply(&transfer(2, 1, 150)),
        Outcome::Transferred {
            from_balance_minor_units: 0,
            to_balance_minor_units: 110
        }
    );
}

#[test]
fn a_refused_transfer_changes_nothing() {
    let mut ledger = two_accounts();
    let before = ledger.clone();
    let cases = [
        (transfer(1, 2, 0), Outcome::InvalidAmount),
        (transfer(1, 1, 5), Outcome::InvalidAmount),
        (transfer(9, 2, 5), Outcome::UnknownAccount { account: 9 }),
        (transfer(1, 8, 5), Outcome::UnknownAccount { account: 8 }),
        (transfer(9, 8, 5), Outcome::UnknownAccount { account: 9 }),
        // 2 holds 10 and has no overdraft.
        (
            transfer(2, 1, 11),
            Outcome::InsufficientFunds {
                balance_minor_units: 10,
            },
        ),
        // 1 may go to -50; 2 may hold at most 200.
        (
            transfer(1, 2, 151),
            Outcome::InsufficientFunds {
                balance_minor_units: 100,
            },
        ),
        (
            transfer(1, 2, 150),
            Outcome::Transferred {
                from_balance_minor_units: -50,
                to_balance_minor_units: 160,
            },
        ),
    ];
    for (command, expected) in &cases[..7] {
        assert_eq!(&ledger.apply(command), expected, "{command:?}");
        assert_eq!(ledger, before, "{command:?}");
    }
    let (command, expected) = &cases[7];
    assert_eq!(&ledger.apply(command), expected);
    let before = ledger.clone();
    ledger.apply(&deposit_to(1, 100));
    assert_eq!(
        ledger.apply(&transfer(1, 2, 41)),
        Outcome::BalanceLimitExceeded {
            balance_minor_units: 160
        }
    );
    assert_eq!(
        ledger.apply(&transfer(2, 1, u64::MAX)),
        Outcome::InsufficientFunds {
            balance_minor_units: 160
        }
    );
    ledger.apply(&withdraw_from(1, 100));
    assert_eq!(ledger.accounts(), before.accounts());
}

#[test]
fn a_repeated_request_id_applies_once() {
    let mut ledger = ledger_with(100);
    let first_proposal = proposal(7, 1, deposit(50));
    let first = ledger.apply_proposal(&first_proposal);
    assert_eq!(
        first,
        Outcome::Deposited {
            balance_minor_units: 150
        }
    );
    let before = ledger.clone();
    assert_eq!(ledger.apply_proposal(&first_proposal), first);
    assert_eq!(
        ledger.apply_proposal(&proposal(7, 1, withdraw(50))),
        Outcome::RequestIdReused
    );
    assert_eq!(
        ledger.apply_proposal(&proposal(7, 1, deposit(51))),
        Outcome::RequestIdReused
    );
    assert_eq!(ledger, before);
    // The same sequence from another origin is another request.
    assert_eq!(
        ledger.apply_proposal(&proposal(8, 1, deposit(50))),
        Outcome::Deposited {
            balance_minor_units: 200
        }
    );
}

#[test]
fn a_refusal_is_remembered_too() {
    let mut ledger = ledger_with(10);
    let overdraw = proposal(1, 1, withdraw(11));
    let refused = Outcome::InsufficientFunds {
        balance_minor_units: 10,
    };
    assert_eq!(ledger.apply_proposal(&overdraw), refused);
    ledger.apply_proposal(&proposal(1, 2, deposit(5)));
    // Now it would succeed, but the retry answers the first outcome.
    assert_eq!(ledger.apply_proposal(&overdraw), refused);
    assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(15));
}

#[test]
fn a_batch_applies_each_item_on_its_own() {
    let mut ledger = two_accounts();
    let batch = proposal(
        1,
        10,
        Command::Batch(vec![
            proposal(2, 1, deposit_to(1, 5)),
            proposal(2, 2, transfer(2, 1, 11)),
            proposal(2, 3, deposit_to(7, 1)),
            proposal(2, 4, transfer(1, 2, 100)),
            // A duplicate within the batch answers the first item's outcome.
            proposal(2, 1, deposit_to(1, 5)),
            proposal(2, 1, deposit_to(1, 6)),
        ]),
    );
    let expected = Outcome::Batch(vec![
        Outcome::Deposited {
            balance_minor_units: 105,
        },
        Outcome::InsufficientFunds {
            balance_minor_units: 10,
        },
        Outcome::UnknownAccount { account: 7 },
        Outcome::Transferred {
            from_balance_minor_units: 5,
            to_balance_minor_units: 110,
        },
        Outcome::Deposited {
            balance_minor_units: 105,
        },
        Outcome::RequestIdReused,
    ]);
    assert_eq!(ledger.apply_proposal(&batch), expected);
    let after = ledger.clone();
    assert_eq!(ledger.apply_proposal(&batch), expected);
    assert_eq!(ledger, after);
    // Items are remembered on their own, and the batch's id with its body.
    assert_eq!(
        ledger.apply_proposal(&proposal(2, 1, deposit_to(1, 5))),
        Outcome::Deposited {
            balance_minor_units: 105
        }
    );
    assert_eq!(
        ledger.apply_proposal(&proposal(1, 10, deposit_to(1, 5))),
        Outcome::RequestIdReused
    );
    assert_eq!(
        ledger.apply_proposal(&proposal(
            1,
            10,
            Command::Batch(vec![proposal(2, 1, deposit_to(1, 5))])
        )),
        Outcome::RequestIdReused
    );
    assert_eq!(ledger, after);
}

#[test]
fn a_malformed_batch_is_refused_whole() {
    let mut ledger = two_accounts();
    let item = proposal(2, 1, deposit_to(1, 5));
    let oversized: Vec<Proposal> = (0..=BATCH_ITEMS_MAX as u64)
        .map(|sequence| proposal(3, sequence, deposit_to(1, 1)))
        .collect();
    let cases = [
        proposal(1, 1, Command::Batch(vec![])),
        proposal(1, 2, Command::Batch(oversized)),
        proposal(
            1,
            3,
            Command::Batch(vec![
                item.clone(),
                proposal(2, 2, Command::Batch(vec![proposal(2, 3, deposit_to(1, 1))])),
            ]),
        ),
        proposal(
            1,
            4,
            Command::Batch(vec![item.clone(), proposal(1, 4, deposit_to(1, 1))]),
        ),
    ];
    for case in &cases {
        let before = ledger.accounts().clone();
        assert_eq!(ledger.apply_proposal(case), Outcome::InvalidBatch);
        assert_eq!(ledger.accounts(), &before);
        // Remembered: the retry answers the same.
        assert_eq!(ledger.apply_proposal(case), Outcome::InvalidBatch);
    }
    // Nothing of the refused batches was applied or remembered.
    assert_eq!(
        ledger.apply_proposal(&item),
        Outcome::Deposited {
            balance_minor_units: 105
        }
    );
    // The largest batch is accepted.
    let largest: Vec<Proposal> = (0..BATCH_ITEMS_MAX as u64)
        .map(|sequence| proposal(4, sequence, deposit_to(2, 1)))
        .collect();
    let Outcome::Batch(outcomes) = ledger.apply_proposal(&proposal(1, 5, Command::Batch(largest)))
    else {
        panic!("the largest batch is applied");
    };
    assert_eq!(outcomes.len(), BATCH_ITEMS_MAX);
    assert_eq!(ledger.balance(2), Some(200));
}

#[test]
fn past_the_window_an_id_expires_instead_of_applying_again() {
    let mut ledger = ledger_with_limits(3, 10);
    ledger.apply(&open(1, 0, 0, 1_000));
    for sequence in 1..=4 {
        ledger.apply_proposal(&proposal(5, sequence, deposit_to(1, 1)));
    }
    assert_eq!(ledger.balance(1), Some(4));
    let before = ledger.clone();
    // Sequence 1 left the window: expired, whatever its body.
    assert_eq!(
        ledger.apply_proposal(&proposal(5, 1, deposit_to(1, 1))),
        Outcome::RequestIdExpired
    );
    assert_eq!(
        ledger.apply_proposal(&proposal(5, 0, deposit_to(1, 9))),
        Outcome::RequestIdExpired
    );
    // Sequence 2 is still remembered.
    assert_eq!(
        ledger.apply_proposal(&proposal(5, 2, deposit_to(1, 1))),
        Outcome::Deposited {
            balance_minor_units: 2
        }
    );
    assert_eq!(ledger, before);
    // Other origins have their own watermark.
    assert_eq!(
        ledger.apply_proposal(&proposal(6, 1, deposit_to(1, 1))),
        Outcome::Deposited {
            balance_minor_units: 5
        }
    );
    assert_eq!(ledger.requests.remembered_count, 3);
}

#[test]
fn the_least_recently_recorded_origin_is_forgotten() {
    let mut ledger = ledger_with_limits(100, 2);
    ledger.apply(&open(1, 0, 0, 1_000));
    ledger.apply_proposal(&proposal(1, 1, deposit_to(1, 1)));
    ledger.apply_proposal(&proposal(2, 1, deposit_to(1, 1)));
    ledger.apply_proposal(&proposal(1, 2, deposit_to(1, 1)));
    ledger.apply_proposal(&proposal(3, 1, deposit_to(1, 1)));
    assert_eq!(ledger.requests.origins.keys().collect::<Vec<_>>(), [&1, &3]);
    assert_eq!(ledger.requests.remembered_count, 3);
    // The documented cost: origin 2 is forgotten whole, so its retry applies again.
    assert_eq!(
        ledger.apply_proposal(&proposal(2, 1, deposit_to(1, 1))),
        Outcome::Deposited {
            balance_minor_units: 5
        }
    );
    assert_eq!(ledger.requests.origins.keys().collect::<Vec<_>>(), [&2, &3]);
}

#[test]
fn remembered_request_ids_are_bounded() {
    let mut ledger = ledger_with(0);
    let total = REQUEST_IDS_MAX as u64 + 10;
    for sequence in 0..total {
        ledger.apply_proposal(&proposal(1, sequence, deposit(1)));
    }
    assert_eq!(ledger.requests.order.len(), REQUEST_IDS_MAX);
    assert_eq!(ledger.requests.remembered_count, REQUEST_IDS_MAX);
    let total_signed = i64::try_from(total).expect("fits");
    assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(total_signed));
    // The oldest ids are expired, the newest still deduplicate.
    assert_eq!(
        ledger.apply_proposal(&proposal(1, 9, deposit(1))),
        Outcome::RequestIdExpired
    );
    assert_eq!(
        ledger.apply_proposal(&proposal(1, total - 1, deposit(1))),
        Outcome::Deposited {
            balance_minor_units: total_signed
        }
    );
    assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(total_signed));
}

#[test]
fn fnv1a_matches_its_published_vectors() {
    assert_eq!(Fnv1a128::new().finish(), 0x6c62272e07bb014262b821756295c58d);
    let mut hasher = Fnv1a128::new();
    hasher.write_u8(b'a');
    assert_eq!(hasher.finish(), 0xd228cb696f1a8caf78912b704e4a8964);
}

/// Fingerprints and digests are kept in snapshots and compared across branches: a change
/// of encoding must be deliberate.
#[test]
fn fingerprints_and_digests_are_pinned() {
    let batch = Command::Batch(vec![proposal(1, 2, transfer(3, 4, 5))]);
    assert_eq!(batch.fingerprint(), PINNED_BATCH_FINGERPRINT);
    assert_ne!(
        deposit_to(1, 2).fingerprint(),
        withdraw_from(1, 2).fingerprint()
    );
    assert_ne!(
        deposit_to(1, 2).fingerprint(),
        deposit_to(2, 1).fingerprint()
    );
    let ledger = two_accounts();
    assert_eq!(ledger.state_digest(), PINNED_STATE_DIGEST);
    let mut moved = ledger.clone();
    moved.apply(&transfer(1, 2, 1));
    assert_ne!(moved.state_digest(), ledger.state_digest());
}

const PINNED_BATCH_FINGERPRINT: u128 = 93_871_046_531_861_545_052_257_314_214_445_091_016;
const PINNED_STATE_DIGEST: u64 = 2_372_089_036_273_766_268;

#[test]
fn a_ledger_survives_a_snapshot_round_trip() {
    let mut ledger = two_accounts();
    ledger.apply_proposal(&proposal(1, 1, transfer(1, 2, 3)));
    ledger.apply_proposal(&proposal(
        1,
        2,
        Command::Batch(vec![proposal(1, 3, deposit_to(1, 1))]),
    ));
    let json = serde_json::to_string(&ledger).expect("serialises");
    let restored: Ledger = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(restored, ledger);
    assert_eq!(restored.state_digest(), ledger.state_digest());
}

/// Log entries written before overdrafts existed still decode.
#[test]
fn an_open_without_an_overdraft_limit_decodes() {
    let json = r#"{"Open":{"account":0,"balance_minor_units":5,"balance_max_minor_units":9}}"#;
    let command: Command = serde_json::from_str(json).expect("decodes");
    assert_eq!(command, open(0, 5, 0, 9));
}

/// A deterministic pseudo-random walk: the balance never goes negative and always equals
/// the opening balance plus successful deposits minus successful withdrawals.
#[test]
fn random_walk_conserves_money() {
    let mut ledger = ledger_with(1_000);
    let mut expected: i64 = 1_000;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..10_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let amount = seed % 300 + 1;
        let amount_signed = i64::try_from(amount).expect("small");
        if seed.is_multiple_of(2) {
            if let Outcome::Deposited { .. } = ledger.apply(&deposit(amount)) {
                expected += amount_signed;
            }
        } else {
            match ledger.apply(&withdraw(amount)) {
                Outcome::Withdrawn { .. } => expected -= amount_signed,
                Outcome::InsufficientFunds {
                    balance_minor_units,
                } => assert!(balance_minor_units < amount_signed),
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(expected));
    }
}
