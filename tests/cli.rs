//! The `bank` binary end to end: `bank run` on a reference scenario, and bad input files, each
//! of which must give a clear error, a non-zero exit, no panic and no output file.

mod common;

use std::path::Path;

use common::bank;
use serde_json::{json, Value};

#[test]
fn run_writes_output_and_prints_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output_path = dir.path().join("output.json");
    let input = common::reference("codlocker+CSE-531-Project/Project_1/input.json");
    let run = bank([
        "run",
        input.to_str().expect("utf-8 path"),
        "-o",
        output_path.to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    for id in 1..=3 {
        assert!(
            stdout.contains(&format!("branch {id}: balance 500")),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("all 3 branches agree: balance 500"),
        "{stdout}"
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&output_path).expect("output written"))
            .expect("output is JSON");
    assert_eq!(
        written[2],
        json!({"id": 3, "recv": [{"interface": "withdraw", "result": "success"}, {"interface": "query", "balance": 500}]})
    );
}

/// Runs `bank run` on `input` (written to a temp file) and asserts a clean failure whose
/// message contains every one of `expected`.
fn assert_refused(input: &str, expected: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input_path = dir.path().join("input.json");
    std::fs::write(&input_path, input).expect("write input");
    assert_refused_path(&input_path, &dir.path().join("output.json"), expected);
}

fn assert_refused_path(input_path: &Path, output_path: &Path, expected: &[&str]) {
    let run = bank([
        "run",
        input_path.to_str().expect("utf-8 path"),
        "-o",
        output_path.to_str().expect("utf-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "accepted; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    for fragment in expected {
        assert!(
            stderr.to_lowercase().contains(&fragment.to_lowercase()),
            "stderr lacks {fragment:?}: {stderr}"
        );
    }
    assert!(
        !output_path.exists(),
        "a partial output file was left behind"
    );
}

const BRANCHES: &str =
    r#"{"id": 1, "type": "branch", "balance": 100}, {"id": 2, "type": "branch", "balance": 100}"#;

fn with_events(events: &str) -> String {
    format!(r#"[{{"id": 1, "type": "customer", "events": [{events}]}}, {BRANCHES}]"#)
}

#[test]
fn missing_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.json");
    assert_refused_path(
        &missing,
        &dir.path().join("output.json"),
        &[
            "nope.json",
            "try one of the examples: bank run examples/scenarios/p1.json",
        ],
    );
}

/// An unreadable scenario names its cause once: the error's message already holds the OS
/// error, so it must not also come back as the error's source in the printed chain.
#[test]
fn unreadable_file_names_its_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = bank([
        "run",
        dir.path().to_str().expect("utf-8 path"),
        "-o",
        dir.path().join("output.json").to_str().expect("utf-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "accepted; stderr: {stderr}");
    assert!(stderr.contains("cannot read scenario file"), "{stderr}");
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

/// The example scenarios shipped for a first run work, with the balances they are written for.
#[test]
fn example_scenarios_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, extra, summary) in [
        ("p1.json", None, "all 3 branches agree: balance 325"),
        ("p3.json", None, "all 3 branches agree: balance 145"),
        (
            "concurrent.json",
            Some("--concurrent"),
            "all 5 branches agree: balance 1100",
        ),
    ] {
        let input = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/scenarios")
            .join(file);
        let output = dir.path().join(file);
        let mut args = vec![
            "run".to_string(),
            input.to_str().expect("utf-8 path").to_string(),
            "-o".to_string(),
            output.to_str().expect("utf-8 path").to_string(),
        ];
        args.extend(extra.map(str::to_string));
        let run = bank(&args);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{file}: stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(stdout.contains(summary), "{file}: {stdout}");
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&output).expect("output written"))
                .expect("output is JSON");
        assert!(
            written.as_array().is_some_and(|a| !a.is_empty()),
            "{file}: {written}"
        );
    }
}

#[test]
fn malformed_json_says_where() {
    assert_refused(
        "[\n  {\"id\": 1,\n  \"type\": \"branch\" \"balance\": 3}\n]",
        &["line 3"],
    );
}

#[test]
fn unknown_interface_is_refused() {
    assert_refused(
        &with_events(r#"{"id": 1, "interface": "teleport", "money": 5}"#),
        &["teleport"],
    );
}

#[test]
fn missing_money_is_refused() {
    assert_refused(
        &with_events(r#"{"id": 1, "interface": "deposit"}"#),
        &["money"],
    );
}

#[test]
fn non_positive_money_is_refused() {
    assert_refused(
        &with_events(r#"{"id": 1, "interface": "withdraw", "money": 0}"#),
        &["money"],
    );
    assert_refused(
        &with_events(r#"{"id": 1, "interface": "deposit", "money": -5}"#),
        &["money"],
    );
}

#[test]
fn money_beyond_int32_is_refused() {
    assert_refused(
        &with_events(r#"{"id": 1, "interface": "deposit", "money": 2147483648}"#),
        &["money"],
    );
}

#[test]
fn event_naming_a_missing_branch_is_refused() {
    assert_refused(
        &with_events(r#"{"id": 1, "interface": "query", "branch": 9}"#),
        &["branch", "9"],
    );
}

#[test]
fn duplicate_branch_ids_are_refused() {
    assert_refused(
        &format!(r#"[{BRANCHES}, {{"id": 2, "type": "branch", "balance": 100}}]"#),
        &["duplicate"],
    );
}

#[test]
fn different_initial_balances_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_refused_path(
        &common::testdata("scenarios/different_initial_balances.json"),
        &dir.path().join("output.json"),
        &["balance"],
    );
}

/// `--log-format json`: every log line on stderr is one JSON object (levels still from
/// `RUST_LOG`), so a log shipper can read them.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output_path = dir.path().join("output.json");
    let input = common::reference("codlocker+CSE-531-Project/Project_1/input.json");
    let run = common::bank_with_env(
        [
            "--log-format",
            "json",
            "run",
            input.to_str().expect("utf-8 path"),
            "-o",
            output_path.to_str().expect("utf-8 path"),
        ],
        &[("RUST_LOG", "bank=debug")],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let logs: Vec<Value> = stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(!logs.is_empty(), "no JSON log line in: {stderr}");
    for log in &logs {
        assert!(
            log["level"].is_string() && log["timestamp"].is_string(),
            "{log}"
        );
    }
}
