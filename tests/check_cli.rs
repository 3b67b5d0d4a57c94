//! `bank check HISTORY` end to end: a passing history exits 0 with a summary, a failing one
//! exits non-zero explaining the first violation, a malformed one names the line.

use std::process::{Command, Output};

fn bank_check(history: &str) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, history).expect("write history");
    Command::new(env!("CARGO_BIN_EXE_bank"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("bank binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const INIT_AND_DEPOSIT: &str = r#"{"type":"init","balances":{"1":100,"2":0}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"ok","process":0,"time_us":10,"result":{"balance":150}}
"#;

#[test]
fn passing_history_exits_zero_with_a_summary() {
    let history = format!(
        "{INIT_AND_DEPOSIT}{}",
        r#"{"type":"invoke","process":1,"time_us":20,"op":{"type":"read","accounts":[1,2]}}
{"type":"ok","process":1,"time_us":30,"result":{"balances":{"1":150,"2":0}}}
{"type":"final","branch":1,"balances":{"1":150,"2":0}}
{"type":"final","branch":2,"balances":{"1":150,"2":0}}
"#
    );
    let run = bank_check(&history);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}{}", text(&run.stderr));
    assert!(
        stdout.contains("history passes: 2 operations (2 ok, 0 failed, 0 indeterminate)"),
        "{stdout}"
    );
    assert!(stdout.contains("2 branches agree"), "{stdout}");
}

#[test]
fn stale_read_exits_non_zero_and_names_the_operation() {
    let history = format!(
        "{INIT_AND_DEPOSIT}{}",
        r#"{"type":"invoke","process":1,"time_us":20,"op":{"type":"read","accounts":[1]}}
{"type":"ok","process":1,"time_us":30,"result":{"balances":{"1":100}}}
"#
    );
    let run = bank_check(&history);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fails the check: account 1 is not linearizable"),
        "{stderr}"
    );
    assert!(
        stderr.contains("process 1's read of accounts [1] (line 4, invoked at 20 µs, ok at 30 µs), which reads balance 100"),
        "{stderr}"
    );
    assert!(stderr.contains("the balance is 150"), "{stderr}");
    assert!(run.stdout.is_empty());
}

#[test]
fn malformed_and_missing_files_are_clear_errors() {
    let run = bank_check(&format!(
        "{INIT_AND_DEPOSIT}{}",
        r#"{"type":"invoke","process":1,"time_us":20,"op":{"type":"steal","account":1}}"#
    ));
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not a readable history: line 4: unknown variant `steal`"),
        "{stderr}"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(["check", "/nonexistent/history.jsonl"])
        .output()
        .expect("bank binary runs");
    let stderr = text(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot read the history"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
