//! The `bank` command line: argument parsing and printing results. The work is in the library.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use bank::bootstrap::local::{bind_loopback, LocalCluster, Storage};
use bank::ledger::ORIGINAL_ACCOUNT;
use bank::proto::customer::branch_client::BranchClient;
use bank::workload::course::{run_customers, wait_until_serving, Branches};
use bank::workload::scenario::{render_output, write_output, Scenario};

/// How long `bank client` waits for `bank server`'s branches to answer.
const SERVER_WAIT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "bank",
    version,
    about = "A replicated bank: gRPC branches kept consistent with Raft",
    after_help = "Example:\n  bank run input.json -o output.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics (for run, server, branch).
    #[arg(long, global = true, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// How logs are written to stderr; RUST_LOG sets the levels.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr in `format`, at the levels RUST_LOG sets (default: warnings).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Starts the metrics endpoint if `--metrics` was given.
async fn start_metrics(
    addr: Option<SocketAddr>,
) -> Result<Option<bank::server::metrics::Exporter>> {
    let Some(addr) = addr else { return Ok(None) };
    let exporter = bank::server::metrics::Exporter::start(addr)
        .await
        .with_context(|| format!("--metrics: cannot listen on {addr}"))?;
    eprintln!("bank: metrics at http://{}/metrics", exporter.local_addr());
    Ok(Some(exporter))
}

#[derive(Subcommand)]
enum Command {
    /// Start every branch in this process, run the customers over gRPC, write the output.
    #[command(
        after_help = "Example:\n  bank run input.json\n  bank run input.json -o out.json --concurrent"
    )]
    Run {
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
    },
    /// Start every branch of the scenario on 127.0.0.1:(base-port + branch id) until Ctrl-C.
    #[command(
        after_help = "Example:\n  bank server input.json --base-port 50050 --data-dir /var/lib/bank"
    )]
    Server {
        input: PathBuf,
        #[arg(long, default_value_t = 50050)]
        base_port: u16,
        /// Keep the branches' state on disk here (branch N in DIR/branch-N); a restart with
        /// the same directory resumes from it. Default: in memory.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run one branch in this process, as part of a cluster of branches in several processes
    /// or hosts. State is durable in --data-dir; a restart resumes from it.
    #[command(after_help = "Example (three branches, one per terminal):\n  \
        bank branch --id 1 --listen 127.0.0.1:7001 --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003 --data-dir d1 --balance 400\n  \
        bank branch --id 2 --listen 127.0.0.1:7002 --peer 1=127.0.0.1:7001 --peer 3=127.0.0.1:7003 --data-dir d2 --balance 400\n  \
        bank branch --id 3 --listen 127.0.0.1:7003 --peer 1=127.0.0.1:7001 --peer 2=127.0.0.1:7002 --data-dir d3 --balance 400\n\n\
        A new cluster is created once every branch is up with an empty data directory. \
        TLS (mutual between branches): see `bank certs --help`; customer tokens: --tokens (README: TLS and tokens).")]
    Branch {
        /// This branch's id (a positive integer, unique in the cluster).
        #[arg(long)]
        id: u64,
        /// Address to serve customers and peers on, host:port.
        #[arg(long)]
        listen: SocketAddr,
        /// Another branch, as ID=HOST:PORT; repeat for each.
        #[arg(long = "peer", value_name = "ID=HOST:PORT", value_parser = parse_peer)]
        peers: Vec<(u64, String)>,
        /// Where this branch keeps its state.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The shared account's initial balance (the same on every branch).
        #[arg(long, default_value_t = 0)]
        balance: u64,
        /// Rebuild this branch from its peers after its data was lost (empty --data-dir).
        /// Every other branch must be up.
        #[arg(long)]
        rejoin: bool,
        /// This branch's certificate (PEM, from `bank certs`): serve TLS only, and use it as
        /// the client certificate to its peers. Needs --tls-key and --tls-ca.
        #[arg(long, value_name = "FILE")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, value_name = "FILE")]
        tls_key: Option<PathBuf>,
        /// The cluster's CA certificate (PEM): peers must present a certificate it signed.
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// Require customers to send a bearer token from this JSON file, restricted to
        /// accounts: {"tokens":[{"name":"alice","token":"...","accounts":[1,2]}]} ("all" for
        /// every account).
        #[arg(long, value_name = "FILE")]
        tokens: Option<PathBuf>,
        /// Customer calls (both APIs) this branch answers at once; past it a call is refused
        /// at once with RESOURCE_EXHAUSTED ("retry later") instead of queueing.
        #[arg(long, value_name = "N", default_value_t = bank::server::CUSTOMER_REQUESTS_MAX_DEFAULT,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
        requests_max: usize,
    },
    /// Make a test CA and a certificate for the branches (server and client authentication).
    #[command(after_help = "Example (a TLS cluster on one host):\n  \
        bank certs --out certs\n  \
        bank branch --id 1 --listen 127.0.0.1:7001 --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003 --data-dir d1 \\\n      \
        --tls-cert certs/branch.pem --tls-key certs/branch.key --tls-ca certs/ca.pem\n  \
        (the same for branches 2 and 3)\n  \
        bank account balance 1 --branch 127.0.0.1:7001 --tls-ca certs/ca.pem\n\n\
        Writes ca.pem, ca.key, branch.pem and branch.key (keys with mode 0600). The certificate \
        names 127.0.0.1, ::1 and localhost; add every other address or name the branches are \
        reached at with --host. Keep ca.key off the branches.")]
    Certs {
        /// Directory to write the files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Another IP address or DNS name of the branches; repeat for each.
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Check a recorded history (JSON lines): linearizability per account, conservation of
    /// money, minimum balances, agreement of the branches' final states. Exits 0 if it passes.
    #[command(after_help = "Example:\n  bank check history.jsonl\n\n\
        The format is documented in the library's `check` module.")]
    Check {
        /// The history file, one JSON event per line.
        history: PathBuf,
    },
    /// Open accounts, move money and read balances on the bank.v1 accounts API.
    #[command(after_help = "Examples:\n  \
        bank account open 1 --balance 100 --branch 127.0.0.1:50051 --branch 127.0.0.1:50052\n  \
        bank account deposit 1 20 --branch 127.0.0.1:50051\n  \
        bank account transfer 1 2 50 --branch 127.0.0.1:50051\n  \
        bank account balance 1 2 --json --branch 127.0.0.1:50052\n  \
        BANK_TOKEN=... bank account balance 1 --branch 127.0.0.1:7001 --tls-ca certs/ca.pem   (TLS, token)\n\n\
        A refused operation (e.g. insufficient funds) exits 1 and says why. If no branch confirms a \
        write in time its outcome is unknown: resend it with --request-id ORIGIN:SEQUENCE as printed.")]
    Account {
        #[command(subcommand)]
        action: AccountAction,
        /// A branch to talk to, HOST:PORT; repeat for several (tried in turn when one fails).
        #[arg(long = "branch", value_name = "HOST:PORT", global = true)]
        branches: Vec<String>,
        /// Print the result as one JSON object on stdout.
        #[arg(long, global = true)]
        json: bool,
        /// Give up after this many seconds, retries included.
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0, global = true)]
        timeout: f64,
        #[command(flatten)]
        tls: TlsArgs,
        /// Bearer token for a branch started with --tokens.
        #[arg(long, env = "BANK_TOKEN", hide_env_values = true, global = true)]
        token: Option<String>,
    },
    /// Load a cluster with concurrent clients and report throughput, latency and errors.
    #[command(after_help = "Examples:\n  \
        bank bench --clients 16 --duration 10\n  \
        bank bench --data-dir /tmp/bench --clients 64 --mix deposit=50,transfer=50 --duration 20\n  \
        bank bench --batch 1000 --mix transfer=100 --count 1000000 --json\n  \
        bank bench --branch 127.0.0.1:7001 --branch 127.0.0.1:7002 --clients 8 --count 10000\n\n\
        Without --branch it starts its own cluster on loopback (in memory, or durable with \
        --data-dir). At the end every branch's balances are read back and checked: all branches \
        agree and the total is what the acknowledged deposits and withdrawals make it.")]
    Bench(BenchArgs),
    /// Show every branch of a running cluster: role, term, applied index, lag, digest.
    #[command(
        after_help = "Example:\n  bank status --branch 127.0.0.1:7001\n  bank status --branch 127.0.0.1:7001 --json"
    )]
    Status {
        /// Any branch of the cluster, host:port; the others are found through it.
        #[arg(long, value_name = "HOST:PORT")]
        branch: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// On a TLS cluster: --tls-ca, and the cluster's certificate as --tls-cert and
        /// --tls-key (status is part of the peer service, closed to other clients).
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Run the scenario's customers against a running `bank server`.
    #[command(after_help = "Example:\n  bank client input.json --base-port 50050 -o output.json")]
    Client {
        input: PathBuf,
        #[arg(long, default_value_t = 50050)]
        base_port: u16,
        #[arg(short, long, default_value = "output.json")]
        output: PathBuf,
        #[arg(long)]
        concurrent: bool,
    },
}

/// How a client reaches a TLS cluster.
#[derive(clap::Args)]
struct TlsArgs {
    /// The cluster's CA certificate (PEM): connect with TLS and trust only it.
    #[arg(long, value_name = "FILE", global = true)]
    tls_ca: Option<PathBuf>,
    /// A client certificate to present (PEM), with --tls-key and --tls-ca.
    #[arg(long, value_name = "FILE", global = true)]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The client TLS configuration these options ask for, checked; `None`: plaintext.
    fn load(&self) -> Result<Option<tonic::transport::ClientTlsConfig>> {
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together: give both or neither"),
        };
        match &self.tls_ca {
            Some(ca) => Ok(Some(bank::tls::load_client(ca, identity)?)),
            None if identity.is_some() => {
                bail!("--tls-cert needs --tls-ca (the CA that signed the branches' certificate)")
            }
            None => Ok(None),
        }
    }
}

/// `error`, with a hint when it looks like TLS on one side only: HTTP/2 sent to a TLS port
/// breaks as an h2 protocol error; TLS sent to a plaintext port as a corrupt TLS record.
fn tls_hint(error: impl Into<anyhow::Error>, tls_on: bool) -> anyhow::Error {
    let error = error.into();
    let text = format!("{error:#}");
    if !tls_on && text.contains("h2 protocol error") {
        error.context("the branch may serve TLS only: give --tls-ca (see `bank certs`)")
    } else if tls_on && text.contains("InvalidContentType") {
        error.context("the branch may not serve TLS: leave out --tls-ca")
    } else {
        error
    }
}

/// `--token` as a client token, checked.
fn client_token(token: Option<&str>) -> Result<Option<bank::client::Token>> {
    token
        .map(|token| bank::client::Token::new(token.trim()))
        .transpose()
        .context("--token / BANK_TOKEN")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let exporter = start_metrics(cli.metrics).await?;
        let result = match cli.command {
            Command::Run {
                input,
                output,
                concurrent,
                data_dir,
            } => run(&input, &output, concurrent, storage(data_dir)).await,
            Command::Server {
                input,
                base_port,
                data_dir,
            } => server(&input, base_port, storage(data_dir)).await,
            Command::Branch {
                id,
                listen,
                peers,
                data_dir,
                balance,
                rejoin,
                tls_cert,
                tls_key,
                tls_ca,
                tokens,
                requests_max,
            } => {
                let security = BranchSecurity {
                    tls: bank::tls::TlsFiles::from_options(tls_cert, tls_key, tls_ca)?,
                    tokens,
                    requests_max,
                };
                branch(id, listen, peers, data_dir, balance, rejoin, security).await
            }
            Command::Certs { out, hosts, force } => certs(&out, &hosts, force),
            Command::Client {
                input,
                base_port,
                output,
                concurrent,
            } => client(&input, base_port, &output, concurrent).await,
            Command::Check { history } => check(&history),
            Command::Account {
                action,
                branches,
                json,
                timeout,
                tls,
                token,
            } => account(action, &branches, json, timeout, &tls, token.as_deref()).await,
            Command::Status { branch, json, tls } => status(&branch, json, &tls).await,
            Command::Bench(args) => bench(args).await,
        };
        if let Some(exporter) = exporter {
            exporter.stop().await;
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_peer(text: &str) -> Result<(u64, String), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
    let id: u64 = id
        .parse()
        .map_err(|_| format!("peer id {id:?} in {text:?} is not a positive integer"))?;
    if addr.is_empty() {
        return Err(format!("{text:?} has no address after '='"));
    }
    Ok((id, addr.to_string()))
}

/// `bank branch`'s TLS files and token file, as given.
struct BranchSecurity {
    tls: Option<bank::tls::TlsFiles>,
    tokens: Option<PathBuf>,
    requests_max: usize,
}

async fn branch(
    id: u64,
    listen: SocketAddr,
    peers: Vec<(u64, String)>,
    data_dir: PathBuf,
    balance: u64,
    rejoin: bool,
    security: BranchSecurity,
) -> Result<()> {
    if id == 0 {
        bail!("--id must be a positive integer");
    }
    let tls = security
        .tls
        .as_ref()
        .map(bank::tls::load_branch)
        .transpose()?;
    let tokens = match &security.tokens {
        Some(path) => Some(std::sync::Arc::new(bank::server::auth::Tokens::load(path)?)),
        None => None,
    };
    if tokens.is_some() && tls.is_none() {
        // A bearer token in clear is as good as public to anyone on the path.
        if !listen.ip().is_loopback() {
            bail!(
                "--tokens without TLS would send customers' tokens in clear over the network; \
                 add --tls-cert, --tls-key and --tls-ca (see `bank certs`), or listen on loopback \
                 for testing"
            );
        }
        eprintln!(
            "bank branch {id}: warning: tokens without TLS: tokens travel in clear \
             (allowed on loopback, for testing only)"
        );
    }
    let mut peer_map = BTreeMap::new();
    for (peer, addr) in peers {
        if peer_map.insert(peer, addr).is_some() {
            bail!("--peer lists branch {peer} twice");
        }
    }
    let mut signals = ShutdownSignals::install()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let running = bank::bootstrap::standalone::start(bank::bootstrap::standalone::BranchConfig {
        id,
        listener,
        peers: peer_map,
        data_dir: data_dir.clone(),
        initial_balance: balance,
        rejoin,
        tls: tls.clone(),
        tokens: tokens.clone(),
        requests_max: security.requests_max,
    })
    .await?;
    eprintln!(
        "bank branch {id}: serving on {listen}{}{}, data in {}; Ctrl-C to stop",
        if tls.is_some() { " (TLS)" } else { "" },
        tokens
            .as_ref()
            .map_or(String::new(), |t| format!(", {} customer tokens", t.len())),
        data_dir.display()
    );
    let signal = signals.recv().await;
    eprintln!("bank branch {id}: {signal}, shutting down");
    running.shutdown().await;
    eprintln!("bank branch {id}: stopped");
    Ok(())
}

fn certs(out: &Path, hosts: &[String], force: bool) -> Result<()> {
    let files = bank::tls::generate(out, hosts, force)?;
    println!("wrote {}", files.ca_cert.display());
    println!(
        "wrote {} (keep it off the branches)",
        files.ca_key.display()
    );
    println!("wrote {}", files.branch_cert.display());
    println!("wrote {}", files.branch_key.display());
    println!(
        "start each branch with: --tls-cert {} --tls-key {} --tls-ca {}",
        files.branch_cert.display(),
        files.branch_key.display(),
        files.ca_cert.display()
    );
    Ok(())
}

fn storage(data_dir: Option<PathBuf>) -> Storage {
    data_dir.map_or(Storage::Memory, Storage::Durable)
}

fn branch_ids(scenario: &Scenario) -> Vec<u64> {
    scenario.branches.iter().map(|b| u64::from(b.id)).collect()
}

fn initial_balance(scenario: &Scenario) -> Result<u64> {
    u64::try_from(scenario.initial_balance).context("the initial balance must not be negative")
}

async fn run(input: &Path, output: &Path, concurrent: bool, storage: Storage) -> Result<()> {
    let scenario = Scenario::load(input)?;
    let started = Instant::now();
    let listeners = bind_loopback(&branch_ids(&scenario), None).await?;
    let cluster = LocalCluster::start(listeners, initial_balance(&scenario)?, storage).await?;
    let ready = started.elapsed();
    let result = run_on_cluster(&scenario, &cluster, output, concurrent).await;
    let customers_done = started.elapsed();
    cluster.shutdown().await;
    let summary = result?;
    print!("{summary}");
    println!(
        "{} branches ready in {:.2?}; {} customers, {} events in {:.2?}; output written to {}",
        scenario.branches.len(),
        ready,
        scenario.customers.len(),
        scenario.event_count(),
        customers_done.saturating_sub(ready),
        output.display()
    );
    Ok(())
}

async fn run_on_cluster(
    scenario: &Scenario,
    cluster: &LocalCluster,
    output: &Path,
    concurrent: bool,
) -> Result<String> {
    let addresses = to_branch_addresses(cluster.addresses())?;
    let branches = Branches::new(&addresses)?;
    let replies = run_customers(scenario, &branches, concurrent).await?;
    write_output(output, &render_output(scenario.variant, &replies))?;
    let states = cluster.settled_states().await?;
    let balances: Vec<(u64, Option<i64>)> = states
        .iter()
        .map(|(id, state)| (*id, state.ledger.balance(ORIGINAL_ACCOUNT)))
        .collect();
    let identical = states
        .windows(2)
        .all(|pair| pair[0].1.ledger == pair[1].1.ledger);
    summarize(&balances, identical)
}

fn to_branch_addresses(addresses: BTreeMap<u64, SocketAddr>) -> Result<BTreeMap<u32, SocketAddr>> {
    addresses
        .into_iter()
        .map(|(id, addr)| Ok((u32::try_from(id).context("branch id beyond u32")?, addr)))
        .collect()
}

/// One line per branch, then whether they agree. An error if they do not.
fn summarize(balances: &[(u64, Option<i64>)], identical: bool) -> Result<String> {
    let mut summary = String::new();
    for (id, balance) in balances {
        match balance {
            Some(balance) => summary.push_str(&format!("branch {id}: balance {balance}\n")),
            None => summary.push_str(&format!("branch {id}: no balance\n")),
        }
    }
    let first = balances.first().map(|(_, b)| *b);
    let agree = identical && balances.iter().all(|(_, b)| Some(*b) == first);
    if !agree {
        print!("{summary}");
        bail!("branches disagree: the replicas diverged (this is a bug; please report it)");
    }
    if let Some(Some(balance)) = first {
        summary.push_str(&format!(
            "all {} branches agree: balance {balance}\n",
            balances.len()
        ));
    }
    Ok(summary)
}

async fn server(input: &Path, base_port: u16, storage: Storage) -> Result<()> {
    let scenario = Scenario::load(input)?;
    // Handlers first: a signal that arrives while the cluster starts is kept, not fatal.
    let mut signals = ShutdownSignals::install()?;
    let listeners = bind_loopback(&branch_ids(&scenario), Some(base_port)).await?;
    let cluster = LocalCluster::start(listeners, initial_balance(&scenario)?, storage).await?;
    let addresses: Vec<String> = cluster
        .branches()
        .map(|(id, b)| format!("{id}={}", b.addr))
        .collect();
    eprintln!(
        "bank server: {} branches ready ({}); Ctrl-C to stop",
        addresses.len(),
        addresses.join(" ")
    );
    let signal = signals.recv().await;
    eprintln!("bank server: {signal}, shutting down");
    cluster.shutdown().await;
    eprintln!("bank server: stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from the moment they are installed.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(ShutdownSignals {})
        }
    }

    /// Resolves on the first signal and says which.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "interrupted",
                _ = self.terminate.recv() => "terminated",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "interrupted"
        }
    }
}

async fn client(input: &Path, base_port: u16, output: &Path, concurrent: bool) -> Result<()> {
    let scenario = Scenario::load(input)?;
    let mut addresses = BTreeMap::new();
    for branch in &scenario.branches {
        let port = u16::try_from(u32::from(base_port) + branch.id).with_context(|| {
            format!(
                "port {base_port} + branch {} is beyond 65535; choose a lower --base-port",
                branch.id
            )
        })?;
        addresses.insert(branch.id, SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let branches = Branches::new(&addresses)?;
    wait_until_serving(&branches, SERVER_WAIT)
        .await
        .context("is `bank server` running with the same --base-port?")?;
    let replies = run_customers(&scenario, &branches, concurrent).await?;
    write_output(output, &render_output(scenario.variant, &replies))?;
    let mut balances = Vec::with_capacity(addresses.len());
    for (&id, addr) in &addresses {
        balances.push((u64::from(id), Some(query_balance(*addr).await?)));
    }
    print!("{}", summarize(&balances, true)?);
    println!("output written to {}", output.display());
    Ok(())
}

fn check(path: &Path) -> Result<()> {
    let history = bank::check::History::load(path)
        .with_context(|| format!("{} is not a readable history", path.display()))?;
    match bank::check::check(&history) {
        Ok(summary) => {
            println!("{}: {summary}", path.display());
            Ok(())
        }
        Err(violation) => bail!("{} fails the check: {violation}", path.display()),
    }
}

async fn query_balance(addr: SocketAddr) -> Result<i64> {
    let mut client = BranchClient::connect(format!("http://{addr}"))
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut request = tonic::Request::new(bank::proto::customer::Request {
        id: 0,
        interface: "query".to_string(),
        money: 0,
        writeset: vec![],
    });
    request.set_timeout(bank::workload::course::CALL_DEADLINE);
    let reply = client
        .msg_delivery(request)
        .await
        .with_context(|| format!("querying {addr}"))?;
    let balance = i64::from(reply.into_inner().balance);
    anyhow::ensure!(balance >= 0, "negative balance {balance} on the wire");
    Ok(balance)
}

/// `bank account ...`: one operation on the bank.v1 accounts API.
#[derive(Subcommand)]
enum AccountAction {
    /// Open an account: `bank account open ACCOUNT [--balance N] [--overdraft N] [--max N]`.
    Open {
        account: u64,
        /// Opening balance, in minor units.
        #[arg(long, default_value_t = 0)]
        balance: u64,
        /// How far below zero the balance may go (0: never negative).
        #[arg(long, default_value_t = 0)]
        overdraft: u64,
        /// Highest balance allowed (default: no limit below 2^63).
        #[arg(long)]
        max: Option<u64>,
        /// Resend a write whose outcome was unknown, under its id.
        #[arg(long, value_name = "ORIGIN:SEQUENCE", value_parser = parse_request_id)]
        request_id: Option<bank::ledger::RequestId>,
    },
    /// Deposit AMOUNT into ACCOUNT.
    Deposit {
        account: u64,
        amount: u64,
        #[arg(long, value_name = "ORIGIN:SEQUENCE", value_parser = parse_request_id)]
        request_id: Option<bank::ledger::RequestId>,
    },
    /// Withdraw AMOUNT from ACCOUNT.
    Withdraw {
        account: u64,
        amount: u64,
        #[arg(long, value_name = "ORIGIN:SEQUENCE", value_parser = parse_request_id)]
        request_id: Option<bank::ledger::RequestId>,
    },
    /// Move AMOUNT from account FROM to account TO, atomically.
    Transfer {
        from: u64,
        to: u64,
        amount: u64,
        #[arg(long, value_name = "ORIGIN:SEQUENCE", value_parser = parse_request_id)]
        request_id: Option<bank::ledger::RequestId>,
    },
    /// Print the balances of one or more accounts.
    Balance {
        #[arg(required = true)]
        accounts: Vec<u64>,
        /// linearizable (default): sees every acknowledged write; local: this branch's
        /// replica as it is, maybe stale, always available.
        #[arg(long, value_enum, default_value_t = ReadArg::Linearizable)]
        read: ReadArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReadArg {
    Linearizable,
    Local,
}

fn parse_request_id(text: &str) -> Result<bank::ledger::RequestId, String> {
    let parsed = text.split_once(':').and_then(|(origin, sequence)| {
        Some(bank::ledger::RequestId {
            origin: origin.parse().ok()?,
            sequence: sequence.parse().ok()?,
        })
    });
    match parsed {
        Some(id) if id.origin != 0 => Ok(id),
        _ => Err(format!(
            "{text:?} is not ORIGIN:SEQUENCE (two integers, origin not 0)"
        )),
    }
}

async fn account(
    action: AccountAction,
    branches: &[String],
    json: bool,
    timeout: f64,
    tls: &TlsArgs,
    token: Option<&str>,
) -> Result<()> {
    use bank::client::{Client, ClientConfig, Outcome, ReadLevel, Write};
    if branches.is_empty() {
        bail!("give at least one --branch HOST:PORT");
    }
    let deadline = Duration::try_from_secs_f64(timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let tls = tls.load()?;
    let tls_on = tls.is_some();
    let client = Client::new(
        branches,
        ClientConfig {
            deadline,
            tls,
            token: client_token(token)?,
            ..ClientConfig::default()
        },
    )?;
    let (write, request_id) = match action {
        AccountAction::Balance { accounts, read } => {
            let level = match read {
                ReadArg::Linearizable => ReadLevel::Linearizable,
                ReadArg::Local => ReadLevel::Local,
            };
            let reply = client
                .get_balances(&accounts, level)
                .await
                .map_err(|e| tls_hint(e, tls_on))?;
            let missing: Vec<u64> = reply
                .balances
                .iter()
                .filter(|b| b.balance.is_none())
                .map(|b| b.account)
                .collect();
            if json {
                let balances: Vec<serde_json::Value> = reply
                    .balances
                    .iter()
                    .map(|b| serde_json::json!({"account": b.account, "balance": b.balance}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"balances": balances, "applied_index": reply.applied_index})
                );
            } else {
                for b in &reply.balances {
                    match b.balance {
                        Some(balance) => println!("account {}: balance {balance}", b.account),
                        None => println!("account {}: no such account", b.account),
                    }
                }
            }
            if !missing.is_empty() {
                bail!("no such account: {missing:?}");
            }
            return Ok(());
        }
        AccountAction::Open {
            account,
            balance,
            overdraft,
            max,
            request_id,
        } => (
            Write::Open {
                account,
                opening_balance: balance,
                overdraft_limit: overdraft,
                balance_max: max,
            },
            request_id,
        ),
        AccountAction::Deposit {
            account,
            amount,
            request_id,
        } => (Write::Deposit { account, amount }, request_id),
        AccountAction::Withdraw {
            account,
            amount,
            request_id,
        } => (Write::Withdraw { account, amount }, request_id),
        AccountAction::Transfer {
            from,
            to,
            amount,
            request_id,
        } => (Write::Transfer { from, to, amount }, request_id),
    };
    let request_id = request_id.unwrap_or_else(|| client.next_request_id());
    let written = client
        .write_with_id(request_id, &write)
        .await
        .map_err(|e| tls_hint(e, tls_on))?;
    let result = &written.result;
    let id = format!("{}:{}", request_id.origin, request_id.sequence);
    if json {
        let outcome = written
            .outcome()
            .as_str_name()
            .trim_start_matches("OUTCOME_");
        println!(
            "{}",
            serde_json::json!({
                "outcome": outcome.to_ascii_lowercase(),
                "balance": result.balance,
                "to_balance": result.to_balance,
                "unknown_account": result.unknown_account,
                "log_index": written.log_index,
                "request_id": id,
            })
        );
    }
    let balance = result
        .balance
        .map_or_else(|| "?".to_string(), |b| b.to_string());
    let (account, verb) = match write {
        Write::Open { account, .. } => (account, "opened"),
        Write::Deposit { account, .. } => (account, "deposit"),
        Write::Withdraw { account, .. } => (account, "withdrawal"),
        Write::Transfer { from, .. } => (from, "transfer"),
    };
    match written.outcome() {
        Outcome::Ok => {
            if !json {
                match write {
                    Write::Open { account, .. } => {
                        println!("account {account} opened: balance {balance}")
                    }
                    Write::Deposit { account, amount } => {
                        println!("deposited {amount} into account {account}: balance {balance}")
                    }
                    Write::Withdraw { account, amount } => {
                        println!("withdrew {amount} from account {account}: balance {balance}")
                    }
                    Write::Transfer { from, to, amount } => println!(
                        "transferred {amount} from account {from} to account {to}: balances {balance} and {}",
                        result
                            .to_balance
                            .map_or_else(|| "?".to_string(), |b| b.to_string())
                    ),
                }
            }
            Ok(())
        }
        Outcome::InsufficientFunds => bail!(
            "insufficient funds: account {account} has balance {balance}; the {verb} was refused"
        ),
        Outcome::BalanceLimitExceeded => bail!(
            "the {verb} would take an account past its maximum balance (balance {balance}); refused"
        ),
        Outcome::UnknownAccount => bail!(
            "no such account: {}",
            result
                .unknown_account
                .map_or_else(|| "?".to_string(), |a| a.to_string())
        ),
        Outcome::AccountExists => {
            bail!("account {account} exists already (balance {balance})")
        }
        Outcome::InvalidAmount => bail!(
            "invalid amount: amounts must be > 0, a transfer needs two different accounts, \
             and an opening balance must not exceed --max"
        ),
        Outcome::RequestIdReused => {
            bail!("request id {id} was used before for a different operation; nothing was done")
        }
        Outcome::RequestIdExpired => bail!(
            "request id {id} is too old for the bank to tell whether it was applied; \
             read the balance before doing anything else"
        ),
        Outcome::Unspecified => bail!("the branch answered no outcome (request id {id})"),
    }
}

async fn status(branch: &str, json: bool, tls: &TlsArgs) -> Result<()> {
    let tls = tls.load()?;
    let status = bank::client::status::cluster_status_with(branch, tls.as_ref())
        .await
        .map_err(|e| tls_hint(e, tls.is_some()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", bank::client::status::render_table(&status));
    }
    Ok(())
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Target a running cluster's branch, HOST:PORT; repeat for each. Default: start a cluster.
    #[arg(long = "branch", value_name = "HOST:PORT")]
    branches: Vec<String>,
    /// Branches of the cluster to start (without --branch).
    #[arg(long = "branches", value_name = "N", default_value_t = 3)]
    branch_count: u64,
    /// Keep the started cluster's state here (durable: fsync before acknowledging).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Run for this many seconds (default 10, unless --count is given).
    #[arg(long, value_name = "SECONDS", conflicts_with = "count")]
    duration: Option<f64>,
    /// Run until this many operations were sent.
    #[arg(long)]
    count: Option<u64>,
    /// Percentages of deposit, withdraw, transfer and query.
    #[arg(long, default_value = "deposit=25,withdraw=25,transfer=25,query=25")]
    mix: bank::workload::bench::Mix,
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

async fn bench(args: BenchArgs) -> Result<()> {
    use bank::workload::bench::{BenchConfig, Length};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let length = match (args.duration, args.count) {
        (_, Some(0)) => bail!("--count must be positive"),
        (_, Some(count)) => Length::Count(count),
        (Some(seconds), None) => {
            if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
                bail!("--duration must be between 0 and 86400 seconds");
            }
            Length::Duration(Duration::from_secs_f64(seconds))
        }
        (None, None) => Length::Duration(Duration::from_secs(10)),
    };
    if args.history.is_some() && args.batch != 1 {
        bail!("--history needs --batch 1");
    }
    let config = BenchConfig {
        clients: args.clients,
        length,
        mix: args.mix,
        batch: args.batch,
        read_level: match args.read_level {
            BenchRead::Linearizable => bank::client::ReadLevel::Linearizable,
            BenchRead::ReadYourWrites => bank::client::ReadLevel::ReadYourWrites,
            BenchRead::Local => bank::client::ReadLevel::Local,
        },
        accounts: args.accounts,
        seed: args.seed,
        record_history: args.history.is_some(),
        client_config: bank::client::ClientConfig {
            tls: args.tls.load()?,
            token: client_token(args.token.as_deref())?,
            ..bank::client::ClientConfig::default()
        },
    };
    if args.branches.is_empty() && (args.tls.tls_ca.is_some() || args.tls.tls_cert.is_some()) {
        bail!("--tls-ca and --tls-cert are for a running cluster given with --branch");
    }
    let mut cluster = None;
    let addresses = if args.branches.is_empty() {
        if args.branch_count == 0 || args.branch_count > 50 {
            bail!("--branches must be 1..=50");
        }
        let ids: Vec<u64> = (1..=args.branch_count).collect();
        let listeners = bind_loopback(&ids, None).await?;
        let started = LocalCluster::start(listeners, 0, storage(args.data_dir)).await?;
        let addresses = started
            .addresses()
            .values()
            .map(|a| a.to_string())
            .collect();
        cluster = Some(started);
        addresses
    } else {
        if args.data_dir.is_some() {
            bail!("--data-dir is for the cluster bench starts itself; not with --branch");
        }
        args.branches.clone()
    };

    let progress = Arc::new(AtomicU64::new(0));
    let bar = match length {
        Length::Count(count) => indicatif::ProgressBar::new(count),
        Length::Duration(duration) => indicatif::ProgressBar::new(duration.as_secs().max(1)),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        let began = Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = progress.load(Ordering::Relaxed);
                match length {
                    Length::Count(_) => bar.set_position(done),
                    Length::Duration(_) => bar.set_position(began.elapsed().as_secs()),
                }
                let rate = done as f64 / began.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{done} ops, {rate:.0} ops/s"));
            }
        })
    };
    let result = bank::workload::bench::run_bench(&addresses, &config, progress).await;
    ticker.abort();
    bar.finish_and_clear();
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    let report = result?;
    if let Some(path) = &args.history {
        let write = || -> Result<()> {
            let file = std::fs::File::create(path)?;
            let mut writer = bank::check::HistoryWriter::new(std::io::BufWriter::new(file));
            for event in &report.history {
                writer.write(event)?;
            }
            writer.flush()?;
            Ok(())
        };
        write().with_context(|| format!("writing the history to {}", path.display()))?;
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
