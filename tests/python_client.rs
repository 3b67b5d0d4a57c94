//! The Python example client of `bank.v1` (`examples/python/accounts_client.py`) against a
//! real three-branch cluster: it opens two accounts, transfers between them and prints both
//! balances, which must be what the cluster holds.
//!
//! Needs a Python with grpcio and grpcio-tools (`tests/interop/requirements.txt`) in
//! `BANK_PYTHON`, as `.ci/run` sets it. Without it the test says so and passes, except under
//! CI (`CI` set), where a missing `BANK_PYTHON` is a failure: CI must run it.

mod common;

use std::process::Command;
use std::time::Duration;

/// The example client.
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/python/accounts_client.py"
);
/// Bound on the script's run (generating the stubs included).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_client_opens_transfers_and_reads() {
    let Some(python) = std::env::var_os("BANK_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "BANK_PYTHON is not set but CI is: CI must run the Python example client (point \
             BANK_PYTHON at a python with tests/interop/requirements.txt installed)"
        );
        eprintln!(
            "python_example_client_opens_transfers_and_reads: skipped: set BANK_PYTHON to a \
             python with tests/interop/requirements.txt installed to run it"
        );
        return;
    };
    let cluster = common::start_cluster(3, 0).await;
    let addresses = cluster.addresses();
    let mut command = Command::new(&python);
    command.args([
        SCRIPT,
        "--branch",
        &addresses[&2].to_string(),
        "--accounts",
        "11",
        "12",
        "--opening",
        "100",
        "--amount",
        "30",
    ]);
    let run = common::run_bounded_async(command, SCRIPT_DEADLINE).await;
    assert!(
        run.status.success(),
        "{SCRIPT} exited with {}; stdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        ["account 11: balance 70", "account 12: balance 30"],
        "stderr:\n{}",
        run.stderr
    );
    // What the script printed is what the cluster holds, read at another branch.
    let reply = common::bank_client(&[addresses[&3]])
        .get_balances(&[11, 12], bank::client::ReadLevel::Linearizable)
        .await
        .expect("read the balances");
    let balances: Vec<Option<i64>> = reply.balances.iter().map(|b| b.balance).collect();
    assert_eq!(balances, [Some(70), Some(30)]);

    // A refused write is a failure with a message, not a silent success: the accounts exist.
    let mut again = Command::new(&python);
    again.args([
        SCRIPT,
        "--branch",
        &addresses[&1].to_string(),
        "--accounts",
        "11",
        "12",
    ]);
    let run = common::run_bounded_async(again, SCRIPT_DEADLINE).await;
    assert!(!run.status.success(), "reopening succeeded: {}", run.stdout);
    assert!(run.stderr.contains("ACCOUNT_EXISTS"), "{}", run.stderr);
}
