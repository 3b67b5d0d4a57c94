//! Breaking a local cluster on purpose from the page: stop, restart, cut off and heal a branch.
//!
//! The web layer knows nothing of how: the command line hands it a [`Control`] for a cluster
//! it runs itself (`bank server`, `bank run`). The buttons work only when the listener is on
//! loopback and a control was given (`bank branch` never gives one): anything else is refused
//! with 403. A control request must also carry the [`CONTROL_HEADER`]: a page of another
//! origin cannot send a custom header without a CORS preflight, which this server never
//! grants, so a web page the operator happens to visit cannot stop their branches.

use std::future::Future;
use std::pin::Pin;

use crate::BranchId;

/// The header every control request carries (any value).
pub const CONTROL_HEADER: &str = "x-bank-control";

/// What a button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop the branch's server and Raft node, as a crash would (its state is kept).
    Stop,
    /// Start a stopped branch again on its address, from its kept state.
    Restart,
    /// Cut the branch off from the other branches (both ways); it keeps serving customers.
    Cut,
    /// Undo [`Action::Cut`].
    Heal,
}

impl Action {
    /// The action named in a control path (`/control/stop/2`).
    pub fn parse(name: &str) -> Option<Action> {
        match name {
            "stop" => Some(Action::Stop),
            "restart" => Some(Action::Restart),
            "cut" => Some(Action::Cut),
            "heal" => Some(Action::Heal),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Cut => "cut",
            Action::Heal => "heal",
        }
    }
}

/// A future a [`Control`] returns: done, or why not (shown to the person who clicked).
pub type Acted<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Something that can break and mend the branches of a cluster this process runs.
pub trait Control: Send + Sync + 'static {
    fn act(&self, action: Action, branch: BranchId) -> Acted<'_>;

    /// The branches cut off now, for the page to mark; must not wait (none if it would).
    fn cut_off(&self) -> Vec<BranchId> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Action;

    #[test]
    fn actions_round_trip_through_their_names() {
        for action in [Action::Stop, Action::Restart, Action::Cut, Action::Heal] {
            assert_eq!(Action::parse(action.name()), Some(action));
        }
        assert_eq!(Action::parse("explode"), None);
    }
}
