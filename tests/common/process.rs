//! The built `bank` binary and other child processes: one-shot runs (plain, with environment,
//! from async tests, bounded), and long-running children behind a guard that kills them on
//! drop, so a failing test never leaves a process behind.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::wait::Deadline;

/// The `bank` binary Cargo built for these tests.
pub const BANK: &str = env!("CARGO_BIN_EXE_bank");

/// A `bank` command line to finish (arguments, environment, stdio) before running it.
pub fn bank_command() -> Command {
    Command::new(BANK)
}

/// Runs `command` to its exit with stdin closed, capturing stdout and stderr.
pub fn output_of(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"))
}

/// Runs `bank ARGS` to its exit, capturing stdout and stderr.
pub fn bank<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    output_of(bank_command().args(args))
}

/// Runs `bank ARGS` with the environment variables `env` set, as [`bank`].
pub fn bank_with_env<I, S>(args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    output_of(bank_command().args(args).envs(env.iter().copied()))
}

/// Runs `bank ARGS` from an async test without blocking its runtime (an in-process cluster
/// keeps serving meanwhile); the process is killed if it has not finished within `limit`.
pub async fn bank_async<I, S>(args: I, limit: Duration) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let run = tokio::process::Command::new(BANK)
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("`bank {args:?}` did not finish within {limit:?}"))
        .expect("bank binary runs")
}

/// What a bounded run ([`run_bounded`]) left: its exit status and its output as text.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to completion with stdin closed, capturing stdout and stderr; kills it and
/// panics (with its stderr so far) if it overruns `limit`.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Finished {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut stdout_pipe = child.stdout.take().expect("piped stdout");
    let stdout_thread = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut out);
        out
    });
    let mut stderr = StderrCapture::new(child.stderr.take().expect("piped stderr"));
    let mut child = ChildGuard(child);
    let Some(status) = child.wait_exit(limit) else {
        drop(child);
        panic!(
            "{what} did not finish within {limit:?}; stderr so far:\n{}",
            stderr.finish()
        );
    };
    let stdout = stdout_thread.join().expect("stdout reader");
    Finished {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: stderr.finish(),
    }
}

/// [`run_bounded`] from an async test, on a blocking thread so the runtime keeps running.
pub async fn run_bounded_async(mut command: Command, limit: Duration) -> Finished {
    tokio::task::spawn_blocking(move || run_bounded(&mut command, limit))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Drains a child's stderr on a thread (so a chatty child never blocks on a full pipe) into a
/// buffer that can be read at any time.
pub struct StderrCapture {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl StderrCapture {
    /// Starts draining `stderr`.
    pub fn new(mut stderr: ChildStderr) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match stderr.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
        });
        StderrCapture {
            buf,
            thread: Some(thread),
        }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Waits (at most 5 s) for the child's end of the pipe to close, then returns everything.
    pub fn finish(&mut self) -> String {
        if let Some(thread) = self.thread.take() {
            let deadline = Deadline::after(Duration::from_secs(5));
            while !thread.is_finished() && !deadline.passed() {
                std::thread::sleep(super::wait::POLL);
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        self.text()
    }
}

/// Why a child did not become ready ([`ChildGuard::wait_accepting`]).
#[derive(Debug)]
pub enum NotReady {
    /// It exited first, with this status.
    Exited(ExitStatus),
    /// The deadline passed.
    TimedOut,
}

/// A running child process, killed (and reaped) when the guard is dropped, even if the test
/// fails.
#[derive(Debug)]
pub struct ChildGuard(Child);

impl ChildGuard {
    /// Spawns `command` under a guard.
    pub fn spawn(command: &mut Command) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        ChildGuard(child)
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// The child itself (to take a piped stream).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.0
    }

    /// Sends `sig` (e.g. "TERM", "STOP", "CONT") with `kill -SIG <pid>`; asserts it was sent.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.id().to_string())
            .status()
            .expect("run `kill`");
        assert!(
            status.success(),
            "`kill -{sig} {}` failed: {status}",
            self.id()
        );
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reap");
    }

    /// The child's exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().expect("try_wait")
    }

    /// Waits up to `limit` for the child to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Deadline::after(limit);
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if deadline.passed() {
                return None;
            }
            std::thread::sleep(super::wait::POLL);
        }
    }

    /// Polls until a plain TCP connect to `addr` succeeds (the child is listening), the child
    /// exits, or `deadline` passes.
    pub fn wait_accepting(
        &mut self,
        addr: SocketAddr,
        deadline: &Deadline,
    ) -> Result<(), NotReady> {
        loop {
            if let Some(status) = self.try_wait() {
                return Err(NotReady::Exited(status));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if deadline.passed() {
                return Err(NotReady::TimedOut);
            }
            std::thread::sleep(super::wait::POLL);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}
