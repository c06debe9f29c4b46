//! What the layer records about a delivery: one `tracing` span per request, and one event per
//! outcome. Never a secret, a body, a signature or a payload value.

use http::{header, HeaderMap, StatusCode};
use tracing::{field, Span};

use super::config::StoreFailure;
use crate::outage::Outage;
use crate::{
    event::EventKind,
    extract::VerifiedPayload,
    metrics::record::{self, outcome},
    rejection::{Rejection, RejectionKind},
    replay::{Claim, StoreError},
    verify::describe_header,
};

/// The span a delivery runs in; fields are filled in as the checks pass.
pub(super) fn span() -> Span {
    tracing::info_span!(
        "ringyo_webhook",
        event = field::Empty,
        outcome = field::Empty,
        reason = field::Empty,
        status = field::Empty,
        tenant = field::Empty,
        secret_index = field::Empty,
        delivery_id = field::Empty,
    )
}

/// Records what verification found.
pub(super) fn verified(span: &Span, payload: &VerifiedPayload, kind: Option<&EventKind>) {
    if let Some(tenant) = payload.tenant() {
        // Plain characters only (`Tenant::new`): nothing to escape.
        span.record("tenant", tenant.as_str());
    }
    span.record("secret_index", payload.secret_index());
    // The id costs a short hash: only when a subscriber wants it.
    if !span.is_disabled() {
        span.record("delivery_id", field::display(payload.delivery_id()));
    }
    if let Some(kind) = kind {
        span.record("event", kind.as_str());
    }
}

/// What explains a rejection beyond its kind, for the one log line it gets.
pub(super) enum Cause<'a> {
    None,
    /// A well-formed signature that did not match: what helps find why.
    Mismatch {
        headers: &'a HeaderMap,
        body_len: usize,
        secrets: usize,
    },
    /// The delivery store failed; [`store_health`] has logged it.
    Store,
    /// Logged already, where the failure was met.
    Logged,
}

/// Records a rejection, and logs it once: with its cause when there is one, else at the level
/// its kind deserves ([`Rejection::log`]).
pub(super) fn rejected(span: &Span, rejection: &Rejection, cause: Cause<'_>) {
    record::rejected(rejection.kind());
    span.record("outcome", outcome::refused(rejection.kind()));
    span.record("reason", rejection.code());
    span.record("status", rejection.status().as_u16());
    let reason = rejection.code();
    match cause {
        Cause::Store => tracing::debug!(
            reason,
            "rejected delivery: the delivery store failed to claim it; answering 503 so Ringyo \
             retries"
        ),
        Cause::Mismatch {
            headers,
            body_len,
            secrets,
        } => log_mismatch(headers, body_len, secrets),
        Cause::None => rejection.log(),
        Cause::Logged => {}
    }
}

/// Says, at debug level, what helps find why a well-formed signature did not match, without
/// the secret, the body or the signature itself.
fn log_mismatch(headers: &HeaderMap, body_len: usize, secrets: usize) {
    let (header_len, prefixed, uppercase) = describe_header(headers);
    tracing::debug!(
        reason = RejectionKind::SignatureMismatch.code(),
        body_len,
        header_len,
        header_has_sha256_prefix = prefixed,
        header_hex_has_uppercase = uppercase,
        content_encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|value| value.to_str().ok()),
        secrets_tried = secrets,
        "rejected delivery: signature mismatch. Usual causes: something between Ringyo and this \
         layer changed the body (a proxy that re-encoded it, or a framework that parsed and \
         re-serialized the JSON: verification must see the raw bytes), or the secret belongs \
         to another endpoint"
    );
}

/// Records a delivery answered as a duplicate.
pub(super) fn duplicate(span: &Span) {
    record::duplicate();
    span.record("outcome", outcome::DUPLICATE);
    span.record("status", 200);
    tracing::debug!("delivery already handled; answering 200 without running the handler");
}

/// Records the handler's answer: `duplicate` when it says it had the delivery already (the
/// inbox's 200 with `x-webhook-duplicate`), in the metrics' words ([`outcome::answered`]).
pub(super) fn handled(span: &Span, status: StatusCode, duplicate: bool) {
    span.record("status", status.as_u16());
    let outcome = outcome::answered(status, duplicate);
    span.record("outcome", outcome);
    tracing::debug!(status = status.as_u16(), "verified delivery: {outcome}");
}

/// Logs (and counts) a delivery store's outage once when it starts and once when it ends, whatever the
/// number of requests in between (each of those gets its own debug line).
pub(super) fn store_health(
    health: &Outage,
    claim: &Result<Claim, StoreError>,
    on_failure: StoreFailure,
) {
    match claim {
        Err(err) if health.failed() => {
            record::store_outage();
            store_down(err, on_failure);
        }
        Err(err) => tracing::debug!(error = %err, "delivery store still unavailable"),
        Ok(_) if health.recovered() => tracing::info!("delivery store answers again"),
        Ok(_) => {}
    }
}

fn store_down(err: &StoreError, on_failure: StoreFailure) {
    match on_failure {
        StoreFailure::RunHandler => tracing::warn!(
            error = %err,
            "delivery store unavailable: running handlers without deduplication until it \
             answers again"
        ),
        _ => tracing::error!(
            error = %err,
            "delivery store unavailable: answering 503 so Ringyo retries, until it answers \
             again"
        ),
    }
}
