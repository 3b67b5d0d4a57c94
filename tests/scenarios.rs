//! Every reference scenario of the original project, run through real gRPC against a real
//! in-process cluster, compared with its expected output; afterwards every branch must hold the
//! same state.

mod common;

use bank::bootstrap::local::Storage;
use bank::course::runner::run_scenario;
use bank::course::scenario::Scenario;
use serde_json::{json, Value};

/// Runs `input` (a path under tests/testdata/course) the way `bank run` does, and returns the
/// output JSON, after checking that every branch ends with an identical ledger and the same
/// balance of the shared account.
async fn run_reference(input: &str, concurrent: bool) -> Value {
    let scenario = Scenario::load(&common::reference(input)).expect("reference input parses");
    let run = run_scenario(&scenario, concurrent, Storage::Memory)
        .await
        .expect("the scenario runs");
    assert_eq!(run.balances.len(), scenario.branches.len());
    assert!(run.identical, "a branch diverged: {:?}", run.balances);
    assert!(run.agree(), "balances differ: {:?}", run.balances);
    for (id, balance) in &run.balances {
        assert!(balance.is_some(), "branch {id} has no shared account");
    }
    run.output
}

fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(common::reference(path)).expect("reference output");
    serde_json::from_str(&text).expect("reference output is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_1_input_gives_400_570_500() {
    let output = run_reference("codlocker+CSE-531-Project/Project_1/input.json", false).await;
    assert_eq!(
        output,
        json!([
            {"id": 1, "recv": [{"interface": "query", "balance": 400}]},
            {"id": 2, "recv": [{"interface": "deposit", "result": "success"}, {"interface": "query", "balance": 570}]},
            {"id": 3, "recv": [{"interface": "withdraw", "result": "success"}, {"interface": "query", "balance": 500}]},
        ])
    );
}

/// 50 branches (5 voters, 45 learners), 100 customers: the balances of the original's
/// `output1.json` (JSON lines, upper-case, float money), 410..900 then 890..400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_1_input1_matches_output1_balances() {
    let output = run_reference("codlocker+CSE-531-Project/Project_1/input1.json", false).await;
    let text = std::fs::read_to_string(common::reference(
        "codlocker+CSE-531-Project/Project_1/output1.json",
    ))
    .expect("output1.json");
    let expected: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let original: Value = serde_json::from_str(line).expect("one JSON object per line");
            let recv: Vec<Value> = original["recv"]
                .as_array()
                .expect("recv")
                .iter()
                .map(|event| {
                    let interface = event["interface"].as_str().expect("interface").to_lowercase();
                    if interface == "query" {
                        json!({"interface": "query", "balance": event["money"].as_f64().expect("money") as i64})
                    } else {
                        json!({"interface": interface, "result": event["result"].as_str().expect("result").to_lowercase()})
                    }
                })
                .collect();
            json!({"id": original["id"], "recv": recv})
        })
        .collect();
    assert_eq!(expected.len(), 100);
    assert_eq!(output, Value::Array(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_3_input_big_matches_output() {
    let output = run_reference("codlocker+CSE-531-Project/Project_3/input_big.json", false).await;
    assert_eq!(
        output,
        read_json("codlocker+CSE-531-Project/Project_3/output.json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_3_small_input_reads_its_own_writes() {
    let output = run_reference("codlocker+CSE-531-Project/Project_3/input.json", false).await;
    assert_eq!(
        output,
        json!([
            {"id": 1, "recv": [{"interface": "deposit", "branch": 1, "result": "success"}]},
            {"id": 1, "recv": [{"interface": "query", "branch": 1, "balance": 400}]},
            {"id": 1, "recv": [{"interface": "query", "branch": 2, "balance": 400}]},
        ])
    );
}

/// The carolaFro project's committed output lists every event twice (a bug in its client);
/// ours lists each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carola_input_matches_its_output_listed_once() {
    let output = run_reference("carolaFro+Simple-gRPC-BankServer/input.json", false).await;
    let doubled = read_json("carolaFro+Simple-gRPC-BankServer/output.json");
    let doubled = doubled.as_array().expect("array");
    assert_eq!(doubled.len() % 2, 0);
    let once: Vec<Value> = doubled
        .chunks(2)
        .map(|pair| {
            assert_eq!(pair[0], pair[1], "the original repeats each entry");
            pair[0].clone()
        })
        .collect();
    assert_eq!(output, Value::Array(once));
}

/// Customers running at once still leave every branch with the same state (checked in
/// `run_reference`), and each customer still sees its own writes. (Heavier concurrency is in
/// tests/cluster.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_1_concurrent_customers_converge() {
    let output = run_reference("codlocker+CSE-531-Project/Project_1/input.json", true).await;
    let customers = output.as_array().expect("array");
    assert_eq!(customers.len(), 3);
    assert_eq!(
        customers[1]["recv"][0],
        json!({"interface": "deposit", "result": "success"})
    );
    assert_eq!(
        customers[2]["recv"][0],
        json!({"interface": "withdraw", "result": "success"})
    );
    // Queries may interleave with the other customers' writes, but only in these ways.
    let query = |c: usize| {
        customers[c]["recv"]
            .as_array()
            .expect("recv")
            .last()
            .expect("query")["balance"]
            .as_i64()
    };
    assert!(
        matches!(query(0), Some(400 | 570 | 330 | 500)),
        "{:?}",
        query(0)
    );
    assert!(matches!(query(1), Some(570 | 500)), "{:?}", query(1));
    assert!(matches!(query(2), Some(330 | 500)), "{:?}", query(2));
}
