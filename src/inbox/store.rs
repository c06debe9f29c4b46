//! [`InboxStore`] and [`InboxAdmin`]: what a database must do for the inbox, and the values
//! it trades in.

use std::{fmt, future::Future, pin::Pin};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::filter::ReplayFilter;
use crate::{event::Subject, replay::ClaimToken, secrets::Tenant, verify::DeliveryId};

/// The boxed future an [`InboxStore`] method returns.
pub type InboxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, InboxError>> + Send + 'a>>;

/// The queue behind an [`Inbox`](super::Inbox): what accepting deliveries and running
/// handlers on them needs of a database.
///
/// [`SqlInbox`](super::SqlInbox) implements it for SQLite and Postgres. Every method is one
/// transaction. Claims are owned by a [`ClaimToken`]: a [`Settlement`] whose token no longer
/// holds the row (its lease ran out and another worker took it) changes nothing, and
/// [`settle`](Self::settle) says `false`. What operators and upkeep need besides (counts,
/// dead letters, pruning, readiness) is [`InboxAdmin`], on top of it, as tower-sessions keeps
/// the deletion of expired sessions apart from its store.
///
/// The crate's stores pass one behaviour suite (`tests/inbox/store.rs` in the repository).
pub trait InboxStore: Send + Sync + 'static {
    /// Stores deliveries in one transaction, and says for each, in order, whether it is new
    /// or was stored before (by any replica): a delivery id is stored once. Returns only after
    /// the commit is durable.
    fn store<'a>(&'a self, deliveries: &'a [NewDelivery]) -> InboxFuture<'a, Vec<Stored>>;

    /// Takes up to `limit` deliveries that are due at `now` (new or retrying), oldest first,
    /// leasing them to `token` until `lease_until` and counting an attempt. Deliveries another
    /// worker is claiming at the same moment are skipped, not waited for.
    ///
    /// Deliveries stored [`ordered`](NewDelivery::ordered) are taken one at a time per subject
    /// and tenant (their *lane*), across every worker and process: none while another of its
    /// lane is running (or is a suspect), and only the lane's pending delivery with the
    /// earliest timestamp (then time of receipt), once that one is due; a later one waits for
    /// it. [`ClaimedDelivery::superseded_by`] says when one is older than the newest handled of
    /// its lane. A store that does not order takes them as any other.
    ///
    /// Suspects (see [`suspects`](Self::suspects)) are not taken: they are for
    /// [`claim_suspect`](Self::claim_suspect). A store without those two takes deliveries whose
    /// lease ran out here too.
    fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        token: ClaimToken,
    ) -> InboxFuture<'_, Vec<ClaimedDelivery>>;

    /// How many suspects are due at `now`: deliveries whose last attempt never finished (the
    /// lease ran out while it was running: its process died, or its worker lost the lease), and
    /// suspects given back unfinished ([`Settle::Release`]). Workers run them one at a time,
    /// each alone in its process, to find one that kills the process.
    ///
    /// The default says none, for a store that leaves them to [`claim`](Self::claim).
    fn suspects(&self, now: DateTime<Utc>) -> InboxFuture<'_, u64> {
        let _ = now;
        Box::pin(async { Ok(0) })
    }

    /// Takes the oldest suspect due at `now`, as [`claim`](Self::claim) takes a delivery, and
    /// marks it run alone. If its last attempt never finished, counts that in
    /// [`ClaimedDelivery::orphaned`], and if that attempt ran alone too, the process died under
    /// it: counts that in [`ClaimedDelivery::crashes_alone`]. Settling it
    /// [`Done`](Settle::Done), [`Retry`](Settle::Retry) or [`Dead`](Settle::Dead) clears the
    /// suspicion and `crashes_alone`; [`Release`](Settle::Release) keeps them.
    ///
    /// The default takes none.
    fn claim_suspect(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        token: ClaimToken,
    ) -> InboxFuture<'_, Option<ClaimedDelivery>> {
        let _ = (now, lease_until, token);
        Box::pin(async { Ok(None) })
    }

    /// Records what became of claimed deliveries, in one transaction, and says for each, in
    /// order, whether its token still held it (only then is it changed). Returns only after
    /// the commit is durable.
    fn settle<'a>(&'a self, settlements: &'a [Settlement]) -> InboxFuture<'a, Vec<bool>>;

    /// [`settle`](Self::settle)s, and in the same transaction may claim a delivery for each
    /// settlement that ended an attempt (handled, superseded, retried or dead-lettered; not a
    /// lease extended or a delivery given back): for an ordered one, its lane's next, if due;
    /// otherwise (one outside lanes, or a lane with nothing next) what [`claim`](Self::claim)
    /// would take first at `hand_over.now`, the oldest due outside lanes, then the first of a
    /// free lane that is due. Says for each settlement, in order, whether its token held it,
    /// and the delivery claimed after it, if any: none for a settlement whose token did not
    /// hold, or that did not end an attempt (the worker would leave such a delivery claimed
    /// and not run it until its lease ran out). ([`SqlInbox`](super::SqlInbox) hands over
    /// the lanes a settlement frees on both engines, and takes other free lanes here on SQLite
    /// only.)
    ///
    /// A worker hands what is claimed to the handler tasks that just finished, so under load
    /// a delivery costs no claim transaction of its own, and a task goes on at once rather
    /// than waiting for the claim loop's next turn at the writer. The default settles and
    /// claims nothing.
    fn settle_and_hand_over<'a>(
        &'a self,
        settlements: &'a [Settlement],
        hand_over: &'a HandOver,
    ) -> InboxFuture<'a, Vec<(bool, Option<ClaimedDelivery>)>> {
        let _ = hand_over;
        Box::pin(async move {
            let held = self.settle(settlements).await?;
            Ok(held.into_iter().map(|held| (held, None)).collect())
        })
    }

    /// When the next delivery not yet due becomes due (a retry's back-off), if any.
    fn next_due(&self) -> InboxFuture<'_, Option<DateTime<Utc>>>;

    /// Resolves when another process may have stored a delivery (Postgres: `LISTEN`), so idle
    /// workers wake at once rather than at their next poll; also once as it starts listening,
    /// for what was stored before. The default never resolves: the inbox wakes workers in its
    /// own process itself, and polls as the fallback.
    fn changed_elsewhere(&self) -> InboxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}

/// Administration and upkeep of an [`InboxStore`]: counts, dead letters, pruning, readiness.
///
/// An [`Inbox`](super::Inbox) needs both traits: the queue to accept and hand out deliveries,
/// this one for [`Inbox::stats`](super::Inbox::stats), [`Inbox::dead`](super::Inbox::dead),
/// [`Inbox::replay`](super::Inbox::replay), [`Inbox::ping`](super::Inbox::ping) and the
/// worker's pruning.
pub trait InboxAdmin: InboxStore {
    /// Counts by state, and the oldest pending delivery's time of receipt.
    fn stats(&self) -> InboxFuture<'_, InboxStats>;

    /// Dead-lettered deliveries, oldest first, at most `limit`.
    fn dead(&self, limit: u32) -> InboxFuture<'_, Vec<DeadDelivery>>;

    /// Makes the handled or dead-lettered deliveries that `filter` matches due again at `now`,
    /// with their attempts reset, and returns how many. Ordered ones go through their lane's
    /// order again, and the newest handled of each lane is then the newest still handled.
    fn replay<'a>(&'a self, filter: &'a ReplayFilter, now: DateTime<Utc>) -> InboxFuture<'a, u64>;

    /// Deletes handled deliveries finished before `before`; returns how many.
    fn prune(&self, before: DateTime<Utc>) -> InboxFuture<'_, u64>;

    /// `Ok` only if a delivery would commit now (for example: a small write commits): for a
    /// readiness check. A check that only reads passes on a full disk.
    fn ping(&self) -> InboxFuture<'_, ()>;
}

/// A verified delivery to store.
#[derive(Clone)]
pub struct NewDelivery {
    /// The delivery's identity: the unique key.
    pub id: DeliveryId,
    /// The event's name as sent (the envelope's `event`), or empty if unreadable.
    pub event: String,
    /// The envelope's signed `timestamp`, if it has a readable one.
    pub timestamp: Option<DateTime<Utc>>,
    /// When this receiver got it.
    pub received_at: DateTime<Utc>,
    /// The verified bytes, exactly as received.
    pub payload: Bytes,
    /// The tenant it verified for, with a layer on [`Tenants`](crate::secrets::Tenants).
    pub tenant: Option<Tenant>,
    /// What the event is about, if anything.
    pub subject: Option<Subject>,
    /// Whether it runs in order with its subject's other ordered deliveries (of the same
    /// tenant), one at a time: see [`InboxStore::claim`]. Only with a subject.
    pub ordered: bool,
    /// When it is first due: `received_at`, or later by the inbox's reorder window.
    pub due_at: DateTime<Utc>,
}

impl fmt::Debug for NewDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the payload: it may hold phone numbers and transcripts.
        f.debug_struct("NewDelivery")
            .field("id", &self.id)
            .field("event", &self.event)
            .field("timestamp", &self.timestamp)
            .field("received_at", &self.received_at)
            .field("tenant", &self.tenant)
            .field("subject", &self.subject)
            .field("ordered", &self.ordered)
            .field("due_at", &self.due_at)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// Whether [`InboxStore::store`] added a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// New: it will be handled.
    New,
    /// Stored before, by this or another replica: a retry of a delivery already accepted.
    Duplicate,
}

/// A delivery a worker holds the lease on.
#[derive(Clone)]
pub struct ClaimedDelivery {
    /// The delivery's identity.
    pub id: DeliveryId,
    /// This attempt's number, from 1; counts attempts whose worker died too.
    pub attempt: u32,
    /// How many of the earlier attempts never finished (their process died, or their worker
    /// lost the lease); they do not count toward the worker's maximum attempts.
    pub orphaned: u32,
    /// How many times in a row the process died while this delivery ran alone (since an
    /// attempt of it last finished); the worker dead-letters it after two.
    pub crashes_alone: u32,
    /// When the receiver got it.
    pub received_at: DateTime<Utc>,
    /// The verified bytes, as received.
    pub payload: Bytes,
    /// The tenant it verified for, if any.
    pub tenant: Option<Tenant>,
    /// What the event is about, if anything.
    pub subject: Option<Subject>,
    /// For an ordered delivery older than the newest handled of its lane: that one's
    /// timestamp.
    pub superseded_by: Option<DateTime<Utc>>,
}

impl fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("orphaned", &self.orphaned)
            .field("crashes_alone", &self.crashes_alone)
            .field("received_at", &self.received_at)
            .field("subject", &self.subject)
            .field("superseded_by", &self.superseded_by)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// The claims of [`InboxStore::settle_and_hand_over`]: when, and leased to whom.
///
/// ```
/// use ringyo_webhook::{chrono::TimeDelta, inbox::HandOver, ClaimToken, Clock, SystemClock};
///
/// let now = SystemClock.now();
/// let hand_over = HandOver::new(now, now + TimeDelta::seconds(30), ClaimToken::new());
/// assert_eq!(hand_over.lease_until - hand_over.now, TimeDelta::seconds(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandOver {
    /// When they are claimed: a lane's next delivery is taken only if due then.
    pub now: DateTime<Utc>,
    /// The end of their leases.
    pub lease_until: DateTime<Utc>,
    /// The claim that leases them.
    pub token: ClaimToken,
}

impl HandOver {
    /// Claims at `now`, leased to `token` until `lease_until`.
    #[must_use]
    pub fn new(now: DateTime<Utc>, lease_until: DateTime<Utc>, token: ClaimToken) -> Self {
        Self {
            now,
            lease_until,
            token,
        }
    }
}

/// What became of one claimed delivery, for [`InboxStore::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The delivery.
    pub id: DeliveryId,
    /// The claim that must still hold it.
    pub token: ClaimToken,
    /// What to record.
    pub outcome: Settle,
}

/// What became of a claimed delivery, in a [`Settlement`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settle {
    /// The handler is still running: keep the lease until then.
    Extend {
        /// The new end of the lease.
        lease_until: DateTime<Utc>,
    },
    /// Handled: kept until pruned, so a late retry is still a duplicate.
    Done {
        /// When.
        at: DateTime<Utc>,
    },
    /// Recorded as handled without running the handler: superseded by a newer delivery of its
    /// lane. Kept until pruned, as a handled one.
    Superseded {
        /// When.
        at: DateTime<Utc>,
    },
    /// Failed: due again at `at`.
    Retry {
        /// When to try again.
        at: DateTime<Utc>,
        /// Why it failed, kept for the dead letter.
        error: String,
    },
    /// Failed for good: dead-lettered, kept until replayed.
    Dead {
        /// When.
        at: DateTime<Utc>,
        /// Why.
        error: String,
    },
    /// Not run (the worker is shutting down): due again at `at`, without counting the attempt.
    Release {
        /// When it is due again.
        at: DateTime<Utc>,
    },
}

impl Settle {
    /// Whether it ends the attempt (handled, superseded, retried or dead-lettered), so its
    /// worker's task is free for another delivery: not a lease extended, nor a delivery given
    /// back (as a stopping worker gives them).
    pub(super) fn ends_attempt(&self) -> bool {
        !matches!(self, Self::Extend { .. } | Self::Release { .. })
    }
}

/// Counts of the inbox's deliveries by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboxStats {
    /// Waiting for a worker, retries included.
    pub pending: u64,
    /// Held by a worker now (or by one that died, until its lease runs out).
    pub running: u64,
    /// Handled, not yet pruned.
    pub done: u64,
    /// Skipped as superseded (older than the newest handled of their subject, of a kind the
    /// worker skips then), not yet pruned.
    pub superseded: u64,
    /// Dead-lettered.
    pub dead: u64,
    /// When the oldest delivery that is pending was received.
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// A dead-lettered delivery, as listed by [`InboxAdmin::dead`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadDelivery {
    /// The delivery's identity, for [`InboxAdmin::replay`].
    pub id: DeliveryId,
    /// The event's name.
    pub event: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub failed_at: DateTime<Utc>,
    /// The last attempt's error.
    pub error: String,
    /// The tenant it verified for, if any.
    pub tenant: Option<Tenant>,
}

/// The inbox's database failed, or holds something this version cannot read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The database could not be reached or refused the statement. Usually passes: the layer
    /// answers 503 so Ringyo retries, workers back off and try again.
    #[error("inbox database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The URL names no backend this build has.
    #[error("unsupported inbox URL {scheme:?}: {hint}")]
    UnsupportedUrl {
        /// The URL's scheme, without the rest (which may hold a password).
        scheme: String,
        /// What would work.
        hint: &'static str,
    },
    /// The database holds inbox tables from a newer version of this crate.
    #[error("the inbox schema is at version {found}, newer than this build's {known}")]
    SchemaTooNew {
        /// The database's version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// The inbox's background task is gone (its runtime shut down).
    #[error("the inbox has shut down")]
    Closed,
    /// The commit took longer than the inbox's commit time-out.
    #[error("the commit did not finish in time")]
    TimedOut,
    /// The SQLite file is corrupt: found at start (the inbox checks the file before first use)
    /// or met while running. Nothing is stored or claimed until the file is replaced and the
    /// process restarted.
    #[error(
        "the inbox file {file} is corrupt ({detail}): stop the receiver, move the file and its \
         -wal and -shm files aside, then restore a backup or start with a new file \
         (`sqlite3 FILE .recover` saves what it can of the old one)"
    )]
    Corrupt {
        /// The file, as the inbox's URL names it.
        file: String,
        /// SQLite's description of what is wrong.
        detail: String,
    },
}

impl InboxError {
    /// Wraps a backend's own error.
    pub fn database(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Database(err.into())
    }
}
