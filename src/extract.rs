//! [`RingyoEvent`]: a verified delivery, deserialized.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::{
    envelope::{self, EnvelopeError},
    event::{Event, EventKind, FromEventData},
    payload::VerifiedPayload,
    rejection::{
        InvalidEnvelope, InvalidEventData, InvalidJson, MissingLayer, RingyoEventRejection,
    },
};

/// A verified Ringyo event, with its `data` typed as `T`.
///
/// As an axum extractor it reads the bytes [`RingyoWebhookLayer`](crate::RingyoWebhookLayer)
/// verified; it never touches the request body itself, so it can stand anywhere among a
/// handler's arguments. `T` chooses how `data` is typed:
///
/// - [`Event`] (the default): the crate's enum, its variant chosen by the event name;
/// - `serde_json::Value`: anything, untyped;
/// - your own `serde` type: deserialized from `data`.
///
/// It is a struct with named fields rather than axum's `Json(T)` tuple, because an event is
/// more than its payload: the name and time matter to every handler.
///
/// It rejects (see [`RingyoEventRejection`]):
///
/// - with 500 `webhook_layer_missing` if the route has no layer (and logs an error);
/// - with 400 `invalid_json` if the verified body is not JSON;
/// - with 422 `invalid_envelope` if it has no string `event` or no RFC 3339 `timestamp`;
/// - with 422 `invalid_event_data` if `data` does not fit `T`.
///
/// To keep a verified delivery that does not fit, take `Result<RingyoEvent<T>,
/// RingyoEventRejection>` together with [`VerifiedPayload`].
///
/// ```
/// use axum::{http::StatusCode, routing::post, Router};
/// use ringyo_webhook::{model::Call, Event, RingyoEvent, RingyoWebhookLayer};
///
/// async fn typed(event: RingyoEvent) -> StatusCode {
///     match event.data {
///         Event::CallCompleted(call) => println!("call {:?} took {:?}s", call.id, call.duration),
///         Event::CreditsLow(credits) => println!("credits at {:?}", credits.balance),
///         other => println!("{} arrived", other.kind()),
///     }
///     StatusCode::NO_CONTENT
/// }
///
/// async fn untyped(event: RingyoEvent<serde_json::Value>) {
///     println!("{} from {:?}: {}", event.kind, event.webhook_id, event.data);
/// }
///
/// let layer = RingyoWebhookLayer::new("whsec_example")?;
/// let app: Router = Router::new()
///     .route("/webhooks/ringyo", post(typed).route_layer(layer.clone()))
///     .route("/webhooks/ringyo-raw", post(untyped).route_layer(layer));
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Clone)]
pub struct RingyoEvent<T = Event> {
    /// The event's name, the envelope's `event` field.
    pub kind: EventKind,
    /// When Ringyo says the event happened, the envelope's `timestamp`, in UTC.
    pub timestamp: DateTime<Utc>,
    /// The id of the webhook endpoint (`wh_...`): the same for every event an endpoint
    /// receives, so not an event id.
    pub webhook_id: Option<String>,
    /// The event's `data`, typed.
    pub data: T,
}

impl<T: FromEventData> RingyoEvent<T> {
    /// Deserializes the verified payload the layer left in a request's extensions, for code
    /// that is not an axum handler, such as a plain hyper service.
    ///
    /// # Errors
    ///
    /// As for the extractor: without the layer, [`MissingLayer`] (and an error is logged).
    /// [`RingyoEventRejection::to_response`] turns any of them into the JSON answer.
    pub fn from_extensions(extensions: &http::Extensions) -> Result<Self, RingyoEventRejection> {
        Self::from_payload(payload(extensions)?)
    }

    /// Deserializes a verified payload.
    ///
    /// # Errors
    ///
    /// As for the extractor, without [`MissingLayer`].
    pub fn from_payload(payload: &VerifiedPayload) -> Result<Self, RingyoEventRejection> {
        let parsed = envelope::parse::<T>(payload.bytes()).map_err(|err| match err {
            EnvelopeError::Syntax { .. } => InvalidJson::new(err.to_string()).into(),
            EnvelopeError::Data { .. } => {
                // The type's name helps the user but is no business of the sender's.
                tracing::debug!(
                    target_type = std::any::type_name::<T>(),
                    "verified event data does not fit the handler's type: {err}"
                );
                InvalidEventData::new(err.to_string()).into()
            }
            _ => RingyoEventRejection::from(InvalidEnvelope::new(err.to_string())),
        })?;
        Ok(Self {
            kind: parsed.kind,
            timestamp: parsed.timestamp,
            webhook_id: parsed.webhook_id,
            data: parsed.data,
        })
    }
}

impl<T: fmt::Debug> fmt::Debug for RingyoEvent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingyoEvent")
            .field("kind", &self.kind)
            .field("timestamp", &self.timestamp)
            .field("webhook_id", &self.webhook_id)
            .field("data", &self.data)
            .finish()
    }
}

fn missing_layer() -> MissingLayer {
    tracing::error!(
        "a Ringyo webhook extractor ran on a route without RingyoWebhookLayer; refusing to \
         parse unverified bytes. Add it with `post(handler).route_layer(layer)`"
    );
    MissingLayer::new(
        "the webhook route has no RingyoWebhookLayer, so the delivery cannot be verified",
    )
}

/// The verified payload the layer left in `extensions`.
fn payload(extensions: &http::Extensions) -> Result<&VerifiedPayload, MissingLayer> {
    extensions
        .get::<VerifiedPayload>()
        .ok_or_else(missing_layer)
}

#[cfg(feature = "axum")]
mod axum_impls {
    use axum_core::extract::FromRequestParts;
    use http::request::Parts;

    use crate::verify::DeliveryId;

    use super::*;

    impl<S: Send + Sync> FromRequestParts<S> for VerifiedPayload {
        type Rejection = MissingLayer;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, MissingLayer> {
            payload(&parts.extensions).cloned()
        }
    }

    /// The delivery's id, for handlers that deduplicate on their own.
    impl<S: Send + Sync> FromRequestParts<S> for DeliveryId {
        type Rejection = MissingLayer;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, MissingLayer> {
            payload(&parts.extensions).map(VerifiedPayload::delivery_id)
        }
    }

    impl<T: FromEventData, S: Send + Sync> FromRequestParts<S> for RingyoEvent<T> {
        type Rejection = RingyoEventRejection;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, RingyoEventRejection> {
            Self::from_extensions(&parts.extensions)
        }
    }
}
