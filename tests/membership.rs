//! Membership at runtime with real `bank branch` processes: a cluster grown from three voters
//! to five and shrunk back under a transfer load (every acknowledged transfer applied exactly
//! once: the recorded history passes `bank check`; every remaining branch ends with the same
//! digest; a removed branch refuses customers), a branch added after the log it needs was
//! purged (caught up by snapshot), and the changes that are refused: a voter joining again as
//! new, a removal that would leave no majority up, and two changes at once.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{bank, bank_command, call, client, ChildGuard, Deadline};

const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Joining: catch up, then promotion.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// `bank branch` processes on loopback, each killed when the cluster is dropped.
struct Cluster {
    dir: tempfile::TempDir,
    addrs: BTreeMap<u64, SocketAddr>,
    children: BTreeMap<u64, ChildGuard>,
}

impl Cluster {
    /// Branches 1..=3 of a new cluster, started with `--peer` lists, plus free addresses for
    /// `extra` more branches to join later (ids 4, 5, ...).
    async fn start(extra: usize) -> Cluster {
        let ports = common::free_ports(3 + extra);
        let addrs = (1u64..)
            .zip(ports)
            .map(|(id, port)| (id, SocketAddr::from(([127, 0, 0, 1], port))))
            .collect();
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            addrs,
            children: BTreeMap::new(),
        };
        for id in 1..=3 {
            let mut command = cluster.branch_command(id);
            for peer in (1..=3).filter(|&peer| peer != id) {
                command
                    .arg("--peer")
                    .arg(format!("{peer}={}", cluster.addr(peer)));
            }
            cluster.children.insert(id, ChildGuard::spawn(&mut command));
        }
        for id in 1..=3 {
            cluster.wait_serving(id).await;
        }
        cluster
    }

    fn addr(&self, id: u64) -> SocketAddr {
        self.addrs[&id]
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("d{id}"))
    }

    fn branch_command(&self, id: u64) -> Command {
        self.branch_command_at(id, self.addr(id), &self.data_dir(id))
    }

    /// `bank branch --id ID --listen LISTEN --data-dir DATA_DIR`, quiet.
    fn branch_command_at(&self, id: u64, listen: SocketAddr, data_dir: &Path) -> Command {
        let mut command = bank_command();
        command
            .args(["branch", "--id", &id.to_string(), "--listen"])
            .arg(listen.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--balance", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Starts branch `id` with an empty data directory, joining through branch `via`.
    fn join(&mut self, id: u64, via: u64) {
        let mut command = self.branch_command(id);
        command.arg("--join").arg(self.addr(via).to_string());
        self.children.insert(id, ChildGuard::spawn(&mut command));
    }

    /// Waits until branch `id` answers a course-API query.
    async fn wait_serving(&mut self, id: u64) {
        let deadline = Deadline::after(READY_DEADLINE);
        loop {
            if let Some(status) = self.children.get_mut(&id).and_then(|c| c.try_wait()) {
                panic!("branch {id} exited with {status}");
            }
            if call(&mut client(self.addr(id)).await, "query", 0)
                .await
                .is_ok()
            {
                return;
            }
            deadline.pause(format!("branch {id} not serving")).await;
        }
    }

    /// `bank member ARGS --branch (branch via)`.
    fn member(&self, via: u64, args: &[&str]) -> Output {
        let addr = self.addr(via).to_string();
        let mut all = vec!["member"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--branch", &addr]);
        bank(all)
    }

    /// The voters and learners branch `via` knows.
    fn members(&self, via: u64) -> (Vec<u64>, Vec<u64>) {
        let out = self.member(via, &["list", "--json"]);
        assert!(out.status.success(), "member list: {}", text(&out.stderr));
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        for member in listed["members"].as_array().expect("members") {
            let id = member["id"].as_u64().expect("id");
            if member["voter"].as_bool().expect("voter") {
                voters.push(id);
            } else {
                learners.push(id);
            }
        }
        (voters, learners)
    }

    /// Waits until branch `via` lists exactly `voters` as voters and no learner.
    async fn wait_voters(&self, via: u64, voters: &[u64], limit: Duration) {
        let deadline = Deadline::after(limit);
        loop {
            let (now, learners) = self.members(via);
            if now == voters && learners.is_empty() {
                return;
            }
            deadline
                .pause(format!(
                    "voters {now:?}, learners {learners:?}; waiting for {voters:?}"
                ))
                .await;
        }
    }

    /// Waits until branches `ids` have applied the same index and show the same digest.
    async fn wait_same_digest(&self, ids: &[u64]) {
        let deadline = Deadline::after(READY_DEADLINE);
        loop {
            let mut seen = Vec::new();
            for &id in ids {
                let status = common::status(self.addr(id)).await;
                seen.push(status.map(|s| (s.applied_index, s.digest)));
            }
            if seen[0].is_some() && seen.iter().all(|s| *s == seen[0]) {
                return;
            }
            deadline
                .pause(format!("branches {ids:?} at (applied, digest) {seen:?}"))
                .await;
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `bank bench` against branches `targets`: transfers for `seconds`, history recorded.
fn start_transfers(cluster: &Cluster, targets: &[u64], seconds: u64, history: &Path) -> ChildGuard {
    let mut command = bank_command();
    command.args(["bench", "--clients", "4", "--accounts", "20"]);
    command.args(["--mix", "transfer=80,deposit=10,withdraw=10"]);
    command.args(["--duration", &seconds.to_string(), "--history"]);
    command.arg(history);
    for &id in targets {
        command.arg("--branch").arg(cluster.addr(id).to_string());
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ChildGuard::spawn(&mut command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_three_to_five_and_shrink_back_under_transfers() {
    let mut cluster = Cluster::start(2).await;
    let history = cluster.dir.path().join("history.jsonl");
    let mut load = start_transfers(&cluster, &[1, 2, 3], 25, &history);

    cluster.join(4, 1);
    cluster.join(5, 2);
    cluster
        .wait_voters(3, &[1, 2, 3, 4, 5], JOIN_DEADLINE)
        .await;
    cluster.wait_serving(4).await;
    cluster.wait_serving(5).await;
    let read = bank([
        "account",
        "balance",
        "0",
        "--branch",
        &cluster.addr(5).to_string(),
    ]);
    assert!(
        read.status.success(),
        "a joined branch serves: {}",
        text(&read.stderr)
    );

    for (id, via) in [(5, 1), (4, 3)] {
        let out = cluster.member(via, &["remove", &id.to_string()]);
        assert!(out.status.success(), "remove {id}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("removed branch {id}")));
    }
    cluster.wait_voters(1, &[1, 2, 3], READY_DEADLINE).await;
    assert!(
        load.try_wait().is_none(),
        "the load ended before the membership changes did: lengthen it"
    );
    for id in [4, 5] {
        let refused = bank([
            "account",
            "balance",
            "0",
            "--branch",
            &cluster.addr(id).to_string(),
        ]);
        assert!(
            !refused.status.success(),
            "removed branch {id} served a customer"
        );
        let why = text(&refused.stderr);
        assert!(why.contains("was removed from the cluster"), "{why}");
    }
    // It recorded its removal: stopped, it does not start again on that data.
    if let Some(removed) = cluster.children.remove(&5) {
        removed.kill();
    }
    let again = common::output_of(cluster.branch_command(5).stderr(Stdio::piped()));
    assert!(!again.status.success(), "a removed branch started again");
    let why = text(&again.stderr);
    assert!(why.contains("was removed from its cluster"), "{why}");

    let finished = load.wait_exit(Duration::from_secs(90)).expect("bench ends");
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = load.child_mut().stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut stdout).expect("bench stdout");
    }
    if let Some(mut err) = load.child_mut().stderr.take() {
        std::io::Read::read_to_string(&mut err, &mut stderr).expect("bench stderr");
    }
    assert!(finished.success(), "bench failed: {stdout}\n{stderr}");
    let checked = bank([Path::new("check"), &history]);
    assert!(
        checked.status.success(),
        "the history does not pass bank check: {}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    cluster.wait_same_digest(&[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_added_after_the_log_was_purged_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(1).await;
    // One client, one entry per deposit: past the 1,000 entries after which a snapshot is
    // taken and the log behind it purged.
    let targets = [
        "--branch".to_string(),
        cluster.addr(1).to_string(),
        "--branch".to_string(),
        cluster.addr(2).to_string(),
    ];
    let mut args = vec!["bench", "--clients", "1", "--accounts", "5"];
    args.extend(["--mix", "deposit=100", "--count", "1500"]);
    args.extend(targets.iter().map(String::as_str));
    let written = bank(&args);
    assert!(written.status.success(), "bench: {}", text(&written.stderr));
    let dirs: BTreeMap<u64, PathBuf> = [1, 4].map(|id| (id, cluster.data_dir(id))).into();
    let purged = |id: u64| {
        std::fs::read_dir(&dirs[&id])
            .map(|entries| {
                entries.flatten().any(|entry| {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("snapshot-") && name.ends_with(".bin")
                })
            })
            .unwrap_or(false)
    };
    let deadline = Deadline::after(READY_DEADLINE);
    while !purged(1) {
        deadline.pause("branch 1 took no snapshot").await;
    }

    cluster.join(4, 2);
    cluster.wait_voters(1, &[1, 2, 3, 4], JOIN_DEADLINE).await;
    cluster.wait_same_digest(&[1, 2, 3, 4]).await;
    // It applied fewer than 1,000 entries of its own: a snapshot in its directory was
    // installed from the leader.
    assert!(purged(4), "branch 4 caught up without a snapshot install");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_would_lose_the_quorum_or_overlap_are_refused() {
    let cluster = Cluster::start(0).await;

    // A voter that lost its data must rejoin, not join as new.
    let listen = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let mut again = cluster.branch_command_at(2, listen, &cluster.dir.path().join("d2-again"));
    again.arg("--join").arg(cluster.addr(1).to_string());
    let again = common::output_of(again.stderr(Stdio::piped()));
    assert!(!again.status.success(), "a voter joined again as new");
    let why = text(&again.stderr);
    assert!(why.contains("branch 2 is already a voter"), "{why}");

    let out = cluster.member(1, &["promote", "9"]);
    assert!(!out.status.success());
    let why = text(&out.stderr);
    assert!(why.contains("branch 9 is not a member"), "{why}");

    // One follower stops answering: removing the other would leave the leader and the
    // stopped one, with only the leader up.
    let leader = common::status(cluster.addr(1))
        .await
        .and_then(|status| status.leader)
        .expect("a leader");
    let mut followers = (1..=3).filter(|&id| id != leader);
    let (stopped, removed) = (
        followers.next().expect("one"),
        followers.next().expect("two"),
    );
    let stopped = cluster.children.get(&stopped).expect("running");
    stopped.signal("STOP");
    let mut remove = {
        let mut command = bank_command();
        command.args(["member", "remove", &removed.to_string(), "--branch"]);
        command.arg(cluster.addr(leader).to_string());
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        ChildGuard::spawn(&mut command)
    };
    // While the leader waits for the stopped branch to answer, it refuses any other change
    // at once (this one would be refused anyway, for another reason, and changes nothing).
    let deadline = Deadline::after(READY_DEADLINE).polling(Duration::from_millis(10));
    loop {
        let out = cluster.member(leader, &["promote", "9"]);
        assert!(
            !out.status.success(),
            "promoted a branch that is not a member"
        );
        let why = text(&out.stderr);
        if why.contains("another membership change is in progress") {
            break;
        }
        assert!(why.contains("branch 9 is not a member"), "{why}");
        deadline.pause("no change was refused as concurrent").await;
    }
    let status = remove.wait_exit(READY_DEADLINE).expect("remove ends");
    let mut stderr = String::new();
    if let Some(mut err) = remove.child_mut().stderr.take() {
        std::io::Read::read_to_string(&mut err, &mut stderr).expect("stderr");
    }
    assert!(
        !status.success(),
        "a removal that loses the quorum was made"
    );
    assert!(
        stderr.contains("a majority (2) of them must be up"),
        "{stderr}"
    );
    stopped.signal("CONT");
    assert_eq!(cluster.members(leader), (vec![1, 2, 3], vec![]));
}

/// With five voters, a sixth branch joins as a learner and is not promoted: it serves, but
/// does not vote. (In process, to spare six processes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixth_branch_stays_a_learner() {
    use bank::bootstrap::standalone::start;
    use bank::node::{BranchError, MemberChange, MemberRefused};

    let dir = tempfile::tempdir().expect("temp dir");
    let mut listeners = common::loopback_listeners(&[1, 2, 3, 4, 5, 6]).await;
    let addresses = common::addresses_of(&listeners);
    let five: BTreeMap<u64, SocketAddr> = addresses.range(1..=5).map(|(&i, &a)| (i, a)).collect();
    let mut running = Vec::new();
    for id in 1..=5 {
        let listener = listeners.remove(&id).expect("listener");
        let config = common::standalone_config(id, listener, &five, dir.path(), 100);
        running.push(tokio::spawn(start(config)));
    }
    let mut branches = Vec::new();
    for started in running {
        branches.push(started.await.expect("task").expect("branch starts"));
    }
    let listener = listeners.remove(&6).expect("listener");
    let mut config = common::standalone_config(6, listener, &BTreeMap::new(), dir.path(), 100);
    config.join = Some(addresses[&1].to_string());
    let sixth = start(config).await.expect("branch 6 joins");

    let deadline = Deadline::after(JOIN_DEADLINE);
    loop {
        let membership = branches[0].branch.membership();
        let applied = |b: &bank::node::Branch| b.view().applied_index;
        if membership.members.contains_key(&6)
            && applied(&sixth.branch) == applied(&branches[0].branch)
        {
            assert_eq!(membership.voters, vec![1, 2, 3, 4, 5]);
            break;
        }
        deadline.pause("branch 6 not caught up").await;
    }
    let promoted = sixth
        .branch
        .change_members(&MemberChange::Promote { id: 6 })
        .await;
    assert!(
        matches!(
            promoted,
            Err(BranchError::MemberRefused(MemberRefused::VotersFull {
                id: 6,
                max: 5
            }))
        ),
        "{promoted:?}"
    );
    assert_eq!(branches[0].branch.membership().voters, vec![1, 2, 3, 4, 5]);
    sixth.shutdown().await;
    for running in branches {
        running.shutdown().await;
    }
}
