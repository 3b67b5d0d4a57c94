//! `bank completions SHELL`: the shell completion script for every command and flag, made from
//! the clap command itself, so it never falls behind the flags.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Command;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: Shell,
}

/// Prints the completion script of `command` for the shell asked for.
pub fn run(args: CompletionsArgs, mut command: Command) -> Result<()> {
    let name = command.get_name().to_string();
    // Into memory first: clap_complete panics on a failed write, and stdout may be closed.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .context("cannot write the completion script to stdout")
}
