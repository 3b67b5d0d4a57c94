//! `bank bench`: load a cluster (its own on loopback, or a running one) with concurrent clients
//! through [`bank::load::bench`] (back to back, or with `--rate` in an open loop), with a
//! progress bar, and report throughput, latency, errors and the invariant check; with
//! `--html`, also as a page of charts ([`bank::report::bench_page`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use bank::bootstrap::local::{bind_loopback, LocalCluster};
use bank::client::{ClientConfig, ReadLevel};
use bank::load::bench::{BenchConfig, BenchReport, Length};

use super::output::PartialFile;
use super::storage;
use super::tls::{client_token, TlsArgs};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Target a running cluster's branch, HOST:PORT; repeat for each. Default: start a cluster.
    #[arg(long = "branch", value_name = "HOST:PORT")]
    branches: Vec<String>,
    /// Branches of the cluster to start (without --branch).
    #[arg(long = "branches", value_name = "N", default_value_t = 3)]
    branch_count: u64,
    /// Keep the started cluster's state here (durable: fsync before acknowledging).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Concurrent clients (each its own connections and request ids); with --rate, the most
    /// requests in flight at once is clients × callers per client.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Concurrent callers sharing each client: the writes they make while one of their
    /// client's writes is in flight go out together in one batch (client-side batching).
    #[arg(long, value_name = "N", default_value_t = 1)]
    callers_per_client: usize,
    /// Open loop: send this many requests per second in all (a batch is one), each due at a
    /// fixed time and started then, or as soon as a client is free; latency is measured from
    /// when each was due (no coordinated omission). Without it, each client sends back to back.
    #[arg(long, value_name = "REQUESTS_PER_S", value_parser = parse_rate, allow_negative_numbers = true)]
    rate: Option<f64>,
    /// Run for this many seconds (default 10, unless --count is given).
    #[arg(long, value_name = "SECONDS", conflicts_with = "count")]
    duration: Option<f64>,
    /// Run until this many operations were sent.
    #[arg(long)]
    count: Option<u64>,
    /// Percentages of deposit, withdraw, transfer and query.
    #[arg(long, default_value = "deposit=25,withdraw=25,transfer=25,query=25")]
    mix: bank::load::bench::Mix,
    /// Writes per request, sent as one batch (queries then read this many accounts).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// linearizable, read-your-writes or local.
    #[arg(long, value_enum, default_value_t = BenchRead::Linearizable)]
    read_level: BenchRead,
    /// Accounts 1..=N are opened (or reused) before the run.
    #[arg(long, default_value_t = 1_000)]
    accounts: u64,
    /// Seeds the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Record the run's history here (JSON lines, for `bank check`; needs --batch 1).
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Also write the report as a self-contained HTML page in FILE: throughput over the run,
    /// the latency distribution (HDR percentile plot), the command line and the machine.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// With --branch, on a TLS cluster.
    #[command(flatten)]
    tls: TlsArgs,
    /// With --branch: a bearer token allowed every account (bench opens 1..=--accounts).
    #[arg(long, env = "BANK_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchRead {
    Linearizable,
    ReadYourWrites,
    Local,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let length = length(args.duration, args.count)?;
    if args.history.is_some() && args.batch != 1 {
        bail!("--history needs --batch 1");
    }
    let config = BenchConfig {
        clients: args.clients,
        callers_per_client: args.callers_per_client,
        length,
        mix: args.mix,
        batch: args.batch,
        read_level: match args.read_level {
            BenchRead::Linearizable => ReadLevel::Linearizable,
            BenchRead::ReadYourWrites => ReadLevel::ReadYourWrites,
            BenchRead::Local => ReadLevel::Local,
        },
        accounts: args.accounts,
        seed: args.seed,
        record_history: args.history.is_some(),
        client_config: ClientConfig {
            tls: args.tls.load()?,
            token: client_token(args.token.as_deref())?,
            ..ClientConfig::default()
        },
        rate: args.rate,
    };
    if args.branches.is_empty() && (args.tls.tls_ca.is_some() || args.tls.tls_cert.is_some()) {
        bail!("--tls-ca and --tls-cert are for a running cluster given with --branch");
    }
    let (addresses, cluster) = if args.branches.is_empty() {
        let cluster = start_cluster(args.branch_count, args.data_dir).await?;
        let addresses = cluster
            .addresses()
            .values()
            .map(|a| a.to_string())
            .collect();
        (addresses, Some(cluster))
    } else {
        if args.data_dir.is_some() {
            bail!("--data-dir is for the cluster bench starts itself; not with --branch");
        }
        (args.branches.clone(), None)
    };

    // Created before the run, so that a path that cannot be written fails before the load.
    let html = match &args.html {
        Some(path) => Some(
            PartialFile::create(path)
                .with_context(|| format!("cannot write the report to {}", path.display()))?,
        ),
        None => None,
    };
    let context = bank::report::RunContext::here(std::env::args());
    let progress = Progress::start(length);
    let result = bank::load::bench::run_bench(&addresses, &config, progress.done.clone()).await;
    progress.finish();
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    let report = result?;
    if let Some(path) = &args.history {
        write_history(path, &report)
            .with_context(|| format!("writing the history to {}", path.display()))?;
    }
    if let (Some(mut file), Some(path)) = (html, &args.html) {
        let page = bank::report::bench_page(&report, &context);
        file.out()
            .write_all(page.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.finish(|_| Ok(()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if !report.invariants.passed {
        bail!("the invariant check failed: {:?}", report.invariants);
    }
    Ok(())
}

/// `--duration` or `--count` as the run's length, checked (default: 10 seconds).
fn length(duration: Option<f64>, count: Option<u64>) -> Result<Length> {
    Ok(match (duration, count) {
        (_, Some(0)) => bail!("--count must be positive"),
        (_, Some(count)) => Length::Count(count),
        (Some(seconds), None) => {
            if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
                bail!("--duration must be between 0 and 86400 seconds");
            }
            Length::Duration(Duration::from_secs_f64(seconds))
        }
        (None, None) => Length::Duration(Duration::from_secs(10)),
    })
}

/// `--rate`: a number of requests per second within the accepted range.
fn parse_rate(text: &str) -> Result<f64, String> {
    use bank::load::pacing::{rate_is_valid, RATE_MAX, RATE_MIN};
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of requests per second"))?;
    if !rate_is_valid(rate) {
        return Err(format!(
            "must be between {RATE_MIN} and {RATE_MAX} requests per second"
        ));
    }
    Ok(rate)
}

/// A cluster of `branches` branches on loopback, in memory or durable in `data_dir`.
async fn start_cluster(branches: u64, data_dir: Option<PathBuf>) -> Result<LocalCluster> {
    if branches == 0 || branches > 50 {
        bail!("--branches must be 1..=50");
    }
    let ids: Vec<u64> = (1..=branches).collect();
    let listeners = bind_loopback(&ids, None).await?;
    Ok(LocalCluster::start(listeners, 0, storage(data_dir)).await?)
}

/// The progress bar on stderr, fed by the operations the clients count in `done`.
struct Progress {
    done: Arc<AtomicU64>,
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Shows the bar and updates it five times a second until [`Progress::finish`].
    fn start(length: Length) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let bar = match length {
            Length::Count(count) => ProgressBar::new(count),
            Length::Duration(duration) => ProgressBar::new(duration.as_secs().max(1)),
        };
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let ticker = {
            let (bar, done) = (bar.clone(), done.clone());
            let began = Instant::now();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let done = done.load(Ordering::Relaxed);
                    match length {
                        Length::Count(_) => bar.set_position(done),
                        Length::Duration(_) => bar.set_position(began.elapsed().as_secs()),
                    }
                    let rate = done as f64 / began.elapsed().as_secs_f64().max(1e-3);
                    bar.set_message(format!("{done} ops, {rate:.0} ops/s"));
                }
            })
        };
        Progress { done, bar, ticker }
    }

    /// Stops the updates and clears the bar.
    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// Writes the run's history to `path`, one JSON event per line (for `bank check`).
fn write_history(path: &Path, report: &BenchReport) -> Result<()> {
    let file = std::fs::File::create(path)?;
    let mut writer = bank::check::HistoryWriter::new(std::io::BufWriter::new(file));
    for event in &report.history {
        writer.write(event)?;
    }
    writer.flush()?;
    Ok(())
}
