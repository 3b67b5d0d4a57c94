//! The README's commands, run as written: a newcomer's first commands must work verbatim.
//!
//! The rule, for every fenced block of `README.md` whose info string starts with `sh` or
//! `console`, in README order:
//!
//! - A block whose info string contains `no-test` is skipped: it needs what a test cannot give
//!   it (Ctrl-C, fixed ports of a `bank server`, certificates, `cargo test` itself, the course's
//!   files). The README says which test covers it where it matters.
//! - `sh`: the whole block runs as one `sh -e` script and must exit 0.
//! - `console`: each line starting with `$ ` is a command; the lines after it, up to the next
//!   `$ `, are its expected output (stdout and stderr), compared line by line, with durations
//!   (`3.86ms`, `2.68ms`) masked, since they differ on every run.
//! - `sh background`: each line is a server that runs until stopped (a branch): each is started
//!   in the background, and the test waits, bounded, until all of them serve: it asks each
//!   line's own `--print-config` for its `listen` address, then polls `bank status` until the
//!   cluster has a leader, every branch answers and is a voter, and the new ones are members. They stay up for the blocks after it, and
//!   are killed when the test ends.
//!
//! "As written" means: the only change is that `cargo run --release --` becomes `bank`, and
//! `bank` is the binary Cargo built for this test (first on `PATH`). The commands run in a
//! fresh temporary directory holding a copy of the repository's `examples/`, so the README's
//! paths, relative to the repository root, resolve, and whatever the commands write
//! (`output.json`, `data/`) lands there, never in the repository.
//!
//! The README's cluster uses the fixed ports 7001-7003 of `examples/config/`. No other test
//! uses them (the others bind `127.0.0.1:0` or probe free ports, which the system hands out
//! from its ephemeral range, far above 7003), but two runs of this test at once (two
//! worktrees on one machine) would collide: the test first holds 127.0.0.1:7000 as a lock,
//! waiting (bounded) while another run holds it; the system frees it whenever the holder
//! exits, even killed.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run_bounded, ChildGuard, Deadline, Finished, StderrCapture};

/// The README, from the repository root.
const README: &str = include_str!("../README.md");
/// The port held while the README's cluster runs (see the module documentation).
const LOCK_PORT: u16 = 7000;
/// Bound on waiting for another run of this test to release [`LOCK_PORT`].
const LOCK_DEADLINE: Duration = Duration::from_secs(180);
/// Bound on one command of a block, or one whole `sh` block.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);
/// Bound on a background cluster serving.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// One fenced block: its info string and its lines.
struct Block {
    info: String,
    lines: Vec<String>,
    /// Its first line's number in the README (1-based), for messages.
    line: usize,
}

/// Every fenced block of `text` (fences may be indented, as in a list).
fn blocks(text: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<(Block, usize)> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let block = Block {
                        info: info.trim().to_string(),
                        lines: Vec::new(),
                        line: number + 2,
                    };
                    open = Some((block, indent));
                }
            }
            Some((block, _)) if trimmed.starts_with("```") => found.push(block),
            Some((mut block, indent)) => {
                let line = line.get(indent..).unwrap_or(trimmed);
                block.lines.push(line.to_string());
                open = Some((block, indent));
            }
        }
    }
    assert!(open.is_none(), "README.md has an unclosed code fence");
    found
}

/// `command` as written in the README, with `cargo run --release --` made `bank`.
fn as_run(command: &str) -> String {
    command.replace("cargo run --release --", "bank")
}

/// The place the README's commands run in: a copy of `examples/`, and `bank` first on `PATH`.
struct Workspace {
    dir: tempfile::TempDir,
    path: std::ffi::OsString,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        copy_dir(&root.join("examples"), &dir.path().join("examples"));
        let bin = dir.path().join(".bin");
        std::fs::create_dir(&bin).expect("make .bin");
        std::os::unix::fs::symlink(common::BANK, bin.join("bank")).expect("link bank");
        let mut path = bin.into_os_string();
        if let Some(inherited) = std::env::var_os("PATH") {
            path.push(":");
            path.push(inherited);
        }
        Workspace { dir, path }
    }

    /// `sh -c SCRIPT` here, stderr merged into stdout, stdin closed.
    fn sh(&self, flags: &str, script: &str) -> Command {
        let mut command = Command::new("sh");
        command
            .arg(flags)
            .arg(format!("exec 2>&1\n{script}"))
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .stdin(Stdio::null());
        for (key, _) in std::env::vars() {
            // The README's commands must not depend on settings of the machine running them.
            if key.starts_with("BANK_") {
                command.env_remove(key);
            }
        }
        command
    }

    fn run(&self, flags: &str, script: &str) -> Finished {
        run_bounded(&mut self.sh(flags, script), COMMAND_DEADLINE)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("make directory");
    for entry in std::fs::read_dir(from).expect("read examples") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy an example");
        }
    }
}

/// `line` with every duration (`3.86ms`, `12µs`, `1.5s`) replaced by `<duration>`.
fn mask_durations(line: &str) -> String {
    line.split(' ')
        .map(|word| {
            let body = word.trim_end_matches([';', ',', ')']);
            let digits = body.trim_end_matches(|c: char| c.is_alphabetic() || c == 'µ');
            let unit = &body[digits.len()..];
            let is_number =
                !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == '.');
            if is_number && ["ns", "µs", "us", "ms", "s"].contains(&unit) {
                format!("<duration>{}", &word[body.len()..])
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a `console` block: each command's output must be the lines written under it.
fn run_console(workspace: &Workspace, block: &Block) {
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    for line in &block.lines {
        match line.strip_prefix("$ ") {
            Some(command) => commands.push((command.to_string(), Vec::new())),
            None => match commands.last_mut() {
                Some((_, expected)) => expected.push(line.clone()),
                None => panic!("README line {}: output before any `$ ` command", block.line),
            },
        }
    }
    for (command, expected) in commands {
        let run = workspace.run("-c", &as_run(&command));
        assert!(
            run.status.success(),
            "README line {}: `{command}` exited with {}:\n{}",
            block.line,
            run.status,
            run.stdout
        );
        let got: Vec<String> = run.stdout.lines().map(mask_durations).collect();
        let want: Vec<String> = expected.iter().map(|l| mask_durations(l)).collect();
        assert_eq!(
            got, want,
            "README line {}: `{command}` printed other lines than the README shows",
            block.line
        );
    }
}

/// The branches of a `sh background` block, started and serving.
struct Background {
    children: Vec<(ChildGuard, StderrCapture)>,
}

/// Starts each line of a `sh background` block and waits until the cluster serves.
fn start_background(workspace: &Workspace, block: &Block) -> Background {
    let commands: Vec<String> = block
        .lines
        .iter()
        .map(|l| as_run(l.trim()))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut listen = Vec::new();
    for command in &commands {
        let printed = workspace.run("-c", &format!("{command} --print-config"));
        assert!(
            printed.status.success(),
            "README line {}: `{command} --print-config` failed:\n{}",
            block.line,
            printed.stdout
        );
        let settings: toml::Table = printed.stdout.parse().expect("--print-config prints TOML");
        let addr: SocketAddr = settings["listen"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("a listen address");
        listen.push(addr);
    }
    let deadline = Deadline::after(LOCK_DEADLINE);
    while let Some(busy) = listen.iter().find(|a| TcpListener::bind(a).is_err()) {
        deadline.pause_blocking(format_args!(
            "{busy}, which the README's cluster listens on, stayed in use by another process"
        ));
    }
    let mut children = Vec::new();
    for command in &commands {
        let mut child = ChildGuard::spawn(
            workspace
                .sh("-c", &format!("exec {command}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let stderr = child.child_mut().stderr.take().expect("piped stderr");
        children.push((child, StderrCapture::new(stderr)));
    }
    let mut background = Background { children };
    let asked = listen[0].to_string();
    let deadline = Deadline::after(READY_DEADLINE);
    loop {
        let status = workspace.run("-c", &format!("bank status --branch {asked} --json"));
        if serving(&status.stdout, &listen) {
            return background;
        }
        for (child, stderr) in &mut background.children {
            if let Some(exit) = child.try_wait() {
                panic!(
                    "README line {}: a branch exited ({exit}) before the cluster served:\n{}",
                    block.line,
                    stderr.text()
                );
            }
        }
        deadline.pause_blocking(format_args!(
            "README line {}: the cluster never served; last `bank status`:\n{}",
            block.line, status.stdout
        ));
    }
}

/// Whether `bank status --json` printed a cluster with a leader, every branch of it reachable
/// and a voter (so a branch that joins has also been promoted), among them one at each of
/// `listen`.
fn serving(status: &str, listen: &[SocketAddr]) -> bool {
    let Ok(status) = serde_json::from_str::<serde_json::Value>(status) else {
        return false;
    };
    let branches = status["branches"].as_array().map_or(&[][..], Vec::as_slice);
    status["leader"].as_u64().is_some()
        && branches
            .iter()
            .all(|b| b["reachable"] == true && b["voter"] == true)
        && listen.iter().all(|addr| {
            branches
                .iter()
                .any(|b| b["address"].as_str() == Some(addr.to_string().as_str()))
        })
}

/// Holds [`LOCK_PORT`] (see the module documentation), waiting while another run holds it.
fn lock_readme_ports() -> TcpListener {
    let deadline = Deadline::after(LOCK_DEADLINE).polling(Duration::from_millis(200));
    loop {
        if let Ok(lock) = TcpListener::bind(("127.0.0.1", LOCK_PORT)) {
            return lock;
        }
        deadline.pause_blocking(format_args!(
            "127.0.0.1:{LOCK_PORT} (the README test's lock) stayed taken"
        ));
    }
}

#[test]
fn readme_commands_run_as_written() {
    let _lock = lock_readme_ports();
    let workspace = Workspace::new();
    let mut ran = Vec::new();
    let mut background = Vec::new();
    for block in blocks(README) {
        let mut words = block.info.split_whitespace();
        let kind = words.next().unwrap_or("");
        let rest: Vec<&str> = words.collect();
        if !matches!(kind, "sh" | "console") || rest.contains(&"no-test") {
            continue;
        }
        match (kind, rest.as_slice()) {
            ("sh", ["background"]) => background.push(start_background(&workspace, &block)),
            ("sh", []) => {
                let run = workspace.run("-ec", &as_run(&block.lines.join("\n")));
                assert!(
                    run.status.success(),
                    "README line {}: the block exited with {}:\n{}",
                    block.line,
                    run.status,
                    run.stdout
                );
            }
            ("console", []) => run_console(&workspace, &block),
            _ => panic!(
                "README line {}: fence info {:?} is not one this test knows (see its rules)",
                block.line, block.info
            ),
        }
        ran.extend(block.lines);
    }
    // The commands a newcomer starts with must be among those run, not skipped.
    for command in [
        "cargo run --release -- run examples/scenarios/p1.json",
        "bank branch --config examples/config/branch-1.toml",
        "bank status --branch 127.0.0.1:7001",
    ] {
        assert!(
            ran.iter().any(|line| line.contains(command)),
            "the README's {command:?} was not run: is its block marked no-test?"
        );
    }
    assert!(
        ran.iter().any(|l| l == "all 3 branches agree: balance 325"),
        "the README's example no longer shows its summary"
    );
    assert!(
        workspace.dir.path().join("data/branch-1").is_dir(),
        "the config file's relative data-dir was not used"
    );
    drop(background);
}

#[test]
fn durations_are_masked() {
    assert_eq!(
        mask_durations("3 branches ready in 3.86ms; 3 customers, 7 events in 12µs; output"),
        "3 branches ready in <duration>; 3 customers, 7 events in <duration>; output"
    );
    assert_eq!(
        mask_durations("branch 1: balance 325"),
        "branch 1: balance 325"
    );
}
