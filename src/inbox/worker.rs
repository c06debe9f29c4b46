//! [`Worker`]: takes stored deliveries and runs the handler on them.

use std::{fmt, future::Future, marker::PhantomData, sync::Arc, time::Duration};

use tokio::{
    sync::{watch, Notify},
    task::JoinSet,
    time::Instant,
};

use super::{
    backoff::Backoff,
    commit::Batcher,
    handle::Inbox,
    job::{Handler, Policy, Run},
    store::{now, InboxStore, Settlement},
};
use crate::{event::FromEventData, replay::ClaimToken};

/// Runs a handler on the inbox's deliveries: at least once, in practice once.
///
/// A worker claims due deliveries with a lease, runs the handler on each (up to its
/// concurrency at a time), extends the lease while a long handler runs, and marks the delivery
/// done when the handler returns `Ok`. An error or panic is retried with [`Backoff`], and after
/// the last attempt dead-lettered (see [`Inbox::dead`] and [`Inbox::replay`]), never dropped.
/// If the process dies mid-handler, the lease runs out and a worker (here after a restart, or
/// in another replica) takes the delivery again.
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
/// ```no_run
/// use std::time::Duration;
/// use ringyo_webhook::{inbox::{Inbox, Job}, Event};
///
/// # async fn demo(inbox: Inbox) {
/// let worker = inbox
///     .worker(|job: Job<Event>| async move {
///         println!("{} {}", job.delivery_id(), job.event.kind);
///         Ok::<(), String>(())
///     })
///     .concurrency(16)
///     .max_attempts(5);
/// // Runs until Ctrl-C, then lets running handlers finish for up to the grace period.
/// worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
/// # }
/// ```
pub struct Worker<T, H> {
    inbox: Inbox,
    handler: Arc<H>,
    config: Config,
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

impl<T, H> Worker<T, H>
where
    T: FromEventData + Send + 'static,
    H: Handler<T>,
{
    pub(super) fn new(inbox: Inbox, handler: H) -> Self {
        Self {
            inbox,
            handler: Arc::new(handler),
            config: Config {
                concurrency: 8,
                policy: Policy {
                    lease: Duration::from_secs(30),
                    max_attempts: 12,
                    backoff: Backoff::DEFAULT,
                },
                poll_interval: Duration::from_secs(5),
                shutdown_grace: Duration::from_secs(20),
                retention: Duration::from_secs(7 * 24 * 60 * 60),
            },
            marker: PhantomData,
        }
    }

    /// How many handlers run at once; default 8.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.config.concurrency = concurrency.max(1);
        self
    }

    /// How long a claim lasts without being extended; default 30 s. The worker extends it
    /// every third of that while the handler runs; after a crash, the delivery runs again
    /// once it has run out.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.policy.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// Attempts before a delivery is dead-lettered; default 12.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.config.policy.max_attempts = max_attempts.max(1);
        self
    }

    /// The wait between attempts; default [`Backoff::DEFAULT`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.policy.backoff = backoff;
        self
    }

    /// How often an idle worker looks for due deliveries it was not woken for (retries come
    /// due, another process on the same SQLite file stored one); default 5 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// After shutdown is signalled, how long running handlers may take to finish; then they
    /// are cancelled and their deliveries given back, due at once. Default 20 s, inside the
    /// usual 30 s an orchestrator waits before it kills.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// How long handled deliveries are kept, so a late retry by Ringyo is still known as a
    /// duplicate; default 7 days. Keep it well over the layer's freshness window (1 h by
    /// default), past which a retry is refused anyway.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config.retention = retention;
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
        let counting = AbortOnDrop(tokio::spawn(count_for_metrics(Arc::clone(&store))));
        let settler = settler(&store);
        let (cancel, cancelled) = watch::channel(false);
        let mut running = JoinSet::new();
        self.claim_until(shutdown, &store, &woken, &settler, &cancelled, &mut running)
            .await;
        drop(listener);
        #[cfg(feature = "metrics")]
        drop(counting);
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

    async fn claim_until(
        &self,
        shutdown: impl Future<Output = ()>,
        store: &Arc<dyn InboxStore>,
        woken: &Notify,
        settler: &Batcher<Settlement, bool>,
        cancelled: &watch::Receiver<bool>,
        running: &mut JoinSet<()>,
    ) {
        tokio::pin!(shutdown);
        let mut stored = self.inbox.subscribe();
        let mut next_prune = Instant::now();
        let mut failing = false;
        loop {
            while running.try_join_next().is_some() {}
            if Instant::now() >= next_prune {
                self.prune(store).await;
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            let free = self.config.concurrency.saturating_sub(running.len());
            let mut wake_at = Instant::now() + self.config.poll_interval;
            if free > 0 {
                match self.claim(store, free, settler, cancelled, running).await {
                    Ok(true) => continue,
                    Ok(false) => {
                        failing = false;
                        if let Ok(Some(due)) = store.next_due().await {
                            let wait = (due - now()).to_std().unwrap_or_default();
                            wake_at = wake_at.min(Instant::now() + wait);
                        }
                    }
                    Err(err) => {
                        if !failing {
                            tracing::warn!("cannot claim deliveries ({err}); retrying");
                            failing = true;
                        }
                        wake_at =
                            Instant::now() + self.config.poll_interval.min(Duration::from_secs(1));
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                _ = stored.changed() => {}
                () = woken.notified() => {}
                // A finished job frees a slot, and may have scheduled a retry due before the poll.
                Some(_) = running.join_next() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// Claims up to `free` deliveries and starts them; `true` if it filled every slot (so
    /// more may be due).
    async fn claim(
        &self,
        store: &Arc<dyn InboxStore>,
        free: usize,
        settler: &Batcher<Settlement, bool>,
        cancelled: &watch::Receiver<bool>,
        running: &mut JoinSet<()>,
    ) -> Result<bool, super::InboxError> {
        let token = ClaimToken::new();
        let now = now();
        let limit = u32::try_from(free).unwrap_or(u32::MAX);
        let claimed = store
            .claim(now, now + self.config.policy.lease, limit, token)
            .await?;
        let filled = claimed.len() == free;
        for delivery in claimed {
            let run = Run::<T, H> {
                settler: settler.clone(),
                handler: Arc::clone(&self.handler),
                token,
                policy: self.config.policy,
                cancel: cancelled.clone(),
                marker: PhantomData,
            };
            running.spawn(run.run(delivery));
        }
        Ok(filled)
    }

    async fn prune(&self, store: &Arc<dyn InboxStore>) {
        let before = now() - self.config.retention;
        match store.prune(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "deleted handled deliveries past the retention"),
            Err(err) => tracing::warn!("cannot prune handled deliveries ({err})"),
        }
    }
}

/// The worker's group commit for its handlers' outcomes: finishing together, they share one
/// transaction, as accepted deliveries do. A handler's own task logs a failure.
fn settler(store: &Arc<dyn InboxStore>) -> Batcher<Settlement, bool> {
    let store = Arc::clone(store);
    Batcher::spawn(
        MAX_SETTLE_BATCH,
        move |settlements| {
            let store = Arc::clone(&store);
            async move { store.settle(&settlements).await }
        },
        |_| {},
    )
}

/// How often a worker counts the inbox for its gauges: a count reads the whole table, and
/// Prometheus scrapes every 15 s or more.
#[cfg(feature = "metrics")]
const COUNT_EVERY: Duration = Duration::from_secs(15);

/// Keeps the inbox gauges current: counts the inbox every [`COUNT_EVERY`].
#[cfg(feature = "metrics")]
async fn count_for_metrics(store: Arc<dyn InboxStore>) {
    let mut tick = tokio::time::interval(COUNT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A failure is the claim loop's to report; the gauges keep their last values.
        if let Ok(stats) = store.stats().await {
            crate::metrics::record::inbox_stats(&stats, now());
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
async fn listen_elsewhere(store: Arc<dyn InboxStore>, woken: Arc<Notify>, pause: Duration) {
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
