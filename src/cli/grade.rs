//! `bank grade p1|p2|p3`: grades a course output against its input with [`bank::grade`],
//! prints "N of M checks pass", the first failures and the course graders' score, and with
//! `p2 --diagram` draws the output ([`bank::report::diagram`]). Exit codes: 0 when every check
//! passes, 1 when one fails, 2 when a file cannot be read or graded ([`GradeExit`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use bank::course::scenario::{Scenario, Variant};
use bank::grade::{self, p2, p3, GradeError};
use serde_json::Value;

use super::output::write_whole;

#[derive(clap::Args)]
pub struct GradeArgs {
    #[command(subcommand)]
    project: Project,
}

#[derive(clap::Subcommand)]
enum Project {
    /// Project 1: every reply must be exactly what the input makes it (one shared balance,
    /// customers and their events in input order).
    P1 {
        /// The course input (customers with "events", no "branch").
        input: PathBuf,
        /// The output: one {"id", "recv"} per customer (a JSON array or JSON lines).
        output: PathBuf,
    },
    /// Project 2 (Lamport clocks): receives after their sends, the clock rules exactly, every
    /// write at every branch, part 3 = parts 1 + 2 sorted.
    P2 {
        /// The course input (customers with "customer-requests").
        input: PathBuf,
        /// CUSTOMER_OUTPUT BRANCH_OUTPUT ALL_OUTPUT, or one directory holding
        /// customer_output.json, branch_output.json and output.json.
        #[arg(num_args = 1..=3, required = true, value_name = "OUTPUT")]
        outputs: Vec<PathBuf>,
        /// Also draw the output as a space-time diagram (SVG) in FILE, what fails in red.
        #[arg(long, value_name = "FILE")]
        diagram: Option<PathBuf>,
    },
    /// Project 3 (client-centric): read-your-writes and monotonic writes, per query.
    P3 {
        /// The course input (every event names its "branch").
        input: PathBuf,
        /// The output: one {"id", "recv": [one reply]} per event, in input order.
        output: PathBuf,
        /// Which consistency checks to run (the entries' format is always checked).
        #[arg(long, value_enum, default_value_t = CheckArg::All)]
        check: CheckArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CheckArg {
    MonotonicWrites,
    ReadYourWrites,
    All,
}

/// How `bank grade` ends when it does not pass; `main` turns it into the exit code.
#[derive(Debug, thiserror::Error)]
pub enum GradeExit {
    #[error("{failed} of {checks} checks fail")]
    Fails { failed: usize, checks: usize },
    #[error("{0}")]
    CannotGrade(String),
}

impl GradeExit {
    pub fn code(&self) -> u8 {
        match self {
            GradeExit::Fails { .. } => 1,
            GradeExit::CannotGrade(_) => 2,
        }
    }
}

fn cannot(message: impl Into<String>) -> anyhow::Error {
    GradeExit::CannotGrade(message.into()).into()
}

fn from_grade_error(e: GradeError) -> anyhow::Error {
    cannot(format!("{e}: fix the file or pass the right one"))
}

pub fn run(args: GradeArgs) -> anyhow::Result<()> {
    let report = match args.project {
        Project::P1 { input, output } => {
            let scenario = scenario(&input, Variant::Propagation)?;
            let replies = grade::parse_replies(&document(&output)?, &name(&output))
                .map_err(from_grade_error)?;
            grade::p1::grade(&scenario, &replies)
        }
        Project::P2 {
            input,
            outputs,
            diagram,
        } => {
            let scenario = scenario(&input, Variant::LamportClocks)?;
            let paths = p2_paths(&outputs)?;
            let parts = [
                Value::Array(document(&paths[0])?),
                Value::Array(document(&paths[1])?),
                Value::Array(document(&paths[2])?),
            ];
            let names = paths.each_ref().map(|p| p.display().to_string());
            let output = p2::parse_parts_named(
                names.each_ref().map(String::as_str),
                &parts[0],
                &parts[1],
                &parts[2],
            )
            .map_err(from_grade_error)?;
            let report = p2::grade(&scenario, &output);
            if let Some(file) = diagram {
                let svg = bank::report::diagram::render(&output, &report);
                write_whole(&file, svg.as_bytes()).map_err(|e| {
                    cannot(format!(
                        "cannot write the diagram to {}: {e:#}",
                        file.display()
                    ))
                })?;
                println!("diagram: {}", file.display());
            }
            report
        }
        Project::P3 {
            input,
            output,
            check,
        } => {
            let scenario = scenario(&input, Variant::ClientCentric)?;
            let replies = grade::parse_replies(&document(&output)?, &name(&output))
                .map_err(from_grade_error)?;
            let checks = match check {
                CheckArg::MonotonicWrites => p3::Checks::MonotonicWrites,
                CheckArg::ReadYourWrites => p3::Checks::ReadYourWrites,
                CheckArg::All => p3::Checks::All,
            };
            p3::grade(&scenario, &replies, checks)
        }
    };
    // A closed stdout (`| head`) must not turn a grade into a panic.
    let _ = write!(std::io::stdout().lock(), "{report}");
    if report.all_pass() {
        Ok(())
    } else {
        Err(GradeExit::Fails {
            failed: report.failures.len(),
            checks: report.checks,
        }
        .into())
    }
}

fn name(path: &Path) -> String {
    path.display().to_string()
}

/// The input, which must be of `variant`.
fn scenario(path: &Path, variant: Variant) -> anyhow::Result<Scenario> {
    let scenario = Scenario::load(path).map_err(|e| cannot(e.to_string()))?;
    if scenario.variant == variant {
        return Ok(scenario);
    }
    let (what, command) = match scenario.variant {
        Variant::Propagation => ("a Project 1 input (events without \"branch\")", "p1"),
        Variant::LamportClocks => ("a Project 2 input (\"customer-requests\")", "p2"),
        Variant::ClientCentric => ("a Project 3 input (events name their \"branch\")", "p3"),
    };
    Err(cannot(format!(
        "{} is {what}: grade it with `bank grade {command}`",
        path.display()
    )))
}

/// The entries of an output file (a JSON array or JSON lines).
fn document(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| cannot(format!("cannot read {}: {e}", path.display())))?;
    grade::parse_document(&text, &name(path)).map_err(from_grade_error)
}

/// The three P2 output files: as given, or in one directory.
fn p2_paths(outputs: &[PathBuf]) -> anyhow::Result<[PathBuf; 3]> {
    match outputs {
        [customer, branch, all] => Ok([customer.clone(), branch.clone(), all.clone()]),
        [dir] if dir.is_dir() => Ok([
            dir.join("customer_output.json"),
            dir.join("branch_output.json"),
            dir.join("output.json"),
        ]),
        _ => Err(cannot(
            "give the three P2 output files (customer events, branch events, all events) or one directory holding customer_output.json, branch_output.json and output.json",
        )),
    }
}
