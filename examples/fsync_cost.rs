//! What one durable write costs on this disk, three ways, 2,000 times each: a redb commit of
//! one 300-byte log entry (`Durability::Immediate`, as a branch's writer thread commits an
//! append), an append to a plain file plus `fdatasync`, and an overwrite inside a
//! preallocated file plus `fdatasync` (the floor). Shows how much of a durable write is redb
//! and how much is the disk.
//!
//! ```sh
//! cargo run --release --example fsync_cost [-- DIR]   # DIR: where the files go (default: a temp dir)
//! ```

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};

const WRITES: u64 = 2_000;
const ENTRY_BYTES: usize = 300;
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// Runs `write(n)` `WRITES` times and prints the median and 90th percentile.
fn measure(what: &str, mut write: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut took: Vec<Duration> = Vec::with_capacity(WRITES as usize);
    for n in 0..WRITES {
        let began = Instant::now();
        write(n)?;
        took.push(began.elapsed());
    }
    took.sort();
    let at = |q: usize| took[took.len() * q / 100].as_micros();
    println!("{what:<44} p50 {:>4} µs  p90 {:>4} µs", at(50), at(90));
    Ok(())
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let entry = vec![7u8; ENTRY_BYTES];
    let db = Database::builder()
        .set_cache_size(32 << 20)
        .create(dir.join("log.redb"))?;
    measure("redb: insert one entry, commit (Immediate)", |n| {
        let tx = db.begin_write()?;
        tx.open_table(LOG)?.insert(n, entry.as_slice())?;
        tx.commit()?;
        Ok(())
    })?;

    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("append.log"))?;
    measure("file: append, fdatasync", |_| {
        file.write_all(&entry)?;
        file.sync_data()?;
        Ok(())
    })?;

    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join("preallocated.log"))?;
    file.set_len(WRITES * ENTRY_BYTES as u64)?;
    file.sync_all()?;
    measure("file: overwrite in preallocated, fdatasync", |n| {
        file.write_all_at(&entry, n * ENTRY_BYTES as u64)?;
        file.sync_data()?;
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    match std::env::args_os().nth(1) {
        Some(dir) => {
            let dir = Path::new(&dir).join("fsync-cost");
            std::fs::create_dir_all(&dir)?;
            let result = run(&dir);
            std::fs::remove_dir_all(&dir)?;
            result
        }
        None => run(tempfile::tempdir()?.path()),
    }
}
