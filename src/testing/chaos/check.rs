//! [`Chaos`]: the builder, and the comparison of each faulted run with the clean one.

use std::{fmt, future::Future, pin::Pin};

use super::{
    events::{self, Planned},
    fault::Plan,
    ChaosFailure, ChaosFault,
};
use crate::testing::TestDelivery;
#[cfg(feature = "sqlite")]
use crate::{event::EventKind, inbox::Inbox};

/// A future the user's setup or snapshot returns; not `Send`: the kit awaits it in place.
type Local<T> = Pin<Box<dyn Future<Output = T>>>;

/// Plays a set of events against your handler under delivery faults (duplicates, retries out
/// of order, a crash before the commit, a lease lost mid-handler) and checks that your state
/// ends as after one clean, in-order delivery of each event.
///
/// Ringyo delivers at least once and in no promised order, and the inbox runs handlers at
/// least once: a handler that counts, appends or overwrites without looking at the delivery's
/// id and time is wrong in production long before it is wrong in a test. `Chaos` makes those
/// deliveries happen in the test: each [`ChaosFault`] is a run of its own, on a fresh state,
/// through the real [`RingyoWebhookLayer`](crate::RingyoWebhookLayer) and, for inbox
/// handlers, a real SQLite inbox in a temporary file on a fake clock (no server, no waiting:
/// a run takes milliseconds). After each run it takes your [`snapshot`](Self::snapshot) and
/// compares it with the clean run's; when one differs, it plays the fault on each delivery
/// alone to name the one that does it, and fails with a [`ChaosFailure`] whose `Display`
/// shows the fault, the delivery and the difference.
///
/// What it checks:
///
/// - [`check_service`](Self::check_service): your axum `Router` (any tower service) with
///   the layer on its route; each delivery must be answered 2xx.
/// - [`check_handler`](Self::check_handler): an inbox [`Handler`](crate::inbox::Handler),
///   as [`Worker::new`](crate::inbox::Worker::new) runs it (feature `sqlite`).
/// - [`check_transactional`](Self::check_transactional): a handler in the inbox's SQLite
///   transaction, as [`Worker::transactional`](crate::inbox::Worker::transactional) runs it.
///
/// Each run starts from a fresh state: a new inbox file, and your [`setup`](Self::setup)
/// (create your tables there, or empty your in-memory map). Events are ordered by their
/// signed timestamps; give them distinct ones (every [`TestDelivery`] has by default).
///
/// ```
/// use std::{collections::HashMap, sync::{Arc, Mutex}};
/// use ringyo_webhook::{inbox::Job, testing::Chaos, Event};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // The last status of each call, as an older event arriving late must not change it.
/// let statuses = Arc::new(Mutex::new(HashMap::<String, String>::new()));
/// let seen = Arc::clone(&statuses);
/// let handler = move |job: Job<Event>| {
///     let statuses = Arc::clone(&seen);
///     async move {
///         if let (Some(call), None) = (&job.subject, job.superseded_by) {
///             let status = job.event.kind.as_str().to_owned();
///             statuses.lock().unwrap().insert(call.id().to_owned(), status);
///         }
///         Ok::<(), String>(())
///     }
/// };
///
/// let reset = Arc::clone(&statuses);
/// let read = Arc::clone(&statuses);
/// Chaos::samples()
///     .order_by_subject(true)
///     .setup(move |_| { reset.lock().unwrap().clear(); async {} })
///     .snapshot(move |_| { let now = read.lock().unwrap().clone(); async move { now } })
///     .check_handler(handler)
///     .await
///     .unwrap();
/// # }
/// ```
pub struct Chaos<S = ()> {
    deliveries: Vec<TestDelivery>,
    faults: Vec<ChaosFault>,
    setup: Option<Box<dyn Fn(ChaosRun) -> Local<()>>>,
    snapshot: Box<dyn Fn(ChaosRun) -> Local<S>>,
    #[cfg(feature = "sqlite")]
    pub(super) inbox: InboxSettings,
}

/// How the kit's inbox and worker are set, as yours are.
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone, Default)]
pub(super) struct InboxSettings {
    pub(super) order_by_subject: bool,
    pub(super) reorder_window: Option<std::time::Duration>,
    pub(super) skip_superseded: Vec<EventKind>,
}

impl Chaos {
    /// Plays `events`, each a delivery signed with its own secret (the layer verifies with
    /// the first one's), in the order of their timestamps; no snapshot yet.
    pub fn new(events: impl IntoIterator<Item = TestDelivery>) -> Self {
        Self {
            deliveries: events.into_iter().collect(),
            faults: ChaosFault::ALL.to_vec(),
            setup: None,
            snapshot: Box::new(|_| Box::pin(async {})),
            #[cfg(feature = "sqlite")]
            inbox: InboxSettings::default(),
        }
    }

    /// Plays the crate's samples: two calls from `call.initiated` to
    /// `call.transcript.ready`, their events interleaved 200 ms apart (call ids `call_a` and
    /// `call_b`), then a `credits.low`, signed with the
    /// [`DEVELOPMENT_SECRET`](crate::testing::DEVELOPMENT_SECRET).
    pub fn samples() -> Self {
        Self::new(events::samples())
    }
}

impl<S> Chaos<S> {
    /// Plays only these faults (default [`ChaosFault::ALL`]).
    #[must_use]
    pub fn faults(mut self, faults: impl IntoIterator<Item = ChaosFault>) -> Self {
        self.faults = faults.into_iter().collect();
        self
    }

    /// Runs before each run, on its fresh inbox: create your tables there, or empty the state
    /// your handler keeps elsewhere.
    #[must_use]
    pub fn setup<F, Fut>(mut self, setup: F) -> Self
    where
        F: Fn(ChaosRun) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.setup = Some(Box::new(move |run| Box::pin(setup(run))));
        self
    }

    /// Reads your state after each run, for comparing with the clean run's: your tables
    /// (through [`ChaosRun::sqlite_pool`]), or your in-memory map.
    #[must_use]
    pub fn snapshot<T, F, Fut>(self, snapshot: F) -> Chaos<T>
    where
        F: Fn(ChaosRun) -> Fut + 'static,
        Fut: Future<Output = T> + 'static,
    {
        Chaos {
            deliveries: self.deliveries,
            faults: self.faults,
            setup: self.setup,
            snapshot: Box::new(move |run| Box::pin(snapshot(run))),
            #[cfg(feature = "sqlite")]
            inbox: self.inbox,
        }
    }

    /// The secret the kit's layer verifies with: the first event's.
    #[cfg(feature = "sqlite")]
    pub(super) fn secret(&self) -> Option<&str> {
        self.deliveries.first().map(TestDelivery::signing_secret)
    }

    /// The inbox orders each subject's deliveries, as
    /// [`Inbox::order_by_subject`](crate::inbox::Inbox::order_by_subject) does; default off.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    #[must_use]
    pub fn order_by_subject(mut self, on: bool) -> Self {
        self.inbox.order_by_subject = on;
        self
    }

    /// The inbox's [reorder window](crate::inbox::Inbox::reorder_window); default the
    /// inbox's.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    #[must_use]
    pub fn reorder_window(mut self, window: std::time::Duration) -> Self {
        self.inbox.reorder_window = Some(window);
        self
    }

    /// The worker skips superseded deliveries of these kinds, as
    /// [`Worker::skip_superseded`](crate::inbox::Worker::skip_superseded) does.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    #[must_use]
    pub fn skip_superseded(mut self, kinds: impl IntoIterator<Item = EventKind>) -> Self {
        self.inbox.skip_superseded = kinds.into_iter().collect();
        self
    }
}

impl<S: fmt::Debug + PartialEq> Chaos<S> {
    /// Plays the clean run, then each fault `target` can suffer, and compares the snapshots.
    pub(super) async fn check(&self, target: &impl Target) -> Result<(), ChaosFailure> {
        let mut deliveries: Vec<Planned> =
            self.deliveries.iter().cloned().map(Planned::new).collect();
        deliveries.sort_by_key(|planned| planned.at);
        let clean = self
            .state(target, &deliveries, &Plan::clean(&deliveries))
            .await?;
        for &fault in self.faults.iter().filter(|&&fault| target.suffers(fault)) {
            let Some(plan) = Plan::new(fault, &deliveries, None) else {
                continue;
            };
            let faulted = self.state(target, &deliveries, &plan).await?;
            if faulted == clean {
                continue;
            }
            // Which delivery: the first, in timestamp order, that changes the state alone.
            for (index, planned) in deliveries.iter().enumerate() {
                let Some(alone) = Plan::new(fault, &deliveries, Some(index)) else {
                    continue;
                };
                let state = self.state(target, &deliveries, &alone).await?;
                if state != clean {
                    let (delivery, note) = (Some(&planned.described), alone.note);
                    return Err(ChaosFailure::differs(fault, delivery, note, &clean, &state));
                }
            }
            return Err(ChaosFailure::differs(fault, None, None, &clean, &faulted));
        }
        Ok(())
    }

    /// The snapshot after one run of `plan`, from a fresh state.
    async fn state(
        &self,
        target: &impl Target,
        deliveries: &[Planned],
        plan: &Plan,
    ) -> Result<S, ChaosFailure> {
        let (run, mut world) = target.begin(plan.fault, self);
        if let Some(setup) = &self.setup {
            setup(run.clone()).await;
        }
        target.play(&mut world, deliveries, plan).await?;
        Ok((self.snapshot)(run).await)
    }
}

impl<S> fmt::Debug for Chaos<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Chaos");
        debug
            .field("deliveries", &self.deliveries.len())
            .field("faults", &self.faults)
            .field("setup", &self.setup.is_some());
        #[cfg(feature = "sqlite")]
        debug.field("inbox", &self.inbox);
        debug.finish_non_exhaustive()
    }
}

/// What runs the events: a route, or an inbox and its worker.
pub(super) trait Target {
    /// What one run keeps: the service, and for the inbox its clock and worker.
    type World;

    /// Whether this fault can happen to it.
    fn suffers(&self, fault: ChaosFault) -> bool;

    /// A fresh run under `fault`, set as `chaos` says.
    fn begin<S>(&self, fault: Option<ChaosFault>, chaos: &Chaos<S>) -> (ChaosRun, Self::World);

    /// Sends the deliveries as `plan` says, and runs what they started to its end.
    async fn play(
        &self,
        world: &mut Self::World,
        deliveries: &[Planned],
        plan: &Plan,
    ) -> Result<(), ChaosFailure>;
}

/// One run of the events, as your [`setup`](Chaos::setup) and [`snapshot`](Chaos::snapshot)
/// see it: its fresh inbox (for an inbox handler) and its fault.
#[derive(Debug, Clone)]
pub struct ChaosRun {
    pub(super) fault: Option<ChaosFault>,
    #[cfg(feature = "sqlite")]
    pub(super) inbox: Option<Inbox>,
}

impl ChaosRun {
    /// The run's fault; `None` for the clean run.
    pub fn fault(&self) -> Option<ChaosFault> {
        self.fault
    }

    /// The run's inbox, in a fresh temporary SQLite file; `None` when checking a service.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn inbox(&self) -> Option<&Inbox> {
        self.inbox.as_ref()
    }

    /// A pool on the run's inbox file, for your tables: a transactional handler writes to
    /// them in the inbox's transaction.
    ///
    /// # Panics
    ///
    /// When checking a service (there is no inbox), or if the file cannot be opened.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub async fn sqlite_pool(&self) -> crate::inbox::sqlx::SqlitePool {
        let inbox = self.inbox().expect("a service's run has no inbox");
        let sql = inbox.sql().expect("the kit's inbox is a SqlInbox");
        sql.sqlite_pool()
            .await
            .unwrap_or_else(|err| panic!("cannot open the run's inbox file: {err}"))
    }
}
