//! `bank branch --config FILE` and the `BANK_*` environment, the built binary: precedence
//! (flag > file > environment > default) seen through `--print-config`, a real branch started
//! from a config file, and every kind of bad file refused before anything starts.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bank_command, free_port, run_bounded, ChildGuard, Deadline, Finished};

/// Bound on a `bank` run that must exit by itself.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);
/// Bound on a branch becoming the leader of its one-branch cluster.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// `bank branch ARGS` with exactly the `BANK_*` variables `env` (none inherited), to its exit.
fn branch(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Finished {
    run_bounded(&mut branch_command(args, env, dir), EXIT_DEADLINE)
}

/// The command line of `bank branch ARGS` in `dir`, environment as [`branch`].
fn branch_command(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Command {
    let mut command = bank_command();
    for (key, _) in std::env::vars() {
        if key.starts_with("BANK_") {
            command.env_remove(key);
        }
    }
    command
        .current_dir(dir)
        .arg("branch")
        .args(args)
        .envs(env.iter().copied());
    command
}

/// `--print-config`'s output, parsed.
fn printed(run: &Finished) -> toml::Table {
    assert!(
        run.status.success(),
        "--print-config exited with {}; stderr:\n{}",
        run.status,
        run.stderr
    );
    run.stdout
        .parse()
        .unwrap_or_else(|e| panic!("--print-config printed no TOML ({e}):\n{}", run.stdout))
}

#[test]
fn flags_override_the_file_which_overrides_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("branch.toml"),
        r#"
listen = "127.0.0.1:7101"
peer = ["2=127.0.0.1:7102", "3=127.0.0.1:7103"]
data-dir = "from-file"
balance = 40
drain-timeout = "750ms"
"#,
    )
    .expect("write config");
    let env = [
        ("BANK_ID", "3"),
        ("BANK_LISTEN", "127.0.0.1:9999"),
        ("BANK_PEER", "7=127.0.0.1:9997,8=127.0.0.1:9998"),
        ("BANK_BALANCE", "20"),
        ("BANK_REQUESTS_MAX", "77"),
        ("BANK_DRAIN_TIMEOUT", "9s"),
    ];
    let run = branch(
        &[
            "--config",
            "branch.toml",
            "--print-config",
            "--balance",
            "60",
        ],
        &env,
        dir.path(),
    );
    let merged = printed(&run);
    // Flag over file over environment.
    assert_eq!(merged["balance"].as_integer(), Some(60), "{merged}");
    // File over environment.
    assert_eq!(
        merged["listen"].as_str(),
        Some("127.0.0.1:7101"),
        "{merged}"
    );
    assert_eq!(merged["data-dir"].as_str(), Some("from-file"), "{merged}");
    assert_eq!(merged["drain-timeout"].as_str(), Some("750ms"), "{merged}");
    let peers: Vec<&str> = merged["peer"]
        .as_array()
        .expect("peer is an array")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert_eq!(peers, ["2=127.0.0.1:7102", "3=127.0.0.1:7103"], "{merged}");
    // Environment over default where the file is silent.
    assert_eq!(merged["id"].as_integer(), Some(3), "{merged}");
    assert_eq!(merged["requests-max"].as_integer(), Some(77), "{merged}");
    // Default where nothing sets it.
    assert_eq!(merged["rejoin"].as_bool(), Some(false), "{merged}");
    // Nothing started: --print-config only prints.
    assert!(
        !dir.path().join("from-file").exists(),
        "a data dir was made"
    );

    // What --print-config prints, --config accepts, to the same result.
    std::fs::write(dir.path().join("printed.toml"), &run.stdout).expect("write printed");
    let again = printed(&branch(
        &["--config", "printed.toml", "--print-config"],
        &[],
        dir.path(),
    ));
    assert_eq!(again, merged);
}

#[test]
fn the_environment_alone_configures_a_branch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("BANK_ID", "2"),
        ("BANK_LISTEN", "127.0.0.1:7202"),
        ("BANK_PEER", "1=127.0.0.1:7201,3=127.0.0.1:7203"),
        ("BANK_DATA_DIR", "d2"),
        ("BANK_REJOIN", "true"),
        ("BANK_DRAIN_TIMEOUT", "2s"),
    ];
    let merged = printed(&branch(&["--print-config"], &env, dir.path()));
    assert_eq!(merged["id"].as_integer(), Some(2), "{merged}");
    assert_eq!(merged["peer"].as_array().map(Vec::len), Some(2), "{merged}");
    assert_eq!(merged["rejoin"].as_bool(), Some(true), "{merged}");
    assert_eq!(merged["drain-timeout"].as_str(), Some("2s"), "{merged}");

    // `rejoin = false` in a file turns off BANK_REJOIN=true: the file outranks it.
    std::fs::write(dir.path().join("off.toml"), "rejoin = false\n").expect("write config");
    let merged = printed(&branch(
        &["--config", "off.toml", "--print-config"],
        &env,
        dir.path(),
    ));
    assert_eq!(merged["rejoin"].as_bool(), Some(false), "{merged}");
}

#[test]
fn a_branch_starts_from_a_config_file_and_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    std::fs::write(
        dir.path().join("solo.toml"),
        format!(
            "id = 1\nlisten = \"{addr}\"\ndata-dir = \"data/solo\"\nbalance = 250\n\
             drain-timeout = \"2s\"\n"
        ),
    )
    .expect("write config");
    let mut command = branch_command(&["--config", "solo.toml"], &[], dir.path());
    let mut child = ChildGuard::spawn(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Deadline::after(READY_DEADLINE);
    loop {
        let status = run_bounded(
            bank_command().args(["status", "--branch", &addr.to_string(), "--json"]),
            EXIT_DEADLINE,
        );
        let leader = serde_json::from_str::<serde_json::Value>(&status.stdout)
            .ok()
            .and_then(|s| s["leader"].as_u64());
        if status.status.success() && leader == Some(1) {
            break;
        }
        assert!(
            child.try_wait().is_none(),
            "the branch exited before serving"
        );
        deadline.pause_blocking(format_args!(
            "the branch from solo.toml never led at {addr}; last status: {} {}",
            status.stdout, status.stderr
        ));
    }
    // The file's data-dir (relative to where the branch was started) and balance are used.
    assert!(dir.path().join("data/solo").is_dir(), "no data/solo");
    let balance = run_bounded(
        bank_command()
            .args(["account", "balance", "0", "--json", "--branch"])
            .arg(addr.to_string()),
        EXIT_DEADLINE,
    );
    let balances: serde_json::Value =
        serde_json::from_str(&balance.stdout).unwrap_or_else(|e| panic!("{e}: {balance:?}"));
    assert_eq!(balances["balances"][0]["balance"], 250, "{balances}");
    child.signal("TERM");
    let status = child
        .wait_exit(Duration::from_secs(20))
        .expect("the branch stops on SIGTERM");
    assert!(status.success(), "exit {status}");
}

/// Runs `bank branch --config bad.toml` with `contents` and asserts it refused to start,
/// naming the file and every one of `expected`.
fn assert_refused(contents: Option<&str>, expected: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let file = dir.path().join("bad.toml");
    if let Some(contents) = contents {
        std::fs::write(&file, contents).expect("write config");
    }
    // The file's own settings are complete but for the bad key: only it can be the cause.
    let run = branch(
        &[
            "--config",
            "bad.toml",
            "--id",
            "1",
            "--data-dir",
            "data",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
        dir.path(),
    );
    assert!(
        !run.status.success(),
        "{contents:?} was accepted; stderr:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    for fragment in ["bad.toml"].iter().chain(expected) {
        assert!(
            run.stderr.contains(fragment),
            "stderr lacks {fragment:?}:\n{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("serving"), "{}", run.stderr);
    assert!(!dir.path().join("data").exists(), "a data dir was made");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port} is held"
    );
}

#[test]
fn an_unknown_key_is_refused() {
    assert_refused(
        Some("listn = \"127.0.0.1:7001\"\n"),
        &[
            r#"key "listn" is not a bank branch setting"#,
            "listen",
            "peer",
        ],
    );
}

#[test]
fn an_underscored_key_names_its_dashed_spelling() {
    assert_refused(Some("requests_max = 10\n"), &[r#""requests-max""#]);
}

#[test]
fn a_value_of_the_wrong_type_is_refused() {
    assert_refused(
        Some("rejoin = \"yes\"\n"),
        &[r#"key "rejoin""#, "true or false"],
    );
    assert_refused(Some("balance = 1.5\n"), &[r#"key "balance""#, "a float"]);
}

#[test]
fn a_bad_address_is_refused() {
    assert_refused(
        Some("peer = [\"2=127.0.0.1:7002\", \"nope\"]\n"),
        &[r#"key "peer""#, r#""nope""#, "ID=HOST:PORT"],
    );
}

#[test]
fn a_bad_duration_is_refused() {
    assert_refused(
        Some("drain-timeout = \"5 parsecs\"\n"),
        &[r#"key "drain-timeout""#, "parsecs"],
    );
}

#[test]
fn a_negative_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("neg.toml"),
        "id = -1\nlisten = \"127.0.0.1:7301\"\ndata-dir = \"data\"\n",
    )
    .expect("write config");
    let run = branch(&["--config", "neg.toml"], &[], dir.path());
    assert!(!run.status.success(), "accepted: {}", run.stderr);
    assert!(
        run.stderr.contains("neg.toml") && run.stderr.contains(r#"key "id": -1"#),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("data").exists(), "a data dir was made");
}

#[test]
fn a_missing_file_is_refused() {
    assert_refused(None, &["no such config file"]);
}

#[test]
fn unparsable_toml_is_refused() {
    assert_refused(
        Some("id = 1\npeer = [\"2=127.0.0.1:7002\"\n"),
        &["not valid TOML at line 2"],
    );
}
