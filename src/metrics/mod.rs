//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): what
//! an operator graphs and alerts on, with the exporter of their choice.
//!
//! The layer, the delivery stores and the inbox record into whatever recorder the application
//! installed (for example `metrics-exporter-prometheus`); with none installed, recording costs
//! a few loads. With the feature off, none of this is compiled in.
//!
//! Install the recorder before serving: the metrics recorded on every delivery are registered
//! once, when the first delivery is recorded, with the recorder installed then (the facade ties
//! a handle to the recorder it was registered with), so that a delivery pays for an atomic add
//! and a histogram sample, not a lookup by name and labels.
//!
//! Names and labels follow Prometheus conventions (base units, `_total`, `_seconds`). No label
//! ever holds a secret, a body value or anything unbounded: no delivery ids, and event names
//! only from the crate's known list (any other is `other`).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | [`DELIVERIES_TOTAL`] | counter | `outcome`, `code` | every request the layer answered |
//! | [`BODY_READ_SECONDS`] | histogram | | reading and buffering the body |
//! | [`VERIFY_SECONDS`] | histogram | | verifying the signature and reading the envelope |
//! | [`HANDLER_SECONDS`] | histogram | `event` | the inner service, behind the layer |
//! | [`STORE_OUTAGES_TOTAL`] | counter | | times the delivery store stopped answering |
//! | [`STORE_SECONDS`] | histogram | `store`, `op`, `result` | each delivery store round trip |
//! | [`INBOX_DELIVERIES`] | gauge | `state` | inbox rows by state |
//! | [`INBOX_OLDEST_PENDING_SECONDS`] | gauge | | age of the oldest pending delivery |
//! | [`INBOX_ATTEMPTS_TOTAL`] | counter | `result` | handler attempts by what became of them |
//! | [`INBOX_HANDLER_SECONDS`] | histogram | `event` | the inbox worker's handler |
//!
//! `outcome` is `accepted` (verified, and the service behind the layer answered 2xx),
//! `duplicate` (answered 200 without running it again), `handler_error` (verified, and the
//! service answered otherwise, for example the inbox's 503), `in_flight` (409, another copy
//! is being handled), `stale` (401, outside the freshness window), `rejected` (any other
//! refusal) or `aborted` (never answered: the request was dropped, by a time-out above the
//! layer or a client that went away, or the handler panicked). Every outcome but `accepted`
//! and `duplicate` has a `code`: the stable error code of the answer (`invalid_signature`,
//! `timestamp_out_of_tolerance`, ...), the status for a `handler_error`, and `dropped` or
//! `panic` for an `aborted` one. Each request is counted once.
//!
//! ```
//! // At start-up, after installing a recorder: units and help text for every metric.
//! ringyo_webhook::metrics::describe();
//! ```

#[cfg(feature = "metrics")]
mod names;
pub(crate) mod record;

#[cfg(feature = "metrics")]
pub use names::*;
