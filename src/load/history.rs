//! A history as it is recorded, for [`crate::check`]: [`Recorder`] keeps a run's events in the
//! order they happened, timed in microseconds since the run started on one monotonic clock;
//! [`Completion`] is how one operation ended. The driver ([`super::driver`]) records each
//! operation's invocation and completion; the workloads add the `init` and `final` events.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::check::{Event, Observation, Op, OpResult};

/// How an operation ended, as a history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// It happened, and answered this.
    Ok(OpResult),
    /// It definitely did not happen.
    Fail {
        observation: Option<Observation>,
        error: Option<String>,
    },
    /// Its outcome is unknown: it may take effect at any time later. The process that sent it
    /// is not reused (see [`super::driver`]).
    Info(String),
}

/// The shared history of a run: cheap to clone, every clone records into the same events.
#[derive(Debug, Clone)]
pub struct Recorder {
    started: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Recorder {
            started: Instant::now(),
            events: Arc::default(),
        }
    }

    /// Microseconds since the history started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        // A poisoned lock means a client task panicked; its events are still sound.
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `event` as it is.
    pub fn record(&self, event: Event) {
        self.lock().push(event);
    }

    /// `process` sends `op`, now.
    pub fn invoke(&self, process: u64, op: Op) {
        let time_us = self.now_us();
        self.record(Event::Invoke {
            process,
            time_us,
            op,
        });
    }

    /// `process`'s operation ended, now.
    pub fn complete(&self, process: u64, completion: Completion) {
        let time_us = self.now_us();
        self.record(match completion {
            Completion::Ok(result) => Event::Ok {
                process,
                time_us,
                result,
            },
            Completion::Fail { observation, error } => Event::Fail {
                process,
                time_us,
                observation,
                error,
            },
            Completion::Info(error) => Event::Info {
                process,
                time_us,
                error: Some(error),
            },
        });
    }

    /// The events recorded so far, in order.
    pub fn into_events(self) -> Vec<Event> {
        match Arc::try_unwrap(self.events) {
            Ok(events) => events
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            Err(shared) => shared
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_become_events_in_order() {
        let recorder = Recorder::new();
        let clone = recorder.clone();
        recorder.invoke(0, Op::Read { accounts: vec![1] });
        clone.complete(0, Completion::Info("gave up".to_string()));
        recorder.complete(
            1,
            Completion::Fail {
                observation: None,
                error: None,
            },
        );
        drop(clone);
        let events = recorder.into_events();
        assert!(matches!(events[0], Event::Invoke { process: 0, .. }));
        assert!(
            matches!(&events[1], Event::Info { process: 0, error: Some(e), .. } if e == "gave up")
        );
        assert!(matches!(events[2], Event::Fail { process: 1, .. }));
    }
}
