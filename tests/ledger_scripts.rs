//! Golden scripts of the ledger: its commands in, its outcomes out, one file per concern under
//! `tests/testdata/ledger/`, each run against a fresh [`Ledger`] through its public API only.
//!
//! The files are goldenscripts (the `goldenscript` crate, toydb's test format): blocks of
//! commands, a `---` line, then the output those commands gave, up to a blank line; `#` starts
//! a comment. The output is recorded, not written by hand. After changing a script or the
//! ledger, regenerate every file and review what changed:
//!
//! ```sh
//! UPDATE_GOLDENFILES=1 cargo test --test ledger_scripts
//! git diff tests/testdata/ledger/
//! ```
//!
//! Without the variable a file whose output differs fails its test with a diff. These are
//! regression goldens: they record what the ledger does, so a diff in an outcome is a change of
//! behaviour to justify in review, not a file to regenerate blindly.
//!
//! # Commands
//!
//! - `open ACCOUNT [balance=N] [overdraft=N] [max=N]`: `Command::Open`; the defaults are 0, 0
//!   and `i64.max` (the gRPC API's default maximum).
//! - `deposit ACCOUNT AMOUNT`, `withdraw ACCOUNT AMOUNT`, `transfer FROM TO AMOUNT`.
//! - `batch`: a `Command::Batch` of the items queued since the last `batch` (see `[batch]`).
//! - `balances`: every account's balance and limits, then the ledger's running total.
//! - `digest`: the ledger's state digest (accounts and money totals, not request ids).
//! - `snapshot`: encodes the ledger as a snapshot and keeps the bytes; `restore [flip=BYTE]`
//!   replaces the ledger with the decoded snapshot (with byte `BYTE` inverted first: a damaged
//!   snapshot, whose refusal `!restore` prints).
//! - `limits`: the ledger's fixed bounds (request ids, origins, batch items).
//!
//! Every ledger command takes these options:
//! - `request=ORIGIN/SEQUENCE`: applies it as a `Proposal` under that request id
//!   (`Ledger::apply_proposal`); without it the command is applied with no id
//!   (`Ledger::apply`).
//! - `repeat=N`: applies it `N` times, the sequence one higher each time (`by=origin`: the origin
//!   one higher each time instead); prints how many times each outcome came and the last one.
//! - the tag `[batch]`: queues it (with its request id, which an item must have) for the next
//!   `batch` instead of applying it. A `batch` tagged `[batch]` queues the batch so far as one
//!   item: a nested batch.
//!
//! Amounts and figures are integers in minor units (`_` separators allowed), or `i32.max`,
//! `i64.max`, `u64.max`, optionally minus an integer (`i64.max-1`) or, quoted, plus one
//! (`"i64.max+1"`). Outputs print `i64::MAX` as `i64.max` the same way. A batch outcome lists
//! each item's outcome, or past [`BATCH_ITEMS_LISTED_MAX`] items counts them as `repeat` does.
//!
//! After every command the runner checks every ledger invariant
//! ([`Ledger::check_invariants_fully`]), so a script also fails on a broken invariant.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

use bank::ledger::{
    Command, Ledger, Outcome, Proposal, RequestId, BATCH_ITEMS_MAX, ORIGINS_MAX, REQUEST_IDS_MAX,
};

/// A batch outcome with more items than this is printed as counts, not item by item.
const BATCH_ITEMS_LISTED_MAX: usize = 16;

/// One script's state: the ledger, the items queued for the next batch and the last snapshot.
#[derive(Default)]
struct LedgerRunner {
    ledger: Ledger,
    queued: Vec<Proposal>,
    snapshot: Option<Vec<u8>>,
}

type Failure = Box<dyn Error>;

impl goldenscript::Runner for LedgerRunner {
    fn run(&mut self, command: &goldenscript::Command) -> Result<String, Failure> {
        let mut args = command.consume_args();
        let queue = command.tags.contains("batch");
        if let Some(tag) = command.tags.iter().find(|tag| *tag != "batch") {
            return Err(format!("unknown tag [{tag}]").into());
        }
        let ledger_command = match command.name.as_str() {
            "open" => {
                let account = parse_u64(&positional(&mut args, "account")?)?;
                let figure = |args: &mut goldenscript::ArgumentConsumer, key| {
                    args.lookup(key)
                        .map(|arg| parse_u64(&arg.value))
                        .transpose()
                };
                Command::Open {
                    account,
                    balance_minor_units: figure(&mut args, "balance")?.unwrap_or(0),
                    overdraft_limit_minor_units: figure(&mut args, "overdraft")?.unwrap_or(0),
                    balance_max_minor_units: figure(&mut args, "max")?
                        .unwrap_or(i64::MAX.unsigned_abs()),
                }
            }
            "deposit" => Command::Deposit {
                account: parse_u64(&positional(&mut args, "account")?)?,
                amount_minor_units: parse_u64(&positional(&mut args, "amount")?)?,
            },
            "withdraw" => Command::Withdraw {
                account: parse_u64(&positional(&mut args, "account")?)?,
                amount_minor_units: parse_u64(&positional(&mut args, "amount")?)?,
            },
            "transfer" => Command::Transfer {
                from: parse_u64(&positional(&mut args, "from")?)?,
                to: parse_u64(&positional(&mut args, "to")?)?,
                amount_minor_units: parse_u64(&positional(&mut args, "amount")?)?,
            },
            "batch" => Command::Batch(std::mem::take(&mut self.queued)),
            "balances" => return no_args(args, queue).map(|()| self.balances()),
            "digest" => {
                return no_args(args, queue)
                    .map(|()| format!("digest {:016x}", self.ledger.state_digest()))
            }
            "limits" => {
                return no_args(args, queue).map(|()| {
                    format!(
                        "request ids remembered: {REQUEST_IDS_MAX}\norigins remembered: \
                         {ORIGINS_MAX}\nbatch items: {BATCH_ITEMS_MAX}"
                    )
                })
            }
            "snapshot" => {
                no_args(args, queue)?;
                let bytes = self.ledger.encode_snapshot()?;
                self.snapshot = Some(bytes);
                return Ok(format!(
                    "snapshot of {} accounts",
                    self.ledger.accounts().len()
                ));
            }
            "restore" => {
                let flip: Option<usize> = args.lookup_parse("flip")?;
                no_args(args, queue)?;
                let mut bytes = self.snapshot.clone().ok_or("no snapshot taken")?;
                if let Some(at) = flip {
                    let byte = bytes.get_mut(at).ok_or("flip is past the snapshot's end")?;
                    *byte = !*byte;
                }
                self.ledger = Ledger::decode_snapshot(&bytes)?;
                return Ok(format!(
                    "restored {} accounts",
                    self.ledger.accounts().len()
                ));
            }
            name => return Err(format!("unknown command {name}").into()),
        };

        let request_id = args
            .lookup("request")
            .map(|arg| parse_request_id(&arg.value))
            .transpose()?;
        let repeat = args
            .lookup("repeat")
            .map(|arg| parse_u64(&arg.value))
            .transpose()?;
        let by_origin = match args.lookup("by").map(|arg| arg.value.as_str()) {
            None | Some("sequence") => false,
            Some("origin") => true,
            Some(other) => return Err(format!("by={other}: expected origin or sequence").into()),
        };
        args.reject_rest()?;
        let request_ids = repeated_request_ids(request_id, repeat.unwrap_or(1), by_origin)?;

        if queue {
            for request_id in request_ids {
                let request_id = request_id.ok_or("a batch item needs request=ORIGIN/SEQUENCE")?;
                self.queued.push(Proposal {
                    request_id,
                    command: ledger_command.clone(),
                });
            }
            return Ok(String::new());
        }
        let outcomes: Vec<Outcome> = request_ids
            .into_iter()
            .map(|request_id| match request_id {
                Some(request_id) => self.ledger.apply_proposal(&Proposal {
                    request_id,
                    command: ledger_command.clone(),
                }),
                None => self.ledger.apply(&ledger_command),
            })
            .collect();
        Ok(match repeat {
            Some(_) => counted(&outcomes),
            None => outcomes.iter().map(describe).collect(),
        })
    }

    /// Every invariant, fully, after every command (the ledger itself checks in full only
    /// every [`FULL_CHECK_EVERY`](bank::ledger::FULL_CHECK_EVERY) applies).
    fn end_command(&mut self, _: &goldenscript::Command) -> Result<String, Failure> {
        self.ledger.check_invariants_fully()?;
        Ok(String::new())
    }

    fn end_script(&mut self) -> Result<(), Failure> {
        if self.queued.is_empty() {
            Ok(())
        } else {
            Err(format!("{} [batch] items never batched", self.queued.len()).into())
        }
    }
}

impl LedgerRunner {
    fn balances(&self) -> String {
        let mut output = String::new();
        for (id, account) in self.ledger.accounts().iter() {
            writeln!(
                output,
                "{id}: {} (min {}, max {})",
                money(account.balance_minor_units),
                money(account.balance_min_minor_units),
                money(account.balance_max_minor_units)
            )
            .expect("writing to a String");
        }
        write!(output, "total {}", self.ledger.balances_total_minor_units())
            .expect("writing to a String");
        output
    }
}

/// The request ids of `repeat` applies: `None` each time without a request id.
fn repeated_request_ids(
    first: Option<RequestId>,
    repeat: u64,
    by_origin: bool,
) -> Result<Vec<Option<RequestId>>, Failure> {
    if repeat == 0 {
        return Err("repeat=0 applies nothing".into());
    }
    let Some(first) = first else {
        return Ok(vec![None; usize::try_from(repeat)?]);
    };
    (0..repeat)
        .map(|step| {
            let (origin, sequence) = if by_origin {
                (first.origin.checked_add(step), Some(first.sequence))
            } else {
                (Some(first.origin), first.sequence.checked_add(step))
            };
            match (origin, sequence) {
                (Some(origin), Some(sequence)) => Ok(Some(RequestId { origin, sequence })),
                _ => Err("repeat runs past u64::MAX".into()),
            }
        })
        .collect()
}

fn positional(args: &mut goldenscript::ArgumentConsumer, what: &str) -> Result<String, Failure> {
    args.next_pos()
        .map(|arg| arg.value.clone())
        .ok_or_else(|| format!("{what} not given").into())
}

fn no_args(args: goldenscript::ArgumentConsumer, queue: bool) -> Result<(), Failure> {
    if queue {
        return Err("only ledger commands can be queued with [batch]".into());
    }
    args.reject_rest()
}

/// `ORIGIN/SEQUENCE`.
fn parse_request_id(text: &str) -> Result<RequestId, Failure> {
    let (origin, sequence) = text
        .split_once('/')
        .ok_or_else(|| format!("request={text}: expected ORIGIN/SEQUENCE"))?;
    Ok(RequestId {
        origin: parse_u64(origin)?,
        sequence: parse_u64(sequence)?,
    })
}

/// An integer (`_` separators allowed), or a named maximum minus or plus an integer.
fn parse_u64(text: &str) -> Result<u64, Failure> {
    let named = |name: &str| match name {
        "i32.max" => Some(u64::from(i32::MAX.unsigned_abs())),
        "i64.max" => Some(i64::MAX.unsigned_abs()),
        "u64.max" => Some(u64::MAX),
        _ => None,
    };
    let integer = |digits: &str| -> Result<u64, Failure> {
        digits
            .replace('_', "")
            .parse()
            .map_err(|error| format!("{text}: {error}").into())
    };
    if let Some(value) = named(text) {
        return Ok(value);
    }
    for (sign, apply) in [
        ('-', u64::checked_sub as fn(u64, u64) -> Option<u64>),
        ('+', u64::checked_add),
    ] {
        if let Some((name, offset)) = text.split_once(sign) {
            let base = named(name).ok_or_else(|| format!("{text}: unknown name {name}"))?;
            return apply(base, integer(offset)?)
                .ok_or_else(|| format!("{text}: out of u64's range").into());
        }
    }
    integer(text)
}

/// A figure as outputs show it: `i64::MAX` by name, the rest as integers.
fn money(minor_units: i64) -> String {
    match minor_units {
        i64::MAX => "i64.max".to_string(),
        value if value == -i64::MAX => "-i64.max".to_string(),
        value => value.to_string(),
    }
}

/// One outcome, on one line (a listed batch: a line per item below it), ending in a newline.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Batch(items) if items.len() > BATCH_ITEMS_LISTED_MAX => {
            format!("Batch of {}: {}", items.len(), counted(items))
        }
        Outcome::Batch(items) => {
            let mut output = "Batch\n".to_string();
            for (index, item) in items.iter().enumerate() {
                for line in describe(item).lines() {
                    writeln!(output, "  {}. {line}", index + 1).expect("writing to a String");
                }
            }
            output
        }
        other => format!("{}\n", describe_one(other)),
    }
}

fn describe_one(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Opened {
            balance_minor_units,
        } => format!("Opened balance={}", money(*balance_minor_units)),
        Outcome::Deposited {
            balance_minor_units,
        } => format!("Deposited balance={}", money(*balance_minor_units)),
        Outcome::Withdrawn {
            balance_minor_units,
        } => format!("Withdrawn balance={}", money(*balance_minor_units)),
        Outcome::Transferred {
            from_balance_minor_units,
            to_balance_minor_units,
        } => format!(
            "Transferred from_balance={} to_balance={}",
            money(*from_balance_minor_units),
            money(*to_balance_minor_units)
        ),
        Outcome::InsufficientFunds {
            balance_minor_units,
        } => format!("InsufficientFunds balance={}", money(*balance_minor_units)),
        Outcome::BalanceLimitExceeded {
            balance_minor_units,
        } => format!(
            "BalanceLimitExceeded balance={}",
            money(*balance_minor_units)
        ),
        Outcome::AccountExists {
            balance_minor_units,
        } => format!("AccountExists balance={}", money(*balance_minor_units)),
        Outcome::UnknownAccount { account } => format!("UnknownAccount account={account}"),
        Outcome::RequestIdReused => "RequestIdReused".to_string(),
        Outcome::RequestIdExpired => "RequestIdExpired".to_string(),
        Outcome::InvalidAmount => "InvalidAmount".to_string(),
        Outcome::InvalidBatch => "InvalidBatch".to_string(),
        Outcome::NoCommand => "NoCommand".to_string(),
        Outcome::Batch(items) => format!("Batch of {}", items.len()),
    }
}

/// Many outcomes in two lines: how many of each kind (by name, in name order), then the last.
fn counted(outcomes: &[Outcome]) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in outcomes {
        let line = describe_one(outcome);
        let kind = line.split(' ').next().unwrap_or_default().to_string();
        *kinds.entry(kind).or_default() += 1;
    }
    let counts: Vec<String> = kinds
        .iter()
        .map(|(kind, count)| format!("{count}× {kind}"))
        .collect();
    let last = outcomes.last().map(describe_one).unwrap_or_default();
    format!("{}\nlast: {last}\n", counts.join(", "))
}

fn run_script(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/ledger")
        .join(name);
    goldenscript::run(&mut LedgerRunner::default(), &path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
}

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_script(stringify!($name));
            }
        )*

        /// Every file in the folder has its test above: a new script is not silently skipped.
        #[test]
        fn every_script_is_run() {
            let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/ledger");
            let mut files: Vec<String> = std::fs::read_dir(&folder)
                .expect("tests/testdata/ledger")
                .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let mut listed = vec![$(stringify!($name).to_string()),*];
            listed.sort();
            assert_eq!(files, listed, "each script in {} needs its line in scripts!", folder.display());
        }
    };
}

scripts!(
    accounts,
    deposits_withdrawals,
    transfers,
    batches,
    request_ids,
    snapshot,
);
