//! [`TestJob`]: an inbox [`Job`] built from a sample event, for calling a handler directly.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::TestDelivery;
use crate::{
    event::FromEventData,
    inbox::{ClaimedDelivery, Job},
    rejection::Rejection,
    secrets::Tenant,
};

/// A [`Job`] as a [`Worker`](crate::inbox::Worker) hands it to your handler, built from a
/// [`TestDelivery`] with no database, no worker and no runtime: call the handler on it
/// yourself (`handle(job).await`) and check what it did.
///
/// [`build`](Self::build) reads the delivery's bytes with `T` by the worker's own code, so
/// what the handler sees (the typed `data`, the subject, the tenant, the delivery id) is what
/// it would see from the inbox, and a `data` that does not fit `T` is refused with the
/// rejection whose text the worker dead-letters the delivery with.
///
/// Defaults: the [`TestDelivery`]'s (the event's [`sample_data`](super::sample_data), a
/// unique current timestamp, the [`DEVELOPMENT_SECRET`](super::DEVELOPMENT_SECRET)), attempt
/// 1, no tenant, received at the event's timestamp, not superseded. The delivery id is the one
/// [`RingyoWebhookLayer`](crate::RingyoWebhookLayer) gives the same delivery (with the same
/// tenant), and the subject the one it reads.
///
/// ```
/// use ringyo_webhook::{inbox::Job, testing::TestJob, Event};
/// use serde_json::json;
///
/// /// Bills a completed call to its tenant; ignores one older than the call's latest event.
/// async fn handle(job: Job<Event>) -> Result<(), String> {
///     let Event::CallCompleted(call) = &job.event.data else { return Ok(()) };
///     if job.superseded_by.is_some() {
///         return Ok(());
///     }
///     let tenant = job.event.tenant.as_ref().ok_or("a call without a tenant")?;
///     let seconds = call.duration.ok_or_else(|| format!("no duration (attempt {})", job.attempt))?;
///     println!("bill {tenant} for {seconds} s of {:?}", job.subject);
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let job = TestJob::new("call.completed").tenant("acme-dental").build()?;
/// assert_eq!(job.subject.as_ref().unwrap().to_string(), "call:call_xyz789");
/// handle(job).await?;
///
/// let unfinished = TestJob::new("call.completed").data(json!({"id": "call_1"}));
/// let retry = unfinished.tenant("acme-dental").attempt(3).build()?;
/// assert_eq!(handle(retry).await.unwrap_err(), "no duration (attempt 3)");
///
/// // `data` that does not fit the handler's type: the worker dead-letters it with this text.
/// #[derive(Debug, serde::Deserialize)]
/// struct Credits { balance: f64 }
/// let unfit = TestJob::new("credits.low").data(json!({"balance": "low"}));
/// let rejection = unfit.build::<Credits>().unwrap_err();
/// assert_eq!(rejection.code(), "invalid_event_data");
/// # Ok(())
/// # }
/// ```
///
/// A closure with state is called as a function too; a struct of your own that implements
/// [`Handler`](crate::inbox::Handler), with `Handler::call`. The worker does two things no call
/// does: it catches a panic as a failure, and it skips a superseded delivery of the kinds
/// given to [`Worker::skip_superseded`](crate::inbox::Worker::skip_superseded) without
/// calling the handler. A transactional handler takes a transaction beside the job: begin
/// one on a pool of your own (`sqlite::memory:` will do) and pass it.
#[derive(Debug, Clone)]
pub struct TestJob {
    delivery: TestDelivery,
    attempt: u32,
    tenant: Option<Tenant>,
    received_at: Option<DateTime<Utc>>,
    superseded_by: Option<DateTime<Utc>>,
}

impl TestJob {
    /// A job for a delivery of `event` (any name, known or not) with its sample data: see
    /// [`TestDelivery::new`].
    pub fn new(event: impl Into<String>) -> Self {
        Self::from(TestDelivery::new(event))
    }

    /// Replaces the event's `data`, as [`TestDelivery::data`] does.
    #[must_use]
    pub fn data(mut self, data: Value) -> Self {
        self.delivery = self.delivery.data(data);
        self
    }

    /// Sets the event's signed `timestamp`, as [`TestDelivery::timestamp`] does.
    #[must_use]
    pub fn timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.delivery = self.delivery.timestamp(timestamp);
        self
    }

    /// Sets [`Job::attempt`]: 2 and above are retries (the default is 1).
    ///
    /// # Panics
    ///
    /// If `attempt` is 0: attempts count from 1.
    #[must_use]
    pub fn attempt(mut self, attempt: u32) -> Self {
        assert!(attempt > 0, "attempts count from 1");
        self.attempt = attempt;
        self
    }

    /// Sets the tenant the delivery verified for, as with a layer on
    /// [`Tenants`](crate::secrets::Tenants): the event's
    /// [`tenant`](crate::RingyoEvent::tenant), and its delivery id folded with it.
    ///
    /// # Panics
    ///
    /// If `name` is not a [`Tenant`] name.
    #[must_use]
    pub fn tenant(mut self, name: &str) -> Self {
        let tenant = Tenant::new(name).unwrap_or_else(|| panic!("not a tenant name: {name:?}"));
        self.tenant = Some(tenant);
        self
    }

    /// Sets [`Job::received_at`] (the default is the event's timestamp).
    #[must_use]
    pub fn received_at(mut self, received_at: DateTime<Utc>) -> Self {
        self.received_at = Some(received_at);
        self
    }

    /// Sets [`Job::superseded_by`], as a worker does when a newer delivery of the same subject
    /// was handled first: `newer` is that one's timestamp.
    #[must_use]
    pub fn superseded_by(mut self, newer: DateTime<Utc>) -> Self {
        self.superseded_by = Some(newer);
        self
    }

    /// The job, its `data` read as `T` by the worker's code.
    ///
    /// # Errors
    ///
    /// - the [`Rejection`] the worker dead-letters the delivery with (its `to_string()` is
    ///   the dead letter's error), such as 422 `invalid_event_data` when `data` does not fit
    ///   `T`;
    /// - for a delivery with a deliberate [`Fault`](super::Fault), the rejection the layer
    ///   answers it with ([`Fault::expected`](super::Fault::expected)): no worker sees it.
    ///
    /// # Panics
    ///
    /// If the delivery's secret is one the layer would refuse.
    pub fn build<T: FromEventData>(&self) -> Result<Job<T>, Rejection> {
        if let Some(fault) = self.delivery.deliberate_fault() {
            return Err(fault.expected().into());
        }
        let (body, _) = self.delivery.body_and_signature();
        let reads = self.delivery.layer_reads(&body, self.tenant.as_ref());
        // The row a store hands the worker for this delivery, read as the worker reads it.
        let claimed = ClaimedDelivery {
            id: reads.id,
            attempt: self.attempt,
            orphaned: 0,
            crashes_alone: 0,
            received_at: self
                .received_at
                .unwrap_or_else(|| self.delivery.signed_at()),
            payload: Bytes::from(body),
            tenant: self.tenant.clone(),
            subject: reads.subject,
            superseded_by: self.superseded_by,
        };
        Job::read(claimed)
    }
}

impl From<TestDelivery> for TestJob {
    /// A job for `delivery`: its data, timestamp, `webhook_id` and secret.
    fn from(delivery: TestDelivery) -> Self {
        Self {
            delivery,
            attempt: 1,
            tenant: None,
            received_at: None,
            superseded_by: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Event, EventKind},
        testing::Fault,
    };

    #[test]
    fn a_job_has_the_id_the_layer_gives_its_delivery() {
        let delivery = TestDelivery::new("call.ringing");
        let job = TestJob::from(delivery.clone()).build::<Event>().unwrap();
        let (body, _) = delivery.body_and_signature();
        assert_eq!(job.delivery_id(), delivery.layer_reads(&body, None).id);
        let acme = TestJob::from(delivery.clone()).tenant("acme");
        let acme = acme.build::<Event>().unwrap();
        assert_ne!(acme.delivery_id(), job.delivery_id());
        let tenant = Tenant::new("acme");
        assert_eq!(
            acme.delivery_id(),
            delivery.layer_reads(&body, tenant.as_ref()).id
        );
        assert_eq!(acme.event.tenant, tenant);
    }

    #[test]
    fn defaults_are_a_first_attempt_received_when_signed() {
        let at: DateTime<Utc> = "2024-01-15T10:30:00Z".parse().unwrap();
        let job = TestJob::new("credits.low").timestamp(at);
        let job = job.build::<Event>().unwrap();
        assert_eq!((job.attempt, job.received_at), (1, at));
        assert_eq!((job.subject, job.superseded_by), (None, None));
        assert_eq!(job.event.kind, EventKind::CreditsLow);
        assert_eq!(job.event.webhook_id.as_deref(), Some("wh_test"));
    }

    #[test]
    fn a_faulted_delivery_gets_the_layers_rejection_not_a_job() {
        for fault in Fault::ALL {
            let job = TestJob::from(TestDelivery::new("credits.low").fault(fault));
            let rejection = job.build::<Event>().unwrap_err();
            assert_eq!(rejection.kind(), fault.expected(), "{fault:?}");
        }
    }

    #[test]
    #[should_panic(expected = "attempts count from 1")]
    fn attempt_zero_is_refused() {
        let _ = TestJob::new("credits.low").attempt(0);
    }
}
