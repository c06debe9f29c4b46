//! The metrics' names, and their descriptions.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Requests the layer answered, by `outcome` (and `code`, except for `accepted` and
/// `duplicate`); see the [module docs](super).
pub const DELIVERIES_TOTAL: &str = "ringyo_webhook_deliveries_total";
/// Time to read and buffer a request's body, in seconds.
pub const BODY_READ_SECONDS: &str = "ringyo_webhook_body_read_duration_seconds";
/// Time to verify a buffered body's signature and read its envelope, in seconds.
pub const VERIFY_SECONDS: &str = "ringyo_webhook_verify_duration_seconds";
/// Time the service behind the layer took to answer a verified delivery, by `event`.
pub const HANDLER_SECONDS: &str = "ringyo_webhook_handler_duration_seconds";
/// Times a delivery store stopped answering (counted once per outage, not per request).
pub const STORE_OUTAGES_TOTAL: &str = "ringyo_webhook_store_outages_total";
/// Each delivery store round trip, by `store` (`redis`), `op` (`claim`, `complete`,
/// `release`) and `result` (`ok`, `error`), in seconds.
pub const STORE_SECONDS: &str = "ringyo_webhook_store_duration_seconds";
/// The inbox's deliveries by `state` (`pending`, `running`, `done`, `superseded`, `dead`), as a
/// worker last counted them (every 15 s; every replica's worker counts the same database, so
/// aggregate with `max`, not `sum`).
pub const INBOX_DELIVERIES: &str = "ringyo_webhook_inbox_deliveries";
/// How long the oldest pending delivery has waited since it was received, in seconds (0 when
/// none is pending); a delivery waiting out a retry's back-off is pending too.
pub const INBOX_OLDEST_PENDING_SECONDS: &str = "ringyo_webhook_inbox_oldest_pending_age_seconds";
/// Handler attempts by `result`: `handled`, `superseded` (skipped without running the handler:
/// older than the newest handled of its subject), `retry` (failed, will run again), `dead`
/// (dead-lettered), `released` (given back at shutdown) or `lost` (the outcome could not be
/// recorded before the lease ran out: the delivery runs again).
pub const INBOX_ATTEMPTS_TOTAL: &str = "ringyo_webhook_inbox_attempts_total";
/// Time the inbox worker's handler took, by `event`, in seconds.
pub const INBOX_HANDLER_SECONDS: &str = "ringyo_webhook_inbox_handler_duration_seconds";

/// Gives the installed recorder each metric's unit and help text. Call it once, after
/// installing the recorder; recording works without it.
pub fn describe() {
    describe_counter!(
        DELIVERIES_TOTAL,
        "Webhook requests answered, by outcome and code"
    );
    describe_histogram!(
        BODY_READ_SECONDS,
        Unit::Seconds,
        "Reading and buffering the body"
    );
    describe_histogram!(VERIFY_SECONDS, Unit::Seconds, "Verifying the signature");
    describe_histogram!(
        HANDLER_SECONDS,
        Unit::Seconds,
        "The service behind the layer, by event"
    );
    describe_counter!(
        STORE_OUTAGES_TOTAL,
        "Times the delivery store stopped answering"
    );
    describe_histogram!(STORE_SECONDS, Unit::Seconds, "Delivery store round trips");
    describe_gauge!(INBOX_DELIVERIES, "Inbox deliveries by state");
    describe_gauge!(
        INBOX_OLDEST_PENDING_SECONDS,
        Unit::Seconds,
        "Age of the oldest pending inbox delivery"
    );
    describe_counter!(INBOX_ATTEMPTS_TOTAL, "Inbox handler attempts by result");
    describe_histogram!(
        INBOX_HANDLER_SECONDS,
        Unit::Seconds,
        "The inbox worker's handler, by event"
    );
}
