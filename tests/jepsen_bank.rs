//! Jepsen's bank workload on the `bank.v1` API: concurrent clients on every branch move money
//! between accounts at random and read every balance at once. Transfers move money, never make
//! or destroy it, so every (linearizable) read must sum to the initial total and show no
//! negative balance; in the end every branch must hold the same ledger.

mod common;

use std::time::Instant;

use bank::client::{ClientError, Outcome, ReadLevel};
use bank::load::jepsen::Random;
use common::{bank_client, start_cluster};
use tokio::task::JoinSet;

const ACCOUNTS: u64 = 8;
/// Small, so that some transfers are refused for insufficient funds.
const OPENING_BALANCE: u64 = 10;
const CLIENTS_PER_BRANCH: usize = 2;
/// Operations per client: a bound on the run, a few seconds in a debug build.
const OPERATIONS_PER_CLIENT: usize = 200;
/// One operation in this many is a read of all balances; the others are transfers.
const READ_EVERY: u64 = 3;

#[derive(Default)]
struct Tally {
    transfers_ok: u64,
    transfers_refused: u64,
    reads: u64,
    unknown: u64,
}

/// Checks one read of all accounts: the total is conserved and nothing is negative.
fn check_read(balances: &[Option<i64>], seen_at: &str) {
    let total_expected = (ACCOUNTS * OPENING_BALANCE) as i64;
    let mut total: i64 = 0;
    for (account, balance) in balances.iter().enumerate() {
        let balance = balance.unwrap_or_else(|| panic!("account {account} missing at {seen_at}"));
        assert!(
            balance >= 0,
            "negative balance {balance} in account {account} at {seen_at}: {balances:?}"
        );
        total = total.checked_add(balance).expect("no overflow");
    }
    assert_eq!(
        total, total_expected,
        "read at {seen_at} sums to {total}: {balances:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_conserve_money() {
    let cluster = start_cluster(3, 0).await;
    let addresses: Vec<String> = cluster
        .addresses()
        .values()
        .map(|a| a.to_string())
        .collect();
    let accounts: Vec<u64> = (1..=ACCOUNTS).collect();
    let setup = bank_client(&addresses);
    for &account in &accounts {
        let opened = setup
            .open_account(account, OPENING_BALANCE, 0, None)
            .await
            .expect("open");
        assert_eq!(opened.outcome(), Outcome::Ok);
    }

    let started = Instant::now();
    let mut clients = JoinSet::new();
    for (branch_index, _) in addresses.iter().enumerate() {
        for client_index in 0..CLIENTS_PER_BRANCH {
            // Each client talks to "its" branch first and fails over to the others.
            let mut rotated = addresses.clone();
            rotated.rotate_left(branch_index);
            let accounts = accounts.clone();
            let seed = 0x9E37_79B9_7F4A_7C15 ^ ((branch_index * 16 + client_index + 1) as u64);
            clients.spawn(async move {
                let client = bank_client(&rotated);
                let mut random = Random::new(seed);
                let mut tally = Tally::default();
                for _ in 0..OPERATIONS_PER_CLIENT {
                    if random.below(READ_EVERY) == 0 {
                        let reply = client
                            .get_balances(&accounts, ReadLevel::Linearizable)
                            .await
                            .expect("read");
                        let balances: Vec<_> = reply.balances.iter().map(|b| b.balance).collect();
                        check_read(&balances, &rotated[0]);
                        tally.reads += 1;
                        continue;
                    }
                    let from = 1 + random.below(ACCOUNTS);
                    let to = 1 + (from + random.below(ACCOUNTS - 1)) % ACCOUNTS;
                    let amount = 1 + random.below(5);
                    match client.transfer(from, to, amount).await {
                        Ok(written) => match written.outcome() {
                            Outcome::Ok => tally.transfers_ok += 1,
                            Outcome::InsufficientFunds => tally.transfers_refused += 1,
                            other => panic!("transfer {from}->{to} of {amount}: {other:?}"),
                        },
                        // Allowed by the model (an indeterminate transfer), never seen in a
                        // healthy cluster; counted and reported.
                        Err(ClientError::OutcomeUnknown { .. }) => tally.unknown += 1,
                        Err(e) => panic!("transfer {from}->{to} of {amount}: {e}"),
                    }
                }
                tally
            });
        }
    }
    let mut total = Tally::default();
    while let Some(joined) = clients.join_next().await {
        let tally = joined.expect("client task");
        total.transfers_ok += tally.transfers_ok;
        total.transfers_refused += tally.transfers_refused;
        total.reads += tally.reads;
        total.unknown += tally.unknown;
    }
    let elapsed = started.elapsed();
    let operations = total.transfers_ok + total.transfers_refused + total.reads + total.unknown;
    assert_eq!(
        operations,
        (3 * CLIENTS_PER_BRANCH * OPERATIONS_PER_CLIENT) as u64
    );
    assert!(total.transfers_ok > 0 && total.reads > 0);

    // Settled, every branch holds the same ledger, and local reads agree with it.
    let states = cluster.settled_states().await.expect("branches settle");
    for (id, state) in &states {
        assert_eq!(state.ledger, states[0].1.ledger, "branch {id} diverged");
    }
    let expected: Vec<Option<i64>> = accounts
        .iter()
        .map(|&a| states[0].1.ledger.balance(a))
        .collect();
    check_read(&expected, "the settled state");
    for addr in &addresses {
        let local = bank_client(&[addr]);
        let reply = local
            .get_balances(&accounts, ReadLevel::Local)
            .await
            .expect("local read");
        let balances: Vec<_> = reply.balances.iter().map(|b| b.balance).collect();
        assert_eq!(balances, expected, "local read at {addr}");
    }
    eprintln!(
        "jepsen bank: {operations} operations by {} clients in {elapsed:.2?} ({:.0} ops/s): \
         {} transfers applied, {} refused (insufficient funds), {} unknown, {} reads; final {:?}",
        3 * CLIENTS_PER_BRANCH,
        operations as f64 / elapsed.as_secs_f64().max(1e-9),
        total.transfers_ok,
        total.transfers_refused,
        total.unknown,
        total.reads,
        expected,
    );
    cluster.shutdown().await;
}

/// The same workload through the library's (`bank::load::jepsen`), which records every call;
/// the history checker then proves it linearizable per account, conserving, never negative,
/// and the branches' final states equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_history_passes_the_checker() {
    let cluster = start_cluster(3, 0).await;
    let addresses: Vec<String> = cluster
        .addresses()
        .values()
        .map(|a| a.to_string())
        .collect();
    let workload = bank::load::jepsen::BankWorkload {
        operations_per_client: Some(150),
        seed: 7,
        ..Default::default()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let report = bank::load::jepsen::run_bank_workload(&addresses, &workload, stop)
        .await
        .expect("workload");
    assert!(report.transfers_ok > 0 && report.reads_ok > 0);
    let history = bank::check::History::from_events(report.history.clone());
    let summary = bank::check::check(&history).unwrap_or_else(|v| panic!("{v}"));
    eprintln!("checked: {summary}");
    cluster.shutdown().await;

    // The check is not vacuous: the same history with one read's balance moved from one
    // account to another (a torn, non-atomic read that still sums right) is refuted.
    let mut torn = report.history;
    let read = torn
        .iter_mut()
        .rev()
        .find_map(|event| match event {
            bank::check::HistoryEvent::Ok { result, .. } => result.balances.as_mut(),
            _ => None,
        })
        .expect("a read in the history");
    *read.get_mut(&1).expect("account 1") += 1;
    *read.get_mut(&2).expect("account 2") -= 1;
    let violation = bank::check::check(&bank::check::History::from_events(torn));
    assert!(violation.is_err(), "a torn read passed the checker");
}
