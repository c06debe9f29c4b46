//! Rejections of the [`RingyoEvent`](crate::RingyoEvent) extractor.
//!
//! One type per failure, each with one status and one stable code, and an enum over them, as
//! axum-core does for its own extractors.

use std::{borrow::Cow, fmt};

use http::StatusCode;

use bytes::Bytes;

use crate::error::json_error;

macro_rules! rejection {
    ($(#[$meta:meta])* $name:ident, $status:ident, $code:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name {
            message: Cow<'static, str>,
        }

        impl $name {
            pub(crate) fn new(message: impl Into<Cow<'static, str>>) -> Self {
                Self { message: message.into() }
            }

            /// The HTTP status of this rejection.
            pub fn status(&self) -> StatusCode {
                StatusCode::$status
            }

            /// The stable error code in the JSON body's `error` field.
            pub fn code(&self) -> &'static str {
                $code
            }

            /// The human-readable message in the JSON body's `message` field.
            pub fn body_text(&self) -> &str {
                &self.message
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.message)
            }
        }

        impl std::error::Error for $name {}

        impl From<$name> for RingyoEventRejection {
            fn from(rejection: $name) -> Self {
                Self::$name(rejection)
            }
        }

        #[cfg(feature = "axum")]
        impl axum_core::response::IntoResponse for $name {
            fn into_response(self) -> axum_core::response::Response {
                json_error(self.status(), self.code(), &self.message)
                    .map(axum_core::body::Body::from)
            }
        }
    };
}

rejection! {
    /// The route has no [`RingyoWebhookLayer`](crate::RingyoWebhookLayer), so there are no
    /// verified bytes: 500 `webhook_layer_missing`. Unverified bytes are never parsed.
    MissingLayer, INTERNAL_SERVER_ERROR, "webhook_layer_missing"
}

rejection! {
    /// The verified body is not valid JSON: 400 `invalid_json`.
    InvalidJson, BAD_REQUEST, "invalid_json"
}

rejection! {
    /// The verified body is JSON but not an event envelope (no `event`, no valid `timestamp`,
    /// not an object): 422 `invalid_envelope`.
    InvalidEnvelope, UNPROCESSABLE_ENTITY, "invalid_envelope"
}

rejection! {
    /// The envelope is fine but its `data` does not fit the handler's type: 422
    /// `invalid_event_data`. The crate's own [`Event`](crate::Event) never gives this for an
    /// object `data`.
    InvalidEventData, UNPROCESSABLE_ENTITY, "invalid_event_data"
}

/// Why [`RingyoEvent`](crate::RingyoEvent) could not be extracted.
///
/// | variant | status | code |
/// |---|---|---|
/// | [`MissingLayer`] | 500 | `webhook_layer_missing` |
/// | [`InvalidJson`] | 400 | `invalid_json` |
/// | [`InvalidEnvelope`] | 422 | `invalid_envelope` |
/// | [`InvalidEventData`] | 422 | `invalid_event_data` |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RingyoEventRejection {
    /// See [`MissingLayer`].
    MissingLayer(MissingLayer),
    /// See [`InvalidJson`].
    InvalidJson(InvalidJson),
    /// See [`InvalidEnvelope`].
    InvalidEnvelope(InvalidEnvelope),
    /// See [`InvalidEventData`].
    InvalidEventData(InvalidEventData),
}

impl RingyoEventRejection {
    /// The HTTP status of this rejection.
    pub fn status(&self) -> StatusCode {
        self.inner().0
    }

    /// The stable error code in the JSON body's `error` field.
    pub fn code(&self) -> &'static str {
        self.inner().1
    }

    /// The human-readable message in the JSON body's `message` field.
    pub fn body_text(&self) -> &str {
        self.inner().2
    }

    /// The JSON answer, `{"error": code, "message": text}`, for code outside axum (where
    /// `IntoResponse` does this).
    pub fn to_response(&self) -> http::Response<Bytes> {
        json_error(self.status(), self.code(), self.body_text())
    }

    fn inner(&self) -> (StatusCode, &'static str, &str) {
        match self {
            Self::MissingLayer(r) => (r.status(), r.code(), r.body_text()),
            Self::InvalidJson(r) => (r.status(), r.code(), r.body_text()),
            Self::InvalidEnvelope(r) => (r.status(), r.code(), r.body_text()),
            Self::InvalidEventData(r) => (r.status(), r.code(), r.body_text()),
        }
    }
}

impl fmt::Display for RingyoEventRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.body_text())
    }
}

impl std::error::Error for RingyoEventRejection {}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for RingyoEventRejection {
    fn into_response(self) -> axum_core::response::Response {
        self.to_response().map(axum_core::body::Body::from)
    }
}
