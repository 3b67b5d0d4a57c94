//! The course's Part 2 run for real: `bank run` on the course's P2 inputs (3x3, 4x4, 10x10)
//! writes Lamport events that pass the strict grader (`bank::grade::p2`) and the course's own
//! graders' rules; `bank run --diagram` draws them as valid SVG with one line per process and
//! one arrow per message. And the P3 variants: the 2024/25 read-your-writes input (which
//! repeats an event id) and the monotonic-writes input run and pass their graders.

mod common;

use bank::bootstrap::local::Storage;
use bank::course::runner::run_scenario;
use bank::course::scenario::{Scenario, Variant};
use bank::grade::p3::Checks;
use bank::grade::{p2, p3, parse_replies};
use common::{bank, reference};

const P2_INPUTS: [&str; 3] = [
    "codlocker+CSE-531-Project/Project_2/input.json",
    "course-extra/P2/logical-clock_input_4x4.json",
    "codlocker+CSE-531-Project/Project_2/input_10.json",
];

async fn graded_p2_run(path: &str, concurrent: bool) {
    let scenario = Scenario::load(&reference(path)).expect(path);
    assert_eq!(scenario.variant, Variant::LamportClocks, "{path}");
    let run = run_scenario(&scenario, concurrent, Storage::Memory)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(run.agree(), "{path}: branches disagree");
    let parts = run.clocked.expect("a P2 run has Lamport parts");
    assert_eq!(run.output, parts.all, "the output file is part 3");
    let output = p2::parse_parts(&parts.customer, &parts.branch, &parts.all)
        .unwrap_or_else(|e| panic!("{path}: our own parts do not parse: {e}"));
    let report = p2::grade(&scenario, &output);
    assert!(
        report.all_pass(),
        "{path} (concurrent: {concurrent}):\n{report}"
    );
    // The course graders' per-process rules, re-stated in bank::grade::p2.
    assert!(!report.course.is_empty());
    assert!(
        report.course.iter().all(|grader| grader.passed),
        "{path}: {report}"
    );
    // Every request was really carried: every branch received each one.
    let requests = scenario.event_count();
    let branches = scenario.branches.len();
    let receives = output
        .branches
        .iter()
        .flat_map(|process| &process.events)
        .filter(|event| event.comment.starts_with("event_recv"))
        .count();
    assert!(
        receives >= requests * branches,
        "{path}: {receives} receives for {requests} requests at {branches} branches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_runs_pass_the_strict_and_the_course_graders() {
    for path in P2_INPUTS {
        graded_p2_run(path, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_p2_runs_pass_the_strict_grader_too() {
    // Customers at once: the leader group-commits several requests in one entry, so one
    // message carries several clocks.
    for path in P2_INPUTS {
        graded_p2_run(path, true).await;
    }
}

#[test]
fn bank_run_draws_a_p2_run_as_svg() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = reference(P2_INPUTS[0]);
    let output = dir.path().join("output.json");
    let diagram = dir.path().join("run.svg");
    let run = bank([
        "run".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
        "--diagram".as_ref(),
        diagram.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("Lamport events written to"), "{stdout}");
    assert!(stderr.contains("checks pass)"), "{stderr}");
    for part in ["customer_output.json", "branch_output.json", "output.json"] {
        assert!(dir.path().join(part).is_file(), "{part} written");
    }
    let read = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.path().join(name)).expect(name);
        serde_json::from_str(&text).expect(name)
    };
    let parts = p2::parse_parts(
        &read("customer_output.json"),
        &read("branch_output.json"),
        &read("output.json"),
    )
    .expect("the written parts parse");
    let (messages, unmatched) = p2::match_messages(&parts);
    assert!(unmatched.is_empty(), "every receive has its send");
    let svg = std::fs::read_to_string(&diagram).expect("the diagram");
    let document = roxmltree::Document::parse(&svg).expect("the diagram is well-formed XML");
    let with_class = |class: &str| {
        document
            .descendants()
            .filter(|node| {
                node.attribute("class")
                    .is_some_and(|classes| classes.split_whitespace().any(|c| c == class))
            })
            .count()
    };
    // 3 customers and 3 branches; one arrow per message actually exchanged.
    assert_eq!(with_class("process"), 6);
    assert_eq!(with_class("message"), messages.len());
    assert_eq!(with_class("violation"), 0, "nothing fails, nothing is red");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_variants_run_and_pass_their_graders() {
    let cases = [
        // The 2024/25 course input: event id 5 appears twice; ids are labels.
        (
            "course-extra/P3/read-your-writes_input_2024.json",
            Checks::All,
        ),
        (
            "course-extra/P3/monotonic-writes_input.json",
            Checks::MonotonicWrites,
        ),
    ];
    for (path, checks) in cases {
        let scenario = Scenario::load(&reference(path)).expect(path);
        assert_eq!(scenario.variant, Variant::ClientCentric, "{path}");
        let run = run_scenario(&scenario, false, Storage::Memory)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let entries = run.output.as_array().expect("a P3 output is an array");
        let replies = parse_replies(entries, path).expect("our output parses");
        let report = p3::grade(&scenario, &replies, checks);
        assert!(report.all_pass(), "{path}:\n{report}");
        assert!(report.checks >= scenario.event_count(), "{path}: {report}");
    }
}
