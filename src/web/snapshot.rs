//! What one update of the page holds ([`Snapshot`], sent as JSON), and what the feed remembers
//! between polls to make it ([`Sampler`]): the previous request counts (for requests per
//! second), who led and since when, and the timeline of leader changes.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::client::status::{BranchStatus, ClusterStatus};
use crate::server::metrics;
use crate::BranchId;

/// Leader changes the timeline keeps (the oldest are dropped).
pub const TIMELINE_MAX: usize = 32;

/// Customer events the page keeps (the oldest are dropped).
pub const ACTIVITY_MAX: usize = 64;

/// Milliseconds since the Unix epoch, for the page's clocks.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// One branch on the page.
#[derive(Debug, Clone, Serialize)]
pub struct BranchRow {
    #[serde(flatten)]
    pub status: BranchStatus,
    /// `serving` (answers and knows a leader), `degraded` (answers, no leader known) or
    /// `down` (does not answer).
    pub health: &'static str,
    /// Customer calls answered per second since the last poll; `None` for a branch of
    /// another process (its metrics are its own).
    pub requests_per_second: Option<f64>,
    /// Their mean latency over the same interval, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Cut off from the other branches on purpose (the page's cut button).
    pub cut_off: bool,
}

/// One change of leader.
#[derive(Debug, Clone, Serialize)]
pub struct LeaderChange {
    pub at_ms: u64,
    /// The new leader (`None`: none known).
    pub leader: Option<BranchId>,
    pub term: Option<u64>,
}

/// One customer event of a scenario that `bank run` runs, as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub at_ms: u64,
    pub customer: u32,
    pub event_id: i32,
    /// The branch the customer called.
    pub branch: BranchId,
    pub interface: &'static str,
    pub money: i32,
    pub result: &'static str,
    pub balance: i32,
    /// The leader at that moment, as the last poll saw it: where the branch forwarded the write.
    pub leader: Option<BranchId>,
}

/// Everything the page shows, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub at_ms: u64,
    /// Why the cluster could not be asked, if it could not.
    pub error: Option<String>,
    pub leader: Option<BranchId>,
    pub leader_since_ms: Option<u64>,
    pub branches: Vec<BranchRow>,
    /// The shared account's balance, number of accounts and money in total, from the leader
    /// (or the first branch that answered).
    pub original_balance: Option<i64>,
    pub accounts: Option<u64>,
    pub money: Option<i64>,
    pub timeline: Vec<LeaderChange>,
    pub activity: Vec<Activity>,
    /// Whether the page offers stop / restart / cut / heal.
    pub controls: bool,
}

/// What the feed keeps between polls.
#[derive(Debug, Default)]
pub struct Sampler {
    /// Per branch: (calls, seconds) at the previous poll, and when.
    previous: BTreeMap<BranchId, (u64, f64)>,
    previous_at: Option<Instant>,
    leader: Option<BranchId>,
    leader_since_ms: Option<u64>,
    timeline: VecDeque<LeaderChange>,
    /// The branches of the last answer, to list when nobody answers.
    known: Vec<BranchStatus>,
}

impl Sampler {
    /// The snapshot of `status` (or of the `error` that kept it from being read).
    pub fn sample(
        &mut self,
        status: Result<ClusterStatus, String>,
        activity: Vec<Activity>,
        controls: bool,
        cut_off: &[BranchId],
    ) -> Snapshot {
        let at_ms = now_ms();
        let (status, error) = match status {
            Ok(status) => {
                self.known = status.branches.clone();
                (Some(status), None)
            }
            Err(error) => {
                // Nobody answered: the branches last seen, every one unreachable.
                let branches = self
                    .known
                    .iter()
                    .map(|known| BranchStatus {
                        id: known.id,
                        address: known.address.clone(),
                        voter: known.voter,
                        ..unreachable()
                    })
                    .collect();
                let status = ClusterStatus {
                    asked: String::new(),
                    leader: None,
                    branches,
                };
                (Some(status), Some(error))
            }
        };
        let leader = status.as_ref().and_then(|s| s.leader);
        let term = status.as_ref().and_then(|s| {
            s.branches
                .iter()
                .find(|b| Some(b.id) == leader)
                .and_then(|b| b.term)
        });
        if leader != self.leader || self.leader_since_ms.is_none() {
            self.leader = leader;
            self.leader_since_ms = Some(at_ms);
            if self.timeline.len() == TIMELINE_MAX {
                self.timeline.pop_front();
            }
            self.timeline.push_back(LeaderChange {
                at_ms,
                leader,
                term,
            });
        }
        let rates = self.rates(status.as_ref());
        let branches: Vec<BranchRow> = status
            .map(|s| s.branches)
            .unwrap_or_default()
            .into_iter()
            .map(|branch| {
                let (requests_per_second, latency_ms) =
                    rates.get(&branch.id).copied().unwrap_or((None, None));
                BranchRow {
                    cut_off: cut_off.contains(&branch.id),
                    health: health(&branch),
                    status: branch,
                    requests_per_second,
                    latency_ms,
                }
            })
            .collect();
        let source = branches
            .iter()
            .find(|b| b.status.reachable && Some(b.status.id) == leader)
            .or_else(|| branches.iter().find(|b| b.status.reachable));
        Snapshot {
            at_ms,
            error,
            leader,
            leader_since_ms: self.leader_since_ms,
            original_balance: source.and_then(|b| b.status.original_balance),
            accounts: source.and_then(|b| b.status.accounts),
            money: source.and_then(|b| b.status.balances_total),
            branches,
            timeline: self.timeline.iter().cloned().collect(),
            activity,
            controls,
        }
    }

    /// Requests per second and mean latency per branch of this process since the last poll.
    #[allow(clippy::type_complexity)]
    fn rates(
        &mut self,
        status: Option<&ClusterStatus>,
    ) -> BTreeMap<BranchId, (Option<f64>, Option<f64>)> {
        let now = Instant::now();
        let elapsed = self
            .previous_at
            .map(|at| now.duration_since(at))
            .filter(|elapsed| *elapsed > Duration::ZERO);
        let mut rates = BTreeMap::new();
        let mut current = BTreeMap::new();
        for branch in status.map(|s| s.branches.as_slice()).unwrap_or_default() {
            let Some((calls, seconds)) = metrics::global().customer_calls(branch.id) else {
                continue;
            };
            current.insert(branch.id, (calls, seconds));
            let (Some(elapsed), Some(&(calls_before, seconds_before))) =
                (elapsed, self.previous.get(&branch.id))
            else {
                continue;
            };
            let calls_new = calls.saturating_sub(calls_before);
            let rate = calls_new as f64 / elapsed.as_secs_f64();
            let latency =
                (calls_new > 0).then(|| (seconds - seconds_before) * 1000.0 / calls_new as f64);
            rates.insert(branch.id, (Some(rate), latency));
        }
        self.previous = current;
        self.previous_at = Some(now);
        rates
    }
}

/// A branch that did not answer: nothing known but what the caller fills in.
fn unreachable() -> BranchStatus {
    BranchStatus {
        id: 0,
        address: String::new(),
        reachable: false,
        error: None,
        role: None,
        voter: None,
        term: None,
        leader: None,
        applied_index: None,
        last_log_index: None,
        committed_index: None,
        lag: None,
        digest: None,
        accounts: None,
        balances_total: None,
        original_balance: None,
    }
}

fn health(branch: &BranchStatus) -> &'static str {
    match (branch.reachable, branch.leader) {
        (false, _) => "down",
        (true, Some(_)) => "serving",
        (true, None) => "degraded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branch(id: BranchId, reachable: bool, leader: Option<BranchId>) -> BranchStatus {
        BranchStatus {
            id,
            address: format!("127.0.0.1:{id}"),
            reachable,
            error: None,
            role: reachable.then(|| "follower".to_string()),
            voter: Some(true),
            term: reachable.then_some(3),
            leader,
            applied_index: None,
            last_log_index: None,
            committed_index: None,
            lag: None,
            digest: None,
            accounts: reachable.then_some(1),
            balances_total: reachable.then_some(100),
            original_balance: reachable.then_some(100),
        }
    }

    fn cluster(leader: Option<BranchId>, down: BranchId) -> ClusterStatus {
        ClusterStatus {
            asked: "127.0.0.1:1".to_string(),
            leader,
            branches: (1..=3).map(|id| branch(id, id != down, leader)).collect(),
        }
    }

    #[test]
    fn leader_changes_make_the_timeline_and_down_branches_show() {
        let mut sampler = Sampler::default();
        let first = sampler.sample(Ok(cluster(Some(1), 0)), Vec::new(), false, &[]);
        assert_eq!(first.timeline.len(), 1);
        assert_eq!(first.original_balance, Some(100));
        let same = sampler.sample(Ok(cluster(Some(1), 0)), Vec::new(), false, &[]);
        assert_eq!(same.timeline.len(), 1, "no change, no new entry");
        let moved = sampler.sample(Ok(cluster(Some(2), 1)), Vec::new(), false, &[]);
        assert_eq!(moved.timeline.len(), 2);
        assert_eq!(moved.leader, Some(2));
        assert_eq!(moved.branches[0].health, "down");
        assert_eq!(moved.branches[1].health, "serving");
        let lost = sampler.sample(Err("nobody answers".into()), Vec::new(), false, &[2]);
        assert_eq!(lost.leader, None);
        assert_eq!(lost.error.as_deref(), Some("nobody answers"));
        assert_eq!(lost.branches.len(), 3, "the branches last seen stay listed");
        assert!(lost.branches.iter().all(|b| b.health == "down"));
        assert!(lost.branches[1].cut_off);
    }

    #[test]
    fn the_timeline_is_bounded() {
        let mut sampler = Sampler::default();
        for round in 0..(TIMELINE_MAX as u64 * 2) {
            sampler.sample(Ok(cluster(Some(1 + round % 3), 0)), Vec::new(), false, &[]);
        }
        assert_eq!(sampler.timeline.len(), TIMELINE_MAX);
    }
}
