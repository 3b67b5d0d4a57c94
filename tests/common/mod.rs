//! Helpers shared by the integration tests, one file per concern:
//!
//! - `cluster`: in-process clusters on `127.0.0.1:0` ports, and the only place the tests
//!   reach into openraft's API (`durable_log`: a stopped branch's durable log, read through
//!   openraft's storage traits);
//! - `html`: the start tags of the pages `--html` writes, to find elements by class;
//! - `grpc`: channels, clients and calls for the course API, the accounts API and the peer
//!   service;
//! - `process`: the built `bank` binary and child processes (killed on drop, bounded runs);
//! - `ports`: free loopback ports for processes that bind their own;
//! - `wait`: deadlines for every poll (never a bare sleep to synchronise);
//!
//! and here, where the tests' input files are.
//!
//! Each test target compiles this module and uses a part of it.
#![allow(dead_code)]

mod cluster;
mod grpc;
mod html;
mod ports;
mod process;
mod wait;

// Re-exported so tests write `common::bank(...)`; a test target that uses none of a file's
// helpers would otherwise warn.
#[allow(unused_imports)]
pub use {cluster::*, grpc::*, html::*, ports::*, process::*, wait::*};

use std::path::{Path, PathBuf};

/// The course's public reference files (`tests/testdata/course/`, each folder with the
/// `SOURCE.txt` saying where it came from): scenario inputs and the outputs expected of them.
pub fn reference(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/course")
        .join(path)
}

/// A file of the tests' own data, under `tests/testdata/` (scenarios, histories).
pub fn testdata(path: &str) -> PathBuf {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata")
        .join(path);
    assert!(file.is_file(), "{} is missing", file.display());
    file
}
