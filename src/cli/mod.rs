//! The `bank` command line, one file per subcommand: each defines its arguments (a clap `Args`
//! struct) and a `run` function that checks them, calls the library and prints the result.
//! `main.rs` holds the top-level command and dispatches here.
//!
//! This is a module of the binary, not of the library: nothing but the `bank` executable needs
//! clap types, printing or exit behaviour, and the library stays free of them. What tests need
//! of a command's work (e.g. a whole `bank run`: [`bank::course::runner::run_scenario`]) is in
//! the library, where both can call it.
//!
//! Shared here: [`storage`] (`--data-dir`); in their own files: the HTTP listener (`--http`,
//! [`web`]),
//! TLS and token options with the TLS hint ([`tls`]), Ctrl-C and SIGTERM ([`signals`]), output
//! files written whole or not at all ([`output`]), and config files and the `BANK_*`
//! environment for any subcommand that takes them ([`config`]).

pub mod account;
pub mod backup;
pub mod bench;
pub mod branch;
pub mod certs;
pub mod check;
pub mod completions;
pub mod config;
pub mod export;
pub mod grade;
pub mod member;
pub mod output;
pub mod restore;
pub mod run;
pub mod signals;
pub mod status;
pub mod tls;
pub mod web;

use std::path::PathBuf;

use bank::bootstrap::local::Storage;

/// `--data-dir` as a storage: durable in DIR, or in memory without it.
pub fn storage(data_dir: Option<PathBuf>) -> Storage {
    data_dir.map_or(Storage::Memory, Storage::Durable)
}
