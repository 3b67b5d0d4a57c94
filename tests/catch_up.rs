//! A follower that fell far behind catches up. Every full batch entry is close to a megabyte
//! on the wire; a follower cut off while 80 of them are written is owed more than the peer
//! server accepts in one message, and more than one heartbeat interval (openraft's deadline
//! for an `AppendEntries`) can carry. Bounded by bytes
//! (`bank::raft::network::APPEND_ENTRIES_BYTES_MAX`), the leader sends it a few entries per
//! call and it catches up; sent whole (the broken variant: set the bound to `usize::MAX`), it
//! stays behind for good, and this test fails at its deadline.

mod common;

use std::time::{Duration, Instant};

use bank::client::Write;
use bank::ledger::{BATCH_ITEMS_MAX, ORIGINAL_ACCOUNT};
use common::{bank_client, last_applied, leader_of, start_cluster, wait_applied};

/// How many full batch entries the cut-off follower misses (`BANK_CATCH_UP_BATCHES` for a
/// longer run by hand, e.g. `BANK_CATCH_UP_BATCHES=2000 cargo test --release --test catch_up
/// -- --nocapture`: past a snapshot interval, so the follower is sent a snapshot too).
const BATCHES: usize = 80;

fn batches() -> usize {
    std::env::var("BANK_CATCH_UP_BATCHES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(BATCHES)
}
/// Bound on catching up once healed (it takes a few seconds on a loaded 2-core machine).
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_while_full_batches_are_written_catches_up() {
    let cluster = start_cluster(3, 0).await;
    let leader = leader_of(&cluster).await;
    let (follower, lagging) = cluster
        .branches()
        .find(|(id, _)| *id != leader)
        .map(|(id, local)| (id, local.branch.clone()))
        .expect("a follower");
    cluster.cut(follower).expect("cut the follower off");
    let leader_addr = cluster.branch(leader).expect("the leader").addr;
    let client = bank_client(&[leader_addr]);
    let deposits: Vec<Write> = (0..BATCH_ITEMS_MAX)
        .map(|_| Write::Deposit {
            account: ORIGINAL_ACCOUNT,
            amount: 1,
        })
        .collect();
    let mut written = 0;
    let batches = batches();
    for _ in 0..batches {
        written = client
            .submit_batch(&deposits)
            .await
            .expect("a batch commits on the two connected branches")
            .reply
            .log_index;
    }
    assert!(
        last_applied(&lagging) + batches as u64 <= written,
        "the cut-off follower applied {} of {written}",
        last_applied(&lagging)
    );
    cluster.heal(follower).expect("heal");
    let healed = Instant::now();
    wait_applied(&lagging, written, CATCH_UP_DEADLINE).await;
    eprintln!(
        "branch {follower} caught up {batches} full batch entries in {:.2?}",
        healed.elapsed()
    );
    let states = cluster.settled_states().await.expect("branches settle");
    assert!(states
        .windows(2)
        .all(|pair| pair[0].1.ledger == pair[1].1.ledger));
    cluster.shutdown().await;
}
