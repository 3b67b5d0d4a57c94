//! Admission: a bound on the customer calls a branch has in flight, shared by both customer
//! APIs. Past it, a call is answered at once with RESOURCE_EXHAUSTED instead of queueing behind
//! the others (load shedding), so an overloaded branch stays responsive and its memory bounded.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ServiceError;
use crate::node::Branch;

/// Default bound on customer requests in flight per branch.
pub const CUSTOMER_REQUESTS_MAX_DEFAULT: usize = 1024;

/// One branch's bound on customer calls in flight. Cheap to clone: clones share the bound.
#[derive(Clone)]
pub struct Admission {
    branch: Branch,
    limit: usize,
    in_flight: Arc<Semaphore>,
}

impl Admission {
    /// At most `limit` calls in flight on `branch` (at least 1).
    pub fn new(branch: Branch, limit: usize) -> Admission {
        let limit = limit.max(1);
        Admission {
            branch,
            limit,
            in_flight: Arc::new(Semaphore::new(limit)),
        }
    }

    /// A permit for one call, held until its answer is ready; none left: overloaded. A
    /// branch the cluster removed admits no customer at all.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        if let Some(removed) = self.branch.removed() {
            return Err(ServiceError::Removed {
                branch: self.branch.id,
                log_index: removed.log_index,
            });
        }
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ServiceError::Overloaded {
                branch: self.branch.id,
                limit: self.limit,
            })
    }
}
