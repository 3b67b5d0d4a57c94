//! Whether a branch is fit to serve, published on `grpc.health.v1.Health`, and its Raft state
//! mirrored into [`crate::server::metrics`].
//!
//! A branch reports SERVING (for the server as a whole, `""`, and for each service it serves)
//! only when it is in the cluster's membership (voter or learner) and knows a leader: then a
//! customer's request can be committed or read through it. Otherwise NOT_SERVING: it is
//! starting, not yet added, removed, or cut off from a quorum (it then loses its leader once
//! its election timer fires). One task per branch, owned by [`HealthWatch`], follows the
//! branch's Raft state ([`crate::node::RaftWatch`]) and updates both on every change.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::metrics;
use crate::node::Branch;
use crate::BranchId;

/// Bound on waiting for the watcher task to stop.
const STOP_DEADLINE: Duration = Duration::from_secs(1);

/// The watcher task of one branch; [`HealthWatch::stop`] ends it.
pub struct HealthWatch {
    branch: BranchId,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The health service for `branch`, reporting on `services` (and the server as a whole, `""`),
/// all NOT_SERVING until the watcher it starts sees the branch fit to serve.
pub async fn start(
    branch: &Branch,
    services: &[&'static str],
) -> (HealthServer<impl Health>, HealthWatch) {
    let (reporter, server) = tonic_health::server::health_reporter();
    let mut names = vec![""];
    names.extend_from_slice(services);
    for name in &names {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(watch_branch(branch.clone(), reporter, names, stopped));
    (
        server,
        HealthWatch {
            branch: branch.id,
            stop,
            task,
        },
    )
}

/// Follows `branch`'s Raft state until `stopped` or until its Raft node shuts down.
async fn watch_branch(
    branch: Branch,
    reporter: HealthReporter,
    names: Vec<&'static str>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut raft = branch.watch();
    let mut serving = false;
    let mut checks_recorded = 0;
    loop {
        let (member, now_serving) = {
            let current = raft.current();
            let (member, now_serving) = (current.member, current.is_serving());
            metrics::global().record_raft(&current, now_serving);
            (member, now_serving)
        };
        let checks = branch.applies_checked();
        metrics::global().add_invariant_checks(branch.id, checks.saturating_sub(checks_recorded));
        checks_recorded = checks_recorded.max(checks);
        if now_serving != serving {
            serving = now_serving;
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            tracing::info!(branch = branch.id, member, "health: {status:?}");
            for name in &names {
                reporter.set_service_status(name, status).await;
            }
        }
        tokio::select! {
            changed = raft.changed() => if changed.is_err() { break },
            _ = stopped.changed() => break,
        }
    }
    for name in &names {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}

impl HealthWatch {
    /// Stops the watcher (bounded) and drops the branch's Raft gauges.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(STOP_DEADLINE, &mut task)
            .await
            .is_err()
        {
            tracing::warn!(
                branch = self.branch,
                "health watcher did not stop; aborting it"
            );
            task.abort();
        }
        metrics::global().forget_branch(self.branch);
    }
}
