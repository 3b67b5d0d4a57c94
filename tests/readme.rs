//! The documents' commands, run as written: `README.md`, then every `docs/*.md` in name order.
//! A newcomer's first commands, and every guide's, must work verbatim.
//!
//! The rule, for every fenced block of a document whose info string starts with `sh` or
//! `console`, in the document's order:
//!
//! - A block whose info string contains `no-test` is skipped: it needs what a test cannot give
//!   it (Ctrl-C, fixed ports of a `bank server`, certificates, `cargo test` itself, a long
//!   benchmark, a tool that is not installed such as grpcurl). The document says which test
//!   covers it where it matters.
//! - `sh`: the whole block runs as one `sh -e` script and must exit 0.
//! - `console`: each line starting with `$ ` is a command; the lines after it, up to the next
//!   `$ `, are its expected output (stdout and stderr), compared line by line, with durations
//!   (`3.86ms`, `2.68ms`) masked, since they differ on every run.
//! - `sh background`: each line is a server that runs until stopped (a branch): each is started
//!   in the background, and the test waits, bounded, until all of them serve: it asks each
//!   line's own `--print-config` for its `listen` address, then polls `bank status` until the
//!   cluster has a leader, every branch answers and is a voter, and the new ones are members.
//!   They stay up for the blocks after it in the same document, and are killed when the
//!   document is done.
//!
//! "As written" means: the only change is that `cargo run --release --` becomes `bank`, and
//! `bank` is the binary Cargo built for this test (first on `PATH`). Each document's commands
//! run in a fresh temporary directory of their own, holding a copy of the repository's
//! `examples/` and `tests/testdata/course/`, so the paths the documents give, relative to the
//! repository root, resolve, and whatever the commands write (`output.json`, `data/`) lands
//! there, never in the repository. A failure names the document and the line of its block;
//! every document is run even when one fails, and the test then fails naming each.
//!
//! The documents' clusters use the fixed ports 7001-7004 and 7011-7012 (those of
//! `examples/config/` and the join and restore examples). No other test uses them (the others
//! bind `127.0.0.1:0` or probe free ports, which the system hands out from its ephemeral range,
//! far above them), but two runs of this test at once (two worktrees on one machine) would
//! collide: the test first holds 127.0.0.1:7000 as a lock, waiting (bounded) while another run
//! holds it; the system frees it whenever the holder exits, even killed. Documents run one after
//! another under that lock, and a document's cluster waits (bounded) for the previous one's
//! ports to be free.
//!
//! A second test checks every relative link of those documents: the file it names exists, and
//! an anchor (`file.md#section`) names a heading of that file, as GitHub spells it.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run_bounded, ChildGuard, Deadline, Finished, StderrCapture};

/// The port held while the documents' clusters run (see the module documentation).
const LOCK_PORT: u16 = 7000;
/// Bound on waiting for another run of this test to release [`LOCK_PORT`], or for a
/// cluster's ports to be free.
const LOCK_DEADLINE: Duration = Duration::from_secs(180);
/// Bound on one command of a block, or one whole `sh` block.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);
/// Bound on a background cluster serving.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Commands each document must run, not skip: a `no-test` put on the wrong block, or a
/// block rewritten so that it no longer runs them, fails the test.
const MUST_RUN: &[(&str, &str)] = &[
    (
        "README.md",
        "cargo run --release -- run examples/scenarios/p1.json",
    ),
    (
        "README.md",
        "bank branch --config examples/config/branch-1.toml",
    ),
    ("README.md", "bank status --branch 127.0.0.1:7001"),
    ("README.md", "all 3 branches agree: balance 325"),
    ("docs/operations.md", "--print-config"),
    ("docs/operations.md", "bank member remove 4"),
    ("docs/operations.md", "bank backup --branch"),
    ("docs/operations.md", "bank restore bank.backup"),
    ("docs/course.md", "bank run examples/scenarios/p2.json"),
    ("docs/course.md", "bank grade p1"),
    ("docs/api.md", "bank account transfer 1 2 30"),
    (
        "docs/checking.md",
        "bank check history.jsonl --html history.html",
    ),
];

/// The repository root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One document: its path from the repository root and its text.
struct Document {
    name: String,
    text: String,
}

/// `README.md`, then every `docs/*.md` in name order.
fn documents() -> Vec<Document> {
    let mut names = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("a docs/ entry").file_name())
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(root().join(&name))
                .unwrap_or_else(|e| panic!("read {name}: {e}"));
            Document { name, text }
        })
        .collect()
}

/// One fenced block: its info string and its lines.
struct Block {
    info: String,
    lines: Vec<String>,
    /// Where it is: the document and its first line's number (1-based), for messages.
    at: String,
}

/// Every fenced block of `document` (fences may be indented, as in a list).
fn blocks(document: &Document) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<(Block, usize)> = None;
    for (number, line) in document.text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let block = Block {
                        info: info.trim().to_string(),
                        lines: Vec::new(),
                        at: format!("{} line {}", document.name, number + 2),
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
    if let Some((block, _)) = open {
        panic!("{}: an unclosed code fence", block.at);
    }
    found
}

/// `command` as written in a document, with `cargo run --release --` made `bank`.
fn as_run(command: &str) -> String {
    command.replace("cargo run --release --", "bank")
}

/// The place a document's commands run in: a copy of `examples/` and of the course's files,
/// and `bank` first on `PATH`.
struct Workspace {
    dir: tempfile::TempDir,
    path: std::ffi::OsString,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        for copied in ["examples", "tests/testdata/course"] {
            copy_dir(&root().join(copied), &dir.path().join(copied));
        }
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
            // The documents' commands must not depend on settings of the machine running them.
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
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {from:?}: {e}")) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
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
                None => panic!("{}: output before any `$ ` command", block.at),
            },
        }
    }
    for (command, expected) in commands {
        let run = workspace.run("-c", &as_run(&command));
        assert!(
            run.status.success(),
            "{}: `{command}` exited with {}:\n{}",
            block.at,
            run.status,
            run.stdout
        );
        let got: Vec<String> = run.stdout.lines().map(mask_durations).collect();
        let want: Vec<String> = expected.iter().map(|l| mask_durations(l)).collect();
        assert_eq!(
            got, want,
            "{}: `{command}` printed other lines than the document shows",
            block.at
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
            "{}: `{command} --print-config` failed:\n{}",
            block.at,
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
            "{}: {busy}, which the cluster listens on, stayed in use by another process",
            block.at
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
                    "{}: a branch exited ({exit}) before the cluster served:\n{}",
                    block.at,
                    stderr.text()
                );
            }
        }
        deadline.pause_blocking(format_args!(
            "{}: the cluster never served; last `bank status`:\n{}",
            block.at, status.stdout
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
fn lock_document_ports() -> TcpListener {
    let deadline = Deadline::after(LOCK_DEADLINE).polling(Duration::from_millis(200));
    loop {
        if let Ok(lock) = TcpListener::bind(("127.0.0.1", LOCK_PORT)) {
            return lock;
        }
        deadline.pause_blocking(format_args!(
            "127.0.0.1:{LOCK_PORT} (the documents test's lock) stayed taken"
        ));
    }
}

/// Runs every block of `document` by the rules, in a workspace of its own; returns the lines
/// of the blocks it ran, and the workspace (its background branches already stopped).
fn run_document(document: &Document) -> (Vec<String>, Workspace) {
    let workspace = Workspace::new();
    let mut ran = Vec::new();
    let mut background = Vec::new();
    for block in blocks(document) {
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
                    "{}: the block exited with {}:\n{}",
                    block.at,
                    run.status,
                    run.stdout
                );
            }
            ("console", []) => run_console(&workspace, &block),
            _ => panic!(
                "{}: fence info {:?} is not one this test knows (see its rules)",
                block.at, block.info
            ),
        }
        ran.extend(block.lines);
    }
    drop(background);
    (ran, workspace)
}

#[test]
fn document_commands_run_as_written() {
    let _lock = lock_document_ports();
    let documents = documents();
    for (name, _) in MUST_RUN {
        assert!(
            documents.iter().any(|d| d.name == *name),
            "{name}, named in MUST_RUN, is not among the documents"
        );
    }
    let mut failed = Vec::new();
    for document in &documents {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let (ran, workspace) = run_document(document);
            for (name, command) in MUST_RUN {
                if *name == document.name {
                    assert!(
                        ran.iter().any(|line| line.contains(command)),
                        "{name}: {command:?} was not run: is its block marked no-test?"
                    );
                }
            }
            if document.name == "README.md" {
                assert!(
                    workspace.dir.path().join("data/branch-1").is_dir(),
                    "README.md: the config file's relative data-dir was not used"
                );
            }
        }));
        if outcome.is_err() {
            failed.push(document.name.clone());
        }
    }
    assert!(
        failed.is_empty(),
        "the commands of {} did not run as written (each failure is printed above)",
        failed.join(", ")
    );
}

/// A heading's anchor as GitHub makes it: lower case, spaces as `-`, every other character
/// but letters, digits, `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// The anchors of every heading of `text` outside code blocks (a repeated heading gets `-1`,
/// `-2`, ... as on GitHub).
fn anchors(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let Some(heading) = line
            .strip_prefix('#')
            .map(|rest| rest.trim_start_matches('#'))
            .and_then(|rest| rest.strip_prefix(' '))
        else {
            continue;
        };
        let base = anchor(heading.trim());
        let repeats = seen.entry(base.clone()).or_default();
        *repeats += 1;
        let repeats = *repeats - 1;
        found.push(if repeats == 0 {
            base
        } else {
            format!("{base}-{repeats}")
        });
    }
    found
}

/// Every `](target)` of `text` outside code blocks, with its line number (1-based).
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_code = false;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            found.push((number + 1, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn document_links_resolve() {
    let documents = documents();
    let mut broken = Vec::new();
    for document in &documents {
        let dir = root().join(&document.name);
        let dir = dir.parent().expect("a document's folder");
        for (line, target) in links(&document.text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let file: PathBuf = if path.is_empty() {
                root().join(&document.name)
            } else {
                dir.join(path)
            };
            if !file.exists() {
                broken.push(format!(
                    "{} line {line}: {target}: no such file",
                    document.name
                ));
                continue;
            }
            let Some(fragment) = fragment else { continue };
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if !anchors(&text).iter().any(|a| a == fragment) {
                broken.push(format!(
                    "{} line {line}: {target}: no heading with that anchor",
                    document.name
                ));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_spelled_as_github_does() {
    assert_eq!(
        anchor("Tails under a fixed load: `bank bench --rate`"),
        "tails-under-a-fixed-load-bank-bench---rate"
    );
    assert_eq!(
        anchor("Backup and export of 100,000 accounts"),
        "backup-and-export-of-100000-accounts"
    );
    assert_eq!(
        anchors("# A\n```sh\n# not a heading\n```\n## A\n"),
        vec!["a", "a-1"]
    );
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
