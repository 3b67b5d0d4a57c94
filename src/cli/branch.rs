//! `bank branch`: one branch in this process, part of a cluster of branches in several
//! processes or hosts ([`bank::bootstrap::standalone`]), with its TLS and customer tokens,
//! until Ctrl-C or SIGTERM.
//!
//! Every flag can also come from a `--config` TOML file (its long name is the key, see
//! [`super::config`]) and from a `BANK_*` environment variable (`--data-dir`: `BANK_DATA_DIR`;
//! `--peer`: `BANK_PEER`, comma-separated). The command line wins over the file, the file over
//! the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use bank::bootstrap::standalone::{self, BranchConfig};
use bank::server::auth::Tokens;
use bank::tls::TlsFiles;

use super::config::ConfigArgs;
use super::signals::ShutdownSignals;

#[derive(clap::Args)]
pub struct BranchArgs {
    /// This branch's id (a positive integer, unique in the cluster).
    #[arg(long, env = "BANK_ID", value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,
    /// Address to serve customers and peers on.
    #[arg(long, env = "BANK_LISTEN", value_name = "HOST:PORT")]
    listen: SocketAddr,
    /// Another branch, as ID=HOST:PORT; repeat for each (BANK_PEER: comma-separated).
    #[arg(long = "peer", env = "BANK_PEER", value_name = "ID=HOST:PORT", value_parser = parse_peer,
          value_delimiter = ',')]
    peers: Vec<(u64, String)>,
    /// Where this branch keeps its state.
    #[arg(long, env = "BANK_DATA_DIR", value_name = "DIR")]
    data_dir: PathBuf,
    /// The shared account's initial balance (the same on every branch).
    #[arg(long, env = "BANK_BALANCE", default_value_t = 0)]
    balance: u64,
    /// Rebuild this branch from its peers after its data was lost (empty --data-dir).
    /// Every other branch must be up.
    #[arg(long, env = "BANK_REJOIN")]
    rejoin: bool,
    /// Join a running cluster through any of its branches, HOST:PORT: start with an empty
    /// --data-dir; the branch is added as a learner, caught up, and promoted to voter if the
    /// cluster has fewer than five. Ignored once the branch has state.
    #[arg(
        long,
        env = "BANK_JOIN",
        value_name = "HOST:PORT",
        conflicts_with = "rejoin"
    )]
    join: Option<String>,
    /// This branch's certificate (PEM, from `bank certs`): serve TLS only, and use it as
    /// the client certificate to its peers. Needs --tls-key and --tls-ca.
    #[arg(long, env = "BANK_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "BANK_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): peers must present a certificate it signed.
    #[arg(long, env = "BANK_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Require customers to send a bearer token from this JSON file, restricted to
    /// accounts: {"tokens":[{"name":"alice","token":"...","accounts":[1,2]}]} ("all" for
    /// every account).
    #[arg(long, env = "BANK_TOKENS", value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Customer calls (both APIs) this branch answers at once; past it a call is refused
    /// at once with RESOURCE_EXHAUSTED ("retry later") instead of queueing.
    #[arg(long, env = "BANK_REQUESTS_MAX", value_name = "N",
          default_value_t = bank::server::CUSTOMER_REQUESTS_MAX_DEFAULT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub requests_max: usize,
    /// On shutdown, how long in-flight calls may take to finish before the branch stops
    /// serving regardless; with units: 500ms, 5s, 1m.
    #[arg(long, env = "BANK_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "5s",
          value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Free space (MiB) kept on the disk of --data-dir. Below it the branch takes no new
    /// writes (RESOURCE_EXHAUSTED) and leaves leading to a branch with room, still serving
    /// reads; below half of it, its log also holds appends until space is freed.
    #[arg(long, env = "BANK_DISK_RESERVE_MIB", value_name = "MIB",
          default_value_t = bank::raft::disk_space::DISK_RESERVE_DEFAULT_MIB)]
    disk_reserve_mib: u64,
    /// While FILE exists, this branch's disk counts as full (as low on space if FILE says
    /// "low"): a drill for a full disk without filling one.
    #[arg(long, env = "BANK_SIMULATE_DISK_FULL", value_name = "FILE")]
    simulate_disk_full: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn parse_peer(text: &str) -> Result<(u64, String), String> {
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

/// Runs the branch until a shutdown signal, then stops it cleanly.
pub async fn run(args: BranchArgs, web: Option<&bank::web::Web>) -> Result<()> {
    let tls_files = TlsFiles::from_options(args.tls_cert, args.tls_key, args.tls_ca)?;
    let id = args.id;
    if id == 0 {
        bail!("--id must be a positive integer");
    }
    let tls = tls_files.as_ref().map(bank::tls::load_branch).transpose()?;
    let tokens = match &args.tokens {
        Some(path) => Some(Arc::new(Tokens::load(path)?)),
        None => None,
    };
    if tokens.is_some() && tls.is_none() {
        // A bearer token in clear is as good as public to anyone on the path.
        if !args.listen.ip().is_loopback() {
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
    let mut peers = BTreeMap::new();
    for (peer, addr) in args.peers {
        if peers.insert(peer, addr).is_some() {
            bail!("--peer lists branch {peer} twice");
        }
    }
    let mut signals = ShutdownSignals::install()?;
    let listen = args.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let running = standalone::start(BranchConfig {
        id,
        listener,
        peers,
        data_dir: args.data_dir.clone(),
        initial_balance: args.balance,
        rejoin: args.rejoin,
        join: args.join,
        tls: tls.clone(),
        tokens: tokens.clone(),
        requests_max: args.requests_max,
        drain_timeout: args.drain_timeout,
        disk_reserve_mib: args.disk_reserve_mib,
        simulate_disk_full: args.simulate_disk_full,
    })
    .await?;
    super::web::show_branch(web, listen, tls.as_ref().map(|t| t.peer_client.clone()));
    eprintln!(
        "bank branch {id}: serving on {listen}{}{}, data in {}; Ctrl-C to stop",
        if tls.is_some() { " (TLS)" } else { "" },
        tokens
            .as_ref()
            .map_or(String::new(), |t| format!(", {} customer tokens", t.len())),
        args.data_dir.display()
    );
    let signal = signals.recv().await;
    eprintln!("bank branch {id}: {signal}, shutting down");
    running.shutdown().await;
    eprintln!("bank branch {id}: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::BranchArgs;

    /// Every setting of `bank branch` has its environment variable, named after the flag:
    /// a flag added without one fails here, saying what to add.
    #[test]
    fn every_flag_has_its_bank_environment_variable() {
        let command = <BranchArgs as clap::Args>::augment_args(clap::Command::new("branch"));
        let mut checked = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "print-config" {
                continue;
            }
            let expected = format!("BANK_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env(),
                Some(OsStr::new(&expected)),
                "--{long} needs `env = \"{expected}\"`"
            );
            checked += 1;
        }
        assert!(checked >= 12, "only {checked} flags found");
    }
}
