//! How Raft messages and forwarded writes travel between branches: openraft's and the
//! ledger's own serde types as JSON inside a `bank.peer.v1.RaftPayload`, and a membership
//! change in the bank's words ([`MembershipChange`]) as openraft's `ChangeMembers`.

use std::collections::{BTreeMap, BTreeSet};

use openraft::ChangeMembers;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{BasicNode, NodeId};
use crate::proto::peer::RaftPayload;

/// Encodes a value for a `RaftPayload`.
pub fn encode<T: Serialize>(value: &T) -> Result<RaftPayload, serde_json::Error> {
    Ok(RaftPayload {
        json: serde_json::to_vec(value)?,
        lamport: None,
    })
}

/// Decodes a `RaftPayload`.
pub fn decode<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, serde_json::Error> {
    serde_json::from_slice(&payload.json)
}

/// A change to the cluster's membership, in the bank's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Adds branches (id -> `host:port`) as learners; a member already there is unchanged.
    AddLearners(BTreeMap<NodeId, String>),
    /// Promotes learners to voters.
    AddVoters(BTreeSet<NodeId>),
    /// Demotes voters to learners (they still replicate).
    RemoveVoters(BTreeSet<NodeId>),
    /// Removes branches from the cluster altogether.
    RemoveBranches(BTreeSet<NodeId>),
}

impl MembershipChange {
    pub(crate) fn to_raft(&self) -> ChangeMembers<NodeId, BasicNode> {
        match self {
            MembershipChange::AddLearners(nodes) => ChangeMembers::AddNodes(
                nodes
                    .iter()
                    .map(|(&id, addr)| (id, BasicNode::new(addr)))
                    .collect(),
            ),
            MembershipChange::AddVoters(ids) => ChangeMembers::AddVoterIds(ids.clone()),
            MembershipChange::RemoveVoters(ids) => ChangeMembers::RemoveVoters(ids.clone()),
            MembershipChange::RemoveBranches(ids) => ChangeMembers::RemoveNodes(ids.clone()),
        }
    }
}

/// A membership change as the peer service's `ChangeMembership` call carries it: openraft's
/// `(ChangeMembers, retain)`.
pub fn encode_membership_change(
    change: &MembershipChange,
    retain: bool,
) -> Result<RaftPayload, serde_json::Error> {
    encode(&(&change.to_raft(), retain))
}
