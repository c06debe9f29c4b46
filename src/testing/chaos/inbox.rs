//! Checking an inbox handler: the deliveries go through the layer into a real SQLite inbox in
//! a temporary file, on a fake clock, and the kit claims and runs them itself, one at a time,
//! so that a crash or a lost lease falls exactly between claiming, running and recording.

use std::{
    collections::HashSet,
    fmt,
    marker::PhantomData,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};
use tower_layer::Layer;

use super::{
    check::{ChaosRun, Target},
    events::Planned,
    fault::Plan,
    route::send,
    Chaos, ChaosFailure, ChaosFault,
};
use crate::{
    event::FromEventData,
    inbox::{Backoff, ClaimedDelivery, Handler, Inbox, InboxError, Job, Runs, TxFuture, Worker},
    middleware::RingyoWebhook,
    replay::ClaimToken,
    testing::{ManualClock, DEVELOPMENT_SECRET},
    verify::{after, Clock, DeliveryId},
    RingyoWebhookLayer,
};

/// The kit's worker's lease; a crash or a lost lease moves the clock past it.
const LEASE: Duration = Duration::from_secs(30);

impl<S: fmt::Debug + PartialEq> Chaos<S> {
    /// Checks `handler` as a [`Worker`] runs it on an inbox (set as
    /// [`order_by_subject`](Self::order_by_subject), [`reorder_window`](Self::reorder_window)
    /// and [`skip_superseded`](Self::skip_superseded) say), under every [`ChaosFault`]:
    /// your state must end as after one clean, in-order delivery of each event.
    ///
    /// A plain handler runs at least once, so only an idempotent one passes
    /// [`CrashBeforeCommit`](ChaosFault::CrashBeforeCommit) and
    /// [`LeaseLost`](ChaosFault::LeaseLost); see the [type's docs](Self) for an example.
    ///
    /// # Errors
    ///
    /// [`ChaosFailure`]: the first fault that changed the state, and the delivery that did it.
    ///
    /// # Panics
    ///
    /// If the temporary inbox cannot be opened or fails.
    pub async fn check_handler<T, H>(&self, handler: H) -> Result<(), ChaosFailure>
    where
        T: FromEventData + Send + 'static,
        H: Handler<T>,
    {
        let handler = Arc::new(handler);
        let make = move |inbox: &Inbox, _: &Arc<AtomicBool>| {
            let handler = Arc::clone(&handler);
            Worker::new(inbox, move |job: Job<T>| handler.call(job))
        };
        self.check(&Inboxed::new(make)).await
    }

    /// Checks `handler` as [`Worker::transactional`] runs it on SQLite: its writes commit
    /// with the delivery's outcome, and a [`CrashBeforeCommit`](ChaosFault::CrashBeforeCommit)
    /// rolls them back. Create your tables in [`setup`](Self::setup), on
    /// [`ChaosRun::sqlite_pool`], and read them there in [`snapshot`](Self::snapshot).
    ///
    /// ```
    /// use ringyo_webhook::{
    ///     inbox::{sqlx::{self, Sqlite, Transaction}, Job},
    ///     testing::Chaos,
    ///     Event,
    /// };
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Chaos::samples()
    ///     .setup(|run| async move {
    ///         sqlx::query("CREATE TABLE handled (delivery TEXT PRIMARY KEY, event TEXT)")
    ///             .execute(&run.sqlite_pool().await)
    ///             .await
    ///             .unwrap();
    ///     })
    ///     .snapshot(|run| async move {
    ///         sqlx::query_as::<_, (String,)>("SELECT event FROM handled ORDER BY event")
    ///             .fetch_all(&run.sqlite_pool().await)
    ///             .await
    ///             .unwrap()
    ///     })
    ///     .check_transactional(|job: Job<Event>, tx: &mut Transaction<'static, Sqlite>| {
    ///         Box::pin(async move {
    ///             sqlx::query("INSERT INTO handled VALUES ($1, $2)")
    ///                 .bind(job.delivery_id().to_string())
    ///                 .bind(job.event.kind.as_str())
    ///                 .execute(&mut **tx)
    ///                 .await?;
    ///             Ok::<(), sqlx::Error>(())
    ///         })
    ///     })
    ///     .await
    ///     .unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChaosFailure`]: the first fault that changed the state, and the delivery that did it.
    ///
    /// # Panics
    ///
    /// If the temporary inbox cannot be opened or fails.
    pub async fn check_transactional<T, F, E>(&self, handler: F) -> Result<(), ChaosFailure>
    where
        T: FromEventData + Send + 'static,
        F: for<'t> Fn(Job<T>, &'t mut Transaction<'static, Sqlite>) -> TxFuture<'t, E>
            + Send
            + Sync
            + 'static,
        E: fmt::Display + Send + 'static,
    {
        let handler = Arc::new(handler);
        let make = move |inbox: &Inbox, crashing: &Arc<AtomicBool>| {
            let (handler, crashing) = (Arc::clone(&handler), Arc::clone(crashing));
            let crashes = in_transaction(move |job: Job<T>, tx| {
                let ran = handler(job, tx);
                let crash = crashing.load(Ordering::SeqCst);
                Box::pin(async move {
                    ran.await.map_err(|err| err.to_string())?;
                    // The process dies before the commit: the transaction is rolled back.
                    if crash {
                        return Err(CRASHED.to_owned());
                    }
                    Ok(())
                })
            });
            Worker::transactional(inbox, crashes).expect("the kit's inbox is on SQLite")
        };
        self.check(&Inboxed::new(make)).await
    }
}

/// Why a crashed transactional attempt's transaction was rolled back.
const CRASHED: &str = "the process crashed before the commit (delivery chaos)";

/// Gives a closure the signature of a transactional handler.
fn in_transaction<T, G>(handler: G) -> G
where
    G: for<'t> Fn(Job<T>, &'t mut Transaction<'static, Sqlite>) -> TxFuture<'t, String>,
{
    handler
}

/// An inbox, its worker made by `make`, and the flag that makes a transactional handler's
/// attempt end as a crash.
struct Inboxed<T, H, M> {
    make: M,
    crashing: Arc<AtomicBool>,
    marker: PhantomData<fn() -> (T, H)>,
}

impl<T, H, M> Inboxed<T, H, M> {
    fn new(make: M) -> Self {
        Self {
            make,
            crashing: Arc::default(),
            marker: PhantomData,
        }
    }
}

/// One run's inbox, its door and its worker.
struct World<T, H> {
    clock: ManualClock,
    inbox: Inbox,
    service: RingyoWebhook<Inbox>,
    worker: Worker<T, H>,
    /// The deliveries whose first attempt has had its fault.
    faulted: HashSet<DeliveryId>,
    /// Last, so that it goes after the inbox.
    _file: TempFile,
}

impl<T, H, M> Target for Inboxed<T, H, M>
where
    T: FromEventData + Send + 'static,
    H: Runs<T>,
    M: Fn(&Inbox, &Arc<AtomicBool>) -> Worker<T, H>,
{
    type World = World<T, H>;

    fn suffers(&self, _: ChaosFault) -> bool {
        true
    }

    fn begin<S>(&self, fault: Option<ChaosFault>, chaos: &Chaos<S>) -> (ChaosRun, World<T, H>) {
        let file = TempFile::new();
        let clock = ManualClock::new(DateTime::UNIX_EPOCH);
        let settings = &chaos.inbox;
        let mut inbox = Inbox::open(&file.url())
            .unwrap_or_else(|err| panic!("cannot open the chaos kit's inbox: {err}"))
            .clock(clock.clone())
            .order_by_subject(settings.order_by_subject);
        if let Some(window) = settings.reorder_window {
            inbox = inbox.reorder_window(window);
        }
        let secret = chaos.secret().unwrap_or(DEVELOPMENT_SECRET);
        let layer = RingyoWebhookLayer::new(secret)
            .unwrap_or_else(|err| panic!("Chaos cannot verify with this secret: {err}"))
            .clock(clock.clone());
        let worker = (self.make)(&inbox, &self.crashing)
            .skip_superseded(settings.skip_superseded.iter().cloned())
            .lease(LEASE)
            // Retries wait on the fake clock, which the kit moves: any back-off costs nothing.
            .backoff(Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
            ));
        let run = ChaosRun {
            fault,
            inbox: Some(inbox.clone()),
        };
        let world = World {
            clock,
            service: layer.layer(inbox.clone()),
            inbox,
            worker,
            faulted: HashSet::new(),
            _file: file,
        };
        (run, world)
    }

    async fn play(
        &self,
        world: &mut World<T, H>,
        deliveries: &[Planned],
        plan: &Plan,
    ) -> Result<(), ChaosFailure> {
        for arrival in &plan.arrivals {
            self.drain(world, plan, Some(arrival.at)).await;
            world.clock.set(world.clock.now().max(arrival.at));
            let planned = &deliveries[arrival.index];
            send(&world.service, planned, arrival.twice, plan.fault).await?;
        }
        self.drain(world, plan, None).await;
        Ok(())
    }
}

impl<T, H, M> Inboxed<T, H, M>
where
    T: FromEventData + Send + 'static,
    H: Runs<T>,
{
    /// Runs what is due, one delivery at a time, moving the clock to each retry and reorder
    /// window as it comes due, up to `until` (`None`: until nothing is left).
    async fn drain(&self, world: &mut World<T, H>, plan: &Plan, until: Option<DateTime<Utc>>) {
        let store = Arc::clone(world.inbox.store());
        loop {
            let now = world.clock.now();
            let token = ClaimToken::new();
            let lease_until = after(now, LEASE);
            // A suspect (its attempt ended with its lease) first, as a worker takes it.
            let claimed = if kit(store.suspects(now).await) > 0 {
                kit(store.claim_suspect(now, lease_until, token).await)
            } else {
                kit(store.claim(now, lease_until, 1, token).await).pop()
            };
            if let Some(delivery) = claimed {
                self.attempt(world, plan, token, delivery).await;
                continue;
            }
            let next = match kit(store.next_due().await) {
                // Due, but not claimable yet: its subject waits for an earlier delivery's retry.
                Some(due) if due <= now => after(now, Duration::from_secs(1)),
                Some(due) => due,
                None => return,
            };
            if until.is_some_and(|until| next > until) {
                return;
            }
            world.clock.set(next);
        }
    }

    /// Runs `delivery`, with the plan's fault if this is its first attempt and the plan
    /// faults it in the worker.
    async fn attempt(
        &self,
        world: &mut World<T, H>,
        plan: &Plan,
        token: ClaimToken,
        delivery: ClaimedDelivery,
    ) {
        let faulted = plan.in_worker.contains(&delivery.id) && world.faulted.insert(delivery.id);
        match plan.fault.filter(|_| faulted) {
            Some(ChaosFault::CrashBeforeCommit) => {
                self.crashing.store(true, Ordering::SeqCst);
                world.worker.run_claimed(token, delivery, false).await;
                self.crashing.store(false, Ordering::SeqCst);
                world.clock.advance(LEASE + Duration::from_secs(1));
            }
            Some(ChaosFault::LeaseLost) => {
                world.clock.advance(LEASE + Duration::from_secs(1));
                let now = world.clock.now();
                let other = ClaimToken::new();
                let store = world.inbox.store();
                let taken = kit(store.claim_suspect(now, after(now, LEASE), other).await);
                if let Some(taken) = taken {
                    world.worker.run_claimed(other, taken, true).await;
                }
                // The first attempt goes on, and its outcome is refused.
                world.worker.run_claimed(token, delivery, true).await;
            }
            _ => world.worker.run_claimed(token, delivery, true).await,
        }
    }
}

/// The kit's own inbox's answer; its failure is the kit's, not the handler's.
fn kit<V>(result: Result<V, InboxError>) -> V {
    result.unwrap_or_else(|err| panic!("the chaos kit's inbox failed: {err}"))
}

/// A fresh SQLite file in the temporary directory, removed (with its `-wal` and `-shm`) when
/// dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ringyo-chaos-{}-{n}.db", std::process::id());
        let file = Self(std::env::temp_dir().join(name));
        file.remove();
        file
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            // Absent is as good as removed.
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.remove();
    }
}
