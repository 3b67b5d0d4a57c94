//! `bank check HISTORY` end to end: a passing history exits 0 with a summary, a failing one
//! exits non-zero explaining the first violation, a malformed one names the line; with
//! `--html`, the page draws every operation and marks exactly the ones the checker blames.

mod common;

use std::collections::BTreeSet;
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

/// `bank check PATH --html REPORT`.
fn bank_check_html(history: &Path, report: &Path) -> Output {
    common::output_of(
        common::bank_command()
            .arg("check")
            .arg(history)
            .arg("--html")
            .arg(report),
    )
}

/// The operations a page draws (`data-op`: the line of the invoke) and those it marks blamed.
fn drawn_and_blamed(html: &str) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let mut drawn = BTreeSet::new();
    let mut blamed = BTreeSet::new();
    for tag in common::start_tags(html) {
        let Some(op) = tag.attribute("data-op") else {
            continue;
        };
        let line: usize = op.parse().expect("data-op is a line number");
        assert!(drawn.insert(line), "operation {line} drawn twice");
        if tag.has_class("blamed") {
            blamed.insert(line);
        }
    }
    (drawn, blamed)
}

/// The lines of the invokes of the history at `path`.
fn invoke_lines(path: &Path) -> BTreeSet<usize> {
    let history = bank::check::History::load(path).expect("a readable history");
    history
        .lines()
        .filter(|(_, event)| matches!(event, bank::check::HistoryEvent::Invoke { .. }))
        .map(|(line, _)| line)
        .collect()
}

#[test]
fn html_report_of_a_failing_history_highlights_exactly_what_the_checker_blames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.html");
    let history = common::testdata("histories/stale_read.jsonl");
    let run = bank_check_html(&history, &report);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let html = std::fs::read_to_string(&report).expect("the report is written on a failure");

    let violation = bank::check::check(&bank::check::History::load(&history).expect("loads"))
        .expect_err("the stale read fails");
    let named: BTreeSet<usize> = violation.blame().operations.into_iter().collect();
    assert_eq!(
        named,
        BTreeSet::from([2, 4]),
        "the read and the deposit before it"
    );
    let (drawn, blamed) = drawn_and_blamed(&html);
    assert_eq!(blamed, named);
    assert_eq!(drawn, invoke_lines(&history), "every operation is drawn");
    assert!(html.contains("class=\"banner failed\""));
    // The checker's explanation, as the command line prints it (escaped: it says "1's").
    let explanation = bank::report::html::escape(&violation.to_string());
    assert!(html.contains(&explanation), "{html}");
    assert!(!dir.path().join("report.html.partial").exists());
}

#[test]
fn html_report_of_a_passing_history_draws_everything_and_blames_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.html");
    let history = common::testdata("histories/passing.jsonl");
    let run = bank_check_html(&history, &report);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let html = std::fs::read_to_string(&report).expect("the report is written");
    let (drawn, blamed) = drawn_and_blamed(&html);
    assert_eq!(drawn, invoke_lines(&history));
    assert!(blamed.is_empty(), "{blamed:?}");
    assert!(html.contains("class=\"banner passed\""));
    assert!(html.contains("history passes: 2 operations"));
}

#[test]
fn html_report_escapes_what_the_history_says() {
    let history = r#"{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"withdraw","account":1,"amount":500}}
{"type":"fail","process":0,"time_us":5,"error":"<script>alert('pwned')</script>"}
{"type":"invoke","process":1,"time_us":6,"op":{"type":"deposit","account":1,"amount":5}}
{"type":"info","process":1,"time_us":9,"error":"<img src=x onerror=alert(1)>"}
{"type":"final","branch":1,"balances":{"1":100},"digest":"\"><script>alert(2)</script>"}
{"type":"final","branch":2,"balances":{"1":100},"digest":"<b>other</b>"}"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, history).expect("write history");
    let report = dir.path().join("report.html");
    let run = bank_check_html(&path, &report);
    // The digests differ: the branches' final states are blamed.
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let html = std::fs::read_to_string(&report).expect("the report is written");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<b>other"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    let tags = common::start_tags(&html);
    let blamed_branches: BTreeSet<&str> = tags
        .iter()
        .filter(|tag| tag.has_class("blamed"))
        .filter_map(|tag| tag.attribute("data-branch"))
        .collect();
    assert_eq!(blamed_branches, BTreeSet::from(["1", "2"]));
}

#[test]
fn no_report_is_left_when_the_history_cannot_be_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.html");
    let run = bank_check_html(Path::new("/nonexistent/history.jsonl"), &report);
    assert_eq!(run.status.code(), Some(1));
    assert!(text(&run.stderr).contains("cannot read the history"));
    let malformed = dir.path().join("malformed.jsonl");
    std::fs::write(&malformed, "{\"type\":\"invoke\",").expect("write history");
    let run = bank_check_html(&malformed, &report);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        text(&run.stderr).contains("line 1"),
        "{}",
        text(&run.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["malformed.jsonl"], "no report, no partial file");
}
