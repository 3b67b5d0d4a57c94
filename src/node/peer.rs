//! The branch-to-branch calls a branch answers, decoded, carried out and encoded here so that
//! the peer service (`crate::server::peer`) deals only in payloads and [`BranchError`]s.

use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use serde::Serialize;

use super::{BadGroup, Branch, BranchError, Internal, Unavailable, REQUEST_DEADLINE};
use crate::lamport::{from_wire, Hop};
use crate::ledger::{Command, Proposal, BATCH_ITEMS_MAX};
use crate::proto::peer::{Member, RaftPayload, StatusReply};
use crate::raft::codec::{decode, encode};
use crate::raft::NodeId;

type Answer = Result<RaftPayload, BranchError>;

fn decoded<T: serde::de::DeserializeOwned>(payload: &RaftPayload) -> Result<T, BranchError> {
    decode(payload).map_err(|e| BranchError::BadPayload(Arc::new(e)))
}

fn encoded<T: Serialize>(value: &T) -> Answer {
    encode(value).map_err(|e| BranchError::Internal(Internal::Encode(Arc::new(e))))
}

/// `answer` within [`REQUEST_DEADLINE`]; past it, unavailable: `what` did not happen in time.
async fn within_deadline<T>(
    what: &'static str,
    answer: impl std::future::Future<Output = Result<T, BranchError>>,
) -> Result<T, BranchError> {
    tokio::time::timeout(REQUEST_DEADLINE, answer)
        .await
        .unwrap_or(Err(BranchError::Unavailable(Unavailable::Deadline(what))))
}

impl Branch {
    /// FAILED_PRECONDITION unless this branch leads: a forwarded write is proposed only by
    /// the leader, and otherwise not at all, so the sender may retry elsewhere.
    pub(super) fn ensure_leading(&self) -> Result<(), BranchError> {
        if self.leads() {
            Ok(())
        } else {
            Err(BranchError::NotLeader(self.id))
        }
    }

    /// openraft's AppendEntries, from the leader.
    pub async fn answer_append_entries(&self, payload: &RaftPayload) -> Answer {
        let rpc = decoded(payload)?;
        self.receive_stamps(payload, Hop::Propagate);
        encoded(&self.replica.raft.append_entries(rpc).await)
    }

    /// Logs the receipt of the course requests (Project 2) a peer message carries, with their
    /// Lamport clocks; messages without any carry nothing.
    fn receive_stamps(&self, payload: &RaftPayload, hop: Hop) {
        if let Some(wire) = &payload.lamport {
            let (sender, stamps) = from_wire(wire);
            self.replica.lamport.receive(sender, hop, &stamps);
        }
    }

    /// openraft's Vote, from a candidate; refused outright by the [`super::VoteGuard`].
    pub async fn answer_vote(&self, payload: &RaftPayload) -> Answer {
        let rpc: openraft::raft::VoteRequest<NodeId> = decoded(payload)?;
        if let Some(why) = self.vote_guard().refuses(rpc.vote.leader_id().term) {
            return Err(BranchError::VoteRefused(why));
        }
        encoded(&self.replica.raft.vote(rpc).await)
    }

    /// openraft's InstallSnapshot, from the leader.
    pub async fn answer_install_snapshot(&self, payload: &RaftPayload) -> Answer {
        let rpc = decoded(payload)?;
        encoded(&self.replica.raft.install_snapshot(rpc).await)
    }

    /// A write a follower forwarded: one proposal goes into this leader's group committer,
    /// with everything else queued; a batch is proposed as it is.
    pub async fn answer_forward(&self, payload: &RaftPayload) -> Answer {
        let proposal: Proposal = decoded(payload)?;
        self.receive_stamps(payload, Hop::Forward);
        if !matches!(proposal.command, Command::Batch(_)) {
            self.ensure_leading()?;
            let written = within_deadline("write not committed", self.submit_proposal(proposal));
            return encoded(&written.await?);
        }
        let raft = &self.replica.raft;
        let written = tokio::time::timeout(REQUEST_DEADLINE, raft.client_write(proposal)).await;
        match written {
            Ok(Ok(response)) => encoded(&(response.data, response.log_id.index)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(BranchError::NotLeader(self.id))
            }
            Ok(Err(e)) => Err(BranchError::Unavailable(Unavailable::Write(Arc::new(e)))),
            Err(_) => Err(BranchError::Unavailable(Unavailable::Deadline(
                "write not committed",
            ))),
        }
    }

    /// A group of proposals a follower's committer forwarded, for this leader's committer to
    /// merge with its own.
    pub async fn answer_forward_group(&self, payload: &RaftPayload) -> Answer {
        let items: Vec<Proposal> = decoded(payload)?;
        self.receive_stamps(payload, Hop::Forward);
        if items.is_empty() || items.len() > BATCH_ITEMS_MAX {
            return Err(BranchError::BadGroup(BadGroup::Size {
                len: items.len(),
                max: BATCH_ITEMS_MAX,
            }));
        }
        // A batch inside would make the ledger refuse the whole merged entry, everyone's.
        if items
            .iter()
            .any(|item| matches!(item.command, Command::Batch(_)))
        {
            return Err(BranchError::BadGroup(BadGroup::NestedBatch));
        }
        self.ensure_leading()?;
        encoded(&within_deadline("write not committed", self.submit_group(items)).await?)
    }

    /// The leader's read index, for a follower's read.
    pub async fn answer_read_index(&self) -> Result<Option<u64>, BranchError> {
        let raft = &self.replica.raft;
        match tokio::time::timeout(REQUEST_DEADLINE, raft.get_read_log_id()).await {
            Ok(Ok((read_log_id, _))) => Ok(read_log_id.map(|id| id.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(BranchError::NotLeader(self.id))
            }
            Ok(Err(e)) => Err(BranchError::Unavailable(Unavailable::ReadIndex(Arc::new(
                e,
            )))),
            Err(_) => Err(BranchError::Unavailable(Unavailable::LeadershipUnconfirmed)),
        }
    }

    /// A member change another branch forwarded to this one, the leader.
    pub async fn answer_change_members(&self, payload: &RaftPayload) -> Answer {
        let change: super::MemberChange = decoded(payload)?;
        encoded(&self.member_change_as_leader(&change).await?)
    }

    /// This branch's status, as `bank status` and the bootstrap surveys read it.
    pub fn status(&self) -> Result<StatusReply, BranchError> {
        let view = self.view();
        let membership = self.membership();
        let (applied_index, digest, accounts, balances_total, original_balance) =
            self.read_state(|state| {
                let ledger = &state.ledger;
                let total = ledger.balances_total_minor_units();
                (
                    state.last_applied.map(|id| id.index),
                    ledger.state_digest(),
                    ledger.accounts().len() as u64,
                    // Clamped, not wrapped: i64 holds any total a person would look at.
                    i64::try_from(total).unwrap_or(if total < 0 { i64::MIN } else { i64::MAX }),
                    ledger.balance(crate::ledger::ORIGINAL_ACCOUNT),
                )
            })?;
        let members = membership
            .each()
            .map(|(id, address, voter)| Member {
                id,
                address: address.to_string(),
                voter,
            })
            .collect();
        Ok(StatusReply {
            id: self.id,
            has_state: view.has_state(),
            leader: view.leader,
            term: view.vote_term,
            voters: membership.voters,
            rejoining: self.vote_guard().rejoining(),
            role: view.role.label().to_string(),
            applied_index,
            last_log_index: view.last_log_index,
            digest,
            members,
            accounts,
            balances_total,
            original_balance,
            committed_index: view.committed_index,
        })
    }
}
