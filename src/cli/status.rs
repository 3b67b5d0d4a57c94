//! `bank status`: every branch of a running cluster, as a table or JSON
//! ([`bank::client::status`]).

use anyhow::Result;

use super::tls::{with_hint, TlsArgs};

#[derive(clap::Args)]
pub struct StatusArgs {
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
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let tls = args.tls.load()?;
    let status = bank::client::status::cluster_status_with(&args.branch, tls.as_ref())
        .await
        .map_err(|e| with_hint(e.tls_mismatch(), e))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", bank::client::status::render_table(&status));
    }
    Ok(())
}
