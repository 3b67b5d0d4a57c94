//! The Prometheus endpoint, scraped over HTTP while a real cluster takes traffic.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bank::web::Web;
use common::{call, client, start_cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);

/// `GET /metrics` over a plain TCP connection; the samples by series (name and labels).
async fn scrape(addr: std::net::SocketAddr) -> BTreeMap<String, f64> {
    let text = tokio::time::timeout(SCRAPE_DEADLINE, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: bank\r\nConnection: close\r\n\r\n")
            .await
            .expect("send request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read response");
        response
    })
    .await
    .expect("scraped in time");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("openmetrics-text"),
        "{head}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_traffic() {
    let cluster = start_cluster(3, 100).await;
    let exporter = Web::start("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("metrics endpoint starts");
    let before = scrape(exporter.local_addr()).await;

    // Deposits and a refused withdrawal at every branch: followers forward to the leader.
    let deposits = 3;
    for (_, addr) in cluster.addresses() {
        let mut customer = client(addr).await;
        for _ in 0..deposits {
            let reply = call(&mut customer, "deposit", 5).await.expect("deposit");
            assert_eq!(reply.result, "success");
        }
        let reply = call(&mut customer, "withdraw", 1_000_000)
            .await
            .expect("withdraw answered");
        assert_eq!(reply.result, "fail");
        assert!(call(&mut customer, "deposit", 0).await.is_err());
    }
    cluster.settled_states().await.expect("branches settle");
    let after = scrape(exporter.local_addr()).await;

    let grew = |series: &str| sample(&after, series) - sample(&before, series);
    for id in 1..=3 {
        let series = |interface: &str, outcome: &str| {
            format!(
                r#"bank_requests_total{{branch="{id}",interface="{interface}",outcome="{outcome}"}}"#
            )
        };
        assert_eq!(
            grew(&series("deposit", "success")),
            f64::from(deposits),
            "branch {id}"
        );
        assert_eq!(grew(&series("withdraw", "fail")), 1.0, "branch {id}");
        assert_eq!(
            grew(&series("invalid", "invalid_argument")),
            1.0,
            "branch {id}"
        );
        let latency =
            format!(r#"bank_request_duration_seconds_count{{branch="{id}",interface="deposit"}}"#);
        assert_eq!(grew(&latency), f64::from(deposits), "branch {id}");
        let branch = format!(r#"{{branch="{id}"}}"#);
        assert!(sample(&after, &format!("bank_raft_term{branch}")) >= 1.0);
        assert!(sample(&after, &format!("bank_raft_leader{branch}")) >= 1.0);
        assert_eq!(sample(&after, &format!("bank_raft_member{branch}")), 1.0);
        assert_eq!(sample(&after, &format!("bank_health_serving{branch}")), 1.0);
        // Every deposit and the refused withdrawal were applied (and checked) on every branch.
        assert!(
            grew(&format!("bank_ledger_invariant_checks_total{branch}"))
                >= f64::from(3 * deposits + 3),
            "branch {id}"
        );
        assert!(
            sample(&after, &format!("bank_raft_applied_index{branch}"))
                > sample(&before, &format!("bank_raft_applied_index{branch}"))
        );
    }
    // The two followers' writes reached the leader as forwarded proposals.
    let leaders: f64 = (1..=3)
        .map(|id| sample(&after, &format!(r#"bank_raft_is_leader{{branch="{id}"}}"#)))
        .sum();
    assert_eq!(leaders, 1.0);
    // The leader reports its commit index, at or past what every branch applied; the
    // followers report -1 (not known to them).
    let leader = (1..=3)
        .find(|id| sample(&after, &format!(r#"bank_raft_is_leader{{branch="{id}"}}"#)) == 1.0)
        .expect("a leader");
    let committed = sample(
        &after,
        &format!(r#"bank_raft_committed_index{{branch="{leader}"}}"#),
    );
    for id in 1..=3 {
        let applied = sample(
            &after,
            &format!(r#"bank_raft_applied_index{{branch="{id}"}}"#),
        );
        assert!(
            committed >= applied,
            "committed {committed}, branch {id} applied {applied}"
        );
        if id != leader {
            assert_eq!(
                sample(
                    &after,
                    &format!(r#"bank_raft_committed_index{{branch="{id}"}}"#)
                ),
                -1.0
            );
        }
    }
    let forwarded: f64 = (1..=3)
        .map(|id| {
            grew(&format!(
                r#"bank_requests_total{{branch="{id}",interface="forward",outcome="ok"}}"#
            ))
        })
        .sum();
    assert!(forwarded >= f64::from(2 * (deposits + 1)), "{forwarded}");
    exporter.stop().await;
    cluster.shutdown().await;
}
