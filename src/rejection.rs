//! The one vocabulary of failures: every way a delivery can be refused, by the layer, an
//! extractor or [`RingyoEvent::verify`](crate::RingyoEvent::verify), is a [`RejectionKind`] with
//! one status, one stable code and one message, all defined in the table below.
//!
//! On the wire every rejection is `{"error": "<code>", "message": "<text>"}` with
//! `content-type: application/json`, ending in a newline. The code is for machines and never
//! changes; the message is for people and may carry a detail (a position, a field path, the
//! limit), never a secret or a payload value.

use std::{borrow::Cow, fmt};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Declares [`RejectionKind`] from one table, so a status, a code and a message can never be
/// defined twice.
macro_rules! kinds {
    ($(
        $(#[$doc:meta])*
        $kind:ident => $status:ident, $code:literal, $message:literal;
    )*) => {
        /// Why a delivery was refused, each kind with one status, one stable code and one
        /// message.
        ///
        /// | kind | status | code |
        /// |---|---|---|
        $(#[doc = concat!("| `", stringify!($kind), "` | ", stringify!($status), " | `", $code, "` |")])*
        ///
        /// The 409 and 503 answers carry `Retry-After`: Ringyo retries any non-2xx answer, so
        /// nothing is lost.
        ///
        /// ```
        /// use ringyo_webhook::RejectionKind;
        ///
        /// let kind = RejectionKind::TimestampOutOfTolerance;
        /// assert_eq!((kind.status().as_u16(), kind.code()), (401, "timestamp_out_of_tolerance"));
        /// assert!(RejectionKind::ALL.iter().all(|kind| !kind.message().is_empty()));
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum RejectionKind {
            $( $(#[$doc])* $kind, )*
        }

        impl RejectionKind {
            /// Every kind, in the order of the table.
            pub const ALL: &'static [RejectionKind] = &[$(Self::$kind),*];

            /// The HTTP status this kind answers with.
            pub fn status(self) -> StatusCode {
                match self {
                    $( Self::$kind => StatusCode::$status, )*
                }
            }

            /// The stable, machine-readable code in the JSON body's `error` field.
            pub fn code(self) -> &'static str {
                match self {
                    $( Self::$kind => $code, )*
                }
            }

            /// The human-readable message in the JSON body's `message` field, before any
            /// detail.
            pub fn message(self) -> &'static str {
                match self {
                    $( Self::$kind => $message, )*
                }
            }
        }
    };
}

kinds! {
    /// No `x-ringyo-signature` header. Answered before the body is read.
    MissingSignature => UNAUTHORIZED, "missing_signature",
        "the x-ringyo-signature header is missing";
    /// The header is not 64 hex digits (after an optional `sha256=`). Answered before the body
    /// is read.
    MalformedSignature => UNAUTHORIZED, "invalid_signature",
        "the x-ringyo-signature header is not 64 hex digits";
    /// The signature matches the body under none of the secrets.
    SignatureMismatch => UNAUTHORIZED, "invalid_signature",
        "the signature does not match the request body";
    /// The header is repeated with different values. Answered before the body is read.
    ConflictingSignatures => UNAUTHORIZED, "conflicting_signatures",
        "the x-ringyo-signature header appears more than once with different values";
    /// The body is larger than the limit, by its `Content-Length` (body not read) or while
    /// streaming.
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "payload_too_large",
        "the request body is larger than the limit";
    /// The body could not be read to its end (the client went away, or sent a broken chunk).
    BodyReadFailed => BAD_REQUEST, "body_read_failed",
        "the request body could not be read to its end";
    /// The signed `timestamp` is older, or further in the future, than the tolerance: a replay,
    /// or an event whose retries outlived the window.
    TimestampOutOfTolerance => UNAUTHORIZED, "timestamp_out_of_tolerance",
        "the event's timestamp is outside the accepted window";
    /// The verified body is not valid JSON.
    InvalidJson => BAD_REQUEST, "invalid_json",
        "the body is not valid JSON";
    /// The verified body is JSON nested deeper than the receiver reads (127 levels,
    /// serde_json's recursion limit), anywhere in it. Refused rather than stored: no handler
    /// could read it.
    JsonTooDeep => UNPROCESSABLE_ENTITY, "json_too_deep",
        "the body's JSON is nested deeper than 127 levels";
    /// The verified body holds a number that a 64-bit float cannot hold, such as `1e400`
    /// (`JSON.stringify` never writes one). Refused rather than stored: no handler could read
    /// it.
    NumberOutOfRange => UNPROCESSABLE_ENTITY, "number_out_of_range",
        "the body holds a number too large for a 64-bit float";
    /// The verified body is JSON but not an event envelope: not an object, no string `event`,
    /// a field given twice, or, for an event the crate knows, a `data` that is not an object or
    /// gives one of its own fields twice.
    InvalidEnvelope => UNPROCESSABLE_ENTITY, "invalid_envelope",
        "the body is not a Ringyo event envelope";
    /// The envelope has no `timestamp`, or one that is not an RFC 3339 date-time.
    InvalidTimestamp => UNPROCESSABLE_ENTITY, "invalid_timestamp",
        "the envelope has no RFC 3339 `timestamp`";
    /// The envelope is fine but its `data` does not fit the handler's type. The crate's own
    /// [`Event`](crate::Event) never gives this for an object `data`.
    InvalidEventData => UNPROCESSABLE_ENTITY, "invalid_event_data",
        "the event's `data` does not fit the receiver's type";
    /// With a delivery store: the same delivery is being handled by another request right now;
    /// a retry gets the outcome.
    DeliveryInProgress => CONFLICT, "delivery_in_progress",
        "this delivery is being handled by another request; retry later";
    /// With a delivery store: the store failed, so the layer cannot tell whether the delivery
    /// was handled already.
    StoreUnavailable => SERVICE_UNAVAILABLE, "delivery_store_unavailable",
        "the receiver cannot check for duplicate deliveries right now; retry later";
    /// With the durable inbox (`inbox::Inbox`): the delivery could not be committed to the
    /// database, so it is not acknowledged; Ringyo's retry stores it once the database is back.
    InboxUnavailable => SERVICE_UNAVAILABLE, "inbox_unavailable",
        "the receiver cannot store the delivery right now; retry later";
    /// With a [`SecretSource`](crate::secrets::SecretSource) that needs I/O: it could not look
    /// up the secrets (its database or vault failed), so the delivery may be genuine; Ringyo's
    /// retry gets another chance.
    SecretsUnavailable => SERVICE_UNAVAILABLE, "secrets_unavailable",
        "the receiver cannot look up its signing secrets right now; retry later";
    /// An extractor ran on a route without [`RingyoWebhookLayer`](crate::RingyoWebhookLayer),
    /// so nothing verified the bytes; they are not parsed. A bug in the receiver, not the
    /// sender's fault.
    MissingLayer => INTERNAL_SERVER_ERROR, "webhook_layer_missing",
        "the webhook route has no RingyoWebhookLayer, so the delivery cannot be verified";
}

impl RejectionKind {
    /// The `Retry-After` the answer carries, in seconds, for kinds a retry can cure.
    pub fn retry_after(self) -> Option<u32> {
        match self {
            // Ringyo retries on its own schedule anyway; this tells other clients and proxies.
            Self::DeliveryInProgress
            | Self::StoreUnavailable
            | Self::InboxUnavailable
            | Self::SecretsUnavailable => Some(5),
            _ => None,
        }
    }
}

/// A refused delivery: a [`RejectionKind`] and, where it helps, a detail.
///
/// The layer answers with it (and puts it in the response's extensions, so outer middleware can
/// tell a rejection from a handler's own answer), the extractors reject with it, and
/// [`RingyoEvent::verify`](crate::RingyoEvent::verify) returns it.
///
/// ```
/// use ringyo_webhook::{Rejection, RejectionKind};
/// # fn inspect(response: &http::Response<()>) {
/// if let Some(rejection) = response.extensions().get::<Rejection>() {
///     if rejection.kind() == RejectionKind::PayloadTooLarge {
///         // count it, alert on it, ...
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    kind: RejectionKind,
    detail: Option<Cow<'static, str>>,
}

impl Rejection {
    pub(crate) fn new(kind: RejectionKind) -> Self {
        Self { kind, detail: None }
    }

    /// Adds a detail to the kind's message: a position, a path or a limit, never a value.
    pub(crate) fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The HTTP status of the rejection response.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The stable error code; see [`RejectionKind::code`].
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// Logs this rejection, once per refused delivery, at the level its kind deserves: warn
    /// for a stale timestamp (a replay, or an event lost to a narrow window) and for a verified
    /// delivery the receiver cannot read (lost unless someone looks), error for the receiver's
    /// own faults, debug for the rest (anyone can send a bad signature).
    pub(crate) fn log(&self) {
        let reason = self.code();
        match self.kind {
            RejectionKind::TimestampOutOfTolerance
            | RejectionKind::InvalidJson
            | RejectionKind::JsonTooDeep
            | RejectionKind::NumberOutOfRange
            | RejectionKind::InvalidEnvelope
            | RejectionKind::InvalidTimestamp
            | RejectionKind::InvalidEventData => {
                tracing::warn!(reason, "rejected delivery: {self}");
            }
            RejectionKind::StoreUnavailable
            | RejectionKind::InboxUnavailable
            | RejectionKind::SecretsUnavailable
            | RejectionKind::MissingLayer => {
                tracing::error!(reason, "rejected delivery: {self}");
            }
            _ => tracing::debug!(reason, "rejected delivery: {self}"),
        }
    }

    /// The detail after the kind's message, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The JSON answer, `{"error": code, "message": text}`, with this rejection in its
    /// extensions. axum users get it through `IntoResponse`; this is for code outside axum.
    pub fn to_response(&self) -> Response<Bytes> {
        #[derive(serde::Serialize)]
        struct Wire<'a> {
            error: &'a str,
            message: String,
        }
        // Serializing two strings into a Vec cannot fail.
        let mut body = serde_json::to_vec(&Wire {
            error: self.code(),
            message: self.to_string(),
        })
        .unwrap_or_default();
        body.push(b'\n');
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.kind.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(self.clone());
        response
    }
}

impl From<RejectionKind> for Rejection {
    fn from(kind: RejectionKind) -> Self {
        Self::new(kind)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.message())?;
        match &self.detail {
            Some(detail) => write!(f, ": {detail}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn response_is_the_json_shape_with_a_trailing_newline() {
        let rejection =
            Rejection::new(RejectionKind::PayloadTooLarge).with_detail("1024 bytes at most");
        let response = rejection.to_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert!(response.body().ends_with(b"}\n"));
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"], "payload_too_large");
        assert_eq!(
            body["message"],
            "the request body is larger than the limit: 1024 bytes at most"
        );
        let attached = response.extensions().get::<Rejection>().unwrap();
        assert_eq!(attached, &rejection);
    }

    #[test]
    fn retryable_kinds_say_when_to_retry() {
        for kind in RejectionKind::ALL {
            let response = Rejection::new(*kind).to_response();
            let retry_after = response.headers().get(header::RETRY_AFTER);
            let retryable = matches!(kind.status().as_u16(), 409 | 503);
            assert_eq!(retry_after.is_some(), retryable, "{kind:?}");
        }
    }

    #[test]
    fn codes_are_snake_case_and_only_signature_failures_share_one() {
        let mut seen = HashSet::new();
        for kind in RejectionKind::ALL {
            let code = kind.code();
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(!kind.message().is_empty());
            if !seen.insert(code) {
                // A malformed header and a wrong one are both "invalid": the sender cannot
                // act on the difference, and an attacker learns nothing from it.
                assert_eq!(code, "invalid_signature");
            }
        }
    }
}
