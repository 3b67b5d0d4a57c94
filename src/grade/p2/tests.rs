use super::*;
use crate::grade::parse_document;
use crate::workload::scenario::Scenario;

fn reference(path: &str) -> String {
    let full = format!(
        "{}/tests/testdata/course/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn document(path: &str) -> Value {
    Value::Array(parse_document(&reference(path), path).unwrap())
}

fn spec_example() -> (Scenario, P2Output) {
    let input = "codlocker+CSE-531-Project/Project_2/input.json";
    let scenario = Scenario::parse(&reference(input), input).unwrap();
    let output = parse_parts(
        &document("course-extra/P2/spec_example_part1_customer_events.json"),
        &document("course-extra/P2/spec_example_part2_branch_events.json"),
        &document("course-extra/P2/spec_example_part3_all_events.json"),
    )
    .unwrap();
    (scenario, output)
}

#[test]
fn the_spec_example_passes_every_check() {
    let (scenario, output) = spec_example();
    let report = grade(&scenario, &output);
    assert!(report.all_pass(), "{report}");
    assert!(report.course.iter().all(|g| g.passed), "{report}");
}

/// Part 3 made again from parts 1 and 2, sorted, so a mutation of parts 1 and 2 shows in
/// their own checks only.
fn rebuild_part3(output: &mut P2Output) {
    let mut all: Vec<FlatEvent> = output
        .processes()
        .flat_map(|p| {
            p.events.iter().map(|e| FlatEvent {
                kind: p.kind,
                id: p.id,
                event: e.clone(),
            })
        })
        .collect();
    all.sort_by_key(|f| (f.event.request, f.event.clock));
    output.all = all;
}

fn branch(output: &mut P2Output, id: u32) -> &mut Process {
    output.branches.iter_mut().find(|p| p.id == id).unwrap()
}

fn messages_of<'a>(report: &'a crate::grade::Report, check: &'a str) -> Vec<&'a str> {
    report
        .failures_of(check)
        .map(|f| f.message.as_str())
        .collect()
}

#[test]
fn a_receive_before_its_send_is_caught_and_the_course_graders_miss_it() {
    let (scenario, mut output) = spec_example();
    // Branch 2 receives request 1 from branch 1 at 2, though branch 1 sent it at 3.
    let event = &mut branch(&mut output, 2).events[0];
    assert_eq!(event.comment, "event_recv from branch 1");
    event.clock = 2;
    rebuild_part3(&mut output);
    let report = grade(&scenario, &output);
    assert_eq!(
        messages_of(&report, "receive-after-send"),
        ["branch 2 receives request 1 (propogate_deposit from branch 1) at clock 2, but branch 1 sent it at clock 3: a receive must come after its send"]
    );
    let failure = report.failures_of("receive-after-send").next().unwrap();
    assert_eq!(
        failure.events.len(),
        2,
        "the send and the receive, to draw red"
    );
    assert!(
        report.course.iter().all(|g| g.passed),
        "the course graders pass it: {report}"
    );
    assert!(
        report.to_string().contains("course graders: 3 of 3 pass"),
        "{report}"
    );
}

#[test]
fn a_missing_propagation_is_caught() {
    let (scenario, mut output) = spec_example();
    let events = &mut branch(&mut output, 3).events;
    let at = events
        .iter()
        .position(|e| e.request == 1 && e.action == Action::RecvFromBranch(1))
        .unwrap();
    events.remove(at);
    rebuild_part3(&mut output);
    let report = grade(&scenario, &output);
    assert_eq!(
        messages_of(&report, "propagation"),
        ["request 1 (deposit from customer 1) never reaches branch 3: branch 3 logs no receive of it"]
    );
    let failure = report.failures_of("propagation").next().unwrap();
    assert!(failure.events.contains(&EventRef {
        kind: ProcessKind::Branch,
        process: 1,
        index: 2
    }));
}

#[test]
fn a_clock_that_does_not_increase_is_caught() {
    let (scenario, mut output) = spec_example();
    branch(&mut output, 1).events[1].clock = 2;
    rebuild_part3(&mut output);
    let report = grade(&scenario, &output);
    assert_eq!(
        messages_of(&report, "clocks-increase"),
        ["branch 1: event #2 (branch 1 sends request 1 (propogate_deposit to branch 2) at clock 2) comes after event #1 (clock 2): a process's clocks must strictly increase"]
    );
    assert!(!messages_of(&report, "lamport-rule").is_empty());
    assert!(
        !report.course[1].passed,
        "the course's part 2 grader sees this one"
    );
}

#[test]
fn part3_that_is_not_the_union_is_caught() {
    let (scenario, mut output) = spec_example();
    let dropped = output.all.remove(3);
    assert_eq!((dropped.id, dropped.event.clock), (2, 4));
    let report = grade(&scenario, &output);
    assert_eq!(
        messages_of(&report, "part3-union"),
        ["part 3 lacks events of parts 1 and 2: branch 2 receives request 1 (propogate_deposit from branch 1) at clock 4"]
    );
    assert_eq!(report.failures.len(), 1, "{report}");
    assert!(report.course.iter().all(|g| g.passed));
}

#[test]
fn forwarded_and_propagated_spellings_grade_alike() {
    let (scenario, mut output) = spec_example();
    for process in &mut output.branches {
        for event in &mut process.events {
            event.interface = event.interface.replace("propogate_", "forward_");
        }
    }
    rebuild_part3(&mut output);
    let report = grade(&scenario, &output);
    assert!(report.all_pass(), "{report}");
    branch(&mut output, 2).events[0].interface = "propagate_withdraw".into();
    rebuild_part3(&mut output);
    let report = grade(&scenario, &output);
    assert_eq!(
        messages_of(&report, "interface"),
        ["branch 2 receives request 1 (propagate_withdraw from branch 1) at clock 4: request 1 is a deposit in the input, so the interface must be propagate_deposit or propogate_deposit or forward_deposit"]
    );
}

#[test]
fn a_retried_send_pairs_the_receive_with_the_latest_earlier_copy() {
    let event = |request, clock, comment: &str| P2Event {
        request,
        clock,
        interface: "propagate_deposit".into(),
        comment: comment.into(),
        action: parse_comment(comment).unwrap(),
    };
    let output = P2Output {
        customers: Vec::new(),
        branches: vec![
            Process {
                kind: ProcessKind::Branch,
                id: 1,
                events: vec![
                    event(7, 1, "event_sent to branch 2"),
                    event(7, 2, "Event_Sent  to branch 2"),
                ],
            },
            Process {
                kind: ProcessKind::Branch,
                id: 2,
                events: vec![event(7, 3, "event_recv from branch 1")],
            },
        ],
        all: Vec::new(),
    };
    let (messages, unmatched) = match_messages(&output);
    assert!(unmatched.is_empty());
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].send.index, 1);
}

#[test]
fn codlocker_input_10_output_names_the_receiver_as_the_sender() {
    // codlocker's committed output for input_10.json (10 customers, 10 branches): every
    // propagate receive says "event_recv from branch B" at branch B itself, so none of the
    // 180 receives between branches can be paired with its send (the Lamport rule for them
    // cannot be checked either). Everything else passes, and the course graders give 3 of 3.
    let input = "codlocker+CSE-531-Project/Project_2/input_10.json";
    let scenario = Scenario::parse(&reference(input), input).unwrap();
    let output = parse_parts(
        &document("codlocker+CSE-531-Project/Project_2/customer_output.json"),
        &document("codlocker+CSE-531-Project/Project_2/branch_output.json"),
        &document("codlocker+CSE-531-Project/Project_2/output.json"),
    )
    .unwrap();
    let report = grade(&scenario, &output);
    assert_eq!(report.failures.len(), 180, "{report}");
    assert_eq!(report.failures_of("receive-has-send").count(), 180);
    assert!(report.failures[0]
        .message
        .contains("a branch does not message itself"));
    assert!(report.course.iter().all(|g| g.passed));
}
