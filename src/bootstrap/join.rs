//! Joining a running cluster (`bank branch --join ADDR`, on an empty data directory): the new
//! branch asks the branch at ADDR to add it as a learner (the leader checks it is not already a
//! voter: a branch that lost its data comes back with `--rejoin`), serves while Raft catches it
//! up (by snapshot install if the log it needs was purged), and once it has applied the
//! leader's read index taken after it was added, asks to be promoted to voter. With
//! [`crate::raft::VOTERS_MAX`] voters already, it stays a learner: it serves customers all the
//! same, and does not vote. A restart repeats the promotion step, which is harmless once done.

use std::time::Duration;

use tokio::time::Instant;

use super::survey::SURVEY_PAUSE;
use super::ClusterError;
use crate::node::{Branch, BranchError, MemberChange, MemberRefused, REQUEST_DEADLINE};
use crate::proto::admin::members_client::MembersClient;
use crate::proto::admin::AddMemberRequest;
use crate::raft::network::{within, CallError, Peers};
use crate::retry::jittered;
use crate::BranchId;

/// How long a joining branch keeps trying to catch up and be promoted.
const JOIN_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Bound on one wait for the branch to apply the leader's read index while joining.
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);

/// Asks the branch at `join` to add branch `id`, reached at `address`, as a learner; returns
/// the log index of the membership entry that did. A refusal (the id is a voter already, say)
/// is final.
pub(super) async fn ask_to_join(
    book: &Peers,
    join: &str,
    id: BranchId,
    address: &str,
) -> Result<u64, ClusterError> {
    let failed = |what: String| ClusterError::Join {
        at: join.to_string(),
        what,
    };
    let deadline = Instant::now() + super::survey::PEERS_DEADLINE;
    loop {
        let channel = book.channel(join).map_err(|e| failed(e.to_string()))?;
        let mut request = tonic::Request::new(AddMemberRequest {
            id,
            address: address.to_string(),
        });
        request.set_timeout(REQUEST_DEADLINE);
        let answer = within(
            REQUEST_DEADLINE,
            MembersClient::new(channel).add_member(request),
        )
        .await;
        match answer {
            Ok(reply) => return Ok(reply.get_ref().log_index),
            // Refused outright (a voter already, a bad address, not allowed): said now.
            Err(CallError::Status(status))
                if !matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted
                ) =>
            {
                return Err(failed(status.message().to_string()))
            }
            Err(e) if Instant::now() >= deadline => return Err(failed(e.to_string())),
            Err(e) => tracing::info!(branch = id, "join at {join}: {e}; retrying"),
        }
        tokio::time::sleep(jittered(SURVEY_PAUSE)).await;
    }
}

/// Catches a joined branch up and promotes it to voter if the cluster has room; runs in the
/// background while the branch serves.
pub(super) async fn promote_when_caught_up(branch: Branch) {
    let id = branch.id;
    let deadline = Instant::now() + JOIN_DEADLINE;
    while Instant::now() < deadline {
        let promoted = async {
            let index = branch.read_index(Instant::now() + REQUEST_DEADLINE).await?;
            branch
                .wait_applied(index, Instant::now() + CATCH_UP_WAIT)
                .await?;
            branch.change_members(&MemberChange::Promote { id }).await
        };
        match promoted.await {
            Ok(changed) => {
                let index = changed.log_index;
                tracing::info!(branch = id, "joined: a voter since log index {index}");
                return;
            }
            Err(BranchError::MemberRefused(MemberRefused::AlreadyVoter { .. })) => return,
            Err(BranchError::MemberRefused(why @ MemberRefused::VotersFull { .. })) => {
                tracing::warn!(branch = id, "joined as a learner: {why}");
                return;
            }
            Err(BranchError::ShuttingDown) => return,
            Err(e) => tracing::info!(branch = id, "joining: still catching up: {e}"),
        }
        tokio::time::sleep(jittered(SURVEY_PAUSE)).await;
    }
    tracing::error!(
        branch = id,
        "not promoted to voter within {JOIN_DEADLINE:?}; it stays a learner \
         (`bank member promote {id}` once `bank status` shows it caught up)"
    );
}
