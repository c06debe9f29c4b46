//! The background work the worker runs for each stored delivery.

use std::{
    fmt,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use ringyo_webhook::{
    inbox::{
        sqlx::{self, Transaction},
        Handler, Job, TxFuture,
    },
    Event, EventKind, SubjectKind,
};
use tokio::time::Instant;

/// The events whose only effect is a call's status, which a newer event of the same call
/// already set: the worker skips them when superseded (`superseded event` in the log) rather
/// than move a call back from `completed` to `ringing`. Events that carry something of their
/// own (a completed call's duration, a transcript) still run.
pub const STATUS_EVENTS: [EventKind; 4] = [
    EventKind::CallStarted,
    EventKind::CallInitiated,
    EventKind::CallRinging,
    EventKind::CallAnswered,
];

/// The simulated work per event, from `RINGYO_WORK_MS`: none, a fixed time (`20`), or a time
/// between two bounds (`5-20`), the same for every attempt of a delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    least: Duration,
    most: Duration,
}

impl Work {
    /// No simulated work.
    pub const NONE: Self = Self {
        least: Duration::ZERO,
        most: Duration::ZERO,
    };

    /// Between `least` and `most` (swapped if given the other way round).
    pub fn between(least: Duration, most: Duration) -> Self {
        Self {
            least: least.min(most),
            most: least.max(most),
        }
    }

    /// The work for `job`: spread over the bounds by its delivery id, which is a digest.
    fn of<T>(self, job: &Job<T>) -> Duration {
        let span = self.most.saturating_sub(self.least).as_millis();
        if span == 0 {
            return self.least;
        }
        let mut hasher = DefaultHasher::new();
        job.delivery_id().hash(&mut hasher);
        let extra = u128::from(hasher.finish()) % (span + 1);
        self.least + Duration::from_millis(u64::try_from(extra).unwrap_or(0))
    }
}

/// The background work: `work` of simulated downstream calls, then a `processed event` log
/// line without payload values ([`log_event`]). The receiver runs [`counting_sqlite`] or
/// [`counting_postgres`], which also count each call's events in the inbox's database; this is
/// the same work without the count, for a worker of your own.
pub fn process(work: Work) -> impl Handler<Event> {
    move |job: Job<Event>| async move {
        let started = Instant::now();
        note_unknown(&job);
        pause(work.of(&job)).await;
        log_event(&job, started.elapsed());
        Ok::<(), std::convert::Infallible>(())
    }
}

/// The event names whose deliveries the handler fails on purpose, from `RINGYO_FAIL_EVENTS`
/// (see [`fail_events_from`](crate::config::fail_events_from)): a way to try retries, dead
/// letters and their replay. None by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailEvents(Arc<[EventKind]>);

impl FailEvents {
    /// Fails deliveries of these events.
    pub fn new(events: impl IntoIterator<Item = EventKind>) -> Self {
        Self(events.into_iter().collect())
    }

    /// Whether none is failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The events failed on purpose.
    pub fn events(&self) -> &[EventKind] {
        &self.0
    }

    /// The failure for `kind`, if it is one of them.
    fn check(&self, kind: &EventKind) -> Result<(), HandlerError> {
        if self.0.contains(kind) {
            return Err(HandlerError::OnPurpose(kind.clone()));
        }
        Ok(())
    }
}

/// Why one of the receiver's handlers failed: the worker retries it, then dead-letters it
/// with this sentence (`inbox dead` lists it).
#[derive(Debug)]
pub enum HandlerError {
    /// Its event is in `RINGYO_FAIL_EVENTS`.
    OnPurpose(EventKind),
    /// The demo effect's write failed.
    Database(sqlx::Error),
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // An event name is signed text: escaped, as the log and `inbox dead` escape it.
            Self::OnPurpose(kind) => write!(
                f,
                "failed on purpose: {} is in RINGYO_FAIL_EVENTS",
                kind.as_str().escape_debug()
            ),
            Self::Database(err) => write!(f, "cannot count the call: {err}"),
        }
    }
}

impl std::error::Error for HandlerError {}

impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(err)
    }
}

/// Says, at debug level, that `job`'s event is not one this version knows: it is handled as
/// any other (stored, ordered by its subject, counted when about a call), never refused, since
/// Ringyo adds events; this line is how to notice one, or a name mistyped in a test.
fn note_unknown(job: &Job<Event>) {
    if let EventKind::Unknown(name) = &job.event.kind {
        tracing::debug!(
            event = name.as_str(),
            delivery_id = %job.event.delivery_id,
            "event name unknown to this version; handled as any other"
        );
    }
}

/// Sleeps `work`, the stand-in for a downstream call.
async fn pause(work: Duration) {
    if !work.is_zero() {
        tokio::time::sleep(work).await;
    }
}

/// The table of the receiver's demo effect, in the inbox's database: how many deliveries of
/// each call were handled.
pub const CALL_COUNTS: &str = "CREATE TABLE IF NOT EXISTS call_counts \
     (call_id TEXT PRIMARY KEY, handled INTEGER NOT NULL)";

/// Counts a handled `call.*` delivery of the call: one more in `call_counts`.
const COUNT: &str = "INSERT INTO call_counts (call_id, handled) VALUES ($1, 1) \
     ON CONFLICT (call_id) DO UPDATE SET handled = call_counts.handled + 1";

/// The receiver's handlers: the background work, then each `call.*` delivery counted in
/// [`CALL_COUNTS`] inside the delivery's own transaction, so the count moves once per
/// handled delivery whatever crashes (see `Worker::transactional`); then `processed event`.
/// A delivery of an event in `fail` fails instead ([`HandlerError::OnPurpose`]).
/// On SQLite the transaction holds the file's write lock throughout, work included.
macro_rules! counting {
    ($name:ident, $db:ty, $engine:literal) => {
        #[doc = concat!("The receiver's transactional handler on ", $engine, ".")]
        pub fn $name(
            work: Work,
            fail: FailEvents,
        ) -> impl for<'t> Fn(
            Job<Event>,
            &'t mut Transaction<'static, $db>,
        ) -> TxFuture<'t, HandlerError>
               + Send
               + Sync
               + 'static {
            move |job: Job<Event>, tx: &mut Transaction<'static, $db>| {
                let fail = fail.clone();
                Box::pin(async move {
                    let started = Instant::now();
                    note_unknown(&job);
                    fail.check(&job.event.kind)?;
                    pause(work.of(&job)).await;
                    let call = job
                        .subject
                        .as_ref()
                        .filter(|s| s.kind() == SubjectKind::Call);
                    if let Some(call) = call {
                        sqlx::query(COUNT)
                            .bind(call.id())
                            .execute(&mut **tx)
                            .await?;
                    }
                    log_event(&job, started.elapsed());
                    Ok(())
                })
            }
        }
    };
}

counting!(counting_sqlite, sqlx::Sqlite, "SQLite");
counting!(counting_postgres, sqlx::Postgres, "Postgres");

/// The `processed event` line for a finished delivery: its event, delivery id, timestamp,
/// attempt and subject (`call:call_123`, else `-`), `took_ms`, how long the handler had run
/// (fractional milliseconds), and `superseded=true` when a newer event of its subject was
/// handled before it ran.
///
/// The line is written from inside the handler, as its last act: its time less `took_ms` is
/// when the handler started, so a reader of the log can tell whether two handlers of one
/// subject ever ran at once.
pub fn log_event(job: &Job<Event>, took: Duration) {
    let took_ms = took.as_secs_f64() * 1e3;
    let event = &job.event;
    let subject = job.subject.as_ref().map(ToString::to_string);
    // Signed strings as `&str` fields, which log escaped: an event name may hold a newline or
    // a terminal's escape codes. `superseded` is left off the line (`None`) unless it is true.
    tracing::info!(
        event = event.kind.as_str(),
        delivery_id = %event.delivery_id,
        timestamp = %event.timestamp,
        attempt = job.attempt,
        subject = subject.as_deref().unwrap_or("-"),
        took_ms,
        superseded = job.superseded_by.map(|_| true),
        "processed event"
    );
}
