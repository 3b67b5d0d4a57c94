//! `bank check HISTORY` end to end: a passing history exits 0 with a summary, a failing one
//! exits non-zero explaining the first violation, a malformed one names the line.

mod common;

use std::path::Path;
use std::process::Output;

/// `bank check PATH`.
fn bank_check(history: &Path) -> Output {
    common::output_of(common::bank_command().arg("check").arg(history))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn passing_history_exits_zero_with_a_summary() {
    let run = bank_check(&common::testdata("histories/passing.jsonl"));
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
    let run = bank_check(&common::testdata("histories/stale_read.jsonl"));
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
    // Deliberately malformed, so kept here: line 4 invokes an operation that does not exist.
    let malformed = r#"{"type":"init","balances":{"1":100,"2":0}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"ok","process":0,"time_us":10,"result":{"balance":150}}
{"type":"invoke","process":1,"time_us":20,"op":{"type":"steal","account":1}}"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, malformed).expect("write history");
    let run = bank_check(&path);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not a readable history: line 4: unknown variant `steal`"),
        "{stderr}"
    );

    let missing = common::bank(["check", "/nonexistent/history.jsonl"]);
    let stderr = text(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot read the history"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
