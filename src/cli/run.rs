//! The course's commands: `bank run` (every branch in this process, then the customers),
//! `bank server` (the branches until Ctrl-C) and `bank client` (the customers against a
//! running `bank server`). The work is [`bank::course::runner`]; here: arguments, the output
//! file, and the summary of the branches' final balances. With `--http`, the live page shows
//! the local cluster and can break it; `bank run` then keeps it up after the customers, until
//! Ctrl-C.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use bank::course::lamport::{part_paths, Parts};
use bank::course::runner::{
    clocked_parts, final_balances, run_customers, run_customers_with, run_scenario, start_cluster,
    Branches, CustomerOptions,
};
use bank::course::scenario::{render_output, write_output, Scenario, ScenarioError, Variant};
use bank::web::Web;

use super::output::{write_all_whole, write_whole};
use super::signals::ShutdownSignals;
use super::storage;
use super::web::{show_local, PageObserver, SharedCluster};

/// The scenario a missing input file is pointed at (shipped in the repository).
const EXAMPLE_SCENARIO: &str = "examples/scenarios/p1.json";

/// How long `bank client` waits for `bank server`'s branches to answer.
const SERVER_WAIT: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenario file (the course's input.json).
    input: PathBuf,
    /// Where to write the customers' results.
    #[arg(short, long, default_value = "output.json")]
    output: PathBuf,
    /// Run all customers at once instead of one after another.
    #[arg(long)]
    concurrent: bool,
    /// Keep the branches' state on disk here (branch N in DIR/branch-N); a later run with
    /// the same directory continues from it. Default: in memory, nothing left behind.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Wait MS milliseconds after each customer event, so that a person can follow the run
    /// on the live page (--http).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pace: u64,
    /// Project 2 (Lamport clocks): also draw the run as a space-time diagram (SVG) in FILE,
    /// graded as `bank grade p2` grades it, what fails in red.
    #[arg(long, value_name = "FILE")]
    diagram: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ServerArgs {
    input: PathBuf,
    #[arg(long, default_value_t = 50050)]
    base_port: u16,
    /// Keep the branches' state on disk here (branch N in DIR/branch-N); a restart with
    /// the same directory resumes from it. Default: in memory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ClientArgs {
    input: PathBuf,
    #[arg(long, default_value_t = 50050)]
    base_port: u16,
    #[arg(short, long, default_value = "output.json")]
    output: PathBuf,
    #[arg(long)]
    concurrent: bool,
}

/// `bank run`.
pub async fn run(args: RunArgs, web: Option<&Web>) -> Result<()> {
    let scenario = load(&args.input, "run")?;
    if args.diagram.is_some() && scenario.variant != Variant::LamportClocks {
        bail!(
            "--diagram draws Lamport clocks, and {} is not a Project 2 (\"customer-requests\") scenario",
            args.input.display()
        );
    }
    if let Some(web) = web {
        return run_watched(args, scenario, web).await;
    }
    let finished = run_scenario(&scenario, args.concurrent, storage(args.data_dir)).await?;
    match &finished.clocked {
        Some(parts) => {
            write_parts(&args.output, parts)?;
            if let Some(file) = &args.diagram {
                draw(&scenario, parts, file)?;
            }
        }
        None => write_output(&args.output, &finished.output)?,
    }
    print!("{}", summarize(&finished.balances, finished.identical)?);
    println!(
        "{} branches ready in {:.2?}; {} customers, {} events in {:.2?}; {}",
        scenario.branches.len(),
        finished.ready,
        scenario.customers.len(),
        scenario.event_count(),
        finished.customers,
        written_to(&args.output, scenario.variant)
    );
    Ok(())
}

/// `bank run --http`: the customers paced, each event shown on the page as it happens, the
/// page up until Ctrl-C after them.
async fn run_watched(args: RunArgs, scenario: Scenario, web: &Web) -> Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let cluster = start_cluster(&scenario, None, storage(args.data_dir)).await?;
    let addresses = cluster.addresses();
    let shared: SharedCluster = Default::default();
    *shared.lock().await = Some(cluster);
    show_local(Some(web), &shared, addresses.values().copied().collect());
    let options = CustomerOptions {
        concurrent: args.concurrent,
        pace: Duration::from_millis(args.pace),
        observer: Some(std::sync::Arc::new(PageObserver {
            feed: web.feed().clone(),
            cluster: shared.clone(),
        })),
    };
    let ran = async {
        let branches = Branches::new(&addresses)?;
        let replies = run_customers_with(&scenario, &branches, &options).await?;
        let guard = shared.lock().await;
        let Some(cluster) = guard.as_ref() else {
            bail!("the cluster shut down before the end of the run");
        };
        let (balances, identical) = final_balances(cluster).await?;
        if scenario.variant == Variant::LamportClocks {
            let parts = clocked_parts(cluster, replies)?;
            write_parts(&args.output, &parts)?;
            if let Some(file) = &args.diagram {
                draw(&scenario, &parts, file)?;
            }
        } else {
            write_output(&args.output, &render_output(scenario.variant, &replies))?;
        }
        print!("{}", summarize(&balances, identical)?);
        println!("{}", written_to(&args.output, scenario.variant));
        anyhow::Ok(())
    };
    let result = tokio::select! {
        result = ran => result,
        signal = signals.recv() => Err(anyhow::anyhow!("{signal} before the customers finished")),
    };
    if result.is_ok() {
        eprintln!(
            "bank run: done; the live page stays up at http://{}/ until Ctrl-C",
            web.local_addr()
        );
        let signal = signals.recv().await;
        eprintln!("bank run: {signal}, shutting down");
    }
    web.show(bank::web::View::default());
    if let Some(cluster) = shared.lock().await.take() {
        cluster.shutdown().await;
    }
    result
}

/// `bank server`.
pub async fn server(args: ServerArgs, web: Option<&Web>) -> Result<()> {
    let scenario = load(&args.input, "server")?;
    // Handlers first: a signal that arrives while the cluster starts is kept, not fatal.
    let mut signals = ShutdownSignals::install()?;
    let cluster = start_cluster(&scenario, Some(args.base_port), storage(args.data_dir)).await?;
    let addresses: Vec<String> = cluster
        .branches()
        .map(|(id, b)| format!("{id}={}", b.addr))
        .collect();
    let shared: SharedCluster = Default::default();
    show_local(
        web,
        &shared,
        cluster.addresses().values().copied().collect(),
    );
    *shared.lock().await = Some(cluster);
    eprintln!(
        "bank server: {} branches ready ({}); Ctrl-C to stop",
        addresses.len(),
        addresses.join(" ")
    );
    let signal = signals.recv().await;
    eprintln!("bank server: {signal}, shutting down");
    if let Some(web) = web {
        web.show(bank::web::View::default());
    }
    if let Some(cluster) = shared.lock().await.take() {
        cluster.shutdown().await;
    }
    eprintln!("bank server: stopped");
    Ok(())
}

/// `bank client`.
pub async fn client(args: ClientArgs) -> Result<()> {
    let scenario = load(&args.input, "client")?;
    if scenario.variant == Variant::LamportClocks {
        bail!(
            "{} is a Project 2 (Lamport clocks) scenario: its output needs the branches' own event logs, which `bank client` cannot read from `bank server`; run it with `bank run {}`",
            args.input.display(),
            args.input.display()
        );
    }
    let base_port = args.base_port;
    let mut addresses = BTreeMap::new();
    for branch in &scenario.branches {
        let port = u16::try_from(u64::from(base_port) + branch.id).with_context(|| {
            format!(
                "port {base_port} + branch {} is beyond 65535; choose a lower --base-port",
                branch.id
            )
        })?;
        addresses.insert(branch.id, SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let branches = Branches::new(&addresses)?;
    branches
        .wait_until_serving(SERVER_WAIT)
        .await
        .context("is `bank server` running with the same --base-port?")?;
    let replies = run_customers(&scenario, &branches, args.concurrent).await?;
    write_output(&args.output, &render_output(scenario.variant, &replies))?;
    let mut balances = Vec::with_capacity(addresses.len());
    for (id, addr) in branches.addresses() {
        let balance = branches
            .query_balance(id)
            .await
            .with_context(|| format!("querying {addr}"))?;
        balances.push((id, Some(balance)));
    }
    print!("{}", summarize(&balances, true)?);
    println!("output written to {}", args.output.display());
    Ok(())
}

/// Writes Project 2's three parts: customer and branch events beside `output`, all events in
/// it ([`part_paths`]); all three or none.
fn write_parts(output: &Path, parts: &Parts) -> Result<()> {
    let [customer, branch, all] = part_paths(output);
    let mut files = Vec::with_capacity(3);
    for (path, part) in [
        (customer, &parts.customer),
        (branch, &parts.branch),
        (all, &parts.all),
    ] {
        let mut text = serde_json::to_vec_pretty(part)?;
        text.push(b'\n');
        files.push((path, text));
    }
    write_all_whole(&files)
}

/// Grades a Project 2 run's `parts` as `bank grade p2` does and draws them in `file`; says
/// where, and how the run graded.
fn draw(scenario: &Scenario, parts: &Parts, file: &Path) -> Result<()> {
    let output = bank::grade::p2::parse_parts(&parts.customer, &parts.branch, &parts.all)
        .context("the run's own Lamport events do not parse (this is a bug; please report it)")?;
    let report = bank::grade::p2::grade(scenario, &output);
    let svg = bank::report::diagram::render(&output, &report);
    write_whole(file, svg.as_bytes())?;
    eprintln!(
        "diagram written to {} ({} of {} checks pass)",
        file.display(),
        report.passed(),
        report.checks
    );
    Ok(())
}

/// Where a run's output went, for its last line.
fn written_to(output: &Path, variant: Variant) -> String {
    match variant {
        Variant::LamportClocks => {
            let [customer, branch, all] = part_paths(output);
            format!(
                "Lamport events written to {} (customers), {} (branches) and {} (all)",
                customer.display(),
                branch.display(),
                all.display()
            )
        }
        Variant::Propagation | Variant::ClientCentric => {
            format!("output written to {}", output.display())
        }
    }
}

/// The scenario file behind `bank COMMAND input`; a missing one points at the examples, the
/// usual first mistake on a fresh clone.
fn load(input: &Path, command: &str) -> Result<Scenario> {
    match Scenario::load(input) {
        Err(ScenarioError::Read { cause, .. }) if cause.kind() == ErrorKind::NotFound => bail!(
            "no scenario file at {}; try one of the examples: bank {command} {EXAMPLE_SCENARIO}",
            input.display()
        ),
        loaded => Ok(loaded?),
    }
}

/// One line per branch, then whether they agree (`identical`: the branches' ledgers are). An
/// error if they do not, after printing the lines.
fn summarize(balances: &[(u64, Option<i64>)], identical: bool) -> Result<String> {
    let mut summary = String::new();
    for (id, balance) in balances {
        match balance {
            Some(balance) => writeln!(summary, "branch {id}: balance {balance}")?,
            None => writeln!(summary, "branch {id}: no balance")?,
        }
    }
    let first = balances.first().map(|(_, b)| *b);
    let agree = identical && balances.iter().all(|(_, b)| Some(*b) == first);
    if !agree {
        print!("{summary}");
        bail!("branches disagree: the replicas diverged (this is a bug; please report it)");
    }
    if let Some(Some(balance)) = first {
        writeln!(
            summary,
            "all {} branches agree: balance {balance}",
            balances.len()
        )?;
    }
    Ok(summary)
}
