use super::*;
use crate::grade::parse_document;
use crate::workload::scenario::Scenario;

fn reference(path: &str) -> String {
    let full = format!("{}/../shared/reference/{path}", env!("CARGO_MANIFEST_DIR"));
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

#[test]
fn print_codlocker() {
    let input = "codlocker+CSE-531-Project/Project_2/input_10.json";
    let scenario = Scenario::parse(&reference(input), input).unwrap();
    let output = parse_parts(
        &document("codlocker+CSE-531-Project/Project_2/customer_output.json"),
        &document("codlocker+CSE-531-Project/Project_2/branch_output.json"),
        &document("codlocker+CSE-531-Project/Project_2/output.json"),
    )
    .unwrap();
    let report = grade(&scenario, &output);
    let mut counts = std::collections::BTreeMap::new();
    for f in &report.failures {
        *counts.entry(f.check).or_insert(0) += 1;
    }
    println!("{report}\n{counts:?}");
    let (scenario, output) = spec_example();
    println!("{}", grade(&scenario, &output));
}
