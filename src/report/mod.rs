//! Pictures of what the bank did, as self-contained HTML pages (inline CSS and SVG; no script,
//! nothing loaded from elsewhere): `bank check --html` draws a history with what the checker
//! blames ([`timeline`]), `bank bench --html` a run's throughput and latency distribution
//! ([`bench`]). `bank grade p2 --diagram` draws a P2 output as a space-time diagram, a
//! standalone SVG with what the grader blames in red ([`diagram`]).
//!
//! Why a layer of its own rather than a file in `check` and one in `load`: the pages are made
//! of the same pieces — escaping and the page shell ([`html`]), axes and series ([`chart`]) —
//! and neither `check`, `load` nor `grade` should know HTML. It sits above all three (it reads
//! a [`crate::check::History`] with its [`crate::check::Violation`], a
//! [`crate::load::bench::BenchReport`], and a P2 output with the [`crate::grade::Report`] on
//! it) and below the command line, which only writes the page it returns. Rendering is pure: a page is a function of its inputs; [`RunContext`],
//! what a page says about where it was made, is gathered once by the caller.
//!
//! Everything that comes from outside (a history's texts, file names, the command line) is
//! escaped with [`html::escape`]. Each drawing is bounded: a page stays a few MB at most.

pub mod bench;
pub mod chart;
pub mod diagram;
pub mod html;
pub mod timeline;

use std::time::SystemTime;

pub use bench::bench_page;
pub use timeline::check_page;

/// Where and when a run was made, as a page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunContext {
    pub command_line: String,
    pub host: String,
    pub cores: usize,
    pub os: String,
    /// UTC, RFC 3339.
    pub date: String,
}

impl RunContext {
    /// This machine, now, running `args` (the program's arguments, quoted for a shell; the
    /// program by its file name only).
    pub fn here(args: impl IntoIterator<Item = String>) -> RunContext {
        let mut args: Vec<String> = args.into_iter().collect();
        if let Some(program) = args.first_mut() {
            if let Some(name) = std::path::Path::new(program.as_str()).file_name() {
                *program = name.to_string_lossy().into_owned();
            }
        }
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .map(|text| text.trim().to_string())
                .filter(|text| !text.is_empty())
        };
        let host = read("/proc/sys/kernel/hostname")
            .or_else(|| read("/etc/hostname"))
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".to_string());
        let release = read("/etc/os-release").and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                .map(|name| name.trim_matches('"').to_string())
        });
        let kernel = read("/proc/sys/kernel/osrelease");
        let os = [
            release,
            Some(format!(
                "{} {}",
                std::env::consts::OS,
                std::env::consts::ARCH
            )),
            kernel.map(|k| format!("kernel {k}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        RunContext {
            command_line: args
                .iter()
                .map(|arg| shell_quote(arg))
                .collect::<Vec<_>>()
                .join(" "),
            host,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os,
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    /// The context as an HTML table.
    pub fn table(&self) -> String {
        format!(
            "<table class=\"context\"><tr><th>command</th><td><code class=\"command\">{}</code></td></tr>\
             <tr><th>machine</th><td>{}, {} cores, {}</td></tr>\
             <tr><th>date</th><td>{}</td></tr></table>\n",
            html::escape(&self.command_line),
            html::escape(&self.host),
            self.cores,
            html::escape(&self.os),
            html::escape(&self.date)
        )
    }
}

/// `arg` as a POSIX shell would need it: as is if it is plain, else in single quotes.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_quotes_and_escapes_the_command_line() {
        let context = RunContext::here(
            [
                "/usr/bin/bank",
                "bench",
                "--mix",
                "deposit=100",
                "a b",
                "<x>",
            ]
            .map(String::from),
        );
        assert_eq!(
            context.command_line,
            "bank bench --mix deposit=100 'a b' '<x>'"
        );
        assert!(context.cores >= 1);
        let table = context.table();
        assert!(table.contains("&#39;&lt;x&gt;&#39;"), "{table}");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
