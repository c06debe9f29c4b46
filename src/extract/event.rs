//! [`RingyoEvent`]: a verified delivery, deserialized.

use std::fmt;

use chrono::{DateTime, Utc};

use super::payload::VerifiedPayload;
use crate::{
    event::{envelope, Event, EventKind, FromEventData},
    rejection::{Rejection, RejectionKind},
    secrets::Tenant,
    verify::{DeliveryId, Signature, SignatureError, Verifier},
};

/// A verified Ringyo event, with its `data` typed as `T`.
///
/// As an axum extractor it reads the bytes [`RingyoWebhookLayer`](crate::RingyoWebhookLayer)
/// verified; it never touches the request body itself, so it can stand anywhere among a
/// handler's arguments. Outside tower, [`verify`](Self::verify) makes one from a body and a
/// header value. `T` chooses how `data` is typed:
///
/// - [`Event`] (the default): the crate's enum, its variant chosen by the event name;
/// - `serde_json::Value`: anything, untyped;
/// - your own `serde` type: deserialized from `data`.
///
/// It is a struct with named fields rather than axum's `Json(T)` tuple, because an event is
/// more than its payload: the name, the time and the delivery's id matter to every handler.
///
/// It rejects with a [`Rejection`] of one of these kinds:
///
/// - 500 `webhook_layer_missing` if the route has no layer (and logs an error);
/// - 400 `invalid_json` if the verified body is not JSON;
/// - 422 `invalid_envelope` if it is not an object with a string `event`;
/// - 422 `invalid_timestamp` if it has no RFC 3339 `timestamp`;
/// - 422 `invalid_event_data` if `data` does not fit `T`, saying where, such as
///   ``at `data.transcript[1].role`: expected a string``.
///
/// To keep a verified delivery that does not fit, take `Result<RingyoEvent<T>, Rejection>`
/// together with [`VerifiedPayload`].
///
/// ```
/// use axum::{http::StatusCode, routing::post, Router};
/// use ringyo_webhook::{Event, RingyoEvent, RingyoWebhookLayer};
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
/// # std::env::set_var("RINGYO_WEBHOOK_SECRET", "whsec_doctest_only");
/// let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
/// let app: Router = Router::new()
///     .route("/webhooks/ringyo", post(typed).route_layer(layer.clone()))
///     .route("/webhooks/ringyo-raw", post(untyped).route_layer(layer));
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RingyoEvent<T = Event> {
    /// The event's name, the envelope's `event` field.
    pub kind: EventKind,
    /// When Ringyo says the event happened, the envelope's `timestamp`, in UTC.
    pub timestamp: DateTime<Utc>,
    /// The id of the webhook endpoint (`wh_...`): the same for every event an endpoint
    /// receives, so not an event id.
    pub webhook_id: Option<String>,
    /// The delivery's identity, the same for every retry of it: the key for your own
    /// idempotency. See [`DeliveryId`].
    pub delivery_id: DeliveryId,
    /// The tenant the delivery verified for, with a layer built on
    /// [`Tenants`](crate::secrets::Tenants); `None` otherwise.
    pub tenant: Option<Tenant>,
    /// The event's `data`, typed.
    pub data: T,
}

impl<T: FromEventData> RingyoEvent<T> {
    /// Verifies a delivery and deserializes it, in one call, for code outside tower: a
    /// serverless function, a queue consumer, a framework of your own.
    ///
    /// Pass the body exactly as received and the `x-ringyo-signature` header's value (`""` if
    /// there was none, which is refused as `missing_signature`, as the layer does). It makes the layer's checks in the layer's order, with the verifier's
    /// secrets and freshness window, then the extractor's, so the same bytes get the same
    /// answer as through the layer. For exactly-once handling, deduplicate on
    /// [`delivery_id`](Self::delivery_id).
    ///
    /// ```
    /// use ringyo_webhook::{Event, RingyoEvent, Verifier};
    ///
    /// # std::env::set_var("RINGYO_WEBHOOK_SECRET", "whsec_doctest_only");
    /// let verifier = Verifier::from_env("RINGYO_WEBHOOK_SECRET")?;
    /// # use ringyo_webhook::Clock;
    /// # let now = ringyo_webhook::SystemClock.now().to_rfc3339();
    /// # let body = format!(r#"{{"event":"credits.low","timestamp":"{now}","data":{{"balance":3}}}}"#);
    /// # let header = verifier.sign(body.as_bytes()).to_string();
    /// // `body` and `header` as your platform hands them over:
    /// let event: RingyoEvent = RingyoEvent::verify(&verifier, body.as_bytes(), &header)?;
    /// assert!(matches!(event.data, Event::CreditsLow(_)));
    ///
    /// let forged = RingyoEvent::<Event>::verify(&verifier, b"{}", &header).unwrap_err();
    /// assert_eq!(forged.code(), "invalid_signature");
    /// assert_eq!(forged.status(), 401);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`Rejection`] whose [`to_response`](Rejection::to_response) is the answer to send:
    /// a bad signature (401), a stale timestamp (401), then what the extractor rejects.
    pub fn verify(
        verifier: &Verifier,
        body: &[u8],
        signature: impl AsRef<[u8]>,
    ) -> Result<Self, Rejection> {
        Self::check(verifier, body, signature.as_ref()).inspect_err(Rejection::log)
    }

    /// The checks of [`verify`](Self::verify), in the layer's order; the caller logs a
    /// rejection, once.
    fn check(verifier: &Verifier, body: &[u8], signature: &[u8]) -> Result<Self, Rejection> {
        if signature.trim_ascii().is_empty() {
            return Err(SignatureError::Missing.into());
        }
        let verified = verifier.verify(body, &Signature::parse(signature)?)?;
        let fresh = verifier.check_fresh(body, verifier.now())?;
        fresh.head.readable(body)?;
        Self::parse(body, verified.delivery_id())
    }

    /// Deserializes the verified payload the layer left in a request's extensions, for code
    /// that is not an axum handler, such as a plain hyper service.
    ///
    /// # Errors
    ///
    /// As for the extractor: without the layer, `webhook_layer_missing` (and an error is
    /// logged). [`Rejection::to_response`] turns any of them into the JSON answer.
    pub fn from_extensions(extensions: &http::Extensions) -> Result<Self, Rejection> {
        Self::from_payload(payload(extensions)?)
    }

    /// Deserializes a verified payload.
    ///
    /// # Errors
    ///
    /// As for the extractor, without `webhook_layer_missing`.
    pub fn from_payload(payload: &VerifiedPayload) -> Result<Self, Rejection> {
        let event = Self::parse(payload.bytes(), payload.delivery_id());
        event
            .map(|event| event.with_tenant(payload.tenant().cloned()))
            .inspect_err(Rejection::log)
    }

    /// The same event, for `tenant`.
    pub(crate) fn with_tenant(self, tenant: Option<Tenant>) -> Self {
        Self { tenant, ..self }
    }

    /// Parses verified bytes, such as a row of the inbox; the caller logs a rejection, once.
    pub(crate) fn parse(body: &[u8], delivery_id: DeliveryId) -> Result<Self, Rejection> {
        let parsed = envelope::parse::<T>(body).map_err(|err| {
            if let envelope::EnvelopeError::Data(_) = err {
                // The type's name helps the receiver's developer; it is no business of the
                // sender's, so it goes to the log, not into the answer.
                tracing::debug!(
                    target_type = std::any::type_name::<T>(),
                    "verified event data does not fit the handler's type"
                );
            }
            Rejection::from(err)
        })?;
        // Present: `parse` refuses an envelope without them.
        let (kind, timestamp) = parsed.required()?;
        Ok(Self {
            kind: kind.clone(),
            timestamp,
            webhook_id: parsed.webhook_id,
            delivery_id,
            tenant: None,
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
            .field("delivery_id", &self.delivery_id)
            .field("tenant", &self.tenant)
            .field("data", &self.data)
            .finish()
    }
}

/// The verified payload the layer left in `extensions`, or the rejection for a route without
/// the layer (logged here, once, as the receiver's bug it is).
pub(crate) fn payload(extensions: &http::Extensions) -> Result<&VerifiedPayload, Rejection> {
    extensions.get::<VerifiedPayload>().ok_or_else(|| {
        tracing::error!(
            "a Ringyo webhook extractor ran on a route without RingyoWebhookLayer; refusing to \
             parse unverified bytes. Add it with `post(handler).route_layer(layer)`"
        );
        Rejection::new(RejectionKind::MissingLayer)
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    const SECRET: &str = "whsec_test";

    fn verifier_at(now: &str) -> Verifier {
        let now: DateTime<Utc> = now.parse().unwrap();
        Verifier::new(SECRET).unwrap().clock(move || now)
    }

    fn signed(body: &str) -> String {
        Verifier::new(SECRET)
            .unwrap()
            .sign(body.as_bytes())
            .to_string()
    }

    fn code<T: FromEventData>(result: Result<RingyoEvent<T>, Rejection>) -> &'static str {
        result.err().map_or("ok", |rejection| rejection.code())
    }

    #[test]
    fn one_call_verifies_checks_freshness_and_types_the_event() {
        let verifier = verifier_at("2024-01-15T10:35:00Z");
        let body = r#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00Z","webhook_id":"wh_1","data":{"id":"call_1"}}"#;
        let event = RingyoEvent::<Event>::verify(&verifier, body.as_bytes(), signed(body)).unwrap();
        assert_eq!(event.kind, EventKind::CallCompleted);
        assert_eq!(event.webhook_id.as_deref(), Some("wh_1"));
        let Event::CallCompleted(call) = event.data else {
            panic!("{:?}", event.data)
        };
        assert_eq!(call.id.as_deref(), Some("call_1"));
        let again = verifier
            .verify(body.as_bytes(), &Signature::parse(signed(body)).unwrap())
            .unwrap();
        assert_eq!(event.delivery_id, again.delivery_id());
    }

    #[test]
    fn one_call_refuses_in_the_layers_order() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Strict {
            count: u32,
        }
        let verifier = verifier_at("2024-01-15T10:35:00Z");
        let fresh = r#"{"event":"x","timestamp":"2024-01-15T10:30:00Z","data":{}}"#;
        let stale_and_unfit = r#"{"event":"x","timestamp":"2024-01-15T08:30:00Z","data":{}}"#;
        let no_timestamp = r#"{"event":"x","data":{}}"#;
        let cases = [
            (fresh, String::new(), "missing_signature"),
            (fresh, "zz".to_owned(), "invalid_signature"),
            (fresh, signed("other"), "invalid_signature"),
            (fresh, signed(fresh), "invalid_event_data"),
            // Freshness before the data, as through the layer.
            (
                stale_and_unfit,
                signed(stale_and_unfit),
                "timestamp_out_of_tolerance",
            ),
            (no_timestamp, signed(no_timestamp), "invalid_timestamp"),
            ("nope", signed("nope"), "invalid_json"),
        ];
        for (body, signature, expected) in cases {
            let result = RingyoEvent::<Strict>::verify(&verifier, body.as_bytes(), signature);
            assert_eq!(code(result), expected, "{body}");
        }
        let window = verifier.timestamp_tolerance(
            std::time::Duration::from_secs(1),
            TimeDelta::zero().to_std().unwrap(),
        );
        assert_eq!(
            code(RingyoEvent::<Event>::verify(
                &window,
                fresh.as_bytes(),
                signed(fresh)
            )),
            "timestamp_out_of_tolerance"
        );
    }

    #[test]
    fn extensions_without_the_layer_are_refused() {
        let rejection =
            RingyoEvent::<Event>::from_extensions(&http::Extensions::new()).unwrap_err();
        assert_eq!(rejection.kind(), RejectionKind::MissingLayer);
        assert_eq!(rejection.status(), 500);
    }
}
