//! `bank account ...` end to end: the built binary against a real 3-branch cluster.

mod common;

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

/// Bound on one `bank account` run.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// `bank account ARGS --branch B...` for every branch in `branches`.
async fn account(args: &[&str], branches: &[String]) -> Output {
    let mut line = vec!["account"];
    line.extend_from_slice(args);
    for branch in branches {
        line.extend(["--branch", branch.as_str()]);
    }
    common::bank_async(line, RUN_DEADLINE).await
}

fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_commands_against_a_cluster() {
    let cluster = common::start_cluster(3, 0).await;
    let branches: Vec<String> = cluster
        .addresses()
        .values()
        .map(|a| a.to_string())
        .collect();

    let out = succeeded(&account(&["open", "1", "--balance", "100"], &branches).await);
    assert_eq!(out.trim(), "account 1 opened: balance 100");
    succeeded(&account(&["open", "2"], &branches[1..]).await);
    let out = succeeded(&account(&["deposit", "1", "20"], &branches[2..]).await);
    assert_eq!(out.trim(), "deposited 20 into account 1: balance 120");
    let out = succeeded(&account(&["transfer", "1", "2", "50"], &branches).await);
    assert_eq!(
        out.trim(),
        "transferred 50 from account 1 to account 2: balances 70 and 50"
    );

    let out = succeeded(&account(&["balance", "1", "2", "--json"], &branches[1..]).await);
    let json: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(json["balances"][0]["account"], 1);
    assert_eq!(json["balances"][0]["balance"], 70);
    assert_eq!(json["balances"][1]["balance"], 50);

    // Insufficient funds: exit 1, the balance in the message, nothing withdrawn.
    let refused = account(&["withdraw", "2", "51"], &branches).await;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("insufficient funds") && stderr.contains("balance 50"),
        "{stderr}"
    );
    let refused = account(&["withdraw", "2", "51", "--json"], &branches).await;
    assert_eq!(refused.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&refused.stdout).expect("JSON on stdout");
    assert_eq!(json["outcome"], "insufficient_funds");
    assert_eq!(json["balance"], 50);

    // Resending a write under its request id applies it once.
    let first = succeeded(&account(&["deposit", "2", "5", "--json"], &branches).await);
    let first: Value = serde_json::from_str(first.trim()).expect("JSON");
    let id = first["request_id"]
        .as_str()
        .expect("request id")
        .to_string();
    let again = succeeded(
        &account(
            &["deposit", "2", "5", "--json", "--request-id", &id],
            &branches[2..],
        )
        .await,
    );
    let again: Value = serde_json::from_str(again.trim()).expect("JSON");
    assert_eq!(again["balance"], 55);
    let out = succeeded(&account(&["balance", "2", "--read", "linearizable"], &branches).await);
    assert_eq!(out.trim(), "account 2: balance 55");

    // Usage errors are clear.
    let missing = account(&["balance", "9"], &branches).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such account"));
    let no_branch = account(&["balance", "1"], &[]).await;
    assert!(!no_branch.status.success());
    assert!(String::from_utf8_lossy(&no_branch.stderr).contains("--branch"));
    cluster.shutdown().await;
}
