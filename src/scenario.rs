//! TEMPORARY STUB — replaced by the real module.
#![allow(dead_code, unused_variables)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Deposit,
    Withdraw,
    Query,
}
impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Deposit => "deposit",
            Interface::Withdraw => "withdraw",
            Interface::Query => "query",
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Propagation,
    ClientCentric,
}
#[derive(Debug, Clone)]
pub struct BranchSpec {
    pub id: u32,
    pub balance: i32,
}
#[derive(Debug, Clone)]
pub struct Event {
    pub id: i32,
    pub interface: Interface,
    pub money: i32,
    pub branch: u32,
}
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: u32,
    pub events: Vec<Event>,
}
#[derive(Debug, Clone)]
pub struct Scenario {
    pub variant: Variant,
    pub branches: Vec<BranchSpec>,
    pub customers: Vec<Customer>,
    pub initial_balance: i32,
}
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct ScenarioError;
impl Scenario {
    pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
        Err(ScenarioError)
    }
    pub fn event_count(&self) -> usize {
        0
    }
}
#[derive(Debug, Clone)]
pub struct EventReply {
    pub interface: Interface,
    pub branch: u32,
    pub success: bool,
    pub balance: i32,
}
#[derive(Debug, Clone)]
pub struct CustomerReplies {
    pub customer_id: u32,
    pub replies: Vec<EventReply>,
}
pub fn render_output(variant: Variant, customers: &[CustomerReplies]) -> serde_json::Value {
    serde_json::Value::Null
}
pub fn write_output(
    path: &std::path::Path,
    output: &serde_json::Value,
) -> Result<(), ScenarioError> {
    Ok(())
}
