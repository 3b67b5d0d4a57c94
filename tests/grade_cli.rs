//! `bank grade p1|p2|p3` end to end on the reference outputs in `tests/testdata/course`: exit 0
//! when every check passes, 1 when one fails, 2 when a file cannot be graded; "N of M checks
//! pass" on stdout; `p2 --diagram` writes well-formed SVG with one lane per process and one
//! arrow per message.

use std::path::PathBuf;
use std::process::{Command, Output};

fn reference(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/course")
        .join(path)
}

fn codlocker(path: &str) -> PathBuf {
    reference(&format!("codlocker+CSE-531-Project/{path}"))
}

fn grade(args: &[&std::ffi::OsStr]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_bank"))
        .arg("grade")
        .args(args)
        .output();
    output.unwrap_or_else(|e| panic!("cannot run bank: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SPEC: [&str; 3] = [
    "course-extra/P2/spec_example_part1_customer_events.json",
    "course-extra/P2/spec_example_part2_branch_events.json",
    "course-extra/P2/spec_example_part3_all_events.json",
];

#[test]
fn a_right_p1_output_exits_zero() {
    let input = codlocker("Project_1/input.json");
    let output = codlocker("local_runs/P1_output_for_input.json");
    let run = grade(&["p1".as_ref(), input.as_ref(), output.as_ref()]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "12 of 12 checks pass\n");
}

#[test]
fn a_failing_p3_output_exits_one_and_says_how_many_pass() {
    let input = reference("carolaFro+Simple-gRPC-BankServer/input.json");
    let output = reference("carolaFro+Simple-gRPC-BankServer/output.json");
    let run = grade(&["p3".as_ref(), input.as_ref(), output.as_ref()]);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("5 of 34 checks pass\n"), "{stdout}");
    assert!(
        stdout.contains("each entry appears twice in a row"),
        "{stdout}"
    );
    assert!(stdout.contains("... and 19 more failures"), "{stdout}");
    assert!(stdout.contains("course graders: 1 of 1 pass"), "{stdout}");
    assert_eq!(text(&run.stderr), "error: 29 of 34 checks fail\n");
}

#[test]
fn p3_input_big_passes_each_check_selection() {
    let input = codlocker("Project_3/input_big.json");
    let output = codlocker("Project_3/output.json");
    for check in ["monotonic-writes", "read-your-writes", "all"] {
        let run = grade(&[
            "p3".as_ref(),
            input.as_ref(),
            output.as_ref(),
            "--check".as_ref(),
            check.as_ref(),
        ]);
        assert_eq!(run.status.code(), Some(0), "{check}: {}", text(&run.stdout));
    }
}

#[test]
fn unreadable_or_mismatched_files_exit_two_with_one_line() {
    let p1_input = codlocker("Project_1/input.json");
    let missing = reference("no-such-output.json");
    let runs = [
        grade(&["p1".as_ref(), p1_input.as_ref(), missing.as_ref()]),
        // A P1 input given to p3.
        grade(&["p3".as_ref(), p1_input.as_ref(), p1_input.as_ref()]),
        // A P1 input is not a P1 output.
        grade(&["p1".as_ref(), p1_input.as_ref(), p1_input.as_ref()]),
    ];
    let expected = [
        "cannot read",
        "is a Project 1 input (events without \"branch\"): grade it with `bank grade p1`",
        "fix the file or pass the right one",
    ];
    for (run, expected) in runs.iter().zip(expected) {
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn p2_codlocker_output_for_input_10_fails_our_checks_but_not_the_courses() {
    let input = codlocker("Project_2/input_10.json");
    let dir = codlocker("Project_2");
    let run = grade(&["p2".as_ref(), input.as_ref(), dir.as_ref()]);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("1682 of 1862 checks pass\n"), "{stdout}");
    assert!(stdout.contains("course graders: 3 of 3 pass"), "{stdout}");
}

#[test]
fn p2_diagram_of_the_spec_example_is_svg_with_a_lane_per_process_and_an_arrow_per_message() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let svg_path = dir.path().join("clocks.svg");
    let input = codlocker("Project_2/input.json");
    let parts = SPEC.map(reference);
    let run = grade(&[
        "p2".as_ref(),
        input.as_ref(),
        parts[0].as_ref(),
        parts[1].as_ref(),
        parts[2].as_ref(),
        "--diagram".as_ref(),
        svg_path.as_ref(),
    ]);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}{}", text(&run.stderr));
    assert!(stdout.contains("194 of 194 checks pass"), "{stdout}");
    assert!(stdout.contains("course graders: 3 of 3 pass"), "{stdout}");

    // Every receive in parts 1 and 2 is one message (the spec example pairs them all).
    let mut processes = 0;
    let mut receives = 0;
    for part in &parts[..2] {
        let text = std::fs::read_to_string(part).unwrap_or_else(|e| panic!("{e}"));
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        for process in value.as_array().into_iter().flatten() {
            processes += 1;
            receives += process["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    e["comment"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("event_recv"))
                })
                .count();
        }
    }
    assert_eq!((processes, receives), (6, 18));

    let svg = std::fs::read_to_string(&svg_path).unwrap_or_else(|e| panic!("{e}"));
    let document = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    let with_class = |class: &str| {
        document
            .descendants()
            .filter(|n| {
                n.attribute("class")
                    .is_some_and(|c| c.split_whitespace().any(|token| token == class))
            })
            .count()
    };
    assert_eq!(document.root_element().tag_name().name(), "svg");
    assert_eq!(with_class("process"), processes);
    assert_eq!(with_class("message"), receives);
    assert_eq!(with_class("violation"), 0);
}
