//! Deterministic simulation of a whole cluster (see `bank::sim`).
//!
//! - `cargo test --test simulation`: a few hundred seeds from a fixed base.
//! - `BANK_SIM_SEED=42 cargo test --test simulation -- --nocapture seeds`: replays seed 42.
//! - `BANK_SIM_SEED=1000 BANK_SIM_SEEDS=5000 cargo test --release --test simulation seeds`:
//!   5000 seeds from 1000.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bank::sim::{run, Broken, SimConfig};

/// Seeds in the default run: sized for CI's 2 cores.
const DEFAULT_SEEDS: u64 = 300;
const DEFAULT_FIRST_SEED: u64 = 0;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Wall-clock bound on one seed. A task that spins without awaiting stops simulated time
/// (turmoil cannot preempt it), so a hung seed is a bug: it is named and the process exits.
const SEED_WALL_MAX: Duration = Duration::from_secs(60);

/// The seed a thread runs and since when, if it runs one.
type Running = Option<(u64, Instant)>;

/// Runs `seeds` on `threads` threads; returns the failing reports' explanations.
fn run_seeds(seeds: Vec<u64>, broken: Broken, threads: usize) -> Vec<(u64, String)> {
    let chunks: Vec<Vec<u64>> = (0..threads)
        .map(|t| seeds.iter().copied().skip(t).step_by(threads).collect())
        .collect();
    // What each thread runs now, and since when.
    let running: Arc<Mutex<Vec<Running>>> = Arc::new(Mutex::new(vec![None; threads]));
    let handles: Vec<_> = chunks
        .into_iter()
        .enumerate()
        .map(|(thread, chunk)| {
            let running = running.clone();
            std::thread::spawn(move || {
                let found = chunk
                    .into_iter()
                    .filter_map(|seed| {
                        if let Ok(mut running) = running.lock() {
                            running[thread] = Some((seed, Instant::now()));
                        }
                        // A panic (openraft's own guards, a ledger assertion) fails this seed,
                        // not the whole thread.
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run(&SimConfig { seed, broken })
                        }));
                        match ran {
                            Ok(report) => (!report.violations.is_empty())
                                .then(|| (seed, report.explain())),
                            Err(panic) => {
                                let why = panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                Some((seed, format!("seed {seed} panicked: {why}\nreplay: BANK_SIM_SEED={seed} cargo test --test simulation -- --nocapture seeds")))
                            }
                        }
                    })
                    .collect::<Vec<_>>();
                if let Ok(mut running) = running.lock() {
                    running[thread] = None;
                }
                found
            })
        })
        .collect();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let hung = running.lock().ok().and_then(|running| {
            running
                .iter()
                .flatten()
                .find(|(_, since)| since.elapsed() > SEED_WALL_MAX)
                .map(|(seed, _)| *seed)
        });
        if let Some(seed) = hung {
            eprintln!(
                "seed {seed} ran over {SEED_WALL_MAX:?} of wall time (a task spinning without awaiting stops simulated time); replay: BANK_SIM_SEED={seed} cargo test --test simulation -- --nocapture"
            );
            std::process::exit(1);
        }
    }
    let mut failures = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(found) => failures.extend(found),
            Err(_) => failures.push((u64::MAX, "a simulation thread panicked".to_string())),
        }
    }
    failures.sort_by_key(|(seed, _)| *seed);
    failures
}

#[test]
fn seeds() {
    let first = env_u64("BANK_SIM_SEED").unwrap_or(DEFAULT_FIRST_SEED);
    let count = env_u64("BANK_SIM_SEEDS").unwrap_or(match env_u64("BANK_SIM_SEED") {
        Some(_) => 1,
        None => DEFAULT_SEEDS,
    });
    if count == 1 {
        // A replay: show the whole run, passing or not.
        let report = run(&SimConfig {
            seed: first,
            broken: Broken::Nothing,
        });
        eprintln!("{}", report.trace());
    }
    let started = Instant::now();
    let failures = run_seeds((first..first + count).collect(), Broken::Nothing, 2);
    eprintln!(
        "simulation: {count} seeds from {first} in {:.1}s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for (_, explanation) in &failures {
        eprintln!("{explanation}");
    }
    let failed: Vec<u64> = failures.iter().map(|(seed, _)| *seed).collect();
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

/// With `BANK_SIM_TRACE_OF=<seed>`, prints that seed's trace (for
/// `the_same_seed_replays_the_same_run`); without it, does nothing.
#[test]
fn trace_of_one_seed() {
    if let Some(seed) = env_u64("BANK_SIM_TRACE_OF") {
        let report = run(&SimConfig {
            seed,
            broken: Broken::Nothing,
        });
        println!("TRACE-BEGIN\n{}TRACE-END", report.trace());
    }
}

/// The trace of `seed` as a fresh process of this test binary runs it.
fn trace_in_fresh_process(seed: u64) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = std::process::Command::new(exe)
        .args([
            "--exact",
            "trace_of_one_seed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BANK_SIM_TRACE_OF", seed.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let begin = stdout.find("TRACE-BEGIN").ok_or("no trace printed")?;
    let end = stdout.find("TRACE-END").ok_or("trace not finished")?;
    Ok(stdout[begin..end].to_string())
}

/// A seed replays the same run: two fresh processes give the same trace (fault log, history
/// with simulated times, final applied indexes and ledger digests). The seeds include crashes;
/// 101, 102, 107 and 109 are ones that differ when run twice in one process (see `sim::run`).
/// Without `--cfg tokio_unstable`, tokio seeds its scheduler (e.g. `select!`'s branch order)
/// from the OS, and seed 107 differs between two processes about one time in three.
#[test]
#[cfg_attr(
    not(tokio_unstable),
    ignore = "tokio's scheduler randomness is seeded only with RUSTFLAGS=\"--cfg tokio_unstable\""
)]
fn the_same_seed_replays_the_same_run() {
    let seeds = match env_u64("BANK_SIM_SEED") {
        Some(seed) => vec![seed],
        None => vec![7, 100, 101, 102, 107, 109],
    };
    for seed in seeds {
        let first = trace_in_fresh_process(seed);
        let second = trace_in_fresh_process(seed);
        let (Ok(a), Ok(b)) = (&first, &second) else {
            panic!("seed {seed}: {first:?} / {second:?}");
        };
        assert!(a.contains("Invoke"), "seed {seed} did nothing:\n{a}");
        if a != b {
            let diverged = a
                .lines()
                .zip(b.lines())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            panic!(
                "seed {seed} ran differently twice; first difference at line {diverged}:\n{:?}\n{:?}",
                a.lines().nth(diverged),
                b.lines().nth(diverged)
            );
        }
    }
}

#[test]
fn stale_local_reads_are_caught() {
    let failures = run_seeds((0..20).collect(), Broken::LocalReads, 1);
    assert!(
        !failures.is_empty(),
        "no seed caught reads that skip the read index"
    );
    eprintln!(
        "stale reads caught on seeds {:?}; first:\n{}",
        failures.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        failures[0].1
    );
}

/// A disk that acknowledges appends before syncing them (a restarted branch lost the last
/// entries it had acknowledged) must be caught: by the checker (an acknowledged operation
/// lost, branches diverging) or by openraft's own guard against a follower's log going back.
#[test]
fn acknowledging_before_the_disk_syncs_is_caught() {
    let failures = run_seeds((0..40).collect(), Broken::UnsyncedAcks, 1);
    assert!(
        !failures.is_empty(),
        "no seed caught a disk that acknowledges before it syncs"
    );
    eprintln!(
        "unsynced acknowledgements caught on seeds {:?}; first:\n{}",
        failures.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        failures[0].1
    );
}
