//! [`Inbox`]: accepts verified deliveries durably and hands them to workers.

use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{
    commit::Batcher,
    filter::ReplayFilter,
    store::{DeadDelivery, InboxAdmin, InboxError, InboxStats, NewDelivery, Stored},
};
use crate::{
    extract::VerifiedPayload,
    outage::Outage,
    verify::{Clock, DeliveryId, SystemClock},
};

/// A durable inbox: a delivery is acknowledged only once it is committed, and workers run
/// your handler on it afterwards, at least once, surviving crashes and restarts.
///
/// Ringyo retries a delivery until it sees a 2xx, and never after. A receiver that answers 2xx
/// and then loses the event (a crash, a deploy, an OOM kill before the work is done) loses it
/// for good. The inbox closes that gap: [`accept`](Self::accept), or the inbox itself as the
/// tower service on your route, returns only after the verified bytes are committed to the
/// store, and a [`Worker`](super::Worker) takes them from there.
///
/// As a service behind [`RingyoWebhookLayer`](crate::RingyoWebhookLayer) it answers 202 once
/// stored, 200 with `x-webhook-duplicate: true` for a delivery stored before, and 503
/// `inbox_unavailable` with `Retry-After` if the commit failed or took longer than the commit
/// time-out (500 `webhook_layer_missing` without the layer: nothing verified the bytes).
///
/// Deliveries arriving together share one transaction (group commit), so under load the cost
/// of a durable commit (an fsync) is shared; each caller still hears back only after its own
/// row is durable. A clone is a handle to the same inbox.
///
/// ```no_run
/// use axum::{routing::post_service, Router};
/// use ringyo_webhook::{inbox::{Inbox, Job, Worker}, Event, RingyoWebhookLayer};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = Inbox::open("sqlite://ringyo-inbox.db")?;
/// let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
/// let app: Router = Router::new()
///     .route("/webhooks/ringyo", post_service(inbox.clone()).route_layer(layer));
///
/// let worker = Worker::new(&inbox, |job: Job<Event>| async move {
///     println!("{} (attempt {})", job.event.kind, job.attempt);
///     Ok::<(), std::convert::Infallible>(())
/// });
/// tokio::spawn(worker.run(std::future::pending()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Inbox {
    store: Arc<dyn InboxAdmin>,
    /// The store, when it is the crate's SQL one: for transactional handlers.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    sql: Option<super::SqlInbox>,
    shared: Arc<Shared>,
    config: Config,
    clock: Arc<dyn Clock>,
}

struct Shared {
    /// The group-commit task, started by the first delivery.
    committer: OnceLock<Batcher<NewDelivery, Stored>>,
    /// Bumped after each commit that stored something new: wakes this process's workers.
    stored: watch::Sender<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    max_batch: usize,
    commit_timeout: Duration,
    order_by_subject: bool,
    reorder_window: Duration,
}

impl Inbox {
    /// The default for [`max_batch`](Self::max_batch).
    pub const DEFAULT_MAX_BATCH: usize = 256;
    /// The default for [`commit_timeout`](Self::commit_timeout).
    pub const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default for [`reorder_window`](Self::reorder_window): 1 s.
    pub const DEFAULT_REORDER_WINDOW: Duration = Duration::from_secs(1);

    /// An inbox over `store`.
    pub fn new(store: impl InboxAdmin) -> Self {
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        let sql = (&store as &dyn std::any::Any)
            .downcast_ref::<super::SqlInbox>()
            .cloned();
        #[allow(unused_mut)] // set only with the SQL stores
        let mut inbox = Self::from_arc(Arc::new(store));
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        {
            inbox.sql = sql;
        }
        inbox
    }

    /// An inbox over a store you keep a handle to.
    pub fn from_arc(store: Arc<dyn InboxAdmin>) -> Self {
        Self {
            store,
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            sql: None,
            shared: Arc::new(Shared {
                committer: OnceLock::new(),
                stored: watch::Sender::new(0),
            }),
            config: Config {
                max_batch: Self::DEFAULT_MAX_BATCH,
                commit_timeout: Self::DEFAULT_COMMIT_TIMEOUT,
                order_by_subject: false,
                reorder_window: Self::DEFAULT_REORDER_WINDOW,
            },
            clock: Arc::new(SystemClock),
        }
    }

    /// An inbox in the database at `url`: `sqlite://PATH` or `postgres://...`. See
    /// [`SqlInbox::open`](super::SqlInbox::open); it connects lazily.
    ///
    /// # Errors
    ///
    /// As [`SqlInbox::open`](super::SqlInbox::open).
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
    pub fn open(url: &str) -> Result<Self, InboxError> {
        super::SqlInbox::open(url).map(Self::new)
    }

    /// The most deliveries one transaction commits; default [`DEFAULT_MAX_BATCH`]. `1` commits
    /// each delivery on its own, which the benchmarks compare against. Set it before the first
    /// delivery.
    ///
    /// [`DEFAULT_MAX_BATCH`]: Self::DEFAULT_MAX_BATCH
    #[must_use]
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.config.max_batch = max_batch.max(1);
        self
    }

    /// How long a delivery waits for its commit before it is answered 503 (and so retried);
    /// default [`DEFAULT_COMMIT_TIMEOUT`], 5 s, within the 5 s Ringyo gives a receiver to
    /// answer. A commit that finishes later still stores the delivery, and the retry is then a
    /// duplicate.
    ///
    /// [`DEFAULT_COMMIT_TIMEOUT`]: Self::DEFAULT_COMMIT_TIMEOUT
    #[must_use]
    pub fn commit_timeout(mut self, timeout: Duration) -> Self {
        self.config.commit_timeout = timeout;
        self
    }

    /// Runs the deliveries of one [`Subject`](crate::Subject) (one call, appointment, agent
    /// or phone number, of one tenant) one at a time, in the order of their signed
    /// timestamps; default off.
    ///
    /// Ringyo retries a failed delivery after 1 s, 5 s, 30 s, 2 min and 10 min, so a call's
    /// `call.ringing` can arrive after its `call.completed`, and with several workers two
    /// events of one call would run at once. With ordering on, for the deliveries this inbox
    /// stores from then on:
    ///
    /// - **one at a time:** at most one delivery of a subject is in a handler at any moment,
    ///   across every worker and every process sharing the database. Other subjects go on: on
    ///   Postgres, workers skip a subject another is claiming rather than wait for it.
    /// - **in event order:** among a subject's waiting deliveries, the one with the earliest
    ///   `timestamp` runs first (ties: the order of receipt), once it is due.
    /// - **late arrivals:** a delivery older than the newest handled of its subject is
    ///   *superseded*: [`Job::superseded_by`](super::Job::superseded_by) says so, and a worker
    ///   can skip those of chosen kinds without running the handler
    ///   ([`Worker::skip_superseded`](super::Worker::skip_superseded)). The inbox remembers a
    ///   subject's newest handled event for the worker's retention (7 days by default), far
    ///   past Ringyo's last retry.
    /// - **a reorder window:** each delivery waits [`reorder_window`](Self::reorder_window)
    ///   before it is due, so events sent close together are sorted before any of them runs.
    /// - **head of line per subject, never global:** while a delivery is retrying (its
    ///   back-off, up to the worker's maximum attempts), the later deliveries of its subject
    ///   wait for it, and the other subjects go on. A dead letter stops the wait: the
    ///   subject's next delivery runs, and the dead one, if replayed, runs in order again
    ///   (superseded if a newer one was handled meanwhile). An earlier event arriving during
    ///   the back-off runs first.
    ///
    /// Deliveries without a subject (`credits.low`, names this version does not know) are not
    /// ordered. Set it the same on every process sharing the database: a delivery is ordered
    /// if the process that stored it had ordering on, whichever process runs it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use ringyo_webhook::inbox::Inbox;
    ///
    /// # fn demo() -> Result<(), ringyo_webhook::inbox::InboxError> {
    /// let inbox = Inbox::open("sqlite://ringyo-inbox.db")?
    ///     .order_by_subject(true)
    ///     .reorder_window(Duration::from_millis(500));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn order_by_subject(mut self, on: bool) -> Self {
        self.config.order_by_subject = on;
        self
    }

    /// With [`order_by_subject`](Self::order_by_subject), how long each delivery waits before
    /// it is due, so that events sent close together are sorted first; default
    /// [`DEFAULT_REORDER_WINDOW`](Self::DEFAULT_REORDER_WINDOW), 1 s.
    ///
    /// The trade: every ordered delivery starts that much later, and only events arriving
    /// within it of each other are sorted before the first runs. Ringyo sends each event as it
    /// happens, on a connection of its own, so events of one moment (a call's
    /// `call.completed`, `call.recording.ready` and `call.transcript.ready` at hang-up)
    /// arrive in any order, within the network's jitter of each other: well under a second.
    /// Anything later is a retry, at least 1 s after the failed attempt and up to 12 minutes
    /// after the first: no window could wait for those at a sane latency, and the
    /// superseded rule handles them instead. A second covers the first case at the cost of a
    /// second of latency, which a webhook's consumer rarely notices; zero keeps only the
    /// one-at-a-time order of what has arrived.
    #[must_use]
    pub fn reorder_window(mut self, window: Duration) -> Self {
        self.config.reorder_window = window;
        self
    }

    /// The clock the inbox and its workers read: when a delivery was received, when a lease
    /// ends, when a retry is due, what is past the retention. Default the system's; a test
    /// moves a [`ManualClock`](crate::testing::ManualClock) instead of waiting.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The time now, by the inbox's clock.
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The inbox's clock, for a worker's handlers.
    pub(super) fn shared_clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// Stores a verified delivery; returns once it is durable.
    ///
    /// # Errors
    ///
    /// [`InboxError`] if the commit failed or did not finish within the commit time-out:
    /// the delivery must not be acknowledged.
    pub async fn accept(&self, payload: &VerifiedPayload) -> Result<Stored, InboxError> {
        let delivery = self.new_delivery(payload);
        tokio::time::timeout(
            self.config.commit_timeout,
            self.committer().submit(delivery),
        )
        .await
        .unwrap_or(Err(InboxError::TimedOut))
    }

    fn committer(&self) -> &Batcher<NewDelivery, Stored> {
        self.shared.committer.get_or_init(|| {
            let store = Arc::clone(&self.store);
            let stored = self.shared.stored.clone();
            let outage = Outage::default();
            Batcher::spawn(
                self.config.max_batch,
                move |deliveries| {
                    let store = Arc::clone(&store);
                    async move { store.store(&deliveries).await }
                },
                move |result| match result {
                    Ok(outcomes) => {
                        if outage.recovered() {
                            tracing::info!("the inbox commits again");
                        }
                        if outcomes.contains(&Stored::New) {
                            // This process's workers; other processes hear the database's NOTIFY.
                            wake(&stored);
                        }
                    }
                    Err(err) => {
                        if outage.failed() {
                            tracing::error!(
                                "the inbox cannot commit deliveries ({err}); answering 503 \
                                 until it can"
                            );
                        }
                    }
                },
            )
        })
    }

    /// The store as the crate's [`SqlInbox`](super::SqlInbox), when it is one (an inbox from
    /// [`open`](Self::open), or [`new`](Self::new) on a `SqlInbox`): for its pools, to create
    /// your own tables beside the inbox's.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
    pub fn sql(&self) -> Option<&super::SqlInbox> {
        self.sql.as_ref()
    }

    /// The store, for workers and administration.
    pub fn store(&self) -> &Arc<dyn InboxAdmin> {
        &self.store
    }

    /// Counts by state; see [`InboxStats`].
    ///
    /// # Errors
    ///
    /// [`InboxError`] if the database cannot answer.
    pub async fn stats(&self) -> Result<InboxStats, InboxError> {
        self.store.stats().await
    }

    /// Dead-lettered deliveries, oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`InboxError`] if the database cannot answer.
    pub async fn dead(&self, limit: u32) -> Result<Vec<DeadDelivery>, InboxError> {
        self.store.dead(limit).await
    }

    /// Runs a dead-lettered delivery again, from its first attempt; `false` if no delivery
    /// with that id is dead-lettered.
    ///
    /// # Errors
    ///
    /// [`InboxError`] if the database cannot answer.
    pub async fn replay(&self, id: DeliveryId) -> Result<bool, InboxError> {
        Ok(self.replay_matching(&ReplayFilter::dead().id(id)).await? == 1)
    }

    /// Runs the handled or dead-lettered deliveries that `filter` matches again, from their
    /// first attempt, and returns how many; ordered ones go through their subject's order
    /// again. See [`ReplayFilter`].
    ///
    /// # Errors
    ///
    /// [`InboxError`] if the database cannot answer.
    pub async fn replay_matching(&self, filter: &ReplayFilter) -> Result<u64, InboxError> {
        let replayed = self.store.replay(filter, self.now()).await?;
        if replayed > 0 {
            wake(&self.shared.stored);
        }
        Ok(replayed)
    }

    /// `Ok` only if the inbox can commit now: for a readiness check, and at start.
    ///
    /// With [`SqlInbox`](super::SqlInbox) this commits a small write, so it fails on a full
    /// disk, a read-only file system and a corrupt file (where a `SELECT 1` passes), and
    /// passes again as soon as deliveries would commit.
    ///
    /// # Errors
    ///
    /// [`InboxError::Corrupt`] for a corrupt SQLite file (do not start: its message says what
    /// to do), another [`InboxError`] if the inbox cannot commit now.
    pub async fn ping(&self) -> Result<(), InboxError> {
        self.store.ping().await
    }

    /// A receiver that changes after each commit storing something new.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.stored.subscribe()
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("max_batch", &self.config.max_batch)
            .field("commit_timeout", &self.config.commit_timeout)
            .field("order_by_subject", &self.config.order_by_subject)
            .field("reorder_window", &self.config.reorder_window)
            .finish_non_exhaustive()
    }
}

/// Bumps the counter idle workers watch.
pub(super) fn wake(stored: &watch::Sender<u64>) {
    stored.send_modify(|count| *count = count.wrapping_add(1));
}

impl Inbox {
    /// The row for a verified delivery: what the envelope says of itself, read from the bytes
    /// the signature covers, and the bytes.
    fn new_delivery(&self, payload: &VerifiedPayload) -> NewDelivery {
        // As the layer read it: a verified body it let through without a readable head
        // (freshness off) is still stored, and the worker dead-letters it with the reason,
        // rather than Ringyo's copy being lost.
        let head = payload.head();
        let received_at = self.now();
        let subject = payload.subject();
        let ordered = self.config.order_by_subject && subject.is_some();
        let due_at = if ordered {
            received_at + self.config.reorder_window
        } else {
            received_at
        };
        NewDelivery {
            id: payload.delivery_id(),
            event: head.kind().map(ToString::to_string).unwrap_or_default(),
            timestamp: head.timestamp().ok(),
            received_at,
            payload: payload.bytes().clone(),
            tenant: payload.tenant().cloned(),
            subject,
            ordered,
            due_at,
        }
    }
}
