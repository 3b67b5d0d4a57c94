//! `bank-etcd-compare`: the same load, from the same generator (`bank::load::driver::drive`,
//! the driver loop of `bank bench`), against a bank cluster and an etcd cluster, in
//! alternating runs; prints each run, the medians and the ratios. Writes are bank deposits vs
//! etcd puts of an 8-byte value; reads are linearizable balance reads vs etcd's (linearizable by
//! default) gets. Each client has its own account / key, so neither system sees contention the
//! other does not.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bank::client::{Client, ClientConfig, Outcome, ReadLevel};
use bank::load::driver::{drive, DriveReport, Length};
use clap::{Parser, ValueEnum};

#[derive(Parser)]
struct Args {
    /// A bank branch, HOST:PORT; repeat for each.
    #[arg(long = "bank", required = true)]
    bank: Vec<String>,
    /// An etcd client endpoint, http://HOST:PORT; repeat for each.
    #[arg(long = "etcd", required = true)]
    etcd: Vec<String>,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// On the bank side, this many of the clients' callers share one `bank::client::Client`
    /// (which batches their concurrent writes); etcd keeps one client per caller.
    #[arg(long, default_value_t = 1)]
    callers_per_client: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Runs per system (alternating: bank, etcd, etcd, bank, ...).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, value_enum, default_value_t = Workload::Write)]
    workload: Workload,
    /// Print one JSON object at the end instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Workload {
    Write,
    Read,
}

/// Accounts (and etcd keys) start above this, so they never meet other accounts.
const ACCOUNT_BASE: u64 = 9_000_000_000;

async fn run_bank(args: &Args, length: Length) -> Result<DriveReport> {
    let sharing = args.callers_per_client.max(1);
    let mut clients = Vec::with_capacity(args.clients);
    for index in 0..args.clients.div_ceil(sharing) {
        let mut rotated = args.bank.clone();
        rotated.rotate_left(index % args.bank.len());
        clients.push(std::sync::Arc::new(Client::new(&rotated, ClientConfig::default())?));
    }
    for index in 0..args.clients {
        let account = ACCOUNT_BASE + index as u64;
        let opened = clients[index / sharing]
            .open_account(account, 0, 0, None)
            .await?;
        if !matches!(opened.outcome(), Outcome::Ok | Outcome::AccountExists) {
            bail!("opening account {account}: {:?}", opened.outcome());
        }
    }
    let workload = args.workload;
    let report = drive(
        args.clients,
        length,
        |index| clients[index / sharing].clone(),
        move |client, index, _| {
            let client = client.clone();
            async move {
                let account = ACCOUNT_BASE + index as u64;
                match workload {
                    Workload::Write => match client.deposit(account, 1).await {
                        Ok(written) if written.outcome() == Outcome::Ok => Ok(()),
                        Ok(written) => Err(format!("{:?}", written.outcome())),
                        Err(e) => Err(e.to_string()),
                    },
                    Workload::Read => client
                        .get_balances(&[account], ReadLevel::Linearizable)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                }
            }
        },
    )
    .await;
    Ok(report)
}

async fn run_etcd(args: &Args, length: Length) -> Result<DriveReport> {
    let mut clients = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let mut rotated = args.etcd.clone();
        rotated.rotate_left(index % args.etcd.len());
        // One connection per client, like the bank side (a channel per client).
        let mut client = etcd_client::Client::connect(&rotated[..1], None)
            .await
            .with_context(|| format!("connecting to etcd at {}", rotated[0]))?;
        client
            .put(key(index), vec![0u8; 8], None)
            .await
            .context("etcd put")?;
        clients.push(client);
    }
    let workload = args.workload;
    let report = drive(
        args.clients,
        length,
        |index| clients[index].clone(),
        move |client, index, _| {
            let mut client = client.clone();
            async move {
                let done = match workload {
                    Workload::Write => client.put(key(index), vec![1u8; 8], None).await.map(|_| ()),
                    Workload::Read => client.get(key(index), None).await.map(|_| ()),
                };
                done.map_err(|e| e.to_string())
            }
        },
    )
    .await;
    Ok(report)
}

fn key(index: usize) -> String {
    format!("bank-compare/{}", ACCOUNT_BASE + index as u64)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.duration.is_finite() && args.duration > 0.0) || args.runs == 0 || args.clients == 0 {
        bail!("--duration, --runs and --clients must be positive");
    }
    let length = Length::Duration(Duration::from_secs_f64(args.duration));
    let mut bank_runs = Vec::new();
    let mut etcd_runs = Vec::new();
    for run in 0..args.runs {
        // Alternate which goes first, so drift on a shared machine hits both alike.
        if run % 2 == 0 {
            bank_runs.push(run_bank(&args, length).await?);
            etcd_runs.push(run_etcd(&args, length).await?);
        } else {
            etcd_runs.push(run_etcd(&args, length).await?);
            bank_runs.push(run_bank(&args, length).await?);
        }
        if !args.json {
            let (b, e) = (&bank_runs[run], &etcd_runs[run]);
            println!(
                "run {}: bank {:.0} ops/s p50 {} us p99 {} us | etcd {:.0} ops/s p50 {} us p99 {} us | errors bank {:?} etcd {:?}",
                run + 1,
                b.operations_per_s,
                b.latency.p50_us,
                b.latency.p99_us,
                e.operations_per_s,
                e.latency.p50_us,
                e.latency.p99_us,
                b.errors,
                e.errors
            );
        }
    }
    let stat =
        |runs: &[DriveReport], f: fn(&DriveReport) -> f64| median(runs.iter().map(f).collect());
    let bank_ops = stat(&bank_runs, |r| r.operations_per_s);
    let etcd_ops = stat(&etcd_runs, |r| r.operations_per_s);
    let bank_p50 = stat(&bank_runs, |r| r.latency.p50_us as f64);
    let etcd_p50 = stat(&etcd_runs, |r| r.latency.p50_us as f64);
    let bank_p99 = stat(&bank_runs, |r| r.latency.p99_us as f64);
    let etcd_p99 = stat(&etcd_runs, |r| r.latency.p99_us as f64);
    if args.json {
        let summary = serde_json::json!({
            "workload": format!("{:?}", args.workload).to_lowercase(),
            "clients": args.clients,
            "runs": args.runs,
            "duration_s": args.duration,
            "bank": {"ops_per_s": bank_ops, "p50_us": bank_p50, "p99_us": bank_p99},
            "etcd": {"ops_per_s": etcd_ops, "p50_us": etcd_p50, "p99_us": etcd_p99},
            "throughput_ratio_bank_over_etcd": bank_ops / etcd_ops,
            "p50_ratio_etcd_over_bank": etcd_p50 / bank_p50,
        });
        println!("{summary:#}");
    } else {
        println!(
            "median of {} runs, {:?}, {} clients: bank {bank_ops:.0} ops/s p50 {bank_p50:.0} us p99 {bank_p99:.0} us; etcd {etcd_ops:.0} ops/s p50 {etcd_p50:.0} us p99 {etcd_p99:.0} us; bank/etcd throughput {:.2}x, etcd/bank p50 {:.2}x",
            args.runs,
            args.workload,
            args.clients,
            bank_ops / etcd_ops,
            etcd_p50 / bank_p50
        );
    }
    Ok(())
}
