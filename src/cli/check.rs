//! `bank check`: checks a recorded history (JSON lines) with [`bank::check`], and with
//! `--html` draws it ([`bank::report::check_page`]) whether it passes or not.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::output::write_whole;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The history file, one JSON event per line.
    history: PathBuf,
    /// Also draw the history as a self-contained HTML page in FILE: one lane per process, the
    /// operations the checker blames outlined in red. Written whether the history passes or
    /// not; the exit code is the check's.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> Result<()> {
    let path = &args.history;
    let history = bank::check::History::load(path)
        .with_context(|| format!("{} is not a readable history", path.display()))?;
    let verdict = bank::check::check(&history);
    if let Some(out) = &args.html {
        let page = bank::report::check_page(&path.display().to_string(), &history, &verdict);
        write_whole(out, page.as_bytes())
            .with_context(|| format!("writing the report to {}", out.display()))?;
    }
    match verdict {
        Ok(summary) => {
            println!("{}: {summary}", path.display());
            Ok(())
        }
        Err(violation) => bail!("{} fails the check: {violation}", path.display()),
    }
}
