//! The hooks, recording through the `metrics` facade: the build with the feature `metrics`.

use std::{sync::OnceLock, time::Instant};

use metrics::{counter, histogram, Counter, Histogram};

use super::outcome;
use crate::metrics::names::*;
use crate::{event::EventKind, rejection::RejectionKind};

/// When something started, kept only when metrics are on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch {
    started: Instant,
}

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    fn seconds(self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// A handler's start and the event it runs on, for [`HANDLER_SECONDS`] and
/// [`INBOX_HANDLER_SECONDS`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandlerTimer {
    watch: Stopwatch,
    /// The event's place in [`EventKind::KNOWN`], or one past it for any other name.
    event: usize,
}

impl HandlerTimer {
    pub(crate) fn start(kind: Option<&EventKind>) -> Self {
        Self {
            watch: Stopwatch::start(),
            event: event_index(kind),
        }
    }

    /// The same event, timed from now: the handler starts after the store's claim.
    pub(crate) fn restart(mut self) -> Self {
        self.watch = Stopwatch::start();
        self
    }
}

/// Whether a delivery's response future was counted: one that is dropped before it answers
/// (the client went away, a time-out above the layer, a handler that panicked) is counted as
/// `aborted` when dropped.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Inside `poll`: a drop while this holds means a panic unwound through it.
    polling: bool,
    finished: bool,
}

impl Tally {
    pub(crate) fn polling(&mut self, polling: bool) {
        self.polling = polling;
    }

    pub(crate) fn finished(&mut self) {
        self.finished = true;
    }

    /// The future is dropped; `uncounted` if its state had not been counted yet.
    pub(crate) fn dropped(&self, uncounted: bool) {
        if uncounted && !self.finished {
            let code = if self.polling { "panic" } else { "dropped" };
            counter!(DELIVERIES_TOTAL, "outcome" => "aborted", "code" => code).increment(1);
        }
    }
}

/// Where the event's name is in [`EventKind::KNOWN`], or one past the end (`other`), so a
/// sender cannot grow the label set.
fn event_index(kind: Option<&EventKind>) -> usize {
    kind.and_then(|kind| {
        EventKind::KNOWN
            .iter()
            .position(|known| *known == kind.as_str())
    })
    .unwrap_or(EventKind::KNOWN.len())
}

/// The label for [`event_index`]'s answer.
fn event_label(index: usize) -> &'static str {
    EventKind::KNOWN.get(index).copied().unwrap_or("other")
}

/// The handles of the metrics recorded on every delivery, registered once: looking a metric
/// up by name and labels on each request cost the layer about a tenth of its throughput.
///
/// Registered with the recorder installed when the first delivery is recorded (the facade ties
/// a handle to the recorder it was registered with), so install yours before serving.
struct Handles {
    accepted: Counter,
    duplicate: Counter,
    /// By [`RejectionKind`], in the order of [`RejectionKind::ALL`].
    refused: Vec<Counter>,
    body_read: Histogram,
    verify: Histogram,
    /// By [`event_index`].
    handler: Vec<Histogram>,
    #[cfg(feature = "inbox")]
    inbox_handler: Vec<Histogram>,
}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| {
        let by_event = |name: &'static str| -> Vec<Histogram> {
            (0..=EventKind::KNOWN.len())
                .map(|index| histogram!(name, "event" => event_label(index)))
                .collect()
        };
        Handles {
            accepted: counter!(DELIVERIES_TOTAL, "outcome" => outcome::ACCEPTED),
            duplicate: counter!(DELIVERIES_TOTAL, "outcome" => outcome::DUPLICATE),
            refused: RejectionKind::ALL
                .iter()
                .map(|&kind| {
                    let outcome = outcome::refused(kind);
                    counter!(DELIVERIES_TOTAL, "outcome" => outcome, "code" => kind.code())
                })
                .collect(),
            body_read: histogram!(BODY_READ_SECONDS),
            verify: histogram!(VERIFY_SECONDS),
            handler: by_event(HANDLER_SECONDS),
            #[cfg(feature = "inbox")]
            inbox_handler: by_event(INBOX_HANDLER_SECONDS),
        }
    })
}

/// The body has been read (or failed to be).
pub(crate) fn body_read(watch: Stopwatch) {
    handles().body_read.record(watch.seconds());
}

/// The signature has been checked and the envelope read.
pub(crate) fn verified(watch: Stopwatch) {
    handles().verify.record(watch.seconds());
}

/// The layer refused a delivery.
pub(crate) fn rejected(kind: RejectionKind) {
    handles().refused[kind as usize].increment(1);
}

/// The layer's delivery store knew the delivery: answered 200 without the handler.
pub(crate) fn duplicate() {
    handles().duplicate.increment(1);
}

/// The service behind the layer answered a verified delivery with `status`; `duplicate` if it
/// said the delivery was already stored (the inbox's 200).
pub(crate) fn answered(timer: HandlerTimer, status: Option<http::StatusCode>, duplicate: bool) {
    let handles = handles();
    handles.handler[timer.event].record(timer.watch.seconds());
    let Some(status) = status else {
        counter!(DELIVERIES_TOTAL, "outcome" => outcome::HANDLER_ERROR, "code" => "error")
            .increment(1);
        return;
    };
    match outcome::answered(status, duplicate) {
        outcome::DUPLICATE => handles.duplicate.increment(1),
        outcome::ACCEPTED => handles.accepted.increment(1),
        handler_error => {
            let code = status.as_u16().to_string();
            counter!(DELIVERIES_TOTAL, "outcome" => handler_error, "code" => code).increment(1);
        }
    }
}

/// A delivery store stopped answering (once per outage).
pub(crate) fn store_outage() {
    counter!(STORE_OUTAGES_TOTAL).increment(1);
}

/// One delivery store round trip.
#[cfg(feature = "redis")]
pub(crate) fn store_round_trip(watch: Stopwatch, store: &'static str, op: &'static str, ok: bool) {
    histogram!(
        STORE_SECONDS,
        "store" => store,
        "op" => op,
        "result" => if ok { "ok" } else { "error" }
    )
    .record(watch.seconds());
}

/// A worker's count of the inbox: deliveries by state, and how long the oldest pending one
/// has waited.
#[cfg(feature = "inbox")]
pub(crate) fn inbox_counts(
    by_state: [(&'static str, u64); 5],
    oldest_pending: std::time::Duration,
) {
    use metrics::gauge;
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    for (state, count) in by_state {
        gauge!(INBOX_DELIVERIES, "state" => state).set(count as f64);
    }
    gauge!(INBOX_OLDEST_PENDING_SECONDS).set(oldest_pending.as_secs_f64());
}

/// The inbox worker's handler returned (or panicked).
#[cfg(feature = "inbox")]
pub(crate) fn inbox_handler(timer: HandlerTimer) {
    handles().inbox_handler[timer.event].record(timer.watch.seconds());
}

/// What an inbox attempt came to: `handled`, `superseded`, `retry`, `dead`, `released` or
/// `lost`.
#[cfg(feature = "inbox")]
pub(crate) fn inbox_attempt(result: &'static str) {
    counter!(INBOX_ATTEMPTS_TOTAL, "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_labels_are_known_names_or_other() {
        let label = |kind: Option<&EventKind>| event_label(event_index(kind));
        assert_eq!(label(Some(&EventKind::CallCompleted)), "call.completed");
        assert_eq!(label(Some(&"call.voicemail".into())), "other");
        assert_eq!(label(Some(&"\u{1b}[31m".into())), "other");
        assert_eq!(label(None), "other");
    }

    #[test]
    fn every_rejection_kind_has_its_counter_in_table_order() {
        for (at, kind) in RejectionKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, at, "{kind:?}");
        }
    }
}
