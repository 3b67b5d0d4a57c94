//! The process's Prometheus metrics, and the HTTP endpoint that serves them (`GET /metrics`).
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

use std::future::Future;
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
            global().record_request(branch, &interface, code_label(code), started.elapsed());
            response
        })
    }
}

/// Bound on the metrics endpoint draining at [`Exporter::stop`].
const EXPORTER_STOP_DEADLINE: Duration = Duration::from_secs(2);

/// The metrics endpoint running in the background: `--metrics ADDR`.
pub struct Exporter {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Exporter {
    /// Binds `addr` and serves `GET /metrics` on it until [`Exporter::stop`].
    pub async fn start(addr: std::net::SocketAddr) -> std::io::Result<Exporter> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(listener, async move {
            // An error means the sender is gone: stop as well.
            let _ = stopped.await;
        }));
        Ok(Exporter { addr, stop, task })
    }

    /// The address it serves on (the bound port when started on port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops serving: open scrapes finish, bounded by a short deadline.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(EXPORTER_STOP_DEADLINE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("metrics endpoint stopped with an error: {e}"),
            Ok(Err(e)) => tracing::warn!("metrics endpoint task failed: {e}"),
            Err(_) => {
                tracing::warn!("metrics endpoint did not drain in {EXPORTER_STOP_DEADLINE:?}");
                task.abort();
            }
        }
    }
}

/// Serves `GET /metrics` (the [`global`] registry) on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn scrape() -> axum::response::Response {
    use axum::response::IntoResponse;
    match global().render() {
        Ok(text) => ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics do not encode: {e}\n"),
        )
            .into_response(),
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
