//! The live page in a real headless Chromium, driven over WebDriver (chromedriver): a
//! `bank server` of three branches with `--http`, the page loaded once and never reloaded.
//! It must list every branch with its role and one digest, follow a deposit, show a branch
//! stopped with the page's own button as unreachable within about two seconds, and show it
//! back after the restart button. A screenshot is left in `target/tmp/web-test/page.png`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`;
//! other paths: BANK_CHROMIUM, BANK_CHROMEDRIVER). Without them the test is skipped with a
//! notice, except under CI (CI=true), where it fails.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bank_command, free_base_port, free_port, run_bounded_async, ChildGuard, Deadline};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

const START_DEADLINE: Duration = Duration::from_secs(30);
const BROWSER_DEADLINE: Duration = Duration::from_secs(30);
/// A stopped branch must show as unreachable this soon after the button answered.
const RED_DEADLINE: Duration = Duration::from_millis(2_500);

/// `var`'s path, or `default`, if the file is there.
fn tool(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.is_file().then_some(path)
}

/// What the page's branch table shows, read from the rendered DOM.
async fn rows(browser: &Client) -> Vec<Value> {
    let script = r#"
        return Array.from(document.querySelectorAll('#branches tbody tr')).map(tr => ({
            id: tr.cells[0].textContent,
            role: tr.cells[2].textContent,
            health: tr.cells[6].textContent,
            digest: tr.cells[7].textContent,
            reachable: tr.dataset.reachable === 'true',
        }));"#;
    let found = tokio::time::timeout(BROWSER_DEADLINE, browser.execute(script, vec![]))
        .await
        .expect("the browser answers in time")
        .expect("the script runs");
    found.as_array().cloned().unwrap_or_default()
}

async fn text_of(browser: &Client, id: &str) -> String {
    let script = format!("return document.getElementById('{id}').textContent;");
    let found = tokio::time::timeout(BROWSER_DEADLINE, browser.execute(&script, vec![]))
        .await
        .expect("the browser answers in time")
        .expect("the script runs");
    found.as_str().unwrap_or_default().to_string()
}

/// Polls the page until `check` holds on its rows; the rows then.
async fn until_rows(
    browser: &Client,
    what: &str,
    limit: Duration,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Deadline::after(limit);
    loop {
        let rows = rows(browser).await;
        if check(&rows) {
            return rows;
        }
        deadline
            .pause(format!("{what}; the page shows {rows:?}"))
            .await;
    }
}

/// Clicks the page's `action` button of branch `id` (in the page, so a redraw between
/// finding and clicking cannot go stale).
async fn click(browser: &Client, action: &str, id: &str) {
    let script = format!(
        "const b = document.querySelector('#branch-{id} button[data-action={action}]'); \
         if (!b || b.disabled) return false; b.click(); return true;"
    );
    let deadline = Deadline::after(Duration::from_secs(10));
    loop {
        let clicked = browser
            .execute(&script, vec![])
            .await
            .expect("the script runs");
        if clicked == json!(true) {
            break;
        }
        deadline
            .pause(format!("the {action} button of branch {id} is offered"))
            .await;
    }
    let deadline = Deadline::after(Duration::from_secs(20));
    loop {
        let said = text_of(browser, "ctlmsg").await;
        if said.ends_with("done") {
            return;
        }
        assert!(
            !said.contains(": ") || said.contains('…'),
            "{action} {id}: {said}"
        );
        deadline
            .pause(format!("{action} {id} is done; the page says {said:?}"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_follows_the_cluster_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (
        tool("BANK_CHROMIUM", "/usr/bin/chromium"),
        tool("BANK_CHROMEDRIVER", "/usr/bin/chromedriver"),
    ) else {
        assert!(
            std::env::var("CI").map_or(true, |ci| ci != "true"),
            "chromium and chromedriver are required in CI (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: no chromium/chromedriver (apt-get install chromium chromium-driver)");
        return;
    };
    let base_port = free_base_port(3);
    let http = format!("127.0.0.1:{}", free_port());
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/scenarios/p1.json");
    let mut server = ChildGuard::spawn(
        bank_command()
            .args(["server", scenario, "--base-port", &base_port.to_string()])
            .args(["--http", &http])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Deadline::after(START_DEADLINE);
    for port in [base_port + 1, base_port + 2, base_port + 3] {
        let addr = format!("127.0.0.1:{port}").parse().expect("address");
        server
            .wait_accepting(addr, &deadline)
            .expect("bank server serves");
    }
    let driver_port = free_port();
    let mut driver = ChildGuard::spawn(
        Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let driver_addr = format!("127.0.0.1:{driver_port}").parse().expect("address");
    driver
        .wait_accepting(driver_addr, &deadline)
        .expect("chromedriver listens");

    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_string(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900"],
        }),
    );
    let browser = tokio::time::timeout(
        BROWSER_DEADLINE,
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://{driver_addr}")),
    )
    .await
    .expect("a browser session in time")
    .expect("chromedriver starts chromium");
    tokio::time::timeout(BROWSER_DEADLINE, browser.goto(&format!("http://{http}/")))
        .await
        .expect("the page loads in time")
        .expect("the page loads");

    // Every branch, with its role, and one digest.
    let shown = until_rows(
        &browser,
        "three branches, one leader",
        BROWSER_DEADLINE,
        |rows| {
            rows.len() == 3
                && rows.iter().all(|r| r["reachable"] == true)
                && rows.iter().filter(|r| r["role"] == "leader").count() == 1
                && rows.iter().filter(|r| r["role"] == "follower").count() == 2
        },
    )
    .await;
    let digests: Vec<&Value> = shown.iter().map(|r| &r["digest"]).collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "{shown:?}");
    assert_eq!(text_of(&browser, "balance").await, "250");

    // A deposit shows without a reload.
    let deposit = run_bounded_async(
        {
            let mut command = bank_command();
            command.args(["account", "deposit", "0", "7", "--branch"]);
            command.arg(format!("127.0.0.1:{}", base_port + 1));
            command
        },
        Duration::from_secs(20),
    )
    .await;
    assert!(deposit.status.success(), "{}", deposit.stderr);
    let deadline = Deadline::after(Duration::from_secs(5));
    while text_of(&browser, "balance").await != "257" {
        deadline.pause("the page shows the deposit").await;
    }

    // The leader, stopped with its button: red within about two seconds, a new leader.
    let leader = shown
        .iter()
        .find(|r| r["role"] == "leader")
        .and_then(|r| r["id"].as_str())
        .expect("a leader")
        .to_string();
    click(&browser, "stop", &leader).await;
    let down = |rows: &[Value]| {
        rows.iter().any(|r| {
            r["id"] == leader.as_str() && r["reachable"] == false && r["health"] == "unreachable"
        })
    };
    until_rows(
        &browser,
        "the stopped branch shows as unreachable",
        RED_DEADLINE,
        down,
    )
    .await;
    until_rows(&browser, "a new leader", Duration::from_secs(15), |rows| {
        down(rows) && rows.iter().any(|r| r["role"] == "leader")
    })
    .await;
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-test");
    std::fs::create_dir_all(&screenshots).expect("screenshot directory");
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots.join("page-branch-down.png"), png).expect("write screenshot");

    // Back after the restart button, with the same ledger as the others.
    click(&browser, "restart", &leader).await;
    until_rows(
        &browser,
        "the restarted branch is back and caught up",
        Duration::from_secs(20),
        |rows| {
            rows.len() == 3
                && rows
                    .iter()
                    .all(|r| r["reachable"] == true && r["health"] == "serving")
                && rows.iter().all(|r| r["digest"] == rows[0]["digest"])
        },
    )
    .await;
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots.join("page.png"), png).expect("write screenshot");
    eprintln!("screenshots in {}", screenshots.display());
    let _ = tokio::time::timeout(BROWSER_DEADLINE, browser.close()).await;
}
