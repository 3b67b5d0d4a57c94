//! A new cluster's first membership and a branch's part in elections: the first voters
//! ([`voters_and_learners`], [`Branch::initialize`]), waiting for a leader or a term, and
//! standing for election or not. The first voters are not a change to a membership; every
//! change after them (its learners included) goes through the one membership API,
//! [`super::MemberChange`] (`members`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::{Branch, BranchError};
use crate::raft::{BasicNode, NodeId};

impl Branch {
    /// Makes this branch's Raft node the first of a new cluster whose voters are `voters`
    /// (id -> `host:port`). Only a branch with no Raft state may do this, and only one branch
    /// of a cluster.
    pub async fn initialize(&self, voters: &BTreeMap<NodeId, String>) -> Result<(), BranchError> {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|(&id, addr)| (id, BasicNode::new(addr)))
            .collect();
        self.replica
            .raft
            .initialize(nodes)
            .await
            .map_err(BranchError::raft)
    }

    /// Waits until this branch knows a leader, at most until `deadline`; returns its id.
    pub async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId, BranchError> {
        self.replica.wait_for_leader(deadline).await
    }

    /// Waits until this branch's term has reached `term`, at most `timeout`. `Ok(false)`: not
    /// yet.
    pub async fn wait_for_term(&self, term: u64, timeout: Duration) -> Result<bool, BranchError> {
        let reached = self
            .replica
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.vote.leader_id().term >= term, "term reached")
            .await;
        match reached {
            Ok(_) => Ok(true),
            Err(openraft::metrics::WaitError::Timeout(..)) => Ok(false),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(BranchError::ShuttingDown),
        }
    }

    /// Lets this branch stand for election (or stops it).
    pub fn set_elections(&self, enabled: bool) {
        self.replica.set_elections(enabled);
    }
}

/// The voters of a new cluster — the first [`crate::raft::VOTERS_MAX`] ids, ascending — and
/// the learners, from every branch (id -> address).
pub fn voters_and_learners(
    addresses: impl IntoIterator<Item = (NodeId, String)>,
) -> (BTreeMap<NodeId, String>, BTreeMap<NodeId, String>) {
    let mut voters: BTreeMap<NodeId, String> = addresses.into_iter().collect();
    let learner_ids: BTreeSet<NodeId> = voters
        .keys()
        .skip(crate::raft::VOTERS_MAX)
        .copied()
        .collect();
    let learners = learner_ids
        .into_iter()
        .filter_map(|id| voters.remove_entry(&id))
        .collect();
    (voters, learners)
}
