//! `bank backup`: a consistent backup of a live branch into a file, while writes go on
//! ([`bank::client::backup`]). The stream goes to `FILE.partial`, which is synced, read back
//! and checked whole (checksum, ledger) and only then renamed to FILE.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::output::PartialFile;
use super::tls::{with_hint, TlsArgs};

/// Bound on opening the connection to the branch.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The branch to back up, HOST:PORT.
    #[arg(long = "branch", value_name = "HOST:PORT")]
    branch: String,
    /// The backup file to write (whole or not at all).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    timeout: f64,
    /// Under TLS: the cluster's CA, and a certificate it signed (the branch's own).
    #[command(flatten)]
    tls: TlsArgs,
}

pub async fn run(args: BackupArgs) -> Result<()> {
    let deadline = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let tls = args.tls.load()?;
    let mut file = PartialFile::create(&args.output)?;
    bank::client::backup::download(
        &args.branch,
        tls.as_ref(),
        CONNECT_TIMEOUT,
        deadline,
        file.out(),
    )
    .await
    .map_err(|e| with_hint(e.tls_mismatch(), e))?;
    let backup = file.finish(|partial| Ok(bank::backup::read_file(partial)?))?;
    let summary = &backup.summary;
    println!(
        "backup of branch {} at applied index {}: {} accounts, {} bytes, sha256 {} -> {}",
        summary.header.branch_id,
        summary.header.applied_index,
        summary.header.accounts,
        summary.file_bytes,
        summary.sha256_hex(),
        args.output.display()
    );
    Ok(())
}
