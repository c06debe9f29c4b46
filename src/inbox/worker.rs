//! [`Worker`]: takes stored deliveries and runs the handler on them.

use std::{
    fmt,
    future::Future,
    marker::PhantomData,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    sync::{watch, Notify},
    task::JoinSet,
    time::Instant,
};

use super::{
    backoff::Backoff,
    commit::Batcher,
    handle::Inbox,
    job::{Handler, Plain, Policy, Run, Runs, Settled},
    store::{ClaimedDelivery, HandOver, InboxAdmin, Settlement},
};
use crate::{
    event::{EventKind, FromEventData},
    outage::Outage,
    replay::ClaimToken,
    verify::Clock,
};

/// Runs a handler on the inbox's deliveries: at least once, in practice once.
///
/// A worker claims due deliveries with a lease, runs the handler on each (up to its
/// concurrency at a time), extends the lease while a long handler runs, and marks the delivery
/// done when the handler returns `Ok`. An error or panic is retried with [`Backoff`], and after
/// the last attempt dead-lettered (see [`Inbox::dead`] and [`Inbox::replay`]), never dropped.
/// If the process dies mid-handler, the lease runs out and a worker (here after a restart, or
/// in another replica) takes the delivery again, as a suspect (below).
///
/// Outcomes of handlers that finish together share one transaction, as accepted deliveries
/// do, so a fast handler is not held to one delivery per disk flush.
///
/// It wakes as soon as this process stores a delivery, and on Postgres when another replica
/// does (`LISTEN/NOTIFY`); it also polls, as the fallback. It deletes handled deliveries after
/// the retention.
///
/// Defaults: concurrency 8, lease 30 s, 12 attempts, [`Backoff::DEFAULT`], poll every 5 s,
/// shutdown grace 20 s, retention 7 days.
///
/// # A delivery that kills the process
///
/// A handler that aborts, overflows its stack or is OOM-killed takes down every handler
/// running beside it, and none of their attempts finish. Once their leases run out (after a
/// restart, or in another replica) they are *suspects*, and a worker that finds some logs at
/// warn how many, stops claiming, lets its running handlers end, then runs the suspects one at
/// a time, each with nothing else running in the worker. A suspect that finishes (handled, or
/// failed and retried as usual, or unreadable) is cleared. A delivery under which the process
/// dies twice while it runs alone is dead-lettered with "the process died 2 times while this
/// delivery ran alone", logged at error. A death beside other deliveries never counts toward
/// that, so the deliveries a crash took with it are handled, not dead-lettered; and attempts
/// that never finished do not use up [`max_attempts`](Self::max_attempts). Twice, not once:
/// a process also dies for reasons of its own (an OOM kill caused by something else in it, a
/// node lost), and one such death must not dead-letter an innocent delivery.
///
/// The cost: while suspects are due, the worker runs one handler at a time, and a culprit
/// takes the process down three times (once beside others, twice alone), each a restart and
/// a lease long, before it is dead-lettered. A lease lost without a crash (the database away
/// for longer than it) also makes a suspect, cleared once it finishes; taken again by the same
/// process, which is alive, it is never counted as a death.
///
/// Alone means alone in this worker, which is alone in the process only if it is the
/// process's one worker: raise [`concurrency`](Self::concurrency) rather than start a second
/// worker. With two in one process, a suspect running alone in one shares the process with
/// the other's handlers (or suspect), a crash they cause counts against it, and a delivery
/// that did nothing may be dead-lettered. Replicas need no coordination: a crash takes only
/// its own process's handlers.
///
/// # Ordered deliveries
///
/// With [`Inbox::order_by_subject`], a worker takes at most one delivery of a subject at a
/// time (any worker, any replica), so the concurrency is spread over subjects: one call's
/// five events take one slot after another, while sixteen calls take sixteen slots. A slow
/// subject holds back only itself. A delivery superseded by a newer handled one of its
/// subject runs with [`Job::superseded_by`](super::Job::superseded_by) set, or is skipped
/// for the kinds given to [`skip_superseded`](Self::skip_superseded).
///
/// ```no_run
/// use std::time::Duration;
/// use ringyo_webhook::{inbox::{Inbox, Job, Worker}, Event};
///
/// # async fn demo(inbox: Inbox) {
/// let worker = Worker::new(&inbox, |job: Job<Event>| async move {
///     println!("{} {}", job.delivery_id(), job.event.kind);
///     Ok::<(), String>(())
/// })
/// .concurrency(16)
/// .max_attempts(5);
/// // Runs until Ctrl-C, then lets running handlers finish for up to the grace period.
/// worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
/// # }
/// ```
pub struct Worker<T, H> {
    inbox: Inbox,
    handler: Arc<H>,
    config: Config,
    skip_superseded: Arc<[EventKind]>,
    marker: PhantomData<fn() -> T>,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    concurrency: usize,
    policy: Policy,
    poll_interval: Duration,
    shutdown_grace: Duration,
    retention: Duration,
}

/// How often a worker deletes handled deliveries past the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);
/// The most outcomes one transaction records (each running handler queues at most two: an
/// extension and its outcome).
const MAX_SETTLE_BATCH: usize = 256;
/// The shortest lease: the worker extends it every third, which must leave time to commit.
const MIN_LEASE: Duration = Duration::from_millis(30);
/// The longest wait before a claim that failed is tried again.
const MAX_CLAIM_RETRY: Duration = Duration::from_secs(1);

impl<T, H> Worker<T, Plain<H>>
where
    T: FromEventData + Send + 'static,
    H: Handler<T>,
{
    /// A worker that runs `handler` on `inbox`'s deliveries, with the defaults below; nothing
    /// runs until [`run`](Self::run). For a handler that writes to the inbox's database, see
    /// [`transactional`](Self::transactional).
    pub fn new(inbox: &Inbox, handler: H) -> Self {
        Self::with(inbox, Plain(handler))
    }
}

impl<T, H> Worker<T, H>
where
    T: FromEventData + Send + 'static,
    H: Runs<T>,
{
    /// The default for [`concurrency`](Self::concurrency).
    pub const DEFAULT_CONCURRENCY: usize = 8;
    /// The default for [`lease`](Self::lease).
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
    /// The default for [`max_attempts`](Self::max_attempts).
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 12;
    /// The default for [`poll_interval`](Self::poll_interval).
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
    /// The default for [`shutdown_grace`](Self::shutdown_grace).
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
    /// The default for [`retention`](Self::retention): 7 days.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    /// A worker that runs `handler`, with the defaults below.
    pub(super) fn with(inbox: &Inbox, handler: H) -> Self {
        Self {
            inbox: inbox.clone(),
            handler: Arc::new(handler),
            config: Config {
                concurrency: Self::DEFAULT_CONCURRENCY,
                policy: Policy {
                    lease: Self::DEFAULT_LEASE,
                    max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
                    backoff: Backoff::DEFAULT,
                },
                poll_interval: Self::DEFAULT_POLL_INTERVAL,
                shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
                retention: Self::DEFAULT_RETENTION,
            },
            skip_superseded: Arc::new([]),
            marker: PhantomData,
        }
    }

    /// How many handlers run at once; default [`DEFAULT_CONCURRENCY`](Self::DEFAULT_CONCURRENCY),
    /// at least 1.
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.config.concurrency = concurrency.max(1);
        self
    }

    /// How long a claim lasts without being extended; default
    /// [`DEFAULT_LEASE`](Self::DEFAULT_LEASE), at least 30 ms. The worker extends it every
    /// third of that while the handler runs; after a crash, the delivery runs again once it
    /// has run out.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.policy.lease = lease.max(MIN_LEASE);
        self
    }

    /// Attempts before a delivery is dead-lettered; default
    /// [`DEFAULT_MAX_ATTEMPTS`](Self::DEFAULT_MAX_ATTEMPTS), at least 1. Attempts that never
    /// finished (their process died) do not count: see [A delivery that kills the
    /// process](Self#a-delivery-that-kills-the-process).
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.config.policy.max_attempts = max_attempts.max(1);
        self
    }

    /// The wait between attempts; default [`Backoff::DEFAULT`].
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.policy.backoff = backoff;
        self
    }

    /// How often an idle worker looks for due deliveries it was not woken for (retries come
    /// due, another process on the same SQLite file stored one); default
    /// [`DEFAULT_POLL_INTERVAL`](Self::DEFAULT_POLL_INTERVAL).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// After shutdown is signalled, how long running handlers may take to finish; then they
    /// are cancelled and their deliveries given back, due at once. Default
    /// [`DEFAULT_SHUTDOWN_GRACE`](Self::DEFAULT_SHUTDOWN_GRACE), inside the usual 30 s an
    /// orchestrator waits before it kills.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// How long handled deliveries are kept, so a late retry by Ringyo is still known as a
    /// duplicate; default [`DEFAULT_RETENTION`](Self::DEFAULT_RETENTION), 7 days. Keep it well
    /// over the layer's freshness window (1 h by default), past which a retry is refused
    /// anyway.
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config.retention = retention;
        self
    }

    /// With [`Inbox::order_by_subject`], the kinds of event not run when superseded (older
    /// than the newest handled of their subject): such a delivery is recorded as superseded
    /// (in [`InboxStats::superseded`](super::InboxStats::superseded), the metrics, and a
    /// `superseded event` log line) without running the handler. Default none: every
    /// delivery runs, and [`Job::superseded_by`](super::Job::superseded_by) tells the handler.
    ///
    /// Choose the kinds whose only effect is a state the newer event already set: a call's
    /// `call.ringing` after its `call.completed` would move it back. Keep the kinds that carry
    /// something of their own (a transcript, a recording) running.
    ///
    /// ```no_run
    /// use ringyo_webhook::{inbox::{Inbox, Job, Worker}, Event, EventKind};
    ///
    /// # fn demo(inbox: Inbox) {
    /// let worker = Worker::new(&inbox, |job: Job<Event>| async move { Ok::<(), String>(()) })
    ///     .skip_superseded([EventKind::CallInitiated, EventKind::CallRinging, EventKind::CallAnswered]);
    /// # }
    /// ```
    ///
    /// [`Inbox::order_by_subject`]: super::Inbox::order_by_subject
    #[must_use]
    pub fn skip_superseded(mut self, kinds: impl IntoIterator<Item = EventKind>) -> Self {
        self.skip_superseded = kinds.into_iter().collect();
        self
    }

    /// Runs until `shutdown` resolves, then stops claiming, lets running handlers finish for
    /// up to the grace period, and gives back what is left.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let store = Arc::clone(self.inbox.store());
        let woken = Arc::new(Notify::new());
        // Background helpers that end when claiming does, or when this future is dropped.
        let listener = AbortOnDrop(tokio::spawn(listen_elsewhere(
            Arc::clone(&store),
            Arc::clone(&woken),
            self.config.poll_interval,
        )));
        #[cfg(feature = "metrics")]
        let counting = AbortOnDrop(tokio::spawn(count_for_metrics(self.inbox.clone())));
        let (cancel, cancelled) = watch::channel(false);
        let handing_over = HandingOver {
            on: Arc::new(AtomicBool::new(false)),
            batches: Arc::new(AtomicUsize::new(0)),
            clock: self.inbox.shared_clock(),
            lease: self.config.policy.lease,
        };
        let mut claiming = Claiming {
            worker: &self,
            settler: settler(&store, Some(handing_over.clone())),
            handing_over: handing_over.on,
            store,
            woken,
            cancelled,
            running: JoinSet::new(),
            suspicion: Suspicion::default(),
            outage: Outage::default(),
        };
        claiming.until(shutdown).await;
        claiming.handing_over.store(false, Ordering::Relaxed);
        drop(listener);
        #[cfg(feature = "metrics")]
        drop(counting);
        let mut running = claiming.running;
        tracing::info!(running = running.len(), "worker stopping: no new claims");
        let deadline = tokio::time::sleep(self.config.shutdown_grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                () = &mut deadline, if !*cancel.borrow() => {
                    // Each task gives its delivery back, then ends.
                    let _ = cancel.send(true);
                }
            }
        }
        tracing::info!("worker stopped");
    }

    /// What runs one delivery claimed with `token`, recording through `settler`.
    fn job(
        &self,
        settler: Batcher<Settlement, Settled>,
        cancel: watch::Receiver<bool>,
        token: ClaimToken,
    ) -> Run<T, H> {
        Run {
            settler,
            handler: Arc::clone(&self.handler),
            token,
            policy: self.config.policy,
            skip_superseded: Arc::clone(&self.skip_superseded),
            cancel,
            clock: self.inbox.shared_clock(),
            marker: PhantomData,
        }
    }

    /// Runs `delivery`, claimed with `token`, once, as [`run`](Self::run) does (the handler,
    /// with the lease kept while it runs), and records its outcome only if `record`. Without,
    /// the attempt ends as one whose process died just after the handler returned: nothing is
    /// recorded, and the delivery stays claimed until its lease runs out.
    ///
    /// For the test kit's delivery chaos (`testing::Chaos`), which claims deliveries itself
    /// on a fake clock to put its faults between claiming, running and recording.
    #[cfg(all(feature = "test-util", feature = "sqlite"))]
    pub(crate) async fn run_claimed(
        &self,
        token: ClaimToken,
        delivery: ClaimedDelivery,
        record: bool,
    ) {
        let settler = if record {
            settler(self.inbox.store(), None)
        } else {
            // Says "lease lost" to every settlement, as a dead process records nothing.
            Batcher::spawn(
                1,
                |settlements: Vec<Settlement>| async move { Ok(vec![(false, None); settlements.len()]) },
                |_| {},
            )
        };
        // Never cancelled; the sender is kept until the run ends, as a closed channel would
        // end the wait for a cancellation.
        let (never, cancel) = watch::channel(false);
        self.job(settler, cancel, token).run(delivery).await;
        drop(never);
    }

    async fn prune(&self, store: &dyn InboxAdmin) {
        let before = self.inbox.now() - self.config.retention;
        match store.prune(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "deleted handled deliveries past the retention"),
            Err(err) => tracing::warn!("cannot prune handled deliveries ({err})"),
        }
    }
}

/// One run of a worker's claim loop: what it claims with, and what it has started.
struct Claiming<'w, T, H> {
    worker: &'w Worker<T, H>,
    store: Arc<dyn InboxAdmin>,
    /// Notified when another process may have stored a delivery.
    woken: Arc<Notify>,
    /// The group commit for the handlers' outcomes.
    settler: Batcher<Settlement, Settled>,
    /// Whether the group commit hands tasks their next deliveries (see [`HandingOver`]):
    /// while this loop claims, and no suspect waits or runs alone.
    handing_over: Arc<AtomicBool>,
    /// Turns `true` when the shutdown grace is over: handlers give their deliveries back.
    cancelled: watch::Receiver<bool>,
    running: JoinSet<()>,
    suspicion: Suspicion,
    /// Claims failing: logged once per outage.
    outage: Outage,
}

impl<T, H> Claiming<'_, T, H>
where
    T: FromEventData + Send + 'static,
    H: Runs<T>,
{
    /// Claims and starts deliveries until `shutdown` resolves; running handlers go on.
    async fn until(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let config = self.worker.config;
        let mut stored = self.worker.inbox.subscribe();
        let mut next_prune = Instant::now();
        loop {
            while self.running.try_join_next().is_some() {}
            if Instant::now() >= next_prune {
                self.worker.prune(&*self.store).await;
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            let mut wake_at = Instant::now() + config.poll_interval;
            if self.handing_over.load(Ordering::Relaxed) {
                // Tasks that go on from delivery to delivery rarely end to wake this loop:
                // wake it to look for suspects as often as it would between claims.
                let every = LOOK_FOR_SUSPECTS_EVERY.min(config.poll_interval);
                wake_at = wake_at.min(Instant::now() + every);
            }
            match self.claim().await {
                Ok(Claimed::Filled) => continue,
                Ok(claimed) => {
                    if self.outage.recovered() {
                        tracing::info!("claiming deliveries again");
                    }
                    if claimed == Claimed::AllDue {
                        if let Ok(Some(due)) = self.store.next_due().await {
                            let wait = (due - self.worker.inbox.now()).to_std();
                            wake_at = wake_at.min(Instant::now() + wait.unwrap_or_default());
                        }
                    }
                }
                Err(err) => {
                    if self.outage.failed() {
                        tracing::warn!("cannot claim deliveries ({err}); retrying");
                    }
                    wake_at = Instant::now() + config.poll_interval.min(MAX_CLAIM_RETRY);
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                _ = stored.changed() => {}
                () = self.woken.notified() => {}
                // A finished job frees a slot, and may have scheduled a retry due before the poll.
                Some(_) = self.running.join_next() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// Claims what [`next`] says and starts it: deliveries up to the free slots, or one suspect
    /// to run alone once nothing else runs.
    async fn claim(&mut self) -> Result<Claimed, super::InboxError> {
        let running = self.running.len();
        let concurrency = self.worker.config.concurrency;
        let full = free(concurrency, running, self.suspicion.alone) == 0;
        // With every slot taken and handing over, tasks go on from delivery to delivery, and
        // a slot frees only at a turn: a look for suspects, when the loop wakes (at most once
        // a second while there are none), is what stops that when one is due.
        if full && !self.handing_over.load(Ordering::Relaxed) {
            return Ok(Claimed::Waiting);
        }
        if !full {
            // Whatever ran alone has ended.
            self.suspicion.alone = false;
        }
        let now = self.worker.inbox.now();
        let lease_until = now + self.worker.config.policy.lease;
        let token = ClaimToken::new();
        let looked_at = Instant::now();
        if self.suspicion.look(looked_at) {
            let due = self.store.suspects(now).await?;
            let every = LOOK_FOR_SUSPECTS_EVERY.min(self.worker.config.poll_interval);
            self.suspicion.found(due, looked_at, every);
        }
        let due = self.suspicion.due;
        self.handing_over.store(due == 0, Ordering::Relaxed);
        if full {
            return Ok(Claimed::Waiting);
        }
        let limit = match next(concurrency, running, due) {
            Next::Wait => return Ok(Claimed::Waiting),
            Next::Claim(limit) => limit,
            Next::ClaimSuspect => match self.store.claim_suspect(now, lease_until, token).await? {
                Some(suspect) => {
                    tracing::info!(delivery_id = %suspect.id, "running a suspect alone");
                    self.suspicion.alone = true;
                    self.handing_over.store(false, Ordering::Relaxed);
                    self.start(token, suspect);
                    return Ok(Claimed::Waiting);
                }
                // Another worker took it first.
                None => concurrency,
            },
        };
        let claimed = self
            .store
            .claim(
                now,
                lease_until,
                u32::try_from(limit).unwrap_or(u32::MAX),
                token,
            )
            .await?;
        let filled = claimed.len() == limit;
        for delivery in claimed {
            self.start(token, delivery);
        }
        Ok(if filled {
            Claimed::Filled
        } else {
            Claimed::AllDue
        })
    }

    fn start(&mut self, token: ClaimToken, delivery: ClaimedDelivery) {
        let run = self
            .worker
            .job(self.settler.clone(), self.cancelled.clone(), token);
        self.running.spawn(run.run(delivery));
    }
}

/// How a claim went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claimed {
    /// Every slot it asked for was filled: more may be due.
    Filled,
    /// It took all that was due.
    AllDue,
    /// It claimed nothing more for now: wait until a running handler ends.
    Waiting,
}

/// The claim loop's knowledge of suspects: deliveries whose last attempt ended with its
/// process, run one at a time with nothing else running, to find one that kills the process.
#[derive(Debug, Default)]
struct Suspicion {
    /// A suspect runs alone: claim nothing until it ends.
    alone: bool,
    /// How many were due at the last look.
    due: u64,
    /// When to look again after a look found none (none yet: at once).
    next_look: Option<Instant>,
}

/// How often a worker that found no suspect looks again, at most (and at least every poll).
///
/// A suspect comes due when a lease runs out (30 s by default) or a stopping worker gives
/// one back, so a second more changes nothing; a look before each claim counted the table
/// dozens of times a second under load, and Postgres, before its first statistics, may
/// count it by reading every row.
const LOOK_FOR_SUSPECTS_EVERY: Duration = Duration::from_secs(1);

impl Suspicion {
    /// Whether to count the suspects due before claiming at `at`: while some were due at the
    /// last look, always; otherwise once `every` since.
    fn look(&self, at: Instant) -> bool {
        self.due > 0 || self.next_look.is_none_or(|next| at >= next)
    }

    /// Notes how many suspects are due, looked at `at`; warns when some appear.
    fn found(&mut self, due: u64, at: Instant, every: Duration) {
        self.next_look = Some(at + every);
        if due > 0 && self.due == 0 {
            tracing::warn!(
                suspects = due,
                "suspects due: {due} (deliveries whose attempt ended with its process: a \
                 crash, or a lease lost); running them one at a time, each alone, to find any \
                 that kills the process"
            );
        }
        self.due = due;
    }
}

/// Free slots: none while a suspect runs alone.
fn free(concurrency: usize, running: usize, alone: bool) -> usize {
    if alone && running > 0 {
        return 0;
    }
    concurrency.saturating_sub(running)
}

/// What the claim loop does next, with `running` handlers and `suspects` due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Claim up to this many deliveries.
    Claim(usize),
    /// Claim one suspect, to run with nothing else running in this worker.
    ClaimSuspect,
    /// Claim nothing until a running handler ends.
    Wait,
}

/// A suspect is due: wait for the running handlers to end, claiming nothing new, then run it
/// alone. Otherwise fill the free slots.
fn next(concurrency: usize, running: usize, suspects: u64) -> Next {
    match (suspects, running) {
        (0, _) if running < concurrency => Next::Claim(concurrency - running),
        (0, _) => Next::Wait,
        (_, 0) => Next::ClaimSuspect,
        _ => Next::Wait,
    }
}

/// The worker's group commit for its handlers' outcomes: finishing together, they share one
/// transaction, as accepted deliveries do. With `handing_over`, while it is on, that
/// transaction also claims a next delivery for each task that finished one (see
/// [`HandingOver`]). A handler's own task logs a failure.
fn settler(
    store: &Arc<dyn InboxAdmin>,
    handing_over: Option<HandingOver>,
) -> Batcher<Settlement, Settled> {
    let store = Arc::clone(store);
    Batcher::spawn(
        MAX_SETTLE_BATCH,
        move |settlements| {
            let store = Arc::clone(&store);
            let hand_over = handing_over
                .as_ref()
                .and_then(|handing_over| handing_over.next(&settlements));
            async move {
                let Some(hand_over) = hand_over else {
                    let held = store.settle(&settlements).await?;
                    return Ok(held.into_iter().map(|held| (held, None)).collect());
                };
                let settled = store.settle_and_hand_over(&settlements, &hand_over).await?;
                Ok(settled
                    .into_iter()
                    .map(|(held, next)| (held, next.map(|next| (hand_over.token, next))))
                    .collect())
            }
        },
        |_| {},
    )
}

/// How a worker hands a task that finished a delivery its next one, claimed in the
/// transaction that records the outcome (see
/// [`InboxStore::settle_and_hand_over`](super::InboxStore::settle_and_hand_over)): the
/// delivery then needs no claim transaction of its own, and the task no turn of the claim loop.
///
/// Every [`TAKE_TURNS_EVERY`]th group commit of outcomes hands nothing over, so that lanes
/// with a long backlog go back among the others, which the claim loop takes the earliest due
/// first, rather than keeping their tasks while other lanes wait.
#[derive(Clone)]
struct HandingOver {
    /// Off while the claim loop does not claim: stopping, or a suspect due or running alone.
    on: Arc<AtomicBool>,
    batches: Arc<AtomicUsize>,
    clock: Arc<dyn Clock>,
    lease: Duration,
}

/// See [`HandingOver`].
const TAKE_TURNS_EVERY: usize = 8;

impl HandingOver {
    /// The claims of the group commit of `settlements`, if it hands over: counted only if one
    /// ends an attempt (a batch of lease extensions frees no task).
    fn next(&self, settlements: &[Settlement]) -> Option<HandOver> {
        let ends = settlements
            .iter()
            .any(|settlement| settlement.outcome.ends_attempt());
        if !ends {
            return None;
        }
        let batch = self.batches.fetch_add(1, Ordering::Relaxed);
        if !self.on.load(Ordering::Relaxed) || batch % TAKE_TURNS_EVERY == TAKE_TURNS_EVERY - 1 {
            return None;
        }
        let now = self.clock.now();
        Some(HandOver::new(now, now + self.lease, ClaimToken::new()))
    }
}

/// How often a worker counts the inbox for its gauges: a count reads the whole table, and
/// Prometheus scrapes every 15 s or more.
#[cfg(feature = "metrics")]
const COUNT_EVERY: Duration = Duration::from_secs(15);

/// Keeps the inbox gauges current: counts the inbox every [`COUNT_EVERY`].
#[cfg(feature = "metrics")]
async fn count_for_metrics(inbox: Inbox) {
    let mut tick = tokio::time::interval(COUNT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A failure is the claim loop's to report; the gauges keep their last values.
        if let Ok(stats) = inbox.stats().await {
            let oldest_pending = stats
                .oldest_pending
                .and_then(|at| (inbox.now() - at).to_std().ok())
                .unwrap_or_default();
            crate::metrics::record::inbox_counts(
                [
                    ("pending", stats.pending),
                    ("running", stats.running),
                    ("done", stats.done),
                    ("superseded", stats.superseded),
                    ("dead", stats.dead),
                ],
                oldest_pending,
            );
        }
    }
}

/// A spawned task that is aborted when this handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Wakes the worker whenever another process may have stored a delivery.
async fn listen_elsewhere(store: Arc<dyn InboxAdmin>, woken: Arc<Notify>, pause: Duration) {
    loop {
        match store.changed_elsewhere().await {
            Ok(()) => woken.notify_one(),
            Err(err) => {
                tracing::debug!("not listening for other replicas' deliveries ({err})");
                // What was missed meanwhile, the next claim finds.
                woken.notify_one();
                tokio::time::sleep(pause).await;
            }
        }
    }
}

impl<T, H> fmt::Debug for Worker<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("inbox", &self.inbox)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::Settle;

    #[test]
    fn suspects_are_counted_at_once_then_each_second_while_none_and_always_while_some() {
        let every = Duration::from_secs(1);
        let start = Instant::now();
        let mut suspicion = Suspicion::default();
        assert!(suspicion.look(start), "the first claim looks");
        suspicion.found(0, start, every);
        assert!(!suspicion.look(start + Duration::from_millis(999)));
        assert!(suspicion.look(start + every));
        suspicion.found(2, start + every, every);
        assert!(
            suspicion.look(start + every),
            "while some are due, every claim looks"
        );
    }

    #[test]
    fn outcomes_hand_over_only_while_the_loop_claims_and_every_eighth_commit_takes_turns() {
        let handing_over = HandingOver {
            on: Arc::new(AtomicBool::new(false)),
            batches: Arc::new(AtomicUsize::new(0)),
            clock: Arc::new(crate::SystemClock),
            lease: Duration::from_secs(30),
        };
        let settlement = |outcome| Settlement {
            id: "ab".repeat(32).parse().unwrap(),
            token: ClaimToken::new(),
            outcome,
        };
        let now = crate::SystemClock.now();
        let done = [settlement(Settle::Done { at: now })];
        let extended = [settlement(Settle::Extend { lease_until: now })];
        assert!(
            handing_over.next(&done).is_none(),
            "off: nothing handed over"
        );
        handing_over.on.store(true, Ordering::Relaxed);
        let handed: Vec<bool> = (1..=16)
            .map(|_| {
                assert!(
                    handing_over.next(&extended).is_none(),
                    "extensions free no task"
                );
                handing_over.next(&done).is_some()
            })
            .collect();
        let turns: Vec<usize> = (1..=16).filter(|at| !handed[at - 1]).collect();
        assert_eq!(
            turns,
            [7, 15],
            "each eighth commit of outcomes hands nothing over"
        );
        let hand_over = handing_over.next(&done).unwrap();
        assert_eq!(
            hand_over.lease_until - hand_over.now,
            chrono::TimeDelta::seconds(30)
        );
        assert_ne!(
            hand_over.token,
            handing_over.next(&done).unwrap().token,
            "a claim each"
        );
    }

    #[test]
    fn without_suspects_the_free_slots_are_filled() {
        assert_eq!(next(8, 0, 0), Next::Claim(8));
        assert_eq!(next(8, 5, 0), Next::Claim(3));
        assert_eq!(next(8, 8, 0), Next::Wait);
    }

    /// A crash takes every handler running in the process with it: a suspect runs only when
    /// nothing else does, so a crash while it runs is its own.
    #[test]
    fn a_due_suspect_waits_for_running_handlers_then_runs_alone() {
        assert_eq!(next(8, 3, 7), Next::Wait, "nothing new while others run");
        assert_eq!(next(8, 0, 7), Next::ClaimSuspect);
        assert_eq!(free(8, 1, true), 0, "nothing beside a suspect");
        assert_eq!(free(8, 0, true), 8, "the suspect ended");
        assert_eq!(free(8, 3, false), 5);
    }

    /// A suspect due beside ordinary deliveries runs with nothing beside it, and the rest then
    /// run as many at a time as the concurrency allows.
    #[cfg(feature = "sqlite")]
    #[tokio::test(flavor = "multi_thread")]
    async fn a_suspect_runs_with_nothing_beside_it_then_the_rest_together() {
        use std::sync::{
            atomic::{AtomicUsize, Ordering},
            Mutex,
        };

        use crate::{
            inbox::{InboxStore, Job, NewDelivery, SqlInbox},
            verify::{Clock, SystemClock},
            Event,
        };

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let store = SqlInbox::open(&format!("sqlite://{}", path.display())).unwrap();
        let now = SystemClock.now();
        let delivery = |n: u32| NewDelivery {
            id: format!("{n:064x}").parse().unwrap(),
            event: "call.completed".to_owned(),
            timestamp: None,
            received_at: now,
            payload: format!(
                concat!(
                    r#"{{"event":"call.completed","timestamp":"2026-01-01T00:00:00Z","#,
                    r#""data":{{"id":"call_{n}"}}}}"#
                ),
                n = n
            )
            .into(),
            tenant: None,
            subject: None,
            ordered: false,
            due_at: now,
        };
        store.store(&[delivery(0)]).await.unwrap();
        // Claimed by a process that died, and its lease has run out.
        store.claim(now, now, 1, ClaimToken::new()).await.unwrap();
        store
            .store(&(1..=16).map(delivery).collect::<Vec<_>>())
            .await
            .unwrap();

        // Each run: its call id, and the most handlers running at once while it ran.
        let runs = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        let handler = {
            let (runs, running) = (Arc::clone(&runs), Arc::clone(&running));
            move |job: Job<Event>| {
                let (runs, running) = (Arc::clone(&runs), Arc::clone(&running));
                async move {
                    let at_start = running.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let at_end = running.fetch_sub(1, Ordering::SeqCst);
                    let Event::CallCompleted(call) = &job.event.data else {
                        return Err("unexpected event");
                    };
                    let id = call.id.clone().unwrap_or_default();
                    runs.lock().unwrap().push((id, at_start.max(at_end)));
                    Ok(())
                }
            }
        };
        let inbox = Inbox::new(store);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(Worker::new(&inbox, handler).concurrency(8).run(async {
            let _ = stopped.await;
        }));
        for _ in 0..200 {
            if inbox.stats().await.unwrap().done == 17 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop.send(());
        worker.await.unwrap();

        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 17, "{runs:?}");
        assert_eq!(
            runs[0],
            ("call_0".to_owned(), 1),
            "the suspect first, alone"
        );
        let most = runs[1..].iter().map(|(_, beside)| *beside).max();
        assert_eq!(most, Some(8), "then eight at a time: {runs:?}");
    }
}
