//! `bank member`: list the cluster's branches, add, promote or remove one, at runtime
//! ([`bank::client::members`]).

use anyhow::{bail, Result};

use bank::client::members::{self, Change};

use super::tls::{with_hint, TlsArgs};

#[derive(clap::Args)]
pub struct MemberArgs {
    #[command(subcommand)]
    action: MemberAction,
    /// Any branch of the cluster, host:port: it hands each change to the leader.
    #[arg(long, value_name = "HOST:PORT", global = true)]
    branch: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// On a TLS cluster: --tls-ca, and the cluster's certificate as --tls-cert and --tls-key.
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(clap::Subcommand)]
enum MemberAction {
    /// Every branch of the cluster: address, voter or learner, and the leader.
    List,
    /// Add branch ID, reached at ADDR, as a learner; then start it with
    /// `bank branch --id ID --listen ADDR --join ... --data-dir EMPTY_DIR`, which also
    /// promotes it once caught up. (`--join` alone adds it too.)
    Add {
        id: u64,
        #[arg(value_name = "HOST:PORT")]
        address: String,
    },
    /// Make learner ID a voter (at most five voters; refused while it lags far behind).
    Promote { id: u64 },
    /// Remove branch ID from the cluster. Refused if the voters that remain would not have a
    /// majority up. The removed branch stops serving customers.
    Remove { id: u64 },
}

pub async fn run(args: MemberArgs) -> Result<()> {
    let Some(branch) = args.branch else {
        bail!("--branch HOST:PORT is required: any branch of the cluster");
    };
    let tls = args.tls.load()?;
    let change = match args.action {
        MemberAction::List => None,
        MemberAction::Add { id, address } => Some(Change::Add { id, address }),
        MemberAction::Promote { id } => Some(Change::Promote { id }),
        MemberAction::Remove { id } => Some(Change::Remove { id }),
    };
    let what = change.as_ref().map(|change| match change {
        Change::Add { id, address } => format!("added branch {id} ({address}) as a learner"),
        Change::Promote { id } => format!("promoted branch {id} to voter"),
        Change::Remove { id } => format!("removed branch {id}"),
    });
    let answer = match change {
        None => members::list(&branch, tls.as_ref()).await,
        Some(change) => members::change(&branch, tls.as_ref(), change).await,
    };
    let members = answer.map_err(|e| with_hint(e.tls_mismatch(), e))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&members)?);
        return Ok(());
    }
    if let (Some(what), Some(index)) = (what, members.log_index) {
        println!("{what} (membership entry at log index {index})");
    }
    print!("{}", members::render_table(&members));
    Ok(())
}
