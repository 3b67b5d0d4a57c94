//! Grading course outputs: `bank grade p1|p2|p3` checks an output file written for one of the
//! course's inputs (by this bank or by anyone's implementation) against what the course's
//! rules make the only right answers, strictly, and reports the course's own graders' score
//! beside ours.
//!
//! - [`p1`]: the exact reply each event must get (one shared balance, events in input order).
//! - [`p2`]: Lamport clocks: every receive matches an earlier send, the clock rules hold
//!   exactly, every write reaches every branch, part 3 is parts 1 and 2 merged and sorted.
//! - [`p3`]: client-centric consistency: read-your-writes and monotonic writes.
//!
//! Parsing is lenient in format and strict in values: a document may be a JSON array or JSON
//! lines (one object per line, as the course's Python writes), names of interfaces and results
//! are case-insensitive, a query's balance may be under `"balance"` or `"money"` and may be a
//! float if it is whole. Anything else wrong is a [`GradeError`] naming the document and the
//! entry. Grading is pure: every function here takes parsed values and returns a [`Report`];
//! reading files and printing is the command line's.

pub mod p1;
pub mod p2;
pub mod p3;

use std::fmt;

use serde_json::{Map, Value};

/// A document that cannot be graded: what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum GradeError {
    #[error("{origin}: neither JSON nor JSON lines: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {entry}: {message}")]
    Invalid {
        origin: String,
        entry: String,
        message: String,
    },
}

/// Builds [`GradeError::Invalid`].
pub(crate) fn invalid(origin: &str, entry: &str, message: impl Into<String>) -> GradeError {
    GradeError::Invalid {
        origin: origin.to_string(),
        entry: entry.to_string(),
        message: message.into(),
    }
}

/// Which process of a P2 output an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProcessKind {
    Customer,
    Branch,
}

impl ProcessKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessKind::Customer => "customer",
            ProcessKind::Branch => "branch",
        }
    }
}

/// One event of a P2 output: the `index`-th event of process (`kind`, `process`) as parts 1
/// and 2 list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventRef {
    pub kind: ProcessKind,
    pub process: u32,
    pub index: usize,
}

/// One check that did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The rule, e.g. `receive-after-send`.
    pub check: &'static str,
    /// What is wrong, in plain words, naming the events involved.
    pub message: String,
    /// The P2 events involved (empty for P1 and P3): what a diagram draws red.
    pub events: Vec<EventRef>,
}

/// One of the course's own graders, restated, and whether the output passes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CourseGrader {
    pub name: &'static str,
    pub passed: bool,
}

/// What grading one output found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Checks run (each failure is one of them).
    pub checks: usize,
    pub failures: Vec<Failure>,
    /// The course's graders on the same output (empty where none is known).
    pub course: Vec<CourseGrader>,
    /// What the report could not check fully, and why.
    pub notes: Vec<String>,
}

/// How many failures [`Report`]'s `Display` lists before it says how many more there are.
pub const FAILURES_SHOWN: usize = 10;

impl Report {
    pub fn passed(&self) -> usize {
        self.checks - self.failures.len()
    }

    pub fn all_pass(&self) -> bool {
        self.failures.is_empty()
    }

    /// Records a check that passed.
    pub(crate) fn pass(&mut self) {
        self.checks += 1;
    }

    /// Records a check that failed.
    pub(crate) fn fail(&mut self, check: &'static str, message: String, events: Vec<EventRef>) {
        self.checks += 1;
        self.failures.push(Failure {
            check,
            message,
            events,
        });
    }

    /// Records one check: passed if `failure` is `None`.
    pub(crate) fn record(&mut self, check: &'static str, failure: Option<(String, Vec<EventRef>)>) {
        match failure {
            None => self.pass(),
            Some((message, events)) => self.fail(check, message, events),
        }
    }

    /// The failures of one rule.
    pub fn failures_of<'a>(&'a self, check: &'a str) -> impl Iterator<Item = &'a Failure> + 'a {
        self.failures.iter().filter(move |f| f.check == check)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} of {} checks pass", self.passed(), self.checks)?;
        for failure in self.failures.iter().take(FAILURES_SHOWN) {
            writeln!(f, "  FAIL {}: {}", failure.check, failure.message)?;
        }
        if self.failures.len() > FAILURES_SHOWN {
            writeln!(
                f,
                "  ... and {} more failures",
                self.failures.len() - FAILURES_SHOWN
            )?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        if !self.course.is_empty() {
            let passed = self.course.iter().filter(|g| g.passed).count();
            let failed: Vec<&str> = self
                .course
                .iter()
                .filter(|g| !g.passed)
                .map(|g| g.name)
                .collect();
            write!(f, "course graders: {passed} of {} pass", self.course.len())?;
            if !failed.is_empty() {
                write!(f, " (failing: {})", failed.join(", "))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Parses `text` as one JSON document or, failing that, as JSON lines; either way the result
/// is a list of entries (a lone object is a list of one).
pub fn parse_document(text: &str, origin: &str) -> Result<Vec<Value>, GradeError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(entries)) => return Ok(entries),
        Ok(object @ Value::Object(_)) => return Ok(vec![object]),
        Ok(other) => {
            return Err(GradeError::Syntax {
                origin: origin.to_string(),
                message: format!("expected a list of objects, got {other}"),
            })
        }
        Err(_) => {}
    }
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| GradeError::Syntax {
            origin: origin.to_string(),
            message: format!("line {}, column {}: {e}", number + 1, e.column()),
        })?;
        entries.push(value);
    }
    if entries.is_empty() {
        return Err(GradeError::Syntax {
            origin: origin.to_string(),
            message: "the document is empty".to_string(),
        });
    }
    Ok(entries)
}

/// A reply as P1 and P3 outputs list it, names lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub interface: String,
    /// P3 only: the branch that replied.
    pub branch: Option<i64>,
    pub result: Option<String>,
    /// A query's balance (`"balance"` or `"money"`).
    pub balance: Option<i64>,
}

/// One object of a P1 or P3 output: `{"id", "recv": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyEntry {
    pub id: i64,
    pub recv: Vec<Reply>,
}

/// An integer, or a float that is a whole number (the course's Python writes `400.0`).
pub(crate) fn whole_number(value: &Value) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    let x = value.as_f64()?;
    (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64)
}

/// An integer field of `object`, or why not.
pub(crate) fn integer(object: &Map<String, Value>, field: &str) -> Result<i64, String> {
    let value = object
        .get(field)
        .ok_or_else(|| format!("\"{field}\" is missing"))?;
    whole_number(value).ok_or_else(|| format!("\"{field}\" must be a whole number, got {value}"))
}

/// A string field of `object`, lower-cased, or why not.
pub(crate) fn lower_string(object: &Map<String, Value>, field: &str) -> Result<String, String> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(s.trim().to_ascii_lowercase()),
        Some(other) => Err(format!("\"{field}\" must be a string, got {other}")),
        None => Err(format!("\"{field}\" is missing")),
    }
}

/// Parses a P1 or P3 output's entries.
pub fn parse_replies(entries: &[Value], origin: &str) -> Result<Vec<ReplyEntry>, GradeError> {
    let mut parsed = Vec::with_capacity(entries.len());
    for (position, entry) in entries.iter().enumerate() {
        let whose = format!("entry #{}", position + 1);
        let object = entry
            .as_object()
            .ok_or_else(|| invalid(origin, &whose, "must be a JSON object"))?;
        let id = integer(object, "id").map_err(|m| invalid(origin, &whose, m))?;
        let recv = object
            .get("recv")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(origin, &whose, "\"recv\" must be a list of replies"))?;
        let mut replies = Vec::with_capacity(recv.len());
        for (index, reply) in recv.iter().enumerate() {
            let whose = format!("{whose} (id {id}), reply #{}", index + 1);
            replies.push(parse_reply(reply).map_err(|m| invalid(origin, &whose, m))?);
        }
        parsed.push(ReplyEntry { id, recv: replies });
    }
    Ok(parsed)
}

fn parse_reply(reply: &Value) -> Result<Reply, String> {
    let object = reply.as_object().ok_or("must be a JSON object")?;
    let interface = lower_string(object, "interface")?;
    let branch = match object.get("branch") {
        None | Some(Value::Null) => None,
        Some(_) => Some(integer(object, "branch")?),
    };
    let result = match object.get("result") {
        None | Some(Value::Null) => None,
        Some(_) => Some(lower_string(object, "result")?),
    };
    let balance = match (object.get("balance"), object.get("money")) {
        (Some(value), _) | (None, Some(value)) if !value.is_null() => Some(
            whole_number(value)
                .ok_or_else(|| format!("the balance must be a whole number, got {value}"))?,
        ),
        _ => None,
    };
    Ok(Reply {
        interface,
        branch,
        result,
        balance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_arrays_or_json_lines() {
        let lines = "{\"id\": 1, \"recv\": []}\n\n{\"id\": 2, \"recv\": []}\n";
        assert_eq!(parse_document(lines, "x").map(|e| e.len()).ok(), Some(2));
        assert_eq!(
            parse_document("[{}, {}, {}]", "x").map(|e| e.len()).ok(),
            Some(3)
        );
        let error = parse_document("{\"id\": 1}\n{oops", "out.json").err();
        let text = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.starts_with("out.json: "), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn replies_accept_money_floats_and_any_case() {
        let entries = parse_document(
            r#"{"id": 1, "recv": [{"interface": "QUERY", "result": "SUCCESS", "money": 400.0}]}"#,
            "x",
        )
        .unwrap();
        let parsed = parse_replies(&entries, "x").unwrap();
        assert_eq!(parsed[0].recv[0].interface, "query");
        assert_eq!(parsed[0].recv[0].balance, Some(400));
        let bad = parse_document(
            r#"[{"id": 1, "recv": [{"interface": "query", "balance": 1.5}]}]"#,
            "o.json",
        )
        .unwrap();
        let text = parse_replies(&bad, "o.json").unwrap_err().to_string();
        assert!(text.contains("o.json: entry #1 (id 1), reply #1"), "{text}");
    }
}
