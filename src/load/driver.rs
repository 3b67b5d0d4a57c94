//! The one load loop of `src/load/`: [`run`] drives N concurrent clients ([`LoadClient`]s)
//! for a duration, an operation count (over all clients, or per client) or until stopped.
//! Each client picks its next operation, sends it, times it and hands back the answer to be
//! tallied; with a [`Recorder`], every operation's invocation and completion also go into the
//! history. `bank bench` ([`super::bench`]) and Jepsen's bank workload ([`super::jepsen`]) both
//! drive their load through it, as does [`drive`], the same loop for any system
//! (`bank-etcd-compare` measures bank and etcd with it).
//!
//! The driver also counts completions per time bucket of the run ([`Throughput`], bounded in
//! buckets), one count per client merged at the end, for `bank bench --html`'s throughput chart.
//!
//! Closed or open loop: by default each client sends its next operation as soon as the last
//! one is answered; with a rate ([`Plan::rate`]), operations are due at fixed times and each
//! client takes the next one due and waits until then ([`super::pacing`]), and its latency is
//! measured from when it was due.
//!
//! Bounded: the loop only waits on the operations themselves, each bounded by its client (the
//! `bank.v1` client gives up at its deadline), and, in an open loop, until an operation is due,
//! never past the run's end; the run ends at its limit or when its stop flag is set, checked
//! before every operation.
//!
//! Processes, as in Jepsen: client *i* is process *i*; after an operation whose outcome is
//! unknown ([`Completion::Info`]) it continues as process *i + N*, and so on, so a process
//! never has two operations in flight.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
// Tokio's clock, so that tests can pause it: the same as the system's monotonic clock otherwise.
use tokio::time::Instant;

use super::history::{Completion, Recorder};
use super::measure::{Latency, Tally, Throughput};
use super::pacing::{OpenLoop, Schedule};
use crate::check::Op;

/// How long a run lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Length {
    /// Until this much time has passed.
    Duration(Duration),
    /// Until this many operations (batch items count one each) have been sent.
    Count(u64),
}

/// When a run ends, besides its stop flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Until this much time has passed (no operation starts after it).
    Duration(Duration),
    /// Until this many units have been claimed by all clients together; each operation
    /// claims [`LoadClient::units`] before it starts.
    Total(u64),
    /// Until each client has done this many operations.
    EachClient(u64),
    /// Until the stop flag is set.
    UntilStopped,
}

impl From<Length> for Limit {
    fn from(length: Length) -> Limit {
        match length {
            Length::Duration(duration) => Limit::Duration(duration),
            Length::Count(count) => Limit::Total(count),
        }
    }
}

/// One client of a run, the load's actor (`bank bench --clients`, a Jepsen client): what it
/// sends, and what it makes of the answers. It reaches the system through what it holds; for
/// the bank a `bank.v1` [`crate::client::Client`], which several load clients may share.
pub trait LoadClient: Send + 'static {
    /// One operation, as picked.
    type Op: Send + Sync;
    /// What sending it answered.
    type Answer: Send;

    /// Units of a [`Limit::Total`] each operation claims (a batch's items count one each).
    fn units(&self) -> u64 {
        1
    }

    /// Picks the next operation.
    fn pick(&mut self) -> Self::Op;

    /// The operation as a history records its invocation; `None`: it is not recorded. Asked
    /// only when the run records a history.
    fn invocation(&self, _op: &Self::Op) -> Option<Op> {
        None
    }

    /// Sends the operation; the driver times this call. Must be bounded.
    fn perform(&mut self, op: &Self::Op) -> impl Future<Output = Self::Answer> + Send;

    /// How the operation ended, for the history; asked only when its invocation was recorded,
    /// with that invocation (`invoked`).
    fn completion(&self, invoked: &Op, answer: &Self::Answer) -> Completion;

    /// Counts the operation: its answer and how long it took.
    fn tally(&mut self, op: Self::Op, answer: Self::Answer, latency: Duration);
}

/// How a run is bounded, and where its history goes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub limit: Limit,
    /// Set by anyone to end the run: no operation starts after it is seen.
    pub stop: Arc<AtomicBool>,
    /// Records every operation's invocation and completion; `None`: no history.
    pub history: Option<Recorder>,
    /// Operations due per second over all clients (an open loop; see [`super::pacing`]), each
    /// one's latency measured from when it was due; `None`: each client sends back to back.
    pub rate: Option<f64>,
}

impl Plan {
    /// A run to `limit`, with no history and no outside stop.
    pub fn new(limit: impl Into<Limit>) -> Plan {
        Plan {
            limit: limit.into(),
            stop: Arc::default(),
            history: None,
            rate: None,
        }
    }
}

/// What a run leaves: the clients (with what they tallied), in their order, how long it took,
/// and when their operations completed.
#[derive(Debug)]
pub struct Driven<L> {
    pub clients: Vec<L>,
    pub elapsed: Duration,
    pub throughput: Throughput,
    /// With a rate: how the operations kept to it.
    pub open_loop: Option<OpenLoop>,
}

/// What the clients share: the limit, the stop flag, the units claimed.
struct Shared {
    /// When the run started: the origin of the throughput buckets.
    started: Instant,
    limit: Limit,
    /// `None` for a run without a duration, or one too long for the clock.
    deadline: Option<Instant>,
    stop: Arc<AtomicBool>,
    claimed: AtomicU64,
    /// With a rate: when each operation is due.
    schedule: Option<Schedule>,
}

/// An operation claimed: when it is due.
enum Claim {
    /// The run is over.
    Over,
    /// Now (closed loop).
    Now,
    /// At this time (open loop).
    At(Instant),
}

impl Shared {
    /// Claims the next operation (`units` of a total; `done` is this client's count so far).
    /// In an open loop, no operation is due past a duration's end.
    fn claim(&self, units: u64, done: &mut u64) -> Claim {
        if self.stop.load(Ordering::SeqCst) {
            return Claim::Over;
        }
        let due = match &self.schedule {
            None => None,
            Some(schedule) => match schedule.next() {
                Some(due) => Some(due),
                None => return Claim::Over,
            },
        };
        let open = match self.limit {
            Limit::Duration(_) => self
                .deadline
                .is_none_or(|d| due.unwrap_or_else(Instant::now) < d),
            Limit::Total(count) => self.claimed.fetch_add(units, Ordering::SeqCst) < count,
            Limit::EachClient(count) => {
                *done += 1;
                *done <= count
            }
            Limit::UntilStopped => true,
        };
        match (open, due) {
            (false, _) => Claim::Over,
            (true, None) => Claim::Now,
            (true, Some(due)) => Claim::At(due),
        }
    }
}

/// Runs `clients` concurrently, one task each, until `plan`'s limit or stop flag.
pub async fn run<L: LoadClient>(clients: Vec<L>, plan: Plan) -> Driven<L> {
    let started = Instant::now();
    let count = clients.len() as u64;
    let shared = Arc::new(Shared {
        started,
        limit: plan.limit,
        deadline: match plan.limit {
            Limit::Duration(duration) => started.checked_add(duration),
            _ => None,
        },
        stop: plan.stop,
        claimed: AtomicU64::new(0),
        schedule: plan.rate.map(|rate| Schedule::new(rate, started)),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        let (shared, history) = (shared.clone(), plan.history.clone());
        tasks.spawn(async move {
            let (client, throughput) =
                client_loop(client, index as u64, count, &shared, history.as_ref()).await;
            (index, client, throughput)
        });
    }
    let mut done = Vec::with_capacity(count as usize);
    while let Some(joined) = tasks.join_next().await {
        // A panicked task is a bug in its client: surface it.
        done.push(joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
    }
    let elapsed = started.elapsed();
    done.sort_by_key(|&(index, _, _)| index);
    let mut throughput = Throughput::default();
    let mut clients = Vec::with_capacity(done.len());
    for (_, client, counted) in done {
        throughput.merge(counted);
        clients.push(client);
    }
    Driven {
        clients,
        elapsed,
        throughput,
        open_loop: shared.schedule.as_ref().map(|s| s.report(elapsed)),
    }
}

/// One client's loop: claim, (wait until due), pick, (record the invocation), send and time,
/// (record the completion), tally; until the run is over. Returns the client and when its
/// operations completed. Client `index` of `count` starts as process `index`.
async fn client_loop<L: LoadClient>(
    mut client: L,
    index: u64,
    count: u64,
    shared: &Shared,
    history: Option<&Recorder>,
) -> (L, Throughput) {
    let mut throughput = Throughput::default();
    let mut process = index;
    let mut done = 0u64;
    loop {
        let due = match shared.claim(client.units(), &mut done) {
            Claim::Over => break,
            Claim::Now => None,
            Claim::At(due) => {
                tokio::time::sleep_until(due).await;
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                Some(due)
            }
        };
        let op = client.pick();
        let recording = history.and_then(|recorder| {
            let invoked = client.invocation(&op)?;
            recorder.invoke(process, invoked.clone());
            Some((recorder, invoked))
        });
        let began = Instant::now();
        if let (Some(schedule), Some(due)) = (&shared.schedule, due) {
            schedule.started(due, began);
        }
        let answer = client.perform(&op).await;
        // In an open loop, from when it was due: waiting for a free client is latency too.
        let latency = due.unwrap_or(began).elapsed();
        throughput.record(shared.started.elapsed(), client.units());
        if let Some((recorder, invoked)) = recording {
            let completion = client.completion(&invoked, &answer);
            let in_doubt = matches!(completion, Completion::Info(_));
            recorder.complete(process, completion);
            if in_doubt {
                process += count;
            }
        }
        client.tally(op, answer, latency);
    }
    (client, throughput)
}

/// What [`drive`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct DriveReport {
    pub clients: usize,
    pub elapsed_s: f64,
    /// Operations that succeeded.
    pub operations: u64,
    pub operations_per_s: f64,
    pub latency: Latency,
    pub errors: BTreeMap<String, u64>,
}

/// The load generator on its own, for any system: `clients` tasks, each with its own
/// connection from `connect`, call `operation(connection, client, n)` back to back until
/// `length` is reached, and every successful call's latency is recorded (a failed one counts
/// under the error it returned). `bank-etcd-compare` drives bank and etcd through this same
/// function, so the two are measured the same way.
pub async fn drive<C, Connect, Op, Fut>(
    clients: usize,
    length: Length,
    connect: Connect,
    operation: Op,
) -> DriveReport
where
    C: Send + 'static,
    Connect: Fn(usize) -> C,
    Op: Fn(&C, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let calls = (0..clients)
        .map(|client| Calls {
            connection: connect(client),
            operation: operation.clone(),
            client,
            next: 0,
            tally: Tally::new(),
        })
        .collect();
    let driven = run(calls, Plan::new(length)).await;
    let mut tally = Tally::new();
    for calls in driven.clients {
        tally.merge(calls.tally);
    }
    let elapsed = driven.elapsed.as_secs_f64();
    DriveReport {
        clients,
        elapsed_s: elapsed,
        operations: tally.operations,
        operations_per_s: tally.operations as f64 / elapsed.max(1e-9),
        latency: Latency::of(&tally.all()),
        errors: tally.errors,
    }
}

/// [`drive`]'s client: calls `operation` with its connection, its index and a running count.
struct Calls<C, F> {
    connection: C,
    operation: F,
    client: usize,
    next: u64,
    tally: Tally,
}

/// A [`drive`] operation: names the future it returns, so that [`Calls`] need not (a type
/// parameter for it would have to be `'static`, which `drive` does not ask of its callers).
trait Call<C>: Fn(&C, usize, u64) -> Self::Answer {
    type Answer: Future<Output = Result<(), String>> + Send;
}

impl<C, F, Fut> Call<C> for F
where
    F: Fn(&C, usize, u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send,
{
    type Answer = Fut;
}

impl<C, F> LoadClient for Calls<C, F>
where
    C: Send + 'static,
    F: Call<C> + Send + 'static,
{
    /// The call's number for this client: 0, 1, 2, ...
    type Op = u64;
    type Answer = Result<(), String>;

    fn pick(&mut self) -> u64 {
        self.next += 1;
        self.next - 1
    }

    fn perform(&mut self, n: &u64) -> impl Future<Output = Self::Answer> + Send {
        (self.operation)(&self.connection, self.client, *n)
    }

    fn completion(&self, _: &Op, answer: &Self::Answer) -> Completion {
        match answer {
            Ok(()) => Completion::Ok(Default::default()),
            Err(error) => Completion::Fail {
                observation: None,
                error: Some(error.clone()),
            },
        }
    }

    fn tally(&mut self, _: u64, answer: Self::Answer, latency: Duration) {
        match answer {
            Ok(()) => {
                self.tally.record("all", latency);
                self.tally.operations += 1;
            }
            Err(kind) => self.tally.error(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drive_counts_and_times_every_operation() {
        let report = drive(
            3,
            Length::Count(30),
            |client| client,
            |_, _, n| async move {
                if n % 5 == 4 {
                    Err("every fifth".to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!(report.operations + report.errors["every fifth"], 30);
        assert_eq!(report.latency.requests, report.operations);
    }

    /// Counts its operations; every third one's outcome is unknown.
    struct Counter {
        units: u64,
        picked: u64,
        tallied: u64,
    }

    impl LoadClient for Counter {
        type Op = u64;
        type Answer = bool;

        fn units(&self) -> u64 {
            self.units
        }

        fn pick(&mut self) -> u64 {
            self.picked += 1;
            self.picked
        }

        fn invocation(&self, _: &u64) -> Option<Op> {
            Some(Op::Read { accounts: vec![] })
        }

        async fn perform(&mut self, n: &u64) -> bool {
            tokio::task::yield_now().await;
            !n.is_multiple_of(3)
        }

        fn completion(&self, _: &Op, known: &bool) -> Completion {
            if *known {
                Completion::Ok(Default::default())
            } else {
                Completion::Info("unknown".to_string())
            }
        }

        fn tally(&mut self, _: u64, _: bool, _: Duration) {
            self.tallied += 1;
        }
    }

    fn counters(clients: usize, units: u64) -> Vec<Counter> {
        (0..clients)
            .map(|_| Counter {
                units,
                picked: 0,
                tallied: 0,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_total_is_claimed_in_units_over_all_clients() {
        let driven = run(counters(3, 4), Plan::new(Limit::Total(40))).await;
        let tallied: u64 = driven.clients.iter().map(|c| c.tallied).sum();
        assert_eq!(tallied, 10);
        // Every completion is in the throughput buckets, in units.
        assert_eq!(driven.throughput.completions.iter().sum::<u64>(), 40);
    }

    #[tokio::test]
    async fn each_client_does_its_count_and_changes_process_after_an_unknown_outcome() {
        let history = Recorder::new();
        let plan = Plan {
            history: Some(history.clone()),
            ..Plan::new(Limit::EachClient(4))
        };
        let driven = run(counters(2, 1), plan).await;
        assert!(driven.clients.iter().all(|c| c.tallied == 4));
        let events = history.into_events();
        assert_eq!(events.len(), 16);
        let processes = |wanted: fn(&crate::check::HistoryEvent) -> Option<u64>| {
            let mut seen: Vec<u64> = events.iter().filter_map(wanted).collect();
            seen.sort_unstable();
            seen.dedup();
            seen
        };
        // Each client's third operation is in doubt: its fourth is sent by a new process.
        let invokers = processes(|e| match e {
            crate::check::HistoryEvent::Invoke { process, .. } => Some(*process),
            _ => None,
        });
        assert_eq!(invokers, [0, 1, 2, 3]);
    }

    /// Takes `service` per operation (on tokio's clock) and keeps every latency it is told.
    struct Slow {
        service: Duration,
        latencies: Vec<Duration>,
    }

    impl LoadClient for Slow {
        type Op = ();
        type Answer = ();

        fn pick(&mut self) {}

        async fn perform(&mut self, _: &()) {
            tokio::time::sleep(self.service).await;
        }

        fn completion(&self, _: &Op, _: &()) -> Completion {
            Completion::Ok(Default::default())
        }

        fn tally(&mut self, _: (), _: (), latency: Duration) {
            self.latencies.push(latency);
        }
    }

    /// An open loop of 100 operations per second (one due every 10 ms) on one client taking
    /// `service` each, five operations: the latencies it recorded, in ms, and the pacing.
    async fn open_loop(service_ms: u64) -> (Vec<u128>, OpenLoop) {
        let client = Slow {
            service: Duration::from_millis(service_ms),
            latencies: Vec::new(),
        };
        let plan = Plan {
            rate: Some(100.0),
            ..Plan::new(Limit::Total(5))
        };
        let driven = run(vec![client], plan).await;
        let latencies = driven.clients[0]
            .latencies
            .iter()
            .map(Duration::as_millis)
            .collect();
        (latencies, driven.open_loop.expect("a rate was given"))
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_with_a_free_client_starts_each_operation_when_due() {
        let (latencies, pacing) = open_loop(4).await;
        assert_eq!(latencies, [4, 4, 4, 4, 4]);
        assert_eq!(
            (pacing.requests, pacing.late, pacing.worst_late_us),
            (5, 0, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_saturated_open_loop_measures_latency_from_when_each_operation_was_due() {
        // Each takes 30 ms, one is due every 10 ms: the n-th starts 20n ms late, and its
        // latency counts that wait (a closed loop would record 30 ms for every one).
        let (latencies, pacing) = open_loop(30).await;
        assert_eq!(latencies, [30, 50, 70, 90, 110]);
        assert_eq!((pacing.requests, pacing.late), (5, 4));
        assert_eq!(pacing.worst_late_us, 80_000);
        assert_eq!(pacing.rate_per_s, 100.0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_for_a_duration_sends_what_is_due_before_its_end() {
        let plan = Plan {
            rate: Some(100.0),
            ..Plan::new(Limit::Duration(Duration::from_millis(95)))
        };
        let clients = (0..4)
            .map(|_| Slow {
                service: Duration::from_millis(15),
                latencies: Vec::new(),
            })
            .collect();
        let driven = run(clients, plan).await;
        let sent: usize = driven.clients.iter().map(|c| c.latencies.len()).sum();
        // Due at 0, 10, ..., 90 ms; two clients at a time keep up, so none waits.
        assert_eq!(sent, 10);
        assert!(driven
            .clients
            .iter()
            .flat_map(|c| &c.latencies)
            .all(|l| l.as_millis() == 15));
        assert_eq!(driven.open_loop.map(|p| p.late), Some(0));
    }

    #[tokio::test]
    async fn a_stopped_run_starts_nothing_and_a_duration_ends() {
        let plan = Plan::new(Limit::UntilStopped);
        plan.stop.store(true, Ordering::SeqCst);
        let driven = run(counters(2, 1), plan).await;
        assert!(driven.clients.iter().all(|c| c.tallied == 0));
        let driven = run(
            counters(2, 1),
            Plan::new(Limit::Duration(Duration::from_millis(20))),
        )
        .await;
        assert!(driven.clients.iter().all(|c| c.tallied > 0));
    }
}
