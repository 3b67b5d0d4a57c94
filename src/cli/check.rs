//! `bank check`: checks a recorded history (JSON lines) with [`bank::check`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The history file, one JSON event per line.
    history: PathBuf,
}

pub fn run(args: CheckArgs) -> Result<()> {
    let path = &args.history;
    let history = bank::check::History::load(path)
        .with_context(|| format!("{} is not a readable history", path.display()))?;
    match bank::check::check(&history) {
        Ok(summary) => {
            println!("{}: {summary}", path.display());
            Ok(())
        }
        Err(violation) => bail!("{} fails the check: {violation}", path.display()),
    }
}
