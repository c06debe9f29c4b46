//! The hooks the layer, the delivery stores and the inbox call: one interface, two files.
//!
//! With the feature `metrics` (`on.rs`) they record through the facade; without it
//! (`off.rs`) each is empty and its timers are zero-sized, so nothing is measured, kept or
//! compiled in, and no caller needs a `cfg` of its own.

#[cfg(feature = "metrics")]
mod on;
#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
mod off;
#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

/// The words of a delivery's `outcome`: the label of `ringyo_webhook_deliveries_total` and
/// the field of the layer's span say the same (the table in `crate::metrics`), so a log line
/// and a graph never disagree about a delivery.
pub(crate) mod outcome {
    use crate::rejection::RejectionKind;

    /// Verified, and the service behind the layer answered 2xx.
    pub(crate) const ACCEPTED: &str = "accepted";
    /// Answered 200 without running the service again.
    pub(crate) const DUPLICATE: &str = "duplicate";
    /// Verified, and the service answered otherwise.
    pub(crate) const HANDLER_ERROR: &str = "handler_error";

    /// The outcome of the service's answer with `status`; `duplicate` if the service said the
    /// delivery was stored before (the inbox's 200).
    pub(crate) fn answered(status: http::StatusCode, duplicate: bool) -> &'static str {
        match (status.is_success(), duplicate) {
            (true, true) => DUPLICATE,
            (true, false) => ACCEPTED,
            (false, _) => HANDLER_ERROR,
        }
    }

    /// The outcome of a refusal: `in_flight`, `stale` or `rejected`.
    pub(crate) fn refused(kind: RejectionKind) -> &'static str {
        match kind {
            RejectionKind::DeliveryInProgress => "in_flight",
            RejectionKind::TimestampOutOfTolerance => "stale",
            _ => "rejected",
        }
    }
}
