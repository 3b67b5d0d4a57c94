//! `bank certs`: a test CA and one certificate for the branches, written to a directory.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct CertsArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Another IP address or DNS name of the branches; repeat for each.
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

pub fn run(args: CertsArgs) -> Result<()> {
    let files = bank::tls::generate(&args.out, &args.hosts, args.force)?;
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
