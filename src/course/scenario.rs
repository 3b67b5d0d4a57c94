//! Scenario files: the course's `input.json` and `output.json` formats.
//!
//! Input is a JSON array of branches `{"id": 1, "type": "branch", "balance": 400}` and customers
//! `{"id": 1, "type": "customer", "events": [...]}`. The variant is detected from the events:
//! - [`Variant::Propagation`] (P1): events `{"id", "interface", "money"?}`; customer *i* talks to
//!   branch *i*. Output: one object per customer,
//!   `{"id": 2, "recv": [{"interface": "deposit", "result": "success"}, {"interface": "query", "balance": 570}]}`.
//! - [`Variant::ClientCentric`] (P3): every event also names its `"branch"`. Output: one object
//!   per event, `{"id": 1, "recv": [{"interface": "deposit", "branch": 1, "result": "success"}]}`
//!   or, for a query, `{..., "balance": 10}` in place of `result`.
//! - [`Variant::LamportClocks`] (P2): customers list `"customer-requests"`
//!   `{"customer-request-id", "interface", "money"}` instead of events; customer *i* talks to
//!   branch *i*. Output: the three parts of [`crate::course::lamport`] (customer events,
//!   branch events, all events), not a list of replies.
//!
//! Validation happens here, once, before any branch starts: every error names the file, the
//! entry and the field to fix. The output is written atomically (temporary file, fsync,
//! rename), so a failed run never leaves a partial output file.

use crate::BranchId;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// What a customer event asks for: the course's interface, as the Lamport clocks name it.
pub use crate::lamport::Interface;

/// Which of the course's projects a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// P1: customer *i* talks to branch *i*.
    Propagation,
    /// P3: each event names its branch; customers carry a writeset.
    ClientCentric,
    /// P2: `customer-requests`, each with a `customer-request-id` unique in the file; customer
    /// *i* talks to branch *i*; every process keeps a Lamport clock.
    LamportClocks,
}

#[derive(Debug, Clone)]
pub struct BranchSpec {
    pub id: BranchId,
    pub balance: i32,
}

/// One of a customer's events in a scenario file (P2: one of its `customer-requests`): a
/// deposit, withdrawal or query sent to one branch.
#[derive(Debug, Clone)]
pub struct CustomerEvent {
    /// A label from the file; the course's files repeat ids, so it is not a key. In P2 it is
    /// the `customer-request-id`, which the file keeps unique.
    pub id: i32,
    pub interface: Interface,
    /// The amount for deposit / withdraw (> 0); 0 for a query.
    pub money: i32,
    /// The branch the event goes to (resolved for both variants).
    pub branch: BranchId,
}

#[derive(Debug, Clone)]
pub struct Customer {
    pub id: u32,
    pub events: Vec<CustomerEvent>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub variant: Variant,
    pub branches: Vec<BranchSpec>,
    pub customers: Vec<Customer>,
    /// The one balance every branch starts with (the bank keeps one shared account).
    pub initial_balance: i32,
}

/// What one event got back from its branch.
#[derive(Debug, Clone)]
pub struct EventReply {
    pub interface: Interface,
    pub branch: BranchId,
    pub success: bool,
    pub balance: i32,
}

/// The replies of one customer, events in order.
#[derive(Debug, Clone)]
pub struct CustomerReplies {
    pub customer_id: u32,
    pub replies: Vec<EventReply>,
    /// The customer's Lamport events (Project 2: one send per request); empty otherwise.
    pub clocks: Vec<crate::lamport::ClockEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{origin}: not valid JSON at line {line}, column {column}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("cannot write output file {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Builds `ScenarioError::Invalid` for `origin`.
fn invalid(origin: &str, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        origin: origin.to_string(),
        message: message.into(),
    }
}

/// Reads an integer field in `lo..=hi`, or says which field of which entry is wrong.
fn integer_field(
    object: &Map<String, Value>,
    field: &str,
    lo: i64,
    hi: i64,
    whose: &str,
) -> Result<Option<i64>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_i64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            Some(n) => Err(format!(
                "{whose}: \"{field}\" is {n}, it must be between {lo} and {hi}"
            )),
            None => Err(format!(
                "{whose}: \"{field}\" must be an integer, got {value}"
            )),
        },
    }
}

fn required(value: Option<i64>, field: &str, whose: &str) -> Result<i64, String> {
    value.ok_or_else(|| format!("{whose}: \"{field}\" is missing"))
}

/// An id of a branch or customer: 1..=i32::MAX.
const ID_MAX: i64 = i32::MAX as i64;

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ScenarioError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a scenario; `origin` names it in errors (usually its path).
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let document: Value = serde_json::from_str(text).map_err(|e| ScenarioError::Syntax {
            origin: origin.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        Self::from_document(&document).map_err(|message| invalid(origin, message))
    }

    fn from_document(document: &Value) -> Result<Scenario, String> {
        let entries = document
            .as_array()
            .ok_or("the top level must be a JSON array of branches and customers")?;
        let mut branches: Vec<BranchSpec> = Vec::new();
        // Customers with their raw events, resolved once all branches are known.
        // Customer ids may repeat: the course's Project_1/input1.json lists each customer twice.
        let mut raw_customers: Vec<(u32, &Vec<Value>, String)> = Vec::new();
        // How many customers list `customer-requests` (P2) rather than `events`.
        let mut with_requests = 0;
        for (position, entry) in entries.iter().enumerate() {
            let entry_no = position + 1;
            let object = entry
                .as_object()
                .ok_or(format!("entry #{entry_no} must be a JSON object"))?;
            let whose = format!("entry #{entry_no}");
            let id = required(
                integer_field(object, "id", 1, ID_MAX, &whose)?,
                "id",
                &whose,
            )? as u32;
            match object.get("type").and_then(Value::as_str) {
                Some("branch") => {
                    let whose = format!("entry #{entry_no} (branch {id})");
                    let balance = integer_field(object, "balance", 0, i64::from(i32::MAX), &whose)?;
                    let balance = required(balance, "balance", &whose)? as i32;
                    let id = BranchId::from(id);
                    if branches.iter().any(|b| b.id == id) {
                        return Err(format!("{whose}: duplicate branch id {id}"));
                    }
                    branches.push(BranchSpec { id, balance });
                }
                Some("customer") => {
                    let whose = format!("entry #{entry_no} (customer {id})");
                    let (events, requests) = customer_events(object, &whose)?;
                    with_requests += usize::from(requests);
                    raw_customers.push((id, events, whose));
                }
                Some(other) => {
                    return Err(format!(
                        "{whose}: unknown \"type\" {other:?}; expected \"branch\" or \"customer\""
                    ))
                }
                None => {
                    return Err(format!(
                        "{whose}: \"type\" is missing; expected \"branch\" or \"customer\""
                    ))
                }
            }
        }
        let first = branches.first().ok_or("the scenario has no branches")?;
        if let Some(other) = branches.iter().find(|b| b.balance != first.balance) {
            return Err(format!(
                "branch {} starts with balance {} but branch {} with {}: the bank keeps one shared balance, give every branch the same one",
                first.id, first.balance, other.id, other.balance
            ));
        }
        let initial_balance = first.balance;

        let with_branch = raw_customers
            .iter()
            .flat_map(|(_, events, _)| events.iter())
            .filter(|e| e.get("branch").is_some())
            .count();
        let event_total: usize = raw_customers.iter().map(|(_, e, _)| e.len()).sum();
        let variant = if with_requests > 0 {
            if with_requests < raw_customers.len() {
                return Err(format!(
                    "{with_requests} of {} customers list \"customer-requests\" (Project 2): either every customer does or none does",
                    raw_customers.len()
                ));
            }
            Variant::LamportClocks
        } else if with_branch == 0 {
            Variant::Propagation
        } else if with_branch == event_total {
            Variant::ClientCentric
        } else {
            return Err(format!(
                "{with_branch} of {event_total} events name a \"branch\": either every event names its branch (Project 3) or none does (Project 1)"
            ));
        };

        let branch_ids: BTreeSet<BranchId> = branches.iter().map(|b| b.id).collect();
        let mut customers = Vec::with_capacity(raw_customers.len());
        for (id, raw_events, whose) in raw_customers {
            if variant != Variant::ClientCentric
                && !branch_ids.contains(&BranchId::from(id))
                && !raw_events.is_empty()
            {
                return Err(format!(
                    "{whose}: customer {id} talks to branch {id} (Projects 1 and 2), but there is no branch {id}"
                ));
            }
            if variant == Variant::LamportClocks && customers.iter().any(|c: &Customer| c.id == id)
            {
                return Err(format!(
                    "{whose}: customer {id} is listed twice; Project 2 keeps one clock per customer"
                ));
            }
            let mut events = Vec::with_capacity(raw_events.len());
            for (position, raw) in raw_events.iter().enumerate() {
                let whose = format!("{whose}, event #{}", position + 1);
                events.push(parse_event(raw, id, variant, &branch_ids, &whose)?);
            }
            customers.push(Customer { id, events });
        }
        if variant == Variant::LamportClocks {
            request_ids_unique(&customers)?;
        }
        Ok(Scenario {
            variant,
            branches,
            customers,
            initial_balance,
        })
    }

    pub fn event_count(&self) -> usize {
        self.customers.iter().map(|c| c.events.len()).sum()
    }
}

/// Project 2 names every request once: its events are told apart by `customer-request-id`.
fn request_ids_unique(customers: &[Customer]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for customer in customers {
        for event in &customer.events {
            if !seen.insert(event.id) {
                return Err(format!(
                    "customer {}: \"customer-request-id\" {} is used twice; Project 2 names every request once",
                    customer.id, event.id
                ));
            }
        }
    }
    Ok(())
}

/// A customer's list of events (Projects 1 and 3) or of `customer-requests` (Project 2), and
/// whether it is the latter.
fn customer_events<'a>(
    object: &'a Map<String, Value>,
    whose: &str,
) -> Result<(&'a Vec<Value>, bool), String> {
    match (object.get("events"), object.get("customer-requests")) {
        (Some(_), Some(_)) => Err(format!(
            "{whose}: has both \"events\" (Projects 1 and 3) and \"customer-requests\" (Project 2); keep one"
        )),
        (None, Some(requests)) => requests.as_array().map(|r| (r, true)).ok_or(format!(
            "{whose}: \"customer-requests\" must be an array of requests"
        )),
        (events, None) => events
            .and_then(Value::as_array)
            .map(|e| (e, false))
            .ok_or(format!("{whose}: \"events\" must be an array of events")),
    }
}

fn parse_event(
    raw: &Value,
    customer_id: u32,
    variant: Variant,
    branch_ids: &BTreeSet<BranchId>,
    whose: &str,
) -> Result<CustomerEvent, String> {
    let object = raw
        .as_object()
        .ok_or(format!("{whose} must be a JSON object"))?;
    let id_key = match variant {
        Variant::LamportClocks => "customer-request-id",
        Variant::Propagation | Variant::ClientCentric => "id",
    };
    let id = integer_field(
        object,
        id_key,
        i64::from(i32::MIN),
        i64::from(i32::MAX),
        whose,
    )?;
    let id = required(id, id_key, whose)? as i32;
    let whose = format!("{whose} ({id_key} {id})");
    let interface = match object.get("interface").and_then(Value::as_str) {
        Some(name) => match Interface::parse(&name.to_ascii_lowercase()) {
            Some(interface) => interface,
            None => {
                return Err(format!(
                    "{whose}: unknown interface {name:?}; expected \"deposit\", \"withdraw\" or \"query\""
                ))
            }
        },
        None => return Err(format!("{whose}: \"interface\" is missing or not a string")),
    };
    let money = match interface {
        Interface::Query => 0,
        Interface::Deposit | Interface::Withdraw => {
            let money = match object.get("money") {
                None | Some(Value::Null) => {
                    return Err(format!("{whose}: a {} needs \"money\"", interface.as_str()))
                }
                Some(value) => value.as_i64().ok_or(format!(
                    "{whose}: \"money\" must be a whole number of minor units, got {value}"
                ))?,
            };
            if money <= 0 {
                return Err(format!(
                    "{whose}: \"money\" must be greater than 0, got {money}"
                ));
            }
            i32::try_from(money).map_err(|_| {
                format!(
                    "{whose}: \"money\" {money} is beyond the wire limit of {} (int32)",
                    i32::MAX
                )
            })?
        }
    };
    let branch = match variant {
        Variant::Propagation | Variant::LamportClocks => BranchId::from(customer_id),
        Variant::ClientCentric => {
            let branch = integer_field(object, "branch", 1, ID_MAX, &whose)?;
            let branch = required(branch, "branch", &whose)? as BranchId;
            if !branch_ids.contains(&branch) {
                return Err(format!(
                    "{whose}: names branch {branch}, which does not exist"
                ));
            }
            branch
        }
    };
    Ok(CustomerEvent {
        id,
        interface,
        money,
        branch,
    })
}

fn reply_json(variant: Variant, reply: &EventReply) -> Value {
    let mut object = Map::new();
    object.insert("interface".into(), json!(reply.interface.as_str()));
    if variant == Variant::ClientCentric {
        object.insert("branch".into(), json!(reply.branch));
    }
    if reply.interface == Interface::Query {
        object.insert("balance".into(), json!(reply.balance));
    } else {
        let result = if reply.success { "success" } else { "fail" };
        object.insert("result".into(), json!(result));
    }
    Value::Object(object)
}

/// The output document: P1 one object per customer, P3 one object per event.
pub fn render_output(variant: Variant, customers: &[CustomerReplies]) -> Value {
    let mut entries = Vec::new();
    for customer in customers {
        match variant {
            // P2's real output is its three parts of events; its replies read as P1's.
            Variant::Propagation | Variant::LamportClocks => {
                let recv: Vec<Value> = customer
                    .replies
                    .iter()
                    .map(|r| reply_json(variant, r))
                    .collect();
                entries.push(json!({"id": customer.customer_id, "recv": recv}));
            }
            Variant::ClientCentric => {
                for reply in &customer.replies {
                    entries.push(
                        json!({"id": customer.customer_id, "recv": [reply_json(variant, reply)]}),
                    );
                }
            }
        }
    }
    Value::Array(entries)
}

/// Writes `output` as pretty JSON, atomically: a temporary file beside `path`, fsync'd, then
/// renamed over it. On any error the temporary file is removed.
pub fn write_output(path: &Path, output: &Value) -> Result<(), ScenarioError> {
    let write_error = |cause| ScenarioError::Write {
        path: path.to_path_buf(),
        cause,
    };
    let mut text =
        serde_json::to_string_pretty(output).map_err(|e| write_error(std::io::Error::other(e)))?;
    text.push('\n');
    let name = path
        .file_name()
        .ok_or_else(|| write_error(std::io::Error::other("the output path names no file")))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(source) = written {
        // Best effort: the temporary file may not exist if creating it failed.
        let _ = std::fs::remove_file(&temporary);
        return Err(write_error(source));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/testdata/course")
            .join(path)
    }

    fn error_of(text: &str) -> String {
        match Scenario::parse(text, "in.json") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn reference_inputs_parse() {
        let cases = [
            (
                "codlocker+CSE-531-Project/Project_1/input.json",
                Variant::Propagation,
                3,
                5,
                400,
            ),
            (
                "codlocker+CSE-531-Project/Project_1/input1.json",
                Variant::Propagation,
                50,
                200,
                400,
            ),
            (
                "codlocker+CSE-531-Project/Project_3/input.json",
                Variant::ClientCentric,
                2,
                3,
                0,
            ),
            (
                "codlocker+CSE-531-Project/Project_3/input_big.json",
                Variant::ClientCentric,
                10,
                60,
                0,
            ),
            (
                "carolaFro+Simple-gRPC-BankServer/input.json",
                Variant::ClientCentric,
                10,
                19,
                0,
            ),
            (
                "codlocker+CSE-531-Project/Project_2/input.json",
                Variant::LamportClocks,
                3,
                6,
                400,
            ),
            (
                "codlocker+CSE-531-Project/Project_2/input_10.json",
                Variant::LamportClocks,
                10,
                20,
                400,
            ),
            (
                "course-extra/P2/logical-clock_input_4x4.json",
                Variant::LamportClocks,
                4,
                8,
                400,
            ),
        ];
        for (path, variant, branches, events, balance) in cases {
            let scenario = Scenario::load(&reference(path)).expect(path);
            assert_eq!(scenario.variant, variant, "{path}");
            assert_eq!(scenario.branches.len(), branches, "{path}");
            assert_eq!(scenario.event_count(), events, "{path}");
            assert_eq!(scenario.initial_balance, balance, "{path}");
        }
    }

    #[test]
    fn p2_requests_are_checked() {
        let branch = r#"{"id": 1, "type": "branch", "balance": 10}"#;
        let request = |id: i32| {
            format!(r#"{{"customer-request-id": {id}, "interface": "deposit", "money": 1}}"#)
        };
        let customer = |id: u32, requests: &str| {
            format!(r#"{{"id": {id}, "type": "customer", "customer-requests": [{requests}]}}"#)
        };
        let repeated = format!(
            "[{branch}, {}]",
            customer(1, &format!("{}, {}", request(7), request(7)))
        );
        assert!(error_of(&repeated).contains("\"customer-request-id\" 7 is used twice"));
        let no_branch = format!("[{branch}, {}]", customer(2, &request(1)));
        assert!(error_of(&no_branch).contains("there is no branch 2"));
        let mixed = format!(
            r#"[{branch}, {}, {{"id": 1, "type": "customer", "events": []}}]"#,
            customer(1, &request(1))
        );
        assert!(error_of(&mixed).contains("either every customer does or none does"));
        let unnamed = format!(
            r#"[{branch}, {{"id": 1, "type": "customer", "customer-requests": [{{"interface": "query"}}]}}]"#
        );
        assert!(error_of(&unnamed).contains("\"customer-request-id\" is missing"));
    }

    #[test]
    fn p1_output_shape() {
        let replies = [CustomerReplies {
            customer_id: 2,
            replies: vec![
                EventReply {
                    interface: Interface::Deposit,
                    branch: 2,
                    success: true,
                    balance: 570,
                },
                EventReply {
                    interface: Interface::Withdraw,
                    branch: 2,
                    success: false,
                    balance: 570,
                },
                EventReply {
                    interface: Interface::Query,
                    branch: 2,
                    success: true,
                    balance: 570,
                },
            ],
            clocks: Vec::new(),
        }];
        assert_eq!(
            render_output(Variant::Propagation, &replies),
            json!([{"id": 2, "recv": [
                {"interface": "deposit", "result": "success"},
                {"interface": "withdraw", "result": "fail"},
                {"interface": "query", "balance": 570},
            ]}])
        );
    }

    #[test]
    fn p3_output_shape() {
        let replies = [CustomerReplies {
            customer_id: 1,
            replies: vec![
                EventReply {
                    interface: Interface::Query,
                    branch: 1,
                    success: true,
                    balance: 0,
                },
                EventReply {
                    interface: Interface::Deposit,
                    branch: 1,
                    success: true,
                    balance: 10,
                },
            ],
            clocks: Vec::new(),
        }];
        assert_eq!(
            render_output(Variant::ClientCentric, &replies),
            json!([
                {"id": 1, "recv": [{"interface": "query", "branch": 1, "balance": 0}]},
                {"id": 1, "recv": [{"interface": "deposit", "branch": 1, "result": "success"}]},
            ])
        );
    }

    const BRANCHES: &str = r#"{"id": 1, "type": "branch", "balance": 100}, {"id": 2, "type": "branch", "balance": 100}"#;

    fn with_events(events: &str) -> String {
        format!(r#"[{{"id": 1, "type": "customer", "events": [{events}]}}, {BRANCHES}]"#)
    }

    #[test]
    fn bad_inputs_say_what_to_fix() {
        let cases: &[(String, &[&str])] = &[
            ("[\n{\"id\": 1,\n \"type\": }]".to_string(), &["in.json", "line 3"]),
            ("{}".to_string(), &["array"]),
            ("[3]".to_string(), &["entry #1", "object"]),
            (r#"[{"id": 1, "type": "bank"}]"#.to_string(), &["\"bank\""]),
            (r#"[{"id": 1}]"#.to_string(), &["type"]),
            (r#"[{"type": "branch", "balance": 1}]"#.to_string(), &["\"id\" is missing"]),
            (r#"[{"id": "x", "type": "branch", "balance": 1}]"#.to_string(), &["\"id\" must be an integer"]),
            (format!("[{BRANCHES}, {{\"id\": 1, \"type\": \"branch\", \"balance\": 100}}]"), &["duplicate branch id 1"]),
            ("[]".to_string(), &["no branches"]),
            (r#"[{"id": 1, "type": "branch", "balance": 1}, {"id": 2, "type": "branch", "balance": 2}]"#.to_string(), &["branch 1", "branch 2", "same"]),
            (r#"[{"id": 1, "type": "branch", "balance": -1}]"#.to_string(), &["balance", "-1"]),
            (r#"[{"id": 1, "type": "branch", "balance": 2147483648}]"#.to_string(), &["balance"]),
            (with_events(r#"{"id": 5, "interface": "teleport", "money": 1}"#), &["event #1 (id 5)", "teleport"]),
            (with_events(r#"{"id": 5, "interface": "deposit"}"#), &["money"]),
            (with_events(r#"{"id": 5, "interface": "deposit", "money": 1.5}"#), &["money", "whole"]),
            (with_events(r#"{"id": 5, "interface": "withdraw", "money": 0}"#), &["money", "greater than 0"]),
            (with_events(r#"{"id": 5, "interface": "deposit", "money": 2147483648}"#), &["money", "int32"]),
            (with_events(r#"{"id": 5, "interface": "query", "branch": 9}"#), &["branch 9"]),
            (with_events(r#"{"interface": "query"}"#), &["\"id\" is missing"]),
            (with_events(r#"{"id": 1, "interface": "query", "branch": 1}, {"id": 2, "interface": "query"}"#), &["1 of 2 events"]),
            (format!(r#"[{{"id": 7, "type": "customer", "events": [{{"id": 1, "interface": "query"}}]}}, {BRANCHES}]"#), &["no branch 7"]),
            (format!(r#"[{{"id": 1, "type": "customer", "customer-requests": [], "events": []}}, {BRANCHES}]"#), &["Project 2", "keep one"]),
        ];
        for (text, fragments) in cases {
            let message = error_of(text);
            for fragment in *fragments {
                assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
            }
        }
    }

    #[test]
    fn money_on_a_query_is_ignored_and_interfaces_are_case_insensitive() {
        let scenario = Scenario::parse(
            &with_events(r#"{"id": 1, "interface": "QUERY", "money": 5}, {"id": 2, "interface": "Deposit", "money": 5}"#),
            "in.json",
        )
        .expect("valid");
        let events = &scenario.customers[0].events;
        assert_eq!(
            (events[0].interface, events[0].money),
            (Interface::Query, 0)
        );
        assert_eq!(
            (events[1].interface, events[1].money),
            (Interface::Deposit, 5)
        );
    }

    #[test]
    fn write_output_is_atomic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.json");
        write_output(&path, &json!([{"id": 1}])).expect("written");
        let text = std::fs::read_to_string(&path).expect("read back");
        assert_eq!(
            serde_json::from_str::<Value>(&text).expect("json"),
            json!([{"id": 1}])
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("list").count(),
            1,
            "no temp file left"
        );

        let missing = dir.path().join("no-such-dir").join("output.json");
        assert!(write_output(&missing, &json!([])).is_err());
        assert!(!missing.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }
}
