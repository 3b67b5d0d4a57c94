//! `bank status`, the built binary, against a real cluster in this process.

mod common;

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

/// Bound on one `bank status` run (each of its calls is bounded at 3 s).
const RUN_DEADLINE: Duration = Duration::from_secs(30);

/// `bank status ARGS`, bounded by [`RUN_DEADLINE`].
async fn bank_status(args: &[&str]) -> Output {
    common::bank_async(["status"].iter().chain(args), RUN_DEADLINE).await
}

/// Six branches (five voters, one learner): every one listed, reachable, in agreement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_every_branch_in_agreement() {
    let cluster = common::start_cluster(6, 100).await;
    let mut customer = common::client(cluster.addresses()[&2]).await;
    common::call(&mut customer, "deposit", 7)
        .await
        .expect("deposit");
    cluster.settled_states().await.expect("branches settle");
    let asked = cluster.addresses()[&3].to_string();

    let run = bank_status(&["--branch", &asked, "--json"]).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let status: Value = serde_json::from_slice(&run.stdout).expect("JSON on stdout");
    let branches = status["branches"].as_array().expect("branches");
    assert_eq!(branches.len(), 6, "{status}");
    let leader = status["leader"].as_u64().expect("a leader");
    for (branch, id) in branches.iter().zip(1..) {
        assert_eq!(branch["id"], id, "{branch}");
        assert_eq!(branch["address"], cluster.addresses()[&id].to_string());
        assert_eq!(branch["reachable"], true, "{branch}");
        assert_eq!(branch["lag"], 0, "{branch}");
        assert_eq!(branch["digest"], branches[0]["digest"], "{status}");
        assert_eq!(branch["applied_index"], branches[0]["applied_index"]);
        let role = branch["role"].as_str().expect("role");
        let expected = if id == leader {
            "leader"
        } else if id == 6 {
            "learner"
        } else {
            "follower"
        };
        assert_eq!(role, expected, "{branch}");
        assert_eq!(branch["voter"], id <= 5, "{branch}");
    }

    let run = bank_status(&["--branch", &asked]).await;
    assert!(run.status.success());
    let table = String::from_utf8_lossy(&run.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID"), "{table}");
    for header in [
        "ADDRESS",
        "ROLE",
        "TERM",
        "APPLIED",
        "LAG",
        "DIGEST",
        "REACHABLE",
    ] {
        assert!(lines[0].contains(header), "{table}");
    }
    assert_eq!(
        lines.iter().filter(|line| line.ends_with("yes")).count(),
        6,
        "{table}"
    );
    assert!(
        table.contains(&format!("leader: branch {leader}")),
        "{table}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_an_unreachable_branch_fails_clearly() {
    // A port that was free a moment ago and has no listener now.
    let addr = format!("127.0.0.1:{}", common::free_port());
    let run = bank_status(&["--branch", &addr]).await;
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the branch at {addr}")),
        "{stderr}"
    );
    assert!(run.stdout.is_empty());
}
