//! Rejections by the layer, and the one JSON shape every rejection uses on the wire.
//!
//! Every rejection, from the layer or the extractor, answers with
//! `{"error": "<stable_code>", "message": "<human text>"}` and `content-type: application/json`.
//! The code is for machines and never changes; the message is for people and may.

use std::{borrow::Cow, fmt};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::verify::VerifyError;

/// Why the layer rejected a request, before any handler ran.
///
/// The rejection response carries this value in its extensions, so outer middleware can tell
/// a rejection from a handler's own answer:
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
#[derive(Debug, Clone)]
pub struct Rejection {
    kind: RejectionKind,
    message: Cow<'static, str>,
}

/// The kinds of [`Rejection`], each with one status and one stable error code.
///
/// | kind | status | code |
/// |---|---|---|
/// | `MissingSignature` | 401 | `missing_signature` |
/// | `MalformedSignature` | 401 | `invalid_signature` |
/// | `SignatureMismatch` | 401 | `invalid_signature` |
/// | `ConflictingSignatures` | 401 | `conflicting_signatures` |
/// | `PayloadTooLarge` | 413 | `payload_too_large` |
/// | `BodyReadFailed` | 400 | `body_read_failed` |
/// | `TimestampOutOfTolerance` | 401 | `timestamp_out_of_tolerance` |
/// | `InvalidJson` | 400 | `invalid_json` |
/// | `InvalidTimestamp` | 400 | `invalid_timestamp` |
/// | `DeliveryInProgress` | 409 | `delivery_in_progress` |
/// | `StoreUnavailable` | 503 | `delivery_store_unavailable` |
///
/// The 409 and 503 are retryable on purpose: Ringyo retries any non-2xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No `x-ringyo-signature` header.
    MissingSignature,
    /// The header is not 64 hex digits (after an optional `sha256=`).
    MalformedSignature,
    /// The signature matches the body under none of the secrets.
    SignatureMismatch,
    /// The header is repeated with different values.
    ConflictingSignatures,
    /// The body is larger than the layer's limit, by its `Content-Length` or while streaming.
    PayloadTooLarge,
    /// The body could not be read to its end (the client went away, or sent a broken chunk).
    BodyReadFailed,
    /// The signed `timestamp` is older, or further in the future, than the layer's tolerance:
    /// a replay, or an event whose retries outlived the window.
    TimestampOutOfTolerance,
    /// The timestamp check is on but the verified body is not JSON, so it has no timestamp.
    InvalidJson,
    /// The timestamp check is on but the verified body has no RFC 3339 `timestamp` (or is JSON
    /// but not an object).
    InvalidTimestamp,
    /// The same delivery is being handled by another request right now; a retry will get the
    /// outcome.
    DeliveryInProgress,
    /// The delivery store failed, so the layer cannot tell whether the delivery was handled.
    StoreUnavailable,
}

impl RejectionKind {
    /// The HTTP status this kind answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingSignature
            | Self::MalformedSignature
            | Self::SignatureMismatch
            | Self::ConflictingSignatures
            | Self::TimestampOutOfTolerance => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyReadFailed | Self::InvalidJson | Self::InvalidTimestamp => {
                StatusCode::BAD_REQUEST
            }
            Self::DeliveryInProgress => StatusCode::CONFLICT,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable code in the JSON body's `error` field.
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature | Self::SignatureMismatch => "invalid_signature",
            Self::ConflictingSignatures => "conflicting_signatures",
            Self::PayloadTooLarge => "payload_too_large",
            Self::BodyReadFailed => "body_read_failed",
            Self::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Self::InvalidJson => "invalid_json",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::DeliveryInProgress => "delivery_in_progress",
            Self::StoreUnavailable => "delivery_store_unavailable",
        }
    }
}

impl Rejection {
    pub(crate) fn new(kind: RejectionKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            RejectionKind::PayloadTooLarge,
            format!("the request body is larger than the {limit}-byte limit"),
        )
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

    /// The JSON response, with this rejection in its extensions.
    pub(crate) fn to_response(&self) -> Response<Bytes> {
        let mut response = json_error(self.status(), self.code(), &self.message);
        response.extensions_mut().insert(self.clone());
        response
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rejection {}

impl From<VerifyError> for Rejection {
    fn from(err: VerifyError) -> Self {
        let kind = match err {
            VerifyError::MissingSignature => RejectionKind::MissingSignature,
            VerifyError::ConflictingSignatures => RejectionKind::ConflictingSignatures,
            VerifyError::MalformedSignature => RejectionKind::MalformedSignature,
            // The layer's secrets were checked when it was built, so `Secret` cannot arise
            // here; treating it as a mismatch keeps this total without a panic.
            VerifyError::Mismatch | VerifyError::Secret(_) => RejectionKind::SignatureMismatch,
        };
        Self::new(kind, err.to_string())
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Rejection {
    fn into_response(self) -> axum_core::response::Response {
        self.to_response().map(axum_core::body::Body::from)
    }
}

/// Builds the one JSON error shape.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Bytes> {
    #[derive(serde::Serialize)]
    struct ErrorBody<'a> {
        error: &'a str,
        message: &'a str,
    }
    // Serializing two strings into a Vec cannot fail.
    let body = serde_json::to_vec(&ErrorBody {
        error: code,
        message,
    })
    .unwrap_or_default();
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_response_is_the_json_shape() {
        let response = Rejection::too_large(1024).to_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"], "payload_too_large");
        assert_eq!(
            body["message"],
            "the request body is larger than the 1024-byte limit"
        );
        let attached = response.extensions().get::<Rejection>().unwrap();
        assert_eq!(attached.kind(), RejectionKind::PayloadTooLarge);
    }

    #[test]
    fn verify_errors_map_to_documented_codes() {
        let cases = [
            (VerifyError::MissingSignature, "missing_signature"),
            (VerifyError::MalformedSignature, "invalid_signature"),
            (VerifyError::Mismatch, "invalid_signature"),
            (VerifyError::ConflictingSignatures, "conflicting_signatures"),
        ];
        for (err, code) in cases {
            let rejection = Rejection::from(err);
            assert_eq!(rejection.code(), code);
            assert_eq!(rejection.status(), StatusCode::UNAUTHORIZED);
        }
    }
}
