//! `bank bench` end to end: it starts its own cluster, runs a short load (closed, or open at a
//! fixed rate), and its invariant check passes; the history it records passes `bank check`.
//! (Figures are not asserted: measured figures live in docs/performance.md, not in tests.)

mod common;

/// `bank bench ARGS --json`, which must succeed; its JSON report.
fn bench(args: &[&str]) -> serde_json::Value {
    let output = common::bank(["bench"].iter().chain(args).chain(&["--json"]));
    assert!(
        output.status.success(),
        "bank bench {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("bench --json prints JSON")
}

#[test]
fn a_short_bench_run_passes_its_invariant_check() {
    let report = bench(&["--count", "400", "--clients", "4", "--accounts", "10"]);
    assert_eq!(report["operations"], 400);
    assert_eq!(report["invariants"]["passed"], true);
    assert_eq!(report["invariants"]["branches_agree"], true);
    for kind in ["deposit", "withdraw", "transfer", "query"] {
        assert!(
            report["latency_by_kind"][kind]["requests"].as_u64() > Some(0),
            "no {kind} in {report}"
        );
    }
}

#[test]
fn an_open_loop_run_reports_its_pacing_and_passes_its_invariant_check() {
    let report = bench(&[
        "--rate",
        "200",
        "--duration",
        "2",
        "--clients",
        "8",
        "--accounts",
        "10",
    ]);
    assert_eq!(report["invariants"]["passed"], true, "{report}");
    assert_eq!(report["invariants"]["branches_agree"], true);
    let open = &report["open_loop"];
    assert_eq!(open["rate_per_s"], 200.0, "{report}");
    // Due at 0, 5 ms, ..., 1,995 ms: 400 requests, each answered (or failed) and counted.
    assert_eq!(open["requests"], 400, "{report}");
    assert_eq!(report["latency"]["requests"], 400, "{report}");
    assert!(open["achieved_per_s"].as_f64() > Some(0.0), "{report}");
    assert!(open["late"].as_u64() <= Some(400), "{report}");
    assert!(open["worst_late_us"].is_u64(), "{report}");
}

#[test]
fn an_open_loop_run_says_so_in_its_text_and_html_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("bench.html");
    let output = common::bank([
        "bench",
        "--rate",
        "100",
        "--count",
        "50",
        "--clients",
        "4",
        "--accounts",
        "10",
        "--html",
        page.to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("open loop at 100 requests/s: achieved "),
        "{stdout}"
    );
    assert!(
        stdout.contains("latency from each request's due time"),
        "{stdout}"
    );
    assert!(stdout.contains("invariants: ok"), "{stdout}");
    let html = std::fs::read_to_string(&page).expect("the page is written");
    assert!(
        html.contains("<p>open loop at 100 requests/s: achieved "),
        "{html}"
    );
}

#[test]
fn batched_transfers_conserve_money() {
    let report = bench(&[
        "--count",
        "4000",
        "--clients",
        "2",
        "--batch",
        "200",
        "--mix",
        "transfer=100",
    ]);
    assert_eq!(report["operations"], 4000);
    assert_eq!(report["invariants"]["passed"], true);
    assert_eq!(
        report["invariants"]["total"],
        report["invariants"]["expected_min"]
    );
}

#[test]
fn the_recorded_history_passes_bank_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("history.jsonl");
    let history_arg = history.to_str().expect("utf-8 path");
    bench(&[
        "--count",
        "300",
        "--clients",
        "4",
        "--accounts",
        "3",
        "--history",
        history_arg,
    ]);
    let checked = common::bank(["check", history_arg]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(String::from_utf8_lossy(&checked.stdout).contains("passes"));
}

/// Callers sharing a client (its writes batched) for about a second: each caller's
/// operations are recorded with its own results, and the history passes `bank check`.
#[test]
fn callers_sharing_a_client_record_a_history_that_passes_bank_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("history.jsonl");
    let history_arg = history.to_str().expect("utf-8 path");
    let report = bench(&[
        "--duration",
        "1",
        "--clients",
        "2",
        "--callers-per-client",
        "8",
        "--accounts",
        "20",
        "--history",
        history_arg,
    ]);
    assert_eq!(report["callers_per_client"], 8, "{report}");
    assert_eq!(report["clients"], 2, "{report}");
    assert_eq!(report["invariants"]["passed"], true, "{report}");
    assert!(report["operations"].as_u64() > Some(0), "{report}");
    let checked = common::bank(["check", history_arg]);
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(String::from_utf8_lossy(&checked.stdout).contains("passes"));
}

#[test]
fn bad_flags_are_refused_with_a_clear_message() {
    for (args, expected) in [
        (&["--mix", "deposit=50"][..], "add up to 50"),
        (&["--batch", "0"][..], "--batch"),
        (&["--count", "0"][..], "--count"),
        (&["--batch", "5", "--history", "h.jsonl"][..], "--batch 1"),
        (&["--rate", "0"][..], "--rate"),
        (&["--callers-per-client", "0"][..], "--callers-per-client"),
        (&["--rate", "-5"][..], "--rate"),
        (
            &["--rate", "fast"][..],
            "not a number of requests per second",
        ),
        (&["--rate", "1e9"][..], "between 0.001 and 1000000"),
    ] {
        let output = common::bank(["bench"].iter().chain(args));
        assert!(!output.status.success(), "{args:?} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn the_html_report_draws_throughput_and_percentiles_with_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("bench.html");
    let report_arg = report.to_str().expect("utf-8 path");
    bench(&[
        "--count",
        "200",
        "--clients",
        "2",
        "--accounts",
        "10",
        "--html",
        report_arg,
    ]);
    let html = std::fs::read_to_string(&report).expect("the report is written");
    for chart in ["throughput", "percentiles"] {
        let svg = common::svg_with_class(&html, chart)
            .unwrap_or_else(|| panic!("no {chart} chart in the page"));
        let points = common::start_tags(svg)
            .into_iter()
            .filter(|tag| tag.name == "circle" && tag.has_class("point"))
            .count();
        assert!(points >= 1, "the {chart} chart has no point");
    }
    let tags = common::start_tags(&html);
    assert!(
        !tags.iter().any(|tag| tag.name == "script"
            || tag.attribute("src").is_some()
            || tag.attribute("href").is_some()),
        "the page loads nothing"
    );
    let command = html
        .split("<code class=\"command\">")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next())
        .expect("the command line is on the page");
    assert!(
        command.starts_with("bank bench --count 200 --clients 2"),
        "{command}"
    );
    assert!(command.contains("--html"), "{command}");
    assert!(html.contains("cores"), "the machine is on the page");
    assert!(!dir.path().join("bench.html.partial").exists());
}

#[test]
fn an_html_report_that_cannot_be_written_fails_before_the_run() {
    let output = common::bank([
        "bench",
        "--count",
        "10",
        "--html",
        "/nonexistent/dir/bench.html",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot write the report to /nonexistent/dir/bench.html"),
        "{stderr}"
    );
}

/// `bench/memory.sh` with a few accounts (the million of docs/performance.md takes minutes): it prints
/// every branch's peak and final resident memory and the throughput, and `LIMIT_MB` makes it
/// fail, after printing them, when a branch peaks above the limit (1 MB: always).
#[test]
fn the_memory_script_prints_each_branch_and_fails_above_its_limit() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/memory.sh");
    let run = |limit_mb: &str| {
        common::run_bounded(
            std::process::Command::new("bash")
                .arg(script)
                .env("BANK", common::BANK)
                .env("ACCOUNTS", "100")
                .env("COUNT", "200")
                .env("CLIENTS", "4")
                .env("LIMIT_MB", limit_mb),
            std::time::Duration::from_secs(120),
        )
    };
    let over = run("1");
    assert!(!over.status.success(), "{over:?}");
    for branch in 1..=3 {
        let line = format!("branch {branch}: peak RSS ");
        assert!(over.stdout.contains(&line), "no {line:?} in {over:?}");
    }
    assert!(over.stdout.contains("RSS now"), "{over:?}");
    assert!(over.stdout.contains("summary: throughput "), "{over:?}");
    assert!(
        over.stdout.contains(" ops/s, highest branch peak "),
        "{over:?}"
    );
    assert!(over.stderr.contains("above LIMIT_MB=1"), "{over:?}");
    assert!(!over.stderr.contains("invariant"), "{over:?}");
    let bad = run("sixty-four");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        bad.stderr.contains("LIMIT_MB must be a whole number"),
        "{bad:?}"
    );
}
