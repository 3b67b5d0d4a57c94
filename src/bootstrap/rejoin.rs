//! Rejoining (`bank branch --rejoin`, only on an empty data directory): a branch that lost its
//! data rebuilds from its peers without ever voting on what it no longer knows. It learns the
//! highest term any peer has seen (its term floor), is removed and re-added as a learner,
//! catches up, is promoted back if it was a voter, and votes and stands for election again
//! only above its floor. See [`super::standalone`]'s documentation for the whole story.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::survey::{PEERS_DEADLINE, SURVEY_PAUSE};
use super::{change_members_in_turn, ClusterError};
use crate::node::{
    change_members_via_peers, Branch, BranchError, MemberChange, MemberRefused, REQUEST_DEADLINE,
};
use crate::raft::durable::{DurableStore, RejoinState};
use crate::raft::network::Peers;
use crate::retry::jittered;
use crate::BranchId;

/// How long a rejoining branch keeps trying to catch up before it gives up (it then stays safe:
/// it refuses votes and does not stand for election until restarted).
const REJOIN_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Bound on one wait for the branch to apply the leader's read index while rejoining.
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);

/// A branch finishing its rejoin.
pub(super) struct Rejoining {
    pub(super) branch: Branch,
    pub(super) store: DurableStore,
    pub(super) book: Peers,
    pub(super) peers: BTreeMap<BranchId, String>,
    /// This branch's own address, as the cluster records it.
    pub(super) addr: String,
}

impl Rejoining {
    /// Adds this branch back as a learner, waits until it has applied the leader's read index
    /// (taken after it was added, so every entry committed before it lost its data is at or
    /// below it), records that, promotes it back to voter if it was one, and lets it vote;
    /// then turns elections on once its term has reached the floor, so that any term it stands
    /// in is above it.
    pub(super) async fn finish(self, mut state: RejoinState) {
        let Self {
            branch,
            store,
            book,
            peers,
            addr,
        } = self;
        let id = branch.id;
        let deadline = Instant::now() + REJOIN_DEADLINE;
        while !state.caught_up {
            if Instant::now() >= deadline {
                tracing::error!(
                    branch = id,
                    "did not catch up within {REJOIN_DEADLINE:?}; it refuses votes until restarted"
                );
                return;
            }
            let caught_up = async {
                // Adding a learner already there changes nothing: safe to repeat. A voter
                // already was promoted back by an earlier round.
                let learner = MemberChange::Add {
                    id,
                    address: addr.clone(),
                };
                match change_members_via_peers(&book, &peers, &learner, PEERS_DEADLINE).await {
                    Ok(_) | Err(BranchError::MemberRefused(MemberRefused::AlreadyVoter { .. })) => {
                    }
                    Err(e) => return Err(e.into()),
                }
                let index = branch.read_index(Instant::now() + REQUEST_DEADLINE).await?;
                branch
                    .wait_applied(index, Instant::now() + CATCH_UP_WAIT)
                    .await?;
                if state.voter {
                    promote_back(&branch).await?;
                }
                Ok::<(), ClusterError>(())
            };
            match caught_up.await {
                Ok(()) => {
                    let done = RejoinState {
                        caught_up: true,
                        ..state
                    };
                    match store.set_rejoin_state(&done) {
                        Ok(()) => state = done,
                        Err(e) => tracing::error!(branch = id, "recording the rejoin: {e}"),
                    }
                }
                Err(ClusterError::Request(BranchError::ShuttingDown)) => return,
                Err(e) => tracing::info!(branch = id, "rejoin: still catching up: {e}"),
            }
            if !state.caught_up {
                tokio::time::sleep(jittered(SURVEY_PAUSE)).await;
            }
        }
        branch.vote_guard().set(false, state.term_floor);
        tracing::info!(branch = id, "rejoined: caught up, voting again");
        loop {
            match branch.wait_for_term(state.term_floor, CATCH_UP_WAIT).await {
                Ok(true) => break,
                Ok(false) => continue,
                Err(_) => return,
            }
        }
        branch.set_elections(true);
        tracing::info!(branch = id, "rejoined: standing for election again");
    }
}

/// Promotes a rejoining `branch`, which was a voter, back to voter once it has caught up. A
/// voter already (an earlier round did it) is done; with the cluster's voters full meanwhile,
/// it stays a learner, as a joining branch does.
async fn promote_back(branch: &Branch) -> Result<(), BranchError> {
    let promote = MemberChange::Promote { id: branch.id };
    match change_members_in_turn(branch, &promote).await {
        Ok(_) | Err(BranchError::MemberRefused(MemberRefused::AlreadyVoter { .. })) => Ok(()),
        Err(BranchError::MemberRefused(why @ MemberRefused::VotersFull { .. })) => {
            tracing::warn!(branch = branch.id, "rejoined as a learner: {why}");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
