//! What a starting branch asks its peers before it serves: whether any has Raft state (a
//! fresh branch among peers with state lost its data), and, for a rejoin, the highest term any
//! has seen and whether it was a voter. Every call is bounded; every round of asking too.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::ClusterError;
use crate::proto::peer::{StatusReply, StatusRequest};
use crate::raft::network::Peers;
use crate::retry::jittered;
use crate::BranchId;

/// How long the lowest-id branch of a new cluster waits for every peer to come up.
pub const PEERS_DEADLINE: Duration = Duration::from_secs(60);

/// Bound on one status call to a peer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause between rounds of asking peers (inside [`PEERS_DEADLINE`]).
pub(super) const SURVEY_PAUSE: Duration = Duration::from_millis(200);

/// Asks every peer whether it has state. Any peer with state means this (fresh) branch lost
/// its data: refused. The lowest-id branch also waits until every peer has answered, so that a
/// new cluster is only created with all its branches up and fresh.
pub(super) async fn survey_peers(
    book: &Peers,
    peers: &BTreeMap<BranchId, String>,
    wait_for_all: bool,
) -> Result<(), ClusterError> {
    let deadline = Instant::now() + PEERS_DEADLINE;
    let mut answered = BTreeMap::new();
    loop {
        ask_statuses(book, peers, &mut answered).await;
        let with_state: Vec<BranchId> = answered
            .iter()
            .filter(|(_, status)| status.has_state)
            .map(|(&id, _)| id)
            .collect();
        if !with_state.is_empty() {
            return Err(ClusterError::LostState { with_state });
        }
        if !wait_for_all || answered.len() == peers.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::PeersMissing {
                missing: unanswered(peers, &answered),
                deadline: PEERS_DEADLINE,
            });
        }
        tokio::time::sleep(jittered(SURVEY_PAUSE)).await;
    }
}

/// Asks every peer that has not answered yet for its status, once each (bounded per call).
async fn ask_statuses(
    book: &Peers,
    peers: &BTreeMap<BranchId, String>,
    answered: &mut BTreeMap<BranchId, StatusReply>,
) {
    for (&peer, addr) in peers {
        if answered.contains_key(&peer) {
            continue;
        }
        let Ok(mut client) = book.client(addr) else {
            continue;
        };
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(STATUS_TIMEOUT);
        // Bounded here too: the gRPC deadline binds the server only, and a peer whose port is
        // bound but not served yet (it is surveying its own peers) never answers a TLS
        // handshake.
        if let Ok(Ok(reply)) = tokio::time::timeout(STATUS_TIMEOUT, client.status(request)).await {
            answered.insert(peer, reply.into_inner());
        }
    }
}

/// The peers that have not answered.
fn unanswered(
    peers: &BTreeMap<BranchId, String>,
    answered: &BTreeMap<BranchId, StatusReply>,
) -> Vec<BranchId> {
    peers
        .keys()
        .filter(|id| !answered.contains_key(id))
        .copied()
        .collect()
}

/// What a rejoining branch learns from its peers.
pub(super) struct RejoinSurvey {
    /// The highest term any other branch has seen.
    pub(super) term_floor: u64,
    /// Whether any other branch counts this one among the voters.
    pub(super) voter: bool,
}

/// For a rejoining branch: asks every other branch for the highest term it has seen and the
/// voters it knows. Every branch must answer (an unreachable one might hold the highest term),
/// and at least one must have state (otherwise there is no cluster to rejoin).
pub(super) async fn survey_for_rejoin(
    book: &Peers,
    peers: &BTreeMap<BranchId, String>,
    id: BranchId,
) -> Result<RejoinSurvey, ClusterError> {
    let deadline = Instant::now() + PEERS_DEADLINE;
    let mut answered: BTreeMap<BranchId, StatusReply> = BTreeMap::new();
    loop {
        ask_statuses(book, peers, &mut answered).await;
        if answered.len() == peers.len() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::RejoinPeersMissing {
                missing: unanswered(peers, &answered),
                deadline: PEERS_DEADLINE,
            });
        }
        tokio::time::sleep(jittered(SURVEY_PAUSE)).await;
    }
    if !answered.values().any(|status| status.has_state) {
        return Err(ClusterError::NothingToRejoin);
    }
    Ok(RejoinSurvey {
        term_floor: answered.values().map(|s| s.term).max().unwrap_or(0),
        voter: answered.values().any(|s| s.voters.contains(&id)),
    })
}
