//! `bank account`: one operation on the bank.v1 accounts API through [`bank::client::Client`]:
//! open, deposit, withdraw, transfer (writes, under a request id that can be resent), read
//! balances, or list and export every account ([`super::export`]). A refused write exits 1 and
//! says why.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use bank::client::{Client, ClientConfig, Outcome, ReadLevel, Write, Written};
use bank::ledger::RequestId;

use super::export::{ExportFormat, Range};
use super::tls::{client_token, with_hint, TlsArgs};

#[derive(clap::Args)]
pub struct AccountArgs {
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
        request_id: Option<RequestId>,
    },
    /// Deposit AMOUNT into ACCOUNT.
    Deposit {
        account: u64,
        amount: u64,
        #[arg(long, value_name = "ORIGIN:SEQUENCE", value_parser = parse_request_id)]
        request_id: Option<RequestId>,
    },
    /// Withdraw AMOUNT from ACCOUNT.
    Withdraw {
        account: u64,
        amount: u64,
        #[arg(long, value_name = "ORIGIN:SEQUENCE", value_parser = parse_request_id)]
        request_id: Option<RequestId>,
    },
    /// Move AMOUNT from account FROM to account TO, atomically.
    Transfer {
        from: u64,
        to: u64,
        amount: u64,
        #[arg(long, value_name = "ORIGIN:SEQUENCE", value_parser = parse_request_id)]
        request_id: Option<RequestId>,
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
    /// Print every account and its balance, read at one applied index (a table on stdout;
    /// the count and the index on stderr).
    List {
        #[command(flatten)]
        range: Range,
    },
    /// Write every account and its balance, read at one applied index, as CSV or JSON.
    Export {
        /// csv: `account,balance` lines; json: {"applied_index": I, "accounts": [...]}.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write to FILE (whole or not at all) instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        range: Range,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReadArg {
    Linearizable,
    Local,
}

fn parse_request_id(text: &str) -> Result<RequestId, String> {
    let parsed = text.split_once(':').and_then(|(origin, sequence)| {
        Some(RequestId {
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

/// What an action asks for: a read, or a write under a request id if one was given.
enum Operation {
    Read {
        accounts: Vec<u64>,
        level: ReadLevel,
    },
    Write {
        write: Write,
        request_id: Option<RequestId>,
    },
    List(Range),
    Export {
        range: Range,
        format: ExportFormat,
        output: Option<PathBuf>,
    },
}

impl From<AccountAction> for Operation {
    fn from(action: AccountAction) -> Operation {
        let (write, request_id) = match action {
            AccountAction::Balance { accounts, read } => {
                let level = match read {
                    ReadArg::Linearizable => ReadLevel::Linearizable,
                    ReadArg::Local => ReadLevel::Local,
                };
                return Operation::Read { accounts, level };
            }
            AccountAction::List { range } => return Operation::List(range),
            AccountAction::Export {
                format,
                output,
                range,
            } => {
                return Operation::Export {
                    range,
                    format,
                    output,
                }
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
        Operation::Write { write, request_id }
    }
}

pub async fn run(args: AccountArgs) -> Result<()> {
    if args.branches.is_empty() {
        bail!("give at least one --branch HOST:PORT");
    }
    let deadline = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let client = Client::new(
        &args.branches,
        ClientConfig {
            deadline,
            tls: args.tls.load()?,
            token: client_token(args.token.as_deref())?,
            ..ClientConfig::default()
        },
    )?;
    match Operation::from(args.action) {
        Operation::Read { accounts, level } => balances(&client, &accounts, level, args.json).await,
        Operation::Write { write, request_id } => {
            send(&client, &write, request_id, args.json).await
        }
        Operation::List(range) => super::export::list(&client, range, args.json).await,
        Operation::Export {
            range,
            format,
            output,
        } => super::export::export(&client, range, format, output).await,
    }
}

/// Sends `write` (under `request_id`, or a new one), prints the result and says whether it
/// was applied.
async fn send(
    client: &Client,
    write: &Write,
    request_id: Option<RequestId>,
    json: bool,
) -> Result<()> {
    let request_id = request_id.unwrap_or_else(|| client.next_request_id());
    let written = client
        .write_with_id(request_id, write)
        .await
        .map_err(|e| with_hint(e.tls_mismatch(), e))?;
    let id = format!("{}:{}", request_id.origin, request_id.sequence);
    if json {
        print_written_json(&written, &id);
    }
    outcome(write, &written, &id, json)
}

/// Reads and prints the balances of `accounts`; an error if one does not exist.
async fn balances(client: &Client, accounts: &[u64], level: ReadLevel, json: bool) -> Result<()> {
    let reply = client
        .get_balances(accounts, level)
        .await
        .map_err(|e| with_hint(e.tls_mismatch(), e))?;
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
    Ok(())
}

/// A write's result as one JSON object (`id`: its request id, ORIGIN:SEQUENCE).
fn print_written_json(written: &Written, id: &str) {
    let result = &written.result;
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

/// `?` for a missing number.
fn shown(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "?".to_string(), |v| v.to_string())
}

/// Prints what `write` did (unless `json`), or says why it was refused, as an error.
fn outcome(write: &Write, written: &Written, id: &str, json: bool) -> Result<()> {
    let result = &written.result;
    let balance = shown(result.balance);
    let (account, verb) = match *write {
        Write::Open { account, .. } => (account, "opened"),
        Write::Deposit { account, .. } => (account, "deposit"),
        Write::Withdraw { account, .. } => (account, "withdrawal"),
        Write::Transfer { from, .. } => (from, "transfer"),
    };
    match written.outcome() {
        Outcome::Ok => {
            if !json {
                match *write {
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
                        shown(result.to_balance)
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
        Outcome::UnknownAccount => {
            bail!("no such account: {}", shown(result.unknown_account))
        }
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
