//! The HTTP listener's page and event stream under bad input, against a real three-branch
//! cluster: unknown paths, the buttons where they are not offered, an event stream that stops
//! reading or vanishes (the cluster keeps serving, other pages keep updating), and the cap on
//! event streams.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bank::web::feed::{CLIENTS_MAX, POLL_INTERVAL};
use bank::web::{View, Web};
use common::{call, client, eventually, start_cluster, Deadline};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const HTTP_DEADLINE: Duration = Duration::from_secs(5);

/// One request over a fresh connection; the status code and the body.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    tokio::time::timeout(HTTP_DEADLINE, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!("{method} {path} HTTP/1.1\r\nHost: bank\r\n{headers}Connection: close\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status code");
        (code, body.to_string())
    })
    .await
    .expect("answered in time")
}

/// An open `/events` stream (HTTP/1.0: the body is the events, not chunked).
struct Stream {
    lines: BufReader<TcpStream>,
}

impl Stream {
    /// Opens `/events`; the status code, and the stream if it is 200.
    async fn open(addr: SocketAddr) -> (u16, Option<Stream>) {
        let mut stream = tokio::time::timeout(HTTP_DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connected in time")
            .expect("connect");
        stream
            .write_all(b"GET /events HTTP/1.0\r\nHost: bank\r\n\r\n")
            .await
            .expect("send");
        let mut lines = BufReader::new(stream);
        let mut status = String::new();
        tokio::time::timeout(HTTP_DEADLINE, lines.read_line(&mut status))
            .await
            .expect("status line in time")
            .expect("read status line");
        let code: u16 = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status:?}"));
        (code, (code == 200).then_some(Stream { lines }))
    }

    /// The next snapshot, parsed, within `limit`.
    async fn next(&mut self, limit: Duration) -> serde_json::Value {
        tokio::time::timeout(limit, async {
            loop {
                let mut line = String::new();
                let read = self.lines.read_line(&mut line).await.expect("read event");
                assert!(read > 0, "the event stream ended");
                if let Some(data) = line.strip_prefix("data: ") {
                    return serde_json::from_str(data.trim_end()).expect("a JSON snapshot");
                }
            }
        })
        .await
        .expect("a snapshot in time")
    }
}

async fn page_of_cluster(addresses: Vec<SocketAddr>) -> Web {
    let web = Web::start("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("listener starts");
    web.show(View {
        ask: addresses.iter().map(ToString::to_string).collect(),
        ..View::default()
    });
    web
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_serves_its_files_and_refuses_the_rest() {
    let cluster = start_cluster(3, 100).await;
    let web = page_of_cluster(cluster.addresses().into_values().collect()).await;
    let addr = web.local_addr();
    let (code, body) = request(addr, "GET", "/", "").await;
    assert_eq!(code, 200);
    assert!(body.contains("<script src=\"/app.js\">"), "{body}");
    for path in ["/app.js", "/style.css", "/metrics"] {
        assert_eq!(request(addr, "GET", path, "").await.0, 200, "{path}");
    }
    for path in ["/nope", "/events/extra", "/index.html", "/control"] {
        assert_eq!(request(addr, "GET", path, "").await.0, 404, "{path}");
    }
    // No control was given (as for `bank branch`): the buttons are refused.
    let (code, body) = request(addr, "POST", "/control/stop/2", "x-bank-control: 1\r\n").await;
    assert_eq!(code, 403, "{body}");
    let (code, _) = request(addr, "GET", "/control/stop/2", "").await;
    assert_eq!(code, 405, "controls are POST only");

    let (code, stream) = Stream::open(addr).await;
    assert_eq!(code, 200);
    let snapshot = stream.expect("open").next(HTTP_DEADLINE).await;
    let branches = snapshot["branches"].as_array().expect("branches");
    assert_eq!(branches.len(), 3, "{snapshot}");
    assert!(
        branches.iter().all(|b| b["reachable"] == true),
        "{snapshot}"
    );
    assert_eq!(snapshot["original_balance"], 100, "{snapshot}");
    assert_eq!(snapshot["controls"], false, "{snapshot}");
    web.stop().await;
    cluster.shutdown().await;
}

/// A stream that stops reading, and one that vanishes, block nothing: writes go on at full
/// speed and a reading page sees every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_vanished_page_blocks_nothing() {
    let cluster = start_cluster(3, 100).await;
    let addresses: Vec<SocketAddr> = cluster.addresses().into_values().collect();
    let web = page_of_cluster(addresses.clone()).await;
    let addr = web.local_addr();
    let (_, stalled) = Stream::open(addr).await;
    let _stalled = stalled.expect("a stream that is never read again");
    let (_, vanished) = Stream::open(addr).await;
    drop(vanished);
    let (_, reader) = Stream::open(addr).await;
    let mut reader = reader.expect("a reading page");

    let mut customer = client(addresses[0]).await;
    let mut balance = 100;
    for _ in 0..5 {
        let reply =
            tokio::time::timeout(Duration::from_secs(5), call(&mut customer, "deposit", 10))
                .await
                .expect("a deposit is not held up by the pages")
                .expect("deposit");
        balance += 10;
        assert_eq!(reply.balance, balance);
        let deadline = Deadline::after(Duration::from_secs(5));
        loop {
            let snapshot = reader.next(deadline.remaining()).await;
            if snapshot["original_balance"] == balance {
                break;
            }
        }
    }
    // The vanished stream is noticed and let go; the stalled one is still held (its socket
    // buffers are not full yet), the reader too.
    eventually(
        "the vanished stream is dropped",
        Duration::from_secs(10),
        || async { (web.feed().clients() <= 2).then_some(()) },
    )
    .await;
    web.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_cap_get_503_until_one_closes() {
    let cluster = start_cluster(3, 100).await;
    let web = page_of_cluster(cluster.addresses().into_values().collect()).await;
    let addr = web.local_addr();
    let mut open = Vec::new();
    for _ in 0..CLIENTS_MAX {
        let (code, stream) = Stream::open(addr).await;
        assert_eq!(code, 200, "stream {} of {CLIENTS_MAX}", open.len() + 1);
        open.push(stream.expect("open"));
    }
    let (code, _) = Stream::open(addr).await;
    assert_eq!(code, 503, "one past the cap");
    // The page itself and /metrics are still served.
    assert_eq!(request(addr, "GET", "/metrics", "").await.0, 200);
    drop(open.pop());
    let reopened = eventually(
        "a stream fits again after one closed",
        Duration::from_secs(10),
        || async {
            let (code, stream) = Stream::open(addr).await;
            (code == 200).then_some(stream)
        },
    )
    .await;
    assert!(reopened.is_some());
    // Every open stream still gets updates.
    let first = open.first_mut().expect("a stream");
    first.next(POLL_INTERVAL * 10).await;
    web.stop().await;
    cluster.shutdown().await;
}

/// `bank run --http --pace`: every customer event shows on the page as it happens, with the
/// leader the branch forwarded it to; the page stays up after the run until Ctrl-C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_run_shows_every_customer_event_then_stays_up_until_interrupted() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("temporary directory");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/scenarios/p3.json");
    let events: usize = {
        let text = std::fs::read_to_string(scenario).expect("scenario");
        let entries: Vec<serde_json::Value> = serde_json::from_str(&text).expect("JSON");
        entries
            .iter()
            .filter_map(|e| e["events"].as_array())
            .map(Vec::len)
            .sum()
    };
    let http: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .expect("address");
    let output = dir.path().join("output.json");
    let mut run = common::ChildGuard::spawn(
        common::bank_command()
            .arg("run")
            .arg(scenario)
            .arg("-o")
            .arg(&output)
            .args(["--http", &http.to_string(), "--pace", "50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let stderr = run.child_mut().stderr.take().expect("piped stderr");
    let mut stderr = common::StderrCapture::new(stderr);
    let deadline = Deadline::after(Duration::from_secs(30));
    let waited = tokio::task::block_in_place(|| run.wait_accepting(http, &deadline));
    assert!(waited.is_ok(), "{waited:?}: {}", stderr.text());
    let (code, stream) = Stream::open(http).await;
    assert_eq!(code, 200);
    let mut stream = stream.expect("open");
    let snapshot = loop {
        let snapshot = stream.next(deadline.remaining()).await;
        if snapshot["activity"].as_array().map_or(0, Vec::len) == events {
            break snapshot;
        }
    };
    let activity = snapshot["activity"].as_array().expect("activity");
    assert!(
        activity
            .iter()
            .all(|a| a["leader"].is_u64() && a["customer"].is_u64() && a["balance"].is_i64()),
        "{snapshot}"
    );
    assert_eq!(snapshot["controls"], true, "a local cluster on loopback");
    let said = eventually(
        "bank run says the page stays up",
        Duration::from_secs(20),
        || {
            let text = stderr.text();
            async move { text.contains("until Ctrl-C").then_some(text) }
        },
    )
    .await;
    assert!(output.is_file(), "{said}");
    run.signal("INT");
    let status = tokio::task::block_in_place(|| run.wait_exit(Duration::from_secs(20)));
    assert_eq!(
        status.map(|s| s.success()),
        Some(true),
        "{}",
        stderr.finish()
    );
}
