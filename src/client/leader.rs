//! Leader hints: which of the client's branches to send writes to first.
//!
//! Every `bank.v1` answer carries the leader's address as the branch knows it, in the
//! `bank-leader` response metadata ([`crate::rpc::LEADER_METADATA`]; the branch's own address
//! when it leads). A write sent to a follower costs one more hop (the follower forwards it to
//! the leader over the peer service), so the client sends its writes to the hinted branch
//! first. The hint is only an order: a stale one (the leader moved) costs the forward it would
//! have cost anyway, or, if that branch is down, the next branch is tried at once, as before;
//! the answer brings the new hint. A hint that names none of the client's branches (a branch
//! known by another name, e.g. an internal address) is ignored.

use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::metadata::MetadataMap;

use crate::rpc::LEADER_METADATA;

/// No hint.
const NONE: usize = usize::MAX;

/// The index, among the client's branches, of the leader the last answer named.
#[derive(Debug)]
pub(super) struct LeaderHint {
    index: AtomicUsize,
}

impl LeaderHint {
    pub(super) fn new() -> LeaderHint {
        LeaderHint {
            index: AtomicUsize::new(NONE),
        }
    }

    /// The hinted branch's index, if any.
    pub(super) fn get(&self) -> Option<usize> {
        match self.index.load(Ordering::Relaxed) {
            NONE => None,
            index => Some(index),
        }
    }

    /// Takes the hint of an answer's `metadata`, if it names one of `branches` (the client's
    /// branch addresses, in order); an answer without one leaves the hint as it was.
    pub(super) fn learn<'a>(
        &self,
        metadata: &MetadataMap,
        branches: impl Iterator<Item = &'a str>,
    ) {
        let Some(leader) = metadata
            .get(LEADER_METADATA)
            .and_then(|value| value.to_str().ok())
        else {
            return;
        };
        let leader = address_key(leader);
        if let Some(index) = branches
            .map(address_key)
            .position(|addr| addr.eq_ignore_ascii_case(leader))
        {
            self.index.store(index, Ordering::Relaxed);
        }
    }

    /// Drops the hint if it is still `index` (a write sent there failed).
    pub(super) fn forget(&self, index: usize) {
        let _ = self
            .index
            .compare_exchange(index, NONE, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// `addr` without its scheme and trailing slash: `http://127.0.0.1:5001/` and `127.0.0.1:5001`
/// name the same branch.
fn address_key(addr: &str) -> &str {
    let addr = addr.trim();
    let addr = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    addr.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(leader: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert(LEADER_METADATA, leader.parse().expect("ascii"));
        map
    }

    #[test]
    fn a_hint_names_one_of_the_branches_whatever_its_scheme() {
        let branches = ["127.0.0.1:5001", "http://127.0.0.1:5002", "Host-C:5003"];
        let hint = LeaderHint::new();
        assert_eq!(hint.get(), None);
        hint.learn(&metadata("127.0.0.1:5002"), branches.iter().copied());
        assert_eq!(hint.get(), Some(1));
        hint.learn(&metadata("https://host-c:5003/"), branches.iter().copied());
        assert_eq!(hint.get(), Some(2));
        // Unknown names and answers without a hint leave it as it is.
        hint.learn(&metadata("10.0.0.9:5001"), branches.iter().copied());
        hint.learn(&MetadataMap::new(), branches.iter().copied());
        assert_eq!(hint.get(), Some(2));
        hint.forget(1);
        assert_eq!(hint.get(), Some(2), "only the hint that failed is dropped");
        hint.forget(2);
        assert_eq!(hint.get(), None);
    }
}
