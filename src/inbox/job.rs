//! One claimed delivery through the user's handler: [`Job`], [`Handler`], and the decisions
//! about what becomes of it.

use std::{any::Any, fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::{sync::watch, task::JoinError};
use tracing::Instrument;

use super::{
    backoff::Backoff,
    commit::Batcher,
    store::{ClaimedDelivery, Settle, Settlement},
};
use crate::{
    event::{Event, EventKind, FromEventData, Subject},
    extract::RingyoEvent,
    metrics::record::{self, HandlerTimer},
    rejection::Rejection,
    replay::ClaimToken,
    verify::{Clock, DeliveryId},
};

/// A stored delivery, as a worker hands it to your handler.
///
/// Handling is at least once: a handler that crashed its process, or whose worker lost the
/// lease, runs again on the same delivery. Make effects idempotent on
/// [`delivery_id`](Self::delivery_id); `attempt` says whether this is a retry.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Job<T = Event> {
    /// The event, read afresh from the stored bytes with this build's types.
    pub event: RingyoEvent<T>,
    /// This attempt's number, from 1. Attempts whose process died count too.
    pub attempt: u32,
    /// When the receiver acknowledged the delivery.
    pub received_at: DateTime<Utc>,
    /// What the event is about, if anything (see [`Subject`]).
    pub subject: Option<Subject>,
    /// With [`Inbox::order_by_subject`](super::Inbox::order_by_subject): set when a newer
    /// delivery of the same subject (and tenant) was handled before this one ran, to that
    /// one's timestamp. A handler that keeps the latest state of a subject should not let
    /// this event overwrite it; [`Worker::skip_superseded`](super::Worker::skip_superseded)
    /// skips such deliveries of chosen kinds without running the handler.
    pub superseded_by: Option<DateTime<Utc>>,
}

impl<T> Job<T> {
    /// The delivery's identity, the same for every attempt and every retry by Ringyo.
    pub fn delivery_id(&self) -> DeliveryId {
        self.event.delivery_id
    }
}

impl<T: FromEventData> Job<T> {
    /// The job for a claimed delivery, its stored bytes read with `T`; or the rejection that
    /// dead-letters it when they do not fit. The worker's one reading, and the test kit's
    /// (`testing::TestJob`).
    pub(crate) fn read(delivery: ClaimedDelivery) -> Result<Self, Rejection> {
        let event = RingyoEvent::<T>::parse(&delivery.payload, delivery.id)?;
        Ok(Self {
            event: event.with_tenant(delivery.tenant),
            attempt: delivery.attempt,
            received_at: delivery.received_at,
            subject: delivery.subject,
            superseded_by: delivery.superseded_by,
        })
    }
}

/// What a [`Worker`](super::Worker) runs on each delivery: any
/// `Fn(Job<T>) -> impl Future<Output = Result<(), E>>` with `E: Display`.
///
/// `Ok` marks the delivery handled. An `Err` or a panic is retried with [`Backoff`] until the
/// worker's maximum attempts, then dead-lettered with the error's text. A call that kills the
/// process (an abort, a stack overflow, an OOM kill) is not an `Err`: see
/// [`Worker`](super::Worker) for how the delivery that does it is found and dead-lettered.
pub trait Handler<T>: Send + Sync + 'static {
    /// The handler's error; its text is kept with a dead-lettered delivery.
    type Error: fmt::Display + Send + 'static;
    /// What a call returns.
    type Future: Future<Output = Result<(), Self::Error>> + Send + 'static;

    /// Handles one delivery.
    fn call(&self, job: Job<T>) -> Self::Future;
}

impl<T, F, Fut, E> Handler<T> for F
where
    F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    type Error = E;
    type Future = Fut;

    fn call(&self, job: Job<T>) -> Fut {
        self(job)
    }
}

/// What a [`Worker`](super::Worker) runs on a claimed delivery: a [`Handler`], or a handler in
/// the inbox's own transaction ([`Worker::transactional`](super::Worker::transactional)).
///
/// Sealed: a [`Handler`] ([`Plain`]) and the crate's transactional handler; you implement
/// [`Handler`] instead.
pub trait Runs<T>: private::Sealed<T> + Send + Sync + 'static {
    /// Runs on `job`, claimed with `token`: `Ok(true)` if it recorded the delivery handled
    /// itself (in its own transaction), `Ok(false)` for the worker to record it.
    #[doc(hidden)]
    fn run(self: Arc<Self>, job: Job<T>, token: ClaimToken, clock: Arc<dyn Clock>) -> RunFuture;

    /// Whether the worker extends the lease while it runs; not while the run holds the
    /// delivery's row itself (a transaction that locked it), where an extension would wait
    /// for that transaction.
    #[doc(hidden)]
    fn extends_lease(&self) -> bool {
        true
    }
}

/// What [`Runs::run`] returns.
#[doc(hidden)]
pub type RunFuture = Pin<Box<dyn Future<Output = Result<bool, String>> + Send>>;

pub(super) mod private {
    /// Keeps [`Runs`](super::Runs) to the crate's implementations.
    pub trait Sealed<T> {}
}

/// A [`Handler`] as a [`Worker`](super::Worker) runs it: the worker's `H` for
/// [`Worker::new`](super::Worker::new).
#[derive(Debug)]
pub struct Plain<H>(pub(super) H);

impl<T, H: Handler<T>> private::Sealed<T> for Plain<H> {}

impl<T: Send + 'static, H: Handler<T>> Runs<T> for Plain<H> {
    fn run(self: Arc<Self>, job: Job<T>, _: ClaimToken, _: Arc<dyn Clock>) -> RunFuture {
        let handled = self.0.call(job);
        Box::pin(async move {
            handled.await.map_err(|err| err.to_string())?;
            Ok(false)
        })
    }
}

/// What the worker's settings say about a claimed delivery.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub(super) lease: Duration,
    pub(super) max_attempts: u32,
    pub(super) backoff: Backoff,
}

/// How many times the process may die while a delivery runs alone before the delivery is
/// dead-lettered as the cause.
///
/// One would do for a handler that kills the process every time, but a process also dies for
/// reasons of its own (an OOM kill caused by something else in it, a node lost, a deploy's
/// SIGKILL after the grace), and one such death while an innocent delivery ran alone must not
/// dead-letter it. Two in a row under the same delivery is not chance. Each death costs a
/// restart and a lease, so more would only delay the verdict: a culprit takes the process down
/// three times (once beside others, twice alone) before it is dead-lettered.
pub(super) const CRASHES_ALONE: u32 = 2;

/// What became of a claimed delivery's earlier attempts, as its claim found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    /// This attempt's number, from 1, attempts that never finished included.
    pub(super) attempt: u32,
    /// Earlier attempts that never finished: their process died, or their worker lost the
    /// lease.
    pub(super) orphaned: u32,
    /// Times the process died while it ran alone, since an attempt of it last finished.
    pub(super) crashes_alone: u32,
}

impl Tally {
    pub(super) fn of(delivery: &ClaimedDelivery) -> Self {
        Self {
            attempt: delivery.attempt,
            orphaned: delivery.orphaned,
            crashes_alone: delivery.crashes_alone,
        }
    }

    /// This attempt's number as the maximum attempts count it: the handler's errors count,
    /// attempts that never finished do not (deaths while it ran alone are counted apart, in
    /// `crashes_alone`; deaths beside others were never shown to be its own).
    fn counted(self) -> u32 {
        self.attempt.saturating_sub(self.orphaned).max(1)
    }
}

/// How an attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Attempt {
    Handled,
    Failed(String),
    /// The stored bytes do not fit the handler's type: retrying cannot help.
    Unreadable(String),
    /// Not run: the process died [`CRASHES_ALONE`] times while it ran alone.
    KillsTheProcess,
    /// Not run: superseded, of a kind the worker skips then.
    Superseded,
    /// Handled, and recorded so in the handler's own transaction: nothing left to record.
    Recorded,
}

impl Policy {
    /// Whether a claimed delivery ends before it runs: dead-lettered as the cause of the
    /// process's deaths.
    pub(super) fn before_running(tally: Tally) -> Option<Attempt> {
        (tally.crashes_alone >= CRASHES_ALONE).then_some(Attempt::KillsTheProcess)
    }

    /// What to record for an attempt that ended at `now`.
    pub(super) fn settle(&self, tally: Tally, outcome: Attempt, now: DateTime<Utc>) -> Settle {
        match outcome {
            Attempt::Handled | Attempt::Recorded => Settle::Done { at: now },
            Attempt::Superseded => Settle::Superseded { at: now },
            Attempt::Unreadable(error) => Settle::Dead { at: now, error },
            Attempt::KillsTheProcess => Settle::Dead {
                at: now,
                error: format!(
                    "the process died {} times while this delivery ran alone",
                    tally.crashes_alone
                ),
            },
            Attempt::Failed(error) if tally.counted() >= self.max_attempts => {
                Settle::Dead { at: now, error }
            }
            Attempt::Failed(error) => Settle::Retry {
                at: now + self.backoff.delay(tally.counted()),
                error,
            },
        }
    }
}

/// What the worker's group commit says of a settlement: whether its token still held the
/// delivery, and the task's next delivery, if one was handed over (see
/// [`InboxStore::settle_and_hand_over`](super::InboxStore::settle_and_hand_over)), with the
/// claim that leases it.
pub(super) type Settled = (bool, Option<(ClaimToken, ClaimedDelivery)>);

/// Everything one delivery's task needs.
pub(super) struct Run<T, H> {
    /// The worker's group commit for outcomes and lease extensions.
    pub(super) settler: Batcher<Settlement, Settled>,
    pub(super) handler: Arc<H>,
    pub(super) token: ClaimToken,
    pub(super) policy: Policy,
    /// The kinds of event not run when superseded.
    pub(super) skip_superseded: Arc<[EventKind]>,
    /// Turns `true` when the worker's shutdown deadline passed: give the delivery back.
    pub(super) cancel: watch::Receiver<bool>,
    /// The inbox's clock.
    pub(super) clock: Arc<dyn Clock>,
    pub(super) marker: std::marker::PhantomData<fn() -> T>,
}

impl<T: FromEventData + Send + 'static, H: Runs<T>> Run<T, H> {
    /// Runs the handler on `delivery`, keeping its lease, and records the outcome; then the
    /// same for each delivery handed over to it, in turn.
    pub(super) async fn run(mut self, mut delivery: ClaimedDelivery) {
        while let Some((token, next)) = self.run_one(delivery).await {
            self.token = token;
            delivery = next;
        }
    }

    /// Runs `delivery` once and records the outcome; returns the delivery handed over after
    /// it, if any.
    async fn run_one(&self, delivery: ClaimedDelivery) -> Option<(ClaimToken, ClaimedDelivery)> {
        let span = tracing::info_span!(
            "inbox_job",
            delivery_id = %delivery.id,
            tenant = delivery.tenant.as_ref().map(|tenant| tenant.as_str()),
            attempt = delivery.attempt,
        );
        async move {
            let id = delivery.id;
            let tally = Tally::of(&delivery);
            let outcome = match self.attempt(delivery).await {
                Some(outcome) => outcome,
                None => {
                    tracing::info!("shutdown deadline passed: giving the delivery back");
                    let (recorded, _) = self
                        .record(
                            id,
                            Settle::Release {
                                at: self.clock.now(),
                            },
                        )
                        .await;
                    record::inbox_attempt(if recorded { "released" } else { "lost" });
                    return None;
                }
            };
            log(&outcome, tally);
            if outcome == Attempt::Recorded {
                record::inbox_attempt("handled");
                return None;
            }
            let settle = self.policy.settle(tally, outcome, self.clock.now());
            let result = match settle {
                Settle::Done { .. } => "handled",
                Settle::Superseded { .. } => "superseded",
                Settle::Retry { .. } => "retry",
                _ => "dead",
            };
            // Counted once it is recorded: otherwise the delivery runs again, and counts then.
            let (recorded, next) = self.record(id, settle).await;
            record::inbox_attempt(if recorded { result } else { "lost" });
            next
        }
        .instrument(span)
        .await
    }

    /// The attempt's outcome, or `None` if the worker cancelled it.
    async fn attempt(&self, delivery: ClaimedDelivery) -> Option<Attempt> {
        if let Some(verdict) = Policy::before_running(Tally::of(&delivery)) {
            return Some(verdict);
        }
        let id = delivery.id;
        let job = match Job::<T>::read(delivery) {
            Ok(job) => job,
            Err(rejection) => return Some(Attempt::Unreadable(rejection.to_string())),
        };
        if let Some(newer) = job.superseded_by {
            if self.skip_superseded.contains(&job.event.kind) {
                // As the receiver logs a handled one, with the newer timestamp.
                tracing::info!(
                    event = job.event.kind.as_str(),
                    delivery_id = %job.event.delivery_id,
                    timestamp = %job.event.timestamp,
                    attempt = job.attempt,
                    subject = job.subject.as_ref().map(ToString::to_string).as_deref().unwrap_or("-"),
                    newer = %newer,
                    "superseded event"
                );
                return Some(Attempt::Superseded);
            }
        }
        if *self.cancel.borrow() {
            // Handed over as the shutdown grace ran out: given back without starting.
            return None;
        }
        let timer = HandlerTimer::start(Some(&job.event.kind));
        let extends = self.handler.extends_lease();
        // A task of its own: a panic is caught as a JoinError, and cancelling can abort it.
        let run = Arc::clone(&self.handler).run(job, self.token, Arc::clone(&self.clock));
        let mut handler = tokio::spawn(run);
        let mut extend = tokio::time::interval(self.policy.lease / 3);
        extend.tick().await;
        let mut cancel = self.cancel.clone();
        // The guard `wait_for` returns is not `Send`: dropped before the select resumes.
        let cancelled = async move { cancel.wait_for(|cancelled| *cancelled).await.is_ok() };
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                finished = &mut handler => {
                    record::inbox_handler(timer);
                    return Some(ended(finished));
                }
                _ = extend.tick(), if extends => self.extend(id).await,
                true = &mut cancelled => {
                    handler.abort();
                    return None;
                }
            }
        }
    }

    /// Keeps the lease while the handler runs.
    async fn extend(&self, id: DeliveryId) {
        let lease_until = self.clock.now() + self.policy.lease;
        match self.settle(id, Settle::Extend { lease_until }).await {
            Ok((true, _)) => {}
            Ok((false, _)) => tracing::warn!(
                "the lease was lost (it ran out and another worker took the delivery); \
                 it may run twice"
            ),
            Err(err) => tracing::warn!("cannot extend the lease ({err}); will try again"),
        }
    }

    async fn settle(&self, id: DeliveryId, outcome: Settle) -> Result<Settled, super::InboxError> {
        let token = self.token;
        self.settler.submit(Settlement { id, token, outcome }).await
    }

    /// Records `settle`, retrying while the database is away, for as long as the lease lasts:
    /// after that another worker may have the delivery, and it runs again (at least once).
    /// Whether it was recorded, and the delivery handed over after it.
    async fn record(
        &self,
        id: DeliveryId,
        settle: Settle,
    ) -> (bool, Option<(ClaimToken, ClaimedDelivery)>) {
        let give_up = tokio::time::Instant::now() + self.policy.lease;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.settle(id, settle.clone()).await {
                Ok((true, next)) => return (true, next),
                Ok((false, _)) => {
                    tracing::warn!("the lease was lost before the outcome was recorded");
                    return (false, None);
                }
                Err(err) if tokio::time::Instant::now() + pause < give_up => {
                    tracing::warn!("cannot record the outcome ({err}); trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(err) => {
                    tracing::error!(
                        "cannot record the outcome ({err}); the delivery will run again when \
                         its lease runs out"
                    );
                    return (false, None);
                }
            }
        }
    }
}

/// The attempt's outcome from the handler task's end.
fn ended(finished: Result<Result<bool, String>, JoinError>) -> Attempt {
    match finished {
        Ok(Ok(false)) => Attempt::Handled,
        Ok(Ok(true)) => Attempt::Recorded,
        Ok(Err(err)) => Attempt::Failed(err),
        Err(err) if err.is_panic() => Attempt::Failed(format!(
            "the handler panicked: {}",
            panic_message(err.into_panic())
        )),
        Err(_) => Attempt::Failed("the handler was cancelled".to_owned()),
    }
}

pub(super) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast::<String>()
        .map(|message| *message)
        .or_else(|payload| {
            payload
                .downcast::<&str>()
                .map(|message| (*message).to_owned())
        })
        .unwrap_or_else(|_| "(no message)".to_owned())
}

fn log(outcome: &Attempt, tally: Tally) {
    let attempt = tally.attempt;
    match outcome {
        Attempt::Handled | Attempt::Recorded => tracing::debug!("handled"),
        Attempt::Superseded => {}
        // Errors as `&str` fields, which log escaped: a handler's error may quote the event.
        Attempt::Failed(error) => tracing::warn!(attempt, error = error.as_str(), "handler failed"),
        Attempt::Unreadable(error) => {
            tracing::error!(
                error = error.as_str(),
                "stored delivery does not fit the handler's type, dead-lettered"
            );
        }
        Attempt::KillsTheProcess => tracing::error!(
            crashes = tally.crashes_alone,
            "the process died {} times while this delivery ran alone: dead-lettered as the cause",
            tally.crashes_alone
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::SystemClock;

    fn now() -> DateTime<Utc> {
        SystemClock.now()
    }

    fn policy() -> Policy {
        Policy {
            lease: Duration::from_secs(30),
            max_attempts: 3,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }

    fn tally(attempt: u32) -> Tally {
        Tally {
            attempt,
            orphaned: 0,
            crashes_alone: 0,
        }
    }

    #[test]
    fn failures_retry_with_backoff_then_dead_letter() {
        let now = now();
        let retry = policy().settle(tally(2), Attempt::Failed("down".into()), now);
        let Settle::Retry { at, error } = retry else {
            panic!("{retry:?}")
        };
        assert_eq!(error, "down");
        assert!(at > now + Duration::from_millis(999) && at <= now + Duration::from_secs(2));
        assert_eq!(
            policy().settle(tally(3), Attempt::Failed("down".into()), now),
            Settle::Dead {
                at: now,
                error: "down".into()
            }
        );
    }

    /// Attempts that ended with their process do not use up the handler's attempts, nor
    /// lengthen its back-off: a neighbour's crash is not this delivery's failure.
    #[test]
    fn attempts_that_never_finished_do_not_count_toward_the_maximum() {
        let now = now();
        let after_crashes = Tally {
            attempt: 9,
            orphaned: 7,
            crashes_alone: 1,
        };
        let retry = policy().settle(after_crashes, Attempt::Failed("down".into()), now);
        let Settle::Retry { at, .. } = retry else {
            panic!("the 2nd counted attempt of 3 is retried: {retry:?}")
        };
        assert!(
            at <= now + Duration::from_secs(2),
            "backed off as a 2nd attempt"
        );
        let third = Tally {
            attempt: 10,
            ..after_crashes
        };
        assert!(matches!(
            policy().settle(third, Attempt::Failed("down".into()), now),
            Settle::Dead { .. }
        ));
    }

    #[test]
    fn only_a_delivery_the_process_died_under_twice_alone_is_dead_lettered_unrun() {
        let crashed = |crashes_alone| Tally {
            attempt: 5,
            orphaned: 4,
            crashes_alone,
        };
        assert_eq!(Policy::before_running(crashed(0)), None);
        assert_eq!(Policy::before_running(crashed(CRASHES_ALONE - 1)), None);
        let verdict = Policy::before_running(crashed(CRASHES_ALONE)).unwrap();
        assert_eq!(verdict, Attempt::KillsTheProcess);
        let Settle::Dead { error, .. } = policy().settle(crashed(2), verdict, now()) else {
            panic!()
        };
        assert_eq!(
            error,
            "the process died 2 times while this delivery ran alone"
        );
    }

    #[test]
    fn unreadable_deliveries_are_dead_lettered_at_once() {
        let now = now();
        assert!(matches!(
            policy().settle(tally(1), Attempt::Unreadable("bad".into()), now),
            Settle::Dead { .. }
        ));
        assert_eq!(
            policy().settle(tally(1), Attempt::Handled, now),
            Settle::Done { at: now }
        );
    }

    #[test]
    fn panics_are_failures_with_their_message() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let finished = runtime.block_on(async {
            tokio::spawn(async {
                panic!("boom");
                #[allow(unreachable_code)]
                Ok::<bool, String>(false)
            })
            .await
        });
        assert_eq!(
            ended(finished),
            Attempt::Failed("the handler panicked: boom".into())
        );
    }
}
