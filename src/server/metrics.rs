//! The process's Prometheus metrics; the HTTP listener that serves them (`GET /metrics`) is
//! the web layer's ([`crate::web`]).
//!
//! One registry per process ([`global`]), as Prometheus client libraries usually have: a
//! `bank server` runs several branches in one process, so every series carries a `branch`
//! label. What is recorded, and by whom:
//!
//! - `bank_requests_total{branch, interface, outcome}` and
//!   `bank_request_duration_seconds{branch, interface}`: every call a branch answers.
//!   `interface` is the customer's operation on the original API (`deposit`, `withdraw`,
//!   `query`, or `invalid`), recorded by [`crate::server`] with [`Metrics::record_request`];
//!   for any other gRPC service wrapped in [`observed`] it is the method in snake case
//!   (`forward`, `append_entries`, `read_index`, ...). `outcome` is `success` / `fail` for a
//!   customer's answered operation (`fail`: refused by the ledger, e.g. insufficient funds),
//!   otherwise the gRPC status code in snake case (`ok`, `unavailable`, `invalid_argument`, ...).
//! - `bank_raft_*{branch}` gauges (term, leader, last log / committed (on the leader) /
//!   applied / snapshot / purged index,
//!   leader or not, member or not) and `bank_health_serving{branch}`, mirrored from the branch's Raft
//!   metrics by [`crate::server::health`]'s watcher on every change.
//! - `bank_ledger_invariant_checks_total{branch}`: ledger applies whose invariants were checked
//!   (every applied command; see `Ledger::apply_proposal`).
//!
//! Label values come from fixed sets (interfaces, status codes, branch ids), so the number of
//! series stays bounded whatever customers send: an unknown method is labelled `unknown`.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;

use crate::node::RaftView;
use crate::BranchId;

/// The content type of [`Metrics::render`]'s output (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    branch: BranchId,
    interface: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    branch: BranchId,
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BranchLabels {
    branch: BranchId,
}

type Gauges = Family<BranchLabels, Gauge>;

/// Latency buckets: 0.5 ms doubling to about 16 s, past every request deadline.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric a branch records. Use [`global`].
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<InterfaceLabels, Histogram, fn() -> Histogram>,
    raft_term: Gauges,
    raft_leader: Gauges,
    raft_is_leader: Gauges,
    raft_member: Gauges,
    raft_last_log_index: Gauges,
    raft_applied_index: Gauges,
    raft_committed_index: Gauges,
    raft_snapshot_index: Gauges,
    raft_purged_index: Gauges,
    health_serving: Gauges,
    invariant_checks: Family<BranchLabels, Counter>,
    /// Customer calls (both customer APIs) per branch and their total seconds: what the live
    /// page shows as requests per second and latency. Not registered, so `/metrics` is
    /// unchanged by them.
    customer_calls: Family<BranchLabels, Counter>,
    customer_seconds: Family<BranchLabels, Counter<f64, AtomicU64>>,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bank");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Calls answered, by interface and outcome",
            requests.clone(),
        );
        let latency: Family<InterfaceLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time to answer a call, by interface",
            latency.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let family = Gauges::default();
            registry.register(name, help, family.clone());
            family
        };
        let raft_term = gauge("raft_term", "The highest Raft term this branch has seen");
        let raft_leader = gauge(
            "raft_leader",
            "The node id of the leader this branch knows (0: none)",
        );
        let raft_is_leader = gauge("raft_is_leader", "1 if this branch leads, else 0");
        let raft_member = gauge(
            "raft_member",
            "1 if this branch is in the cluster's membership (voter or learner), else 0",
        );
        let raft_last_log_index = gauge(
            "raft_last_log_index",
            "Index of the last entry in this branch's log (-1: empty)",
        );
        let raft_applied_index = gauge(
            "raft_applied_index",
            "Index of the last entry applied to this branch's ledger (-1: none)",
        );
        let raft_committed_index = gauge(
            "raft_committed_index",
            "On the leader, the last log index stored on a majority of voters (committed); -1 on \
             other branches (the Raft library does not report a follower's commit index) or if none",
        );
        let raft_snapshot_index = gauge(
            "raft_snapshot_index",
            "Last log index covered by this branch's latest snapshot (-1: none)",
        );
        let raft_purged_index = gauge(
            "raft_purged_index",
            "Last log index purged from this branch's log after a snapshot (-1: none)",
        );
        let health_serving = gauge(
            "health_serving",
            "1 if this branch reports SERVING on grpc.health.v1 (a member that knows a leader)",
        );
        let invariant_checks = Family::<BranchLabels, Counter>::default();
        registry.register(
            "ledger_invariant_checks",
            "Ledger applies whose invariants were asserted",
            invariant_checks.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            raft_term,
            raft_leader,
            raft_is_leader,
            raft_member,
            raft_last_log_index,
            raft_applied_index,
            raft_committed_index,
            raft_snapshot_index,
            raft_purged_index,
            health_serving,
            invariant_checks,
            customer_calls: Family::default(),
            customer_seconds: Family::default(),
        }
    }

    /// Records one answered call: `interface` from a fixed set, `outcome` as documented in the
    /// module docs (see [`code_label`] for gRPC statuses).
    pub fn record_request(
        &self,
        branch: BranchId,
        interface: &str,
        outcome: &'static str,
        latency: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                branch,
                interface: interface.to_string(),
                outcome,
            })
            .inc();
        self.latency
            .get_or_create(&InterfaceLabels {
                branch,
                interface: interface.to_string(),
            })
            .observe(latency.as_secs_f64());
        if matches!(interface, "deposit" | "withdraw" | "query" | "invalid") {
            self.record_customer_call(branch, latency);
        }
    }

    /// Counts one customer call answered by `branch` for the live page (see
    /// [`Metrics::customer_calls`]); [`Metrics::record_request`] does it for the course API.
    pub fn record_customer_call(&self, branch: BranchId, latency: Duration) {
        let labels = BranchLabels { branch };
        self.customer_calls.get_or_create(&labels).inc();
        self.customer_seconds
            .get_or_create(&labels)
            .inc_by(latency.as_secs_f64());
    }

    /// Customer calls `branch` has answered and the seconds they took in total, if this
    /// process serves `branch`.
    pub fn customer_calls(&self, branch: BranchId) -> Option<(u64, f64)> {
        let labels = BranchLabels { branch };
        let calls = self.customer_calls.get(&labels)?.get();
        let seconds = self.customer_seconds.get(&labels).map_or(0.0, |s| s.get());
        Some((calls, seconds))
    }

    /// Mirrors a branch's Raft state into the Raft gauges.
    pub fn record_raft(&self, raft: &RaftView, serving: bool) {
        let branch = raft.id;
        let labels = BranchLabels { branch };
        let set = |family: &Gauges, value: i64| {
            family.get_or_create(&labels).set(value);
        };
        // Indexes are -1 when absent; a u64 beyond i64 cannot happen in practice, and is
        // clamped rather than wrapped if it ever did.
        let index = |index: Option<u64>| index.map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX));
        set(
            &self.raft_term,
            i64::try_from(raft.current_term).unwrap_or(i64::MAX),
        );
        set(
            &self.raft_leader,
            raft.leader
                .map_or(0, |id| i64::try_from(id).unwrap_or(i64::MAX)),
        );
        set(&self.raft_is_leader, i64::from(raft.leads()));
        set(&self.raft_member, i64::from(raft.member));
        set(&self.raft_last_log_index, index(raft.last_log_index));
        set(&self.raft_applied_index, index(raft.applied_index));
        set(&self.raft_committed_index, index(raft.committed_index));
        set(&self.raft_snapshot_index, index(raft.snapshot_index));
        set(&self.raft_purged_index, index(raft.purged_index));
        set(&self.health_serving, i64::from(serving));
    }

    /// Adds `count` ledger applies whose invariants were checked on `branch`.
    pub fn add_invariant_checks(&self, branch: BranchId, count: u64) {
        self.invariant_checks
            .get_or_create(&BranchLabels { branch })
            .inc_by(count);
    }

    /// Drops `branch`'s gauges (it stopped): a scrape no longer reports stale Raft state for
    /// it. Its counters stay, as counters do.
    pub fn forget_branch(&self, branch: BranchId) {
        let labels = BranchLabels { branch };
        for family in [
            &self.raft_term,
            &self.raft_leader,
            &self.raft_is_leader,
            &self.raft_member,
            &self.raft_last_log_index,
            &self.raft_applied_index,
            &self.raft_snapshot_index,
            &self.raft_purged_index,
            &self.health_serving,
        ] {
            family.remove(&labels);
        }
    }

    /// Every metric, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// A gRPC status code as an `outcome` label: `ok`, `unavailable`, `invalid_argument`, ...
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// `/bank.peer.v1.Peer/AppendEntries` -> `append_entries`.
fn method_label(path: &str) -> String {
    let method = path.rsplit('/').next().unwrap_or_default();
    let mut label = String::with_capacity(method.len() + 4);
    for (i, c) in method.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                label.push('_');
            }
            label.push(c.to_ascii_lowercase());
        } else {
            label.push(c);
        }
    }
    label
}

/// Wraps a tonic service so that every call it answers is recorded under `branch`, with the
/// method as `interface` and the gRPC status as `outcome` (`bank_requests_total`,
/// `bank_request_duration_seconds`). Serve the result in place of `service`.
pub fn observed<S>(branch: BranchId, service: S) -> Observed<S> {
    Observed {
        branch,
        inner: service,
    }
}

/// A tonic service whose calls are recorded; see [`observed`].
#[derive(Clone, Debug)]
pub struct Observed<S> {
    branch: BranchId,
    inner: S,
}

impl<S: NamedService> NamedService for Observed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Observed<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let started = Instant::now();
        let method = method_label(request.uri().path());
        // The bank's own customer API; the others (peer, members, backup) are not customers'.
        let customer = request.uri().path().starts_with("/bank.v1.");
        let branch = self.branch;
        let answered = self.inner.call(request);
        Box::pin(async move {
            let response = answered.await;
            // A unary call's error status travels in the headers (a trailers-only response);
            // a success's `grpc-status: 0` comes in the trailers, after this point.
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Internal,
            };
            // Only methods the service knows get their own label: any path may be asked for.
            let interface = if code == tonic::Code::Unimplemented {
                "unknown".to_string()
            } else {
                method
            };
            let latency = started.elapsed();
            global().record_request(branch, &interface, code_label(code), latency);
            if customer {
                global().record_customer_call(branch, latency);
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_become_snake_case_interfaces() {
        assert_eq!(
            method_label("/bank.peer.v1.Peer/AppendEntries"),
            "append_entries"
        );
        assert_eq!(method_label("/bank.peer.v1.Peer/Forward"), "forward");
        assert_eq!(method_label(""), "");
    }

    #[test]
    fn recorded_requests_show_in_the_text() {
        let metrics = global();
        metrics.record_request(9_999, "deposit", "success", Duration::from_millis(3));
        let text = metrics.render().expect("renders");
        assert!(
            text.contains(
                r#"bank_requests_total{branch="9999",interface="deposit",outcome="success"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"bank_request_duration_seconds_count{branch="9999",interface="deposit"} 1"#
        ));
    }
}
