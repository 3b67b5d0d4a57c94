//! The request-id window: which request ids the ledger remembers, and what it answers for
//! ids it has forgotten.
//!
//! It makes retries safe within fixed bounds (see "Request ids" in the ledger's module docs):
//! the last [`REQUEST_IDS_MAX`] ids applied, each with its command's fingerprint and its
//! outcome, per-origin watermarks below which a forgotten id is expired, and at most
//! [`ORIGINS_MAX`] origins. It is part of the ledger's value and of its snapshots, so the
//! serialised field names and order must not change.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{InvariantViolation, Outcome, RequestId};

/// At most this many request ids are remembered (oldest forgotten first, in log order).
pub const REQUEST_IDS_MAX: usize = 100_000;

/// At most this many origins are remembered (the least recently recorded forgotten first).
pub const ORIGINS_MAX: usize = 65_536;

/// What the request log holds for one request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RememberedRequest {
    /// When it was recorded (the request log's counter), to tell a live entry from a stale one.
    tick: u64,
    /// [`Command::fingerprint`](super::Command::fingerprint) of the command first applied
    /// under this id.
    pub(super) fingerprint: u128,
    pub(super) outcome: RememberedOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum RememberedOutcome {
    Outcome(Outcome),
    /// An applied batch: its items' outcomes are remembered under their own ids.
    Batch,
}

/// The requests of one origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct OriginRequests {
    /// sequence -> what is remembered.
    remembered: BTreeMap<u64, RememberedRequest>,
    /// The highest sequence forgotten from the window: at or below it, an unknown sequence
    /// is expired.
    forgotten_sequence_max: Option<u64>,
    /// The tick of this origin's latest recorded request, for forgetting origins.
    recorded_tick_last: u64,
}

/// How many request ids and origins the log keeps. Constants in production; small in tests so
/// that eviction is exercised cheaply. Not serialised: a snapshot takes this build's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RequestLimits {
    pub(super) request_ids_max: usize,
    pub(super) origins_max: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            request_ids_max: REQUEST_IDS_MAX,
            origins_max: ORIGINS_MAX,
        }
    }
}

/// Remembered request ids (see the ledger's module docs). Nested maps of integer keys so the
/// ledger serialises to plain JSON in snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RequestLog {
    /// origin -> its requests.
    pub(super) origins: BTreeMap<u64, OriginRequests>,
    /// recorded_tick_last -> origin: the least recently recorded origin comes first.
    origins_by_recorded_tick: BTreeMap<u64, u64>,
    /// Recorded ids with their tick, oldest first, for eviction. Entries of a forgotten origin
    /// stay until they reach the front, where their tick no longer matches and they are dropped.
    pub(super) order: VecDeque<(u64, RequestId)>,
    /// How many ids `origins` remembers in all.
    pub(super) remembered_count: usize,
    /// Counts recorded requests; a request's tick is unique.
    tick: u64,
    #[serde(skip)]
    pub(super) limits: RequestLimits,
}

/// What the request log knows of an id.
pub(super) enum Seen<'a> {
    New,
    Remembered(&'a RememberedRequest),
    Expired,
}

impl RequestLog {
    pub(super) fn lookup(&self, id: RequestId) -> Seen<'_> {
        let Some(origin) = self.origins.get(&id.origin) else {
            return Seen::New;
        };
        if let Some(remembered) = origin.remembered.get(&id.sequence) {
            return Seen::Remembered(remembered);
        }
        match origin.forgotten_sequence_max {
            Some(watermark) if id.sequence <= watermark => Seen::Expired,
            _ => Seen::New,
        }
    }

    /// Remembers a request applied under a new id, then forgets the oldest past the limits.
    pub(super) fn record(&mut self, id: RequestId, fingerprint: u128, outcome: RememberedOutcome) {
        // Not `Seen::New` alone: a batch's items may raise the watermark of the batch's own
        // origin past the batch's sequence while it applies; remembering wins over it.
        assert!(
            !matches!(self.lookup(id), Seen::Remembered(_)),
            "recording a remembered id"
        );
        self.tick = self
            .tick
            .checked_add(1)
            .expect("request log invariant broken: 2^64 requests recorded");
        let tick = self.tick;
        if !self.origins.contains_key(&id.origin) {
            while self.origins.len() >= self.limits.origins_max {
                self.forget_oldest_origin();
            }
            self.origins.insert(id.origin, OriginRequests::default());
        }
        let Some(origin) = self.origins.get_mut(&id.origin) else {
            unreachable!("origin {} was inserted above", id.origin);
        };
        self.origins_by_recorded_tick
            .remove(&origin.recorded_tick_last);
        origin.recorded_tick_last = tick;
        self.origins_by_recorded_tick.insert(tick, id.origin);
        let previous = origin.remembered.insert(
            id.sequence,
            RememberedRequest {
                tick,
                fingerprint,
                outcome,
            },
        );
        assert!(previous.is_none());
        self.remembered_count += 1;
        self.order.push_back((tick, id));
        while self.order.len() > self.limits.request_ids_max {
            self.forget_oldest_request();
        }
    }

    fn forget_oldest_request(&mut self) {
        let Some((tick, id)) = self.order.pop_front() else {
            return;
        };
        let Some(origin) = self.origins.get_mut(&id.origin) else {
            return; // The origin was forgotten whole.
        };
        if origin.remembered.get(&id.sequence).map(|r| r.tick) != Some(tick) {
            return; // A stale entry of a forgotten, since re-created origin.
        }
        origin.remembered.remove(&id.sequence);
        self.remembered_count -= 1;
        origin.forgotten_sequence_max = Some(
            origin
                .forgotten_sequence_max
                .map_or(id.sequence, |watermark| watermark.max(id.sequence)),
        );
    }

    fn forget_oldest_origin(&mut self) {
        let Some((_, origin_id)) = self.origins_by_recorded_tick.pop_first() else {
            unreachable!("a full origin table has a least recently recorded origin");
        };
        let Some(origin) = self.origins.remove(&origin_id) else {
            unreachable!("origin {origin_id} is indexed by its tick");
        };
        self.remembered_count -= origin.remembered.len();
    }

    /// Cheap checks, run after every apply.
    pub(super) fn check_invariants(&self) -> Result<(), InvariantViolation> {
        if self.order.len() > self.limits.request_ids_max {
            return Err(InvariantViolation::RequestIdsOverLimit {
                ids: self.order.len(),
                limit: self.limits.request_ids_max,
            });
        }
        if self.remembered_count > self.order.len() {
            return Err(InvariantViolation::RememberedOverOrdered {
                remembered: self.remembered_count,
                ordered: self.order.len(),
            });
        }
        if self.origins.len() > self.limits.origins_max {
            return Err(InvariantViolation::OriginsOverLimit {
                origins: self.origins.len(),
                limit: self.limits.origins_max,
            });
        }
        if self.origins.len() != self.origins_by_recorded_tick.len() {
            return Err(InvariantViolation::OriginsUnlikeTicks {
                origins: self.origins.len(),
                recorded_ticks: self.origins_by_recorded_tick.len(),
            });
        }
        Ok(())
    }
}
