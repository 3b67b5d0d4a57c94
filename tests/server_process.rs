//! Process-level tests of the `bank` binary: `bank server` as a real child process, driven by
//! signals, by `bank client` and by the Python interop client (`tests/interop/client.py`, the
//! original course's gRPC stack).
//!
//! Every wait here is a bounded poll (connect / `try_wait` in a loop with a deadline), never a
//! bare sleep, and every child process is killed when its guard is dropped, so a failing test
//! never leaves a server behind.

mod common;

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::{bank_command, run_bounded, ChildGuard, Deadline, NotReady, StderrCapture};

const PY_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/client.py");

/// Branch ids of `Project_1/input.json`.
const P1_BRANCHES: u16 = 3;
/// Query balances `Project_1/input.json` must produce, per customer id.
const P1_EXPECTED: [(i64, i64); 3] = [(1, 400), (2, 570), (3, 500)];

const READY_DEADLINE: Duration = Duration::from_secs(30);
const EXIT_DEADLINE: Duration = Duration::from_secs(10);
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The course's `Project_1/input.json` (three branches, three customers).
fn p1_input() -> PathBuf {
    common::reference("codlocker+CSE-531-Project/Project_1/input.json")
}

/// A running `bank server`, with its stderr captured; killed (and reaped) on drop.
struct ServerGuard {
    child: ChildGuard,
    stderr: StderrCapture,
    base_port: u16,
    branches: u16,
}

impl ServerGuard {
    /// Spawns `bank server INPUT --base-port P EXTRA...` on a fresh free base port.
    fn spawn(input: &Path, branches: u16, extra: &[&OsStr]) -> ServerGuard {
        let base_port = common::free_base_port(branches);
        let mut child = ChildGuard::spawn(
            bank_command()
                .arg("server")
                .arg(input)
                .args(["--base-port", &base_port.to_string()])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let stderr = StderrCapture::new(child.child_mut().stderr.take().expect("piped stderr"));
        ServerGuard {
            child,
            stderr,
            base_port,
            branches,
        }
    }

    /// Spawns a server on `Project_1/input.json` and waits until every branch port accepts
    /// connections.
    ///
    /// The free ports are only free when probed: another test (or an outgoing connection's
    /// ephemeral port) can take one before the server binds it. If the server then exits
    /// saying an address is in use, it is retried on new ports, a bounded number of times.
    fn start_project_1() -> ServerGuard {
        ServerGuard::start_project_1_with(&[])
    }

    /// As [`ServerGuard::start_project_1`], with extra arguments for `bank server`.
    fn start_project_1_with(extra: &[&OsStr]) -> ServerGuard {
        let mut attempt = 1;
        loop {
            let mut server = ServerGuard::spawn(&p1_input(), P1_BRANCHES, extra);
            match server.wait_ready() {
                Ok(()) => return server,
                Err(stderr) if attempt < 3 && stderr.to_lowercase().contains("in use") => {
                    eprintln!("bank server lost a port race (attempt {attempt}), retrying");
                    attempt += 1;
                }
                Err(stderr) => panic!(
                    "`bank server` exited before its ports accepted connections; stderr:\n{stderr}"
                ),
            }
        }
    }

    fn addr(&self, branch: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + branch))
    }

    /// Polls until a plain TCP connect to every branch port succeeds (deadline 30 s). If the
    /// server exits first, returns its status and stderr as the error; panics with the
    /// server's stderr if the deadline passes.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Deadline::after(READY_DEADLINE);
        for branch in 1..=self.branches {
            let addr = self.addr(branch);
            match self.child.wait_accepting(addr, &deadline) {
                Ok(()) => {}
                Err(NotReady::Exited(status)) => {
                    return Err(format!(
                        "({status}, before branch {branch} at {addr} was up)\n{}",
                        self.stderr.finish()
                    ))
                }
                Err(NotReady::TimedOut) => panic!(
                    "branch {branch} ({addr}) did not accept connections within {:?}; \
                     stderr:\n{}",
                    READY_DEADLINE,
                    self.stderr.text()
                ),
            }
        }
        Ok(())
    }

    /// Sends a signal with `kill -SIG <pid>`.
    fn signal(&self, sig: &str) {
        self.child.signal(sig);
    }

    /// Waits up to `limit` for the server to exit; `None` if it is still running.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.child.wait_exit(limit)
    }
}

/// The query balances of a P1 output document, per customer id, in document order; also checks
/// that every deposit / withdraw of Project_1/input.json reports success.
fn p1_query_balances(text: &str) -> Vec<(i64, i64)> {
    let doc: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("output is not JSON ({e}):\n{text}"));
    let customers = doc
        .as_array()
        .unwrap_or_else(|| panic!("output is not a JSON array:\n{text}"));
    let mut balances = Vec::new();
    for customer in customers {
        let id = customer["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("customer entry without integer id: {customer}"));
        let recv = customer["recv"]
            .as_array()
            .unwrap_or_else(|| panic!("customer entry without recv array: {customer}"));
        for event in recv {
            match event["interface"].as_str() {
                Some("query") => balances.push((
                    id,
                    event["balance"]
                        .as_i64()
                        .unwrap_or_else(|| panic!("query without integer balance: {event}")),
                )),
                Some("deposit" | "withdraw") => assert_eq!(
                    event["result"].as_str(),
                    Some("success"),
                    "customer {id}: {event}"
                ),
                _ => panic!("customer {id}: unexpected event {event}"),
            }
        }
    }
    balances
}

fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked"),
        "the process panicked; stderr:\n{stderr}"
    );
}

fn assert_clean_exit_on(sig: &str) {
    let mut server = ServerGuard::start_project_1();
    server.signal(sig);
    let status = server.wait_exit(EXIT_DEADLINE);
    let stderr = server.stderr.finish();
    let status = status.unwrap_or_else(|| {
        panic!("`bank server` still running {EXIT_DEADLINE:?} after SIG{sig}; stderr:\n{stderr}")
    });
    assert!(
        status.success(),
        "`bank server` exited with {status} after SIG{sig} (want 0); stderr:\n{stderr}"
    );
    assert_no_panic(&stderr);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn server_stops_cleanly_on_sigint() {
    assert_clean_exit_on("INT");
}

#[test]
fn server_stops_cleanly_on_sigterm() {
    assert_clean_exit_on("TERM");
}

#[test]
fn client_against_server_project_1() {
    let server = ServerGuard::start_project_1();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.json");
    let run = run_bounded(
        bank_command()
            .arg("client")
            .arg(p1_input())
            .arg("--base-port")
            .arg(server.base_port.to_string())
            .arg("-o")
            .arg(&out),
        CLIENT_DEADLINE,
    );
    assert!(
        run.status.success(),
        "`bank client` exited with {}; stdout:\n{}\nstderr:\n{}\nserver stderr:\n{}",
        run.status,
        run.stdout,
        run.stderr,
        server.stderr.text()
    );
    assert_no_panic(&run.stderr);
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("`bank client` wrote no {}: {e}", out.display()));
    assert_eq!(p1_query_balances(&text), P1_EXPECTED, "output:\n{text}");
}

/// Runs `bank client` on Project_1 against `server`; returns the query balances.
fn run_project_1_client(server: &ServerGuard, out: &std::path::Path) -> Vec<(i64, i64)> {
    let run = run_bounded(
        bank_command()
            .arg("client")
            .arg(p1_input())
            .arg("--base-port")
            .arg(server.base_port.to_string())
            .arg("-o")
            .arg(out),
        CLIENT_DEADLINE,
    );
    assert!(
        run.status.success(),
        "`bank client` exited with {}; stderr:\n{}\nserver stderr:\n{}",
        run.status,
        run.stderr,
        server.stderr.text()
    );
    let text = std::fs::read_to_string(out).expect("client output");
    p1_query_balances(&text)
}

/// `bank server --data-dir`: stopped with SIGTERM and started again on the same directory, the
/// bank continues from the balance it had (500), not from the scenario's 400.
#[test]
fn server_restarts_from_its_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = dir.path().join("out.json");
    let extra = [OsStr::new("--data-dir"), data.as_os_str()];

    let mut server = ServerGuard::start_project_1_with(&extra);
    assert_eq!(run_project_1_client(&server, &out), P1_EXPECTED);
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("server exits");
    assert!(
        status.success(),
        "exit {status}; stderr:\n{}",
        server.stderr.finish()
    );

    let server = ServerGuard::start_project_1_with(&extra);
    // Customer 1 queries 500; customer 2 deposits 170 (670); customer 3 withdraws 70 (600).
    assert_eq!(
        run_project_1_client(&server, &out),
        vec![(1, 500), (2, 670), (3, 600)]
    );
}

#[test]
fn python_interop_client() {
    let Some(python) = std::env::var_os("BANK_PYTHON") else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "BANK_PYTHON is not set but CI is: CI must run the Python interop test \
                 (point BANK_PYTHON at a python with tests/interop/requirements.txt installed)"
            );
        }
        eprintln!(
            "python_interop_client: skipped: set BANK_PYTHON to a python with \
             tests/interop/requirements.txt installed to run it"
        );
        return;
    };
    assert!(Path::new(PY_CLIENT).is_file(), "{PY_CLIENT} is missing");
    let server = ServerGuard::start_project_1();
    let run = run_bounded(
        std::process::Command::new(&python)
            .arg(PY_CLIENT)
            .args(["--check-errors", "--base-port"])
            .arg(server.base_port.to_string())
            .arg(p1_input()),
        CLIENT_DEADLINE,
    );
    assert!(
        run.status.success(),
        "{PY_CLIENT} exited with {}; stdout:\n{}\nstderr:\n{}\nserver stderr:\n{}",
        run.status,
        run.stdout,
        run.stderr,
        server.stderr.text()
    );
    assert_eq!(
        p1_query_balances(&run.stdout),
        P1_EXPECTED,
        "stdout:\n{}",
        run.stdout
    );
}

#[test]
fn server_rejects_bad_input_file() {
    let run = run_bounded(
        bank_command().args(["server", "/nonexistent.json"]),
        EXIT_DEADLINE,
    );
    assert!(
        !run.status.success(),
        "`bank server /nonexistent.json` exited with {}; stderr:\n{}",
        run.status,
        run.stderr
    );
    assert!(
        !run.stderr.trim().is_empty(),
        "`bank server /nonexistent.json` failed without a message on stderr"
    );
    assert_no_panic(&run.stderr);
}

#[test]
fn server_fails_when_a_port_is_taken() {
    // Hold branch 2's port so the server cannot bind it (another test may grab a probed port
    // in between: probe again then).
    let (base_port, _taken) = (0..20)
        .find_map(|_| {
            let base_port = common::free_base_port(P1_BRANCHES);
            let taken = TcpListener::bind(("127.0.0.1", base_port + 2)).ok()?;
            Some((base_port, taken))
        })
        .expect("hold branch 2's port");
    let run = run_bounded(
        bank_command()
            .arg("server")
            .arg(p1_input())
            .arg("--base-port")
            .arg(base_port.to_string()),
        READY_DEADLINE,
    );
    assert!(
        !run.status.success(),
        "`bank server` exited with {} although port {} was taken; stderr:\n{}",
        run.status,
        base_port + 2,
        run.stderr
    );
    assert!(
        !run.stderr.trim().is_empty(),
        "`bank server` failed without a message on stderr"
    );
    assert_no_panic(&run.stderr);
}
