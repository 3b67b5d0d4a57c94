//! `bank restore`: the data directory of a branch of a new cluster, from a backup file
//! ([`bank::bootstrap::restore`]); `bank branch` then resumes from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Result};

use bank::bootstrap::restore::{restore, RestoreConfig};

use super::branch::parse_peer;

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup file (from `bank backup`).
    #[arg(value_name = "FILE")]
    backup: PathBuf,
    /// The new branch's data directory: absent or empty.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The new branch's id.
    #[arg(long)]
    id: u64,
    /// The address the new branch will serve on (give `bank branch` the same --listen).
    #[arg(long)]
    listen: SocketAddr,
    /// Another branch of the new cluster, as ID=HOST:PORT; repeat for each (the same list
    /// `bank branch` will be given).
    #[arg(long = "peer", value_name = "ID=HOST:PORT", value_parser = parse_peer)]
    peers: Vec<(u64, String)>,
}

pub fn run(args: RestoreArgs) -> Result<()> {
    let mut peers = BTreeMap::new();
    for (peer, addr) in &args.peers {
        if peers.insert(*peer, addr.clone()).is_some() {
            bail!("--peer lists branch {peer} twice");
        }
    }
    let restored = restore(&RestoreConfig {
        backup: args.backup.clone(),
        data_dir: args.data_dir.clone(),
        id: args.id,
        listen: args.listen.to_string(),
        peers,
    })?;
    let header = &restored.backup.header;
    println!(
        "restored branch {} (voters {:?}, learners {:?}) from {}: backup of branch {} at applied index {}, {} accounts -> {}",
        args.id,
        restored.voters,
        restored.learners,
        args.backup.display(),
        header.branch_id,
        header.applied_index,
        header.accounts,
        args.data_dir.display()
    );
    let peer_flags: String = args
        .peers
        .iter()
        .map(|(id, addr)| format!(" --peer {id}={addr}"))
        .collect();
    println!(
        "start it with: bank branch --id {} --listen {}{peer_flags} --data-dir {}",
        args.id,
        args.listen,
        args.data_dir.display()
    );
    Ok(())
}
