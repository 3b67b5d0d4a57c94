//! The feed: one task that polls the cluster while anyone watches, and hands each snapshot to
//! every open event stream.
//!
//! Bounds, all fixed: each poll asks the branches at once, each call within
//! [`STATUS_CALL_DEADLINE`]; each stream has a buffer of [`CLIENT_BUFFER`] snapshots, and a
//! stream whose buffer is full (a client that stopped reading) is dropped on the spot — the
//! feed never waits for a client; at most [`CLIENTS_MAX`] streams are open (the next one is
//! refused, and the page answers 503); the customer events kept for the page are at most
//! [`ACTIVITY_MAX`](super::snapshot::ACTIVITY_MAX). Nobody watching, nothing is polled.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};

use super::control::Control;
use super::snapshot::{now_ms, Activity, Sampler, ACTIVITY_MAX};
use crate::client::status::cluster_status_within;

/// How often the page is updated.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Bound on each status call of a poll: a branch silent this long shows as unreachable, so a
/// stopped branch turns red within `POLL_INTERVAL` + twice this.
pub const STATUS_CALL_DEADLINE: Duration = Duration::from_millis(600);

/// Snapshots buffered per event stream before the client counts as gone.
pub const CLIENT_BUFFER: usize = 8;

/// Event streams open at once, at most.
pub const CLIENTS_MAX: usize = 32;

/// Which cluster the page shows, and whether it may break it.
#[derive(Clone, Default)]
pub struct View {
    /// Branch addresses to ask, in order, until one answers (it names the others).
    pub ask: Vec<String>,
    /// Stop / restart / cut / heal, for a cluster this process runs (local clusters only).
    pub control: Option<Arc<dyn Control>>,
    /// TLS to the branches, with the cluster's certificate (status is the operators').
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Refused: [`CLIENTS_MAX`] streams are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

struct Shared {
    clients: Mutex<Vec<mpsc::Sender<Arc<str>>>>,
    latest: Mutex<Option<Arc<str>>>,
    activity: Mutex<VecDeque<Activity>>,
    leader: Mutex<Option<crate::BranchId>>,
    view: watch::Sender<View>,
    watched: Notify,
    /// Whether the listener is on loopback (controls need it).
    loopback: bool,
}

/// The feed's handle: clones share it.
#[derive(Clone)]
pub struct Feed {
    shared: Arc<Shared>,
}

/// A poisoned lock only means a panic elsewhere mid-update of plain data: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Feed {
    pub fn new(loopback: bool) -> Feed {
        let (view, _) = watch::channel(View::default());
        Feed {
            shared: Arc::new(Shared {
                clients: Mutex::new(Vec::new()),
                latest: Mutex::new(None),
                activity: Mutex::new(VecDeque::with_capacity(ACTIVITY_MAX)),
                leader: Mutex::new(None),
                view,
                watched: Notify::new(),
                loopback,
            }),
        }
    }

    /// Shows `view` from the next poll on.
    pub fn show(&self, view: View) {
        self.shared.view.send_replace(view);
        self.shared.watched.notify_one();
    }

    /// The control, if the page may use it: a local cluster, served on loopback.
    pub fn control(&self) -> Option<Arc<dyn Control>> {
        if !self.shared.loopback {
            return None;
        }
        self.shared.view.borrow().control.clone()
    }

    /// A new event stream, starting with the latest snapshot; refused past [`CLIENTS_MAX`].
    pub fn subscribe(&self) -> Result<mpsc::Receiver<Arc<str>>, Full> {
        let (sender, receiver) = mpsc::channel(CLIENT_BUFFER);
        {
            let mut clients = lock(&self.shared.clients);
            clients.retain(|client| !client.is_closed());
            if clients.len() >= CLIENTS_MAX {
                return Err(Full);
            }
            if let Some(latest) = lock(&self.shared.latest).clone() {
                // A fresh buffer has room.
                let _ = sender.try_send(latest);
            }
            clients.push(sender);
        }
        self.shared.watched.notify_one();
        Ok(receiver)
    }

    /// Ends every event stream (the listener is stopping: open pages must not hold it).
    pub fn close_streams(&self) {
        lock(&self.shared.clients).clear();
    }

    /// Event streams open now.
    pub fn clients(&self) -> usize {
        lock(&self.shared.clients).len()
    }

    /// Records a customer event for the page (the oldest beyond the bound are dropped); if
    /// the caller does not know the leader, it is the one the last poll saw.
    pub fn record(&self, mut activity: Activity) {
        if activity.leader.is_none() {
            activity.leader = *lock(&self.shared.leader);
        }
        activity.at_ms = now_ms();
        let mut kept = lock(&self.shared.activity);
        if kept.len() == ACTIVITY_MAX {
            kept.pop_front();
        }
        kept.push_back(activity);
    }

    /// Hands `text` to every stream; drops those that are full or gone. Never waits.
    fn broadcast(&self, text: Arc<str>) {
        *lock(&self.shared.latest) = Some(text.clone());
        lock(&self.shared.clients).retain(|client| match client.try_send(text.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!("an event stream stopped reading; dropped");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Polls and broadcasts every [`POLL_INTERVAL`] while a stream is open, until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut sampler = Sampler::default();
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.clients() == 0 {
                tokio::select! {
                    _ = self.shared.watched.notified() => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                continue;
            }
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let text = self.poll(&mut sampler).await;
            self.broadcast(text);
        }
    }

    /// One snapshot of the cluster, as JSON.
    async fn poll(&self, sampler: &mut Sampler) -> Arc<str> {
        let view = self.shared.view.borrow().clone();
        let mut status = Err("no cluster to show yet".to_string());
        for addr in &view.ask {
            status = cluster_status_within(addr, view.tls.as_ref(), STATUS_CALL_DEADLINE)
                .await
                .map_err(|e| e.to_string());
            if status.is_ok() {
                break;
            }
        }
        let activity = lock(&self.shared.activity).iter().cloned().collect();
        let controls = self.shared.loopback && view.control.is_some();
        let cut_off = view
            .control
            .as_ref()
            .map(|c| c.cut_off())
            .unwrap_or_default();
        let snapshot = sampler.sample(status, activity, controls, &cut_off);
        *lock(&self.shared.leader) = snapshot.leader;
        match serde_json::to_string(&snapshot) {
            Ok(text) => text.into(),
            Err(e) => format!("{{\"error\":\"snapshot does not encode: {e}\"}}").into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_stops_reading_is_dropped_and_the_others_keep_receiving() {
        let feed = Feed::new(true);
        let _stalled = feed.subscribe().expect("room");
        let mut reading = feed.subscribe().expect("room");
        for round in 0..=CLIENT_BUFFER {
            feed.broadcast(round.to_string().into());
            let received = reading.try_recv().expect("the reader gets every snapshot");
            assert_eq!(&*received, round.to_string());
        }
        assert_eq!(
            feed.clients(),
            1,
            "the stalled stream was dropped, never waited for"
        );
    }

    #[test]
    fn streams_are_capped_and_a_closed_one_frees_its_place() {
        let feed = Feed::new(false);
        let mut open: Vec<_> = (0..CLIENTS_MAX)
            .map(|_| feed.subscribe().expect("room"))
            .collect();
        assert_eq!(feed.subscribe().err(), Some(Full));
        drop(open.pop());
        let late = feed.subscribe().expect("a closed stream frees its place");
        feed.broadcast("latest".into());
        drop(late);
        let mut newest = {
            drop(open.pop());
            feed.subscribe().expect("room")
        };
        assert_eq!(
            newest.try_recv().map(|text| text.to_string()),
            Ok("latest".to_string()),
            "a new stream starts with the latest snapshot"
        );
    }

    #[test]
    fn no_control_is_offered_off_loopback() {
        struct Nothing;
        impl Control for Nothing {
            fn act(
                &self,
                _: super::super::control::Action,
                _: crate::BranchId,
            ) -> super::super::control::Acted<'_> {
                Box::pin(async { Ok(()) })
            }
        }
        let view = View {
            control: Some(Arc::new(Nothing)),
            ..View::default()
        };
        let remote = Feed::new(false);
        remote.show(view.clone());
        assert!(remote.control().is_none());
        let local = Feed::new(true);
        local.show(view);
        assert!(local.control().is_some());
    }
}
