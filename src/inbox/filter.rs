//! [`ReplayFilter`]: which finished deliveries to run again.

use chrono::{DateTime, Utc};

use crate::{event::Subject, secrets::Tenant, verify::DeliveryId};

/// Which handled or dead-lettered deliveries [`Inbox::replay_matching`](super::Inbox::replay_matching)
/// runs again, for example to re-run handlers after a bug fix.
///
/// Start from the states to replay ([`dead`](Self::dead), [`handled`](Self::handled), or
/// [`finished`](Self::finished) for both), then narrow it; every condition given must hold.
/// Deliveries waiting or running are never matched: they run anyway. Handled includes those
/// skipped as superseded.
///
/// Replayed deliveries start again from their first attempt, and ordered ones go through
/// their subject's order again: a subject's replayed deliveries run one at a time, in
/// timestamp order, and one older than the newest delivery of its subject still handled is
/// superseded.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use ringyo_webhook::{inbox::ReplayFilter, Subject};
///
/// // Every call.completed handled by the build that ran from 09:00 to 10:30 today.
/// let filter = ReplayFilter::handled()
///     .event("call.completed")
///     .received_since(Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap())
///     .received_before(Utc.with_ymd_and_hms(2026, 12, 6, 10, 30, 0).unwrap());
/// assert!(filter.handled && !filter.dead);
///
/// // Everything about one call, dead-lettered or handled.
/// let call: Subject = "call:call_123".parse()?;
/// let filter = ReplayFilter::finished().subject(call);
/// # Ok::<(), ringyo_webhook::event::InvalidSubject>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayFilter {
    /// Match dead-lettered deliveries.
    pub dead: bool,
    /// Match handled deliveries (superseded ones included).
    pub handled: bool,
    /// Only this delivery.
    pub id: Option<DeliveryId>,
    /// Only deliveries received at or after this time.
    pub received_since: Option<DateTime<Utc>>,
    /// Only deliveries received before this time.
    pub received_before: Option<DateTime<Utc>>,
    /// Only events of this name, as sent.
    pub event: Option<String>,
    /// Only events about this subject.
    pub subject: Option<Subject>,
    /// Only deliveries verified for this tenant.
    pub tenant: Option<Tenant>,
}

impl ReplayFilter {
    /// Dead-lettered deliveries.
    pub fn dead() -> Self {
        Self::states(true, false)
    }

    /// Handled deliveries, superseded ones included.
    pub fn handled() -> Self {
        Self::states(false, true)
    }

    /// Dead-lettered and handled deliveries.
    pub fn finished() -> Self {
        Self::states(true, true)
    }

    fn states(dead: bool, handled: bool) -> Self {
        Self {
            dead,
            handled,
            id: None,
            received_since: None,
            received_before: None,
            event: None,
            subject: None,
            tenant: None,
        }
    }

    /// Only the delivery `id`.
    #[must_use]
    pub fn id(mut self, id: DeliveryId) -> Self {
        self.id = Some(id);
        self
    }

    /// Only deliveries received at or after `at`.
    #[must_use]
    pub fn received_since(mut self, at: DateTime<Utc>) -> Self {
        self.received_since = Some(at);
        self
    }

    /// Only deliveries received before `at`.
    #[must_use]
    pub fn received_before(mut self, at: DateTime<Utc>) -> Self {
        self.received_before = Some(at);
        self
    }

    /// Only events named `event` (`call.completed`).
    #[must_use]
    pub fn event(mut self, event: &str) -> Self {
        self.event = Some(event.to_owned());
        self
    }

    /// Only events about `subject`.
    #[must_use]
    pub fn subject(mut self, subject: Subject) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Only deliveries verified for `tenant`.
    #[must_use]
    pub fn tenant(mut self, tenant: Tenant) -> Self {
        self.tenant = Some(tenant);
        self
    }
}
