//! Votes a rejoining branch refuses, whatever openraft would answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Votes a branch refuses, whatever openraft would answer. Refusing a vote is always safe in
/// Raft; these rules keep a branch that lost its data (and rejoined with `--rejoin`) from
/// voting on what it no longer knows:
/// - while it is *rejoining* (demoted to learner, catching up) it votes for no one: with an
///   empty or partial log it would let a candidate that lacks committed entries win;
/// - it never votes in a term at or below its *term floor*, the highest term any peer had
///   seen when it rejoined: it may have voted in those terms before it lost its vote record.
#[derive(Debug, Default)]
pub struct VoteGuard {
    rejoining: AtomicBool,
    term_floor: AtomicU64,
}

/// Why a vote was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteRefused {
    #[error("this branch is rejoining and does not vote until it has caught up")]
    Rejoining,
    #[error("this branch rejoined after losing its data and does not vote in term {term} (at or below {floor})")]
    AtOrBelowFloor { term: u64, floor: u64 },
}

impl VoteGuard {
    pub fn set(&self, rejoining: bool, term_floor: u64) {
        self.rejoining.store(rejoining, Ordering::SeqCst);
        self.term_floor.fetch_max(term_floor, Ordering::SeqCst);
    }

    pub fn rejoining(&self) -> bool {
        self.rejoining.load(Ordering::SeqCst)
    }

    /// Why a vote request for `term` must be refused, if it must.
    pub fn refuses(&self, term: u64) -> Option<VoteRefused> {
        let floor = self.term_floor.load(Ordering::SeqCst);
        if self.rejoining() {
            Some(VoteRefused::Rejoining)
        } else if term <= floor {
            Some(VoteRefused::AtOrBelowFloor { term, floor })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::VoteGuard;

    #[test]
    fn a_branch_that_never_rejoined_refuses_no_vote() {
        let guard = VoteGuard::default();
        assert_eq!(guard.refuses(1), None);
        assert!(!guard.rejoining());
    }

    #[test]
    fn a_rejoining_branch_refuses_every_vote_until_caught_up() {
        let guard = VoteGuard::default();
        guard.set(true, 7);
        assert!(guard.refuses(8).is_some());
        assert!(guard.refuses(1_000).is_some());
        guard.set(false, 7);
        assert_eq!(guard.refuses(8), None);
    }

    #[test]
    fn a_rejoined_branch_never_votes_at_or_below_its_floor() {
        let guard = VoteGuard::default();
        guard.set(false, 7);
        for term in [0, 1, 6, 7] {
            let why = guard.refuses(term).expect("refused").to_string();
            assert!(why.contains(&format!("term {term}")), "{why}");
        }
        // The floor only rises.
        guard.set(false, 3);
        assert!(guard.refuses(7).is_some());
    }
}
