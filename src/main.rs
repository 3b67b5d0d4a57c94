//! The `bank` command line: the top-level command, logging, and dispatch to one file per
//! subcommand in [`cli`]. The work is in the library.

mod cli;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bank",
    version,
    about = "A replicated bank: gRPC branches kept consistent with Raft",
    after_help = "Example:\n  bank run examples/scenarios/p1.json -o output.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Serve a live page of the cluster at http://ADDR/ and Prometheus metrics at
    /// http://ADDR/metrics (for run, server, branch). --metrics is the same flag.
    #[arg(
        long,
        visible_alias = "metrics",
        global = true,
        value_name = "ADDR",
        env = "BANK_HTTP"
    )]
    http: Option<SocketAddr>,
    /// How logs are written to stderr; RUST_LOG sets the levels.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BANK_LOG_FORMAT")]
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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(bank::raft::LOG_FILTER_DEFAULT));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start every branch in this process, run the customers over gRPC, write the output.
    #[command(
        after_help = "Example:\n  bank run examples/scenarios/p1.json\n  bank run examples/scenarios/concurrent.json -o out.json --concurrent\n  bank run examples/scenarios/p3.json --http 127.0.0.1:8080 --pace 500   (watch it at http://127.0.0.1:8080/)"
    )]
    Run(cli::run::RunArgs),
    /// Start every branch of the scenario on 127.0.0.1:(base-port + branch id) until Ctrl-C.
    #[command(
        after_help = "Example:\n  bank server examples/scenarios/p1.json --base-port 50050 --data-dir /var/lib/bank\n  bank server examples/scenarios/p1.json --http 127.0.0.1:8080   (a live page with buttons to stop, restart, cut off and heal branches)"
    )]
    Server(cli::run::ServerArgs),
    /// Run one branch in this process, as part of a cluster of branches in several processes
    /// or hosts. State is durable in --data-dir; a restart resumes from it.
    #[command(after_help = "Example (three branches, one per terminal):\n  \
        bank branch --config examples/config/branch-1.toml\n  \
        bank branch --config examples/config/branch-2.toml\n  \
        bank branch --config examples/config/branch-3.toml\n\n\
        The same with flags only:\n  \
        bank branch --id 1 --listen 127.0.0.1:7001 --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003 --data-dir d1 --balance 400\n  \
        bank branch --id 2 --listen 127.0.0.1:7002 --peer 1=127.0.0.1:7001 --peer 3=127.0.0.1:7003 --data-dir d2 --balance 400\n  \
        bank branch --id 3 --listen 127.0.0.1:7003 --peer 1=127.0.0.1:7001 --peer 2=127.0.0.1:7002 --data-dir d3 --balance 400\n\n\
        A new cluster is created once every branch is up with an empty data directory. \
        Every flag is also a --config key (its long name) and a BANK_* environment variable; \
        flags win over the file, the file over the environment. \
        TLS (mutual between branches): see `bank certs --help`; customer tokens: --tokens (docs/operations.md: TLS and tokens).")]
    Branch(cli::branch::BranchArgs),
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
    Certs(cli::certs::CertsArgs),
    /// Grade a course output against its input, strictly: P1 replies, P2 Lamport clocks, P3
    /// client-centric consistency. Exits 0 if every check passes, 1 if one fails, 2 if a file
    /// cannot be read.
    #[command(after_help = "Examples:\n  \
        bank grade p1 input.json output.json\n  \
        bank grade p2 input.json customer_output.json branch_output.json output.json --diagram clocks.svg\n  \
        bank grade p2 input.json out/   (out/customer_output.json, out/branch_output.json, out/output.json)\n  \
        bank grade p3 input.json output.json --check read-your-writes\n\n\
        Outputs may be JSON arrays or JSON lines. The course's own graders' score is printed beside ours.")]
    Grade(cli::grade::GradeArgs),
    /// Check a recorded history (JSON lines): linearizability per account, conservation of
    /// money, minimum balances, agreement of the branches' final states. Exits 0 if it passes.
    #[command(after_help = "Example:\n  bank check history.jsonl\n  \
        bank check history.jsonl --html report.html   (the history drawn)\n\n\
        The format is documented in the library's `check` module.")]
    Check(cli::check::CheckArgs),
    /// Open accounts, move money and read balances on the bank.v1 accounts API.
    #[command(after_help = "Examples:\n  \
        bank account open 1 --balance 100 --branch 127.0.0.1:50051 --branch 127.0.0.1:50052\n  \
        bank account deposit 1 20 --branch 127.0.0.1:50051\n  \
        bank account transfer 1 2 50 --branch 127.0.0.1:50051\n  \
        bank account balance 1 2 --json --branch 127.0.0.1:50052\n  \
        bank account list --branch 127.0.0.1:50051\n  \
        bank account export --format csv -o accounts.csv --branch 127.0.0.1:50051\n  \
        BANK_TOKEN=... bank account balance 1 --branch 127.0.0.1:7001 --tls-ca certs/ca.pem   (TLS, token)\n\n\
        A refused operation (e.g. insufficient funds) exits 1 and says why. If no branch confirms a \
        write in time its outcome is unknown: resend it with --request-id ORIGIN:SEQUENCE as printed.")]
    Account(cli::account::AccountArgs),
    /// Load a cluster with concurrent clients and report throughput, latency and errors.
    #[command(after_help = "Examples:\n  \
        bank bench --clients 16 --duration 10\n  \
        bank bench --data-dir /tmp/bench --clients 64 --mix deposit=50,transfer=50 --duration 20\n  \
        bank bench --batch 1000 --mix transfer=100 --count 1000000 --json\n  \
        bank bench --clients 1 --callers-per-client 64 --mix deposit=100   (client-side batching)\n  \
        bank bench --branch 127.0.0.1:7001 --branch 127.0.0.1:7002 --clients 8 --count 10000\n  \
        bank bench --duration 10 --html bench.html   (throughput and latency charts)\n\n\
        Without --branch it starts its own cluster on loopback (in memory, or durable with \
        --data-dir). At the end every branch's balances are read back and checked: all branches \
        agree and the total is what the acknowledged deposits and withdrawals make it.")]
    Bench(cli::bench::BenchArgs),
    /// Show every branch of a running cluster: role, term, applied index, lag, digest.
    #[command(
        after_help = "Example:\n  bank status --branch 127.0.0.1:7001\n  bank status --branch 127.0.0.1:7001 --json"
    )]
    Status(cli::status::StatusArgs),
    /// List the cluster's branches, or add, promote or remove one, while it runs.
    #[command(after_help = "Examples:\n  \
        bank member list --branch 127.0.0.1:7001\n  \
        bank branch --id 4 --listen 127.0.0.1:7004 --join 127.0.0.1:7001 --data-dir d4   (a new branch)\n  \
        bank member remove 3 --branch 127.0.0.1:7001\n  \
        bank member promote 6 --branch 127.0.0.1:7001\n\n\
        A new branch joins with `bank branch --join`: it is added as a learner, caught up, and \
        promoted to voter if the cluster has fewer than five. A removal that would leave the \
        remaining voters without a majority up is refused, as is a change while another is in \
        progress.")]
    Member(cli::member::MemberArgs),
    /// Back up a live branch (writes go on) into a checksummed file.
    #[command(after_help = "Example:\n  \
        bank backup --branch 127.0.0.1:7001 -o bank.backup\n  \
        bank backup --branch 127.0.0.1:7001 -o bank.backup --tls-ca certs/ca.pem --tls-cert certs/branch.pem --tls-key certs/branch.key\n\n\
        Under TLS the branch requires a certificate its cluster's CA signed (the branch certificate).")]
    Backup(cli::backup::BackupArgs),
    /// Make the data directory of a branch of a NEW cluster from a backup; then start it with
    /// `bank branch`, which resumes from it.
    #[command(
        after_help = "Example (a new three-branch cluster from one backup):\n  \
        bank restore bank.backup --data-dir d1 --id 1 --listen 127.0.0.1:7001 --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003\n  \
        bank restore bank.backup --data-dir d2 --id 2 --listen 127.0.0.1:7002 --peer 1=127.0.0.1:7001 --peer 3=127.0.0.1:7003\n  \
        bank restore bank.backup --data-dir d3 --id 3 --listen 127.0.0.1:7003 --peer 1=127.0.0.1:7001 --peer 2=127.0.0.1:7002\n  \
        bank branch --id 1 --listen 127.0.0.1:7001 --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003 --data-dir d1   (and 2, 3)\n\n\
        The data directory must be absent or empty; a damaged backup is refused. Start the branches \
        without --balance (the restored ledger has its own)."
    )]
    Restore(cli::restore::RestoreArgs),
    /// Print a shell completion script for bank (bash, zsh, fish, elvish or powershell).
    #[command(after_help = "Examples:\n  \
        bank completions bash > ~/.local/share/bash-completion/completions/bank\n  \
        bank completions zsh > ~/.zfunc/_bank      (with fpath+=~/.zfunc before compinit)\n  \
        bank completions fish > ~/.config/fish/completions/bank.fish")]
    Completions(cli::completions::CompletionsArgs),
    /// Run the scenario's customers against a running `bank server`.
    #[command(
        after_help = "Example:\n  bank client examples/scenarios/p1.json --base-port 50050 -o output.json"
    )]
    Client(cli::run::ClientArgs),
}

/// Runs `command`, with the HTTP listener up around it if `--http` asks for one.
async fn dispatch(command: Command, http: Option<SocketAddr>) -> anyhow::Result<()> {
    let web = cli::web::start(http).await?;
    let result = match command {
        Command::Run(args) => cli::run::run(args, web.as_ref()).await,
        Command::Server(args) => cli::run::server(args, web.as_ref()).await,
        Command::Branch(args) => cli::branch::run(args, web.as_ref()).await,
        Command::Certs(args) => cli::certs::run(args),
        Command::Client(args) => cli::run::client(args).await,
        Command::Check(args) => cli::check::run(args),
        Command::Grade(args) => cli::grade::run(args),
        Command::Account(args) => cli::account::run(args).await,
        Command::Status(args) => cli::status::run(args).await,
        Command::Member(args) => cli::member::run(args).await,
        Command::Bench(args) => cli::bench::run(args).await,
        Command::Backup(args) => cli::backup::run(args).await,
        Command::Restore(args) => cli::restore::run(args),
        Command::Completions(args) => cli::completions::run(args, Cli::command()),
    };
    if let Some(web) = web {
        web.stop().await;
    }
    result
}

fn main() -> ExitCode {
    cli::config::rename_env("BANK_METRICS", "BANK_HTTP");
    let cli = match cli::config::parse::<Cli>(std::env::args_os().collect()) {
        Ok(cli::config::Parsed::Run(cli)) => cli,
        Ok(cli::config::Parsed::Printed) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, cli.http)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<cli::grade::GradeExit>() {
                Some(grade) => ExitCode::from(grade.code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}
