//! `bank account list` and `bank account export`: every account and its balance, read at one
//! applied index ([`Client::list_accounts`]: a read index, then one copy of the ledger's
//! balances, streamed in pages). The data goes to stdout (or the export's file, written
//! atomically); the count and the applied index go to stderr, so stdout stays data.
//!
//! - list: a table, `account  balance`, one account per line.
//! - export `--format csv`: a header `account,balance`, then one line per account.
//! - export `--format json`: `{"applied_index": I, "accounts": [{"account": id, "balance": b}, ...]}`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use bank::client::{Client, Listing};

use super::output::PartialFile;
use super::tls::with_hint;

/// The formats of `bank account export`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// `account,balance` lines under that header.
    Csv,
    /// One object: the applied index and the accounts.
    Json,
}

/// Which accounts to list: above `after`, at most `limit` (0: all).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Range {
    /// Only accounts with a greater id (to list in parts).
    #[arg(long, value_name = "ACCOUNT")]
    pub after: Option<u64>,
    /// At most this many accounts (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: u64,
}

async fn fetch(client: &Client, range: Range) -> Result<Listing> {
    client
        .list_accounts(range.after, range.limit)
        .await
        .map_err(|e| with_hint(e.tls_mismatch(), e))
}

/// `bank account list`: a table on stdout (JSON with `--json`), the count on stderr.
pub async fn list(client: &Client, range: Range, json: bool) -> Result<()> {
    let listing = fetch(client, range).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        write_json(&listing, &mut out)
    } else {
        write_table(&listing, &mut out)
    }
    .and_then(|()| out.flush())
    .context("writing to stdout")?;
    eprintln!(
        "{} accounts at applied index {}",
        listing.accounts.len(),
        listing.applied_index
    );
    Ok(())
}

/// `bank account export`: CSV or JSON to stdout or, atomically, to `output`.
pub async fn export(
    client: &Client,
    range: Range,
    format: ExportFormat,
    output: Option<PathBuf>,
) -> Result<()> {
    let listing = fetch(client, range).await?;
    let write = |out: &mut dyn Write| match format {
        ExportFormat::Csv => write_csv(&listing, out),
        ExportFormat::Json => write_json(&listing, out),
    };
    let target = match &output {
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            write(&mut out)
                .and_then(|()| out.flush())
                .context("writing to stdout")?;
            String::new()
        }
        Some(path) => {
            let mut file = PartialFile::create(path)?;
            write(file.out()).with_context(|| format!("writing {}", path.display()))?;
            file.finish(|_| Ok(()))?;
            format!(" -> {}", path.display())
        }
    };
    eprintln!(
        "exported {} accounts at applied index {}{target}",
        listing.accounts.len(),
        listing.applied_index
    );
    Ok(())
}

fn write_table(listing: &Listing, out: &mut dyn Write) -> std::io::Result<()> {
    let width = |n: String| n.len();
    let account_width = listing
        .accounts
        .iter()
        .map(|(a, _)| width(a.to_string()))
        .max()
        .unwrap_or(0)
        .max("account".len());
    let balance_width = listing
        .accounts
        .iter()
        .map(|(_, b)| width(b.to_string()))
        .max()
        .unwrap_or(0)
        .max("balance".len());
    writeln!(
        out,
        "{:>account_width$}  {:>balance_width$}",
        "account", "balance"
    )?;
    for (account, balance) in &listing.accounts {
        writeln!(out, "{account:>account_width$}  {balance:>balance_width$}")?;
    }
    Ok(())
}

fn write_csv(listing: &Listing, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "account,balance")?;
    for (account, balance) in &listing.accounts {
        writeln!(out, "{account},{balance}")?;
    }
    Ok(())
}

/// Numbers only, so written directly rather than through a JSON tree of every account.
fn write_json(listing: &Listing, out: &mut dyn Write) -> std::io::Result<()> {
    write!(
        out,
        "{{\"applied_index\": {}, \"accounts\": [",
        listing.applied_index
    )?;
    for (i, (account, balance)) in listing.accounts.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        write!(
            out,
            "{separator}{{\"account\": {account}, \"balance\": {balance}}}"
        )?;
    }
    writeln!(out, "]}}")
}
