//! Helpers for testing your own handlers without Ringyo (feature `test-util`).
//!
//! - [`TestDelivery`] builds a signed `http::Request` as Ringyo would send it, or one with a
//!   deliberate [`Fault`], ready for `tower::ServiceExt::oneshot` on your axum `Router`;
//! - [`sample_data`] gives a realistic `data` payload for every event the crate knows;
//! - [`sign`] gives the exact `x-ringyo-signature` value for any body;
//! - [`ManualClock`] lets a test move the layer's clock.
//!
//! A handler test, start to finish:
//!
//! ```
//! use axum::{http::StatusCode, routing::post, Router};
//! use ringyo_webhook::{testing::{Fault, TestDelivery}, Event, RingyoEvent, RingyoWebhookLayer};
//! use tower::ServiceExt;
//!
//! async fn handle(event: RingyoEvent) -> StatusCode {
//!     match event.data {
//!         Event::CallCompleted(call) if call.duration.is_some() => StatusCode::NO_CONTENT,
//!         _ => StatusCode::UNPROCESSABLE_ENTITY,
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = "whsec_test_secret";
//! let app = Router::new()
//!     .route("/webhooks/ringyo", post(handle).route_layer(RingyoWebhookLayer::new(secret)?));
//!
//! let delivery = TestDelivery::new("call.completed").secret(secret);
//! let response = app.clone().oneshot(delivery.into_request()).await?;
//! assert_eq!(response.status(), StatusCode::NO_CONTENT);
//!
//! let forged = TestDelivery::new("call.completed").secret(secret).fault(Fault::WrongSecret);
//! let response = app.oneshot(forged.into_request()).await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! # Ok(())
//! # }
//! ```

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use chrono::{DateTime, TimeDelta, Utc};
use http::{header, Method, Request};
use serde_json::{json, Value};

use crate::{
    event::EventKind,
    replay::{after, Clock},
    verify::{SecretError, Verifier, SIGNATURE_HEADER},
};

/// The secret the receiver example and the `send` example use when `RINGYO_WEBHOOK_SECRET` is
/// unset. For local development only: it is public.
pub const DEVELOPMENT_SECRET: &str = "whsec_ringyo_local_development_only";

/// The path the examples serve and post to.
pub const DEFAULT_PATH: &str = "/webhooks/ringyo";

/// The `x-ringyo-signature` value Ringyo would send for `body` under `secret`.
///
/// ```
/// let body = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:00Z","data":{}}"#;
/// let header = ringyo_webhook::testing::sign("whsec_test", body)?;
/// assert_eq!(header.len(), 64);
/// assert!(ringyo_webhook::verify(["whsec_test"], body, &header).is_ok());
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
///
/// # Errors
///
/// [`SecretError`] if the secret would be refused by the layer.
pub fn sign(secret: &str, body: &[u8]) -> Result<String, SecretError> {
    Ok(Verifier::new(secret)?.sign(body).to_string())
}

/// A deliberate flaw in a [`TestDelivery`], to see the rejection it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The body changes after signing (one space added, which a JSON parser would not notice
    /// but the signature does): 401 `invalid_signature`.
    Tamper,
    /// Signed with another secret, as if from another endpoint: 401 `invalid_signature`.
    WrongSecret,
    /// The `timestamp` is two hours old, outside the default window: 401
    /// `timestamp_out_of_tolerance`.
    Stale,
    /// No `x-ringyo-signature` header: 401 `missing_signature`.
    MissingSignature,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 4] = [
        Fault::Tamper,
        Fault::WrongSecret,
        Fault::Stale,
        Fault::MissingSignature,
    ];

    /// The error code a layer with default settings answers this fault with.
    pub fn expected_code(self) -> &'static str {
        match self {
            Self::Tamper | Self::WrongSecret => "invalid_signature",
            Self::Stale => "timestamp_out_of_tolerance",
            Self::MissingSignature => "missing_signature",
        }
    }
}

/// A delivery as Ringyo would send it, for tests and local tools.
///
/// Defaults: the event's [`sample_data`], the current time as `timestamp`, `webhook_id`
/// `wh_test`, the [`DEVELOPMENT_SECRET`], and the path [`DEFAULT_PATH`]. See the
/// [module docs](self) for a whole handler test.
#[derive(Clone)]
pub struct TestDelivery {
    event: String,
    data: Value,
    timestamp: DateTime<Utc>,
    webhook_id: String,
    secret: String,
    uri: String,
    fault: Option<Fault>,
}

impl TestDelivery {
    /// A delivery of `event` (any name, known or not) with its sample data.
    pub fn new(event: impl Into<String>) -> Self {
        let event = event.into();
        Self {
            data: sample_data(&EventKind::from(event.as_str())),
            event,
            timestamp: DateTime::from(SystemTime::now()),
            webhook_id: "wh_test".to_owned(),
            secret: DEVELOPMENT_SECRET.to_owned(),
            uri: DEFAULT_PATH.to_owned(),
            fault: None,
        }
    }

    /// Replaces the `data` payload.
    #[must_use]
    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// Sets the envelope's `timestamp`.
    #[must_use]
    pub fn timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Sets the envelope's `webhook_id`.
    #[must_use]
    pub fn webhook_id(mut self, webhook_id: impl Into<String>) -> Self {
        self.webhook_id = webhook_id.into();
        self
    }

    /// Sets the secret to sign with (the receiver's, unless testing a fault).
    #[must_use]
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = secret.into();
        self
    }

    /// Sets the request's path (or full URI).
    #[must_use]
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = uri.into();
        self
    }

    /// Grows `data` to make the body about `bytes` long (never shorter than it is), by adding
    /// transcript turns: for benchmarks and size limits.
    #[must_use]
    pub fn pad_to(mut self, bytes: usize) -> Self {
        let turn = json!({
            "role": "user",
            "content": "I'd like to move my appointment to Thursday afternoon, please.",
            "timestamp": 12.5,
        });
        let per_turn = turn.to_string().len() + 1; // and a comma
        let missing = bytes.saturating_sub(self.body_and_signature().0.len());
        if missing < per_turn {
            return self;
        }
        if !self.data.is_object() {
            self.data = json!({});
        }
        let transcript = self.data["transcript"].take();
        let mut turns = match transcript {
            Value::Array(turns) => turns,
            _ => Vec::new(),
        };
        turns.extend(std::iter::repeat_n(turn, missing / per_turn));
        self.data["transcript"] = Value::Array(turns);
        self
    }

    /// Adds a deliberate fault.
    #[must_use]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The event's name.
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The body and the `x-ringyo-signature` value (none for [`Fault::MissingSignature`]),
    /// faults applied.
    ///
    /// # Panics
    ///
    /// If the secret is one the layer would refuse (empty, or with whitespace at an end).
    pub fn body_and_signature(&self) -> (String, Option<String>) {
        let timestamp = match self.fault {
            Some(Fault::Stale) => self.timestamp - TimeDelta::hours(2),
            _ => self.timestamp,
        };
        // Fields in the order Ringyo documents, `data` last (a `json!` map would sort them).
        #[derive(serde::Serialize)]
        struct Envelope<'a> {
            event: &'a str,
            timestamp: String,
            webhook_id: &'a str,
            data: &'a Value,
        }
        let body = serde_json::to_string(&Envelope {
            event: &self.event,
            timestamp: timestamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            webhook_id: &self.webhook_id,
            data: &self.data,
        })
        .expect("a JSON value always serializes");
        let secret = match self.fault {
            Some(Fault::WrongSecret) => "whsec_some_other_endpoint",
            _ => &self.secret,
        };
        let signature = sign(secret, body.as_bytes())
            .unwrap_or_else(|err| panic!("TestDelivery cannot sign with this secret: {err}"));
        match self.fault {
            Some(Fault::Tamper) => (body.replacen('{', "{ ", 1), Some(signature)),
            Some(Fault::MissingSignature) => (body, None),
            _ => (body, Some(signature)),
        }
    }

    /// The signed `POST` request, for `tower::ServiceExt::oneshot`.
    ///
    /// # Panics
    ///
    /// As for [`body_and_signature`](Self::body_and_signature), or if the URI is invalid.
    pub fn into_request(self) -> Request<String> {
        let (body, signature) = self.body_and_signature();
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&self.uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        request.body(body).expect("a valid URI")
    }
}

impl std::fmt::Debug for TestDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDelivery")
            .field("event", &self.event)
            .field("timestamp", &self.timestamp)
            .field("uri", &self.uri)
            .field("fault", &self.fault)
            .finish_non_exhaustive() // never the secret, nor the data
    }
}

/// Realistic `data` for `kind`, built from what Ringyo documents of its objects.
///
/// Phone numbers use the fictional 555-01xx range. An event the crate does not know gets `{}`.
///
/// ```
/// use ringyo_webhook::{testing::sample_data, Event, EventKind, FromEventData};
///
/// let data = sample_data(&EventKind::CallTranscriptReady);
/// let Event::CallTranscriptReady(call) =
///     Event::from_event_data(&EventKind::CallTranscriptReady, data).unwrap()
/// else { unreachable!() };
/// assert!(call.transcript.unwrap().len() > 1);
/// ```
pub fn sample_data(kind: &EventKind) -> Value {
    let call = |status: &str| {
        json!({
            "id": "call_xyz789",
            "status": status,
            "phone_number": "+15555550123",
            "from_number": "+15555550100",
            "agent_id": "agent_abc123",
            "created_at": "2024-01-15T10:26:42Z",
            "metadata": {"crm_lead_id": "lead_4821"},
        })
    };
    let with = |mut base: Value, extra: Value| {
        if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
            base.extend(extra);
        }
        base
    };
    let ended = json!({
        "duration": 187,
        "ended_at": "2024-01-15T10:29:49Z",
        "outcome": "appointment_booked",
    });
    let appointment = |status: &str| {
        json!({
            "id": "appt_7f3k2",
            "status": status,
            "call_id": "call_xyz789",
            "agent_id": "agent_abc123",
            "scheduled_at": "2024-01-18T15:00:00Z",
            "customer_name": "Jordan Lee",
            "customer_phone": "+15555550123",
            "created_at": "2024-01-15T10:29:30Z",
            "metadata": {"crm_lead_id": "lead_4821"},
        })
    };
    let agent = json!({
        "id": "agent_abc123",
        "name": "Front Desk",
        "language": "en-US",
        "voice": "warm-female-1",
        "created_at": "2024-01-02T09:00:00Z",
        "metadata": {"team": "scheduling"},
    });
    let phone_number = |agent_id: Value| {
        json!({
            "id": "pn_2k9d",
            "phone_number": "+15555550100",
            "agent_id": agent_id,
            "country": "US",
            "created_at": "2024-01-02T09:05:00Z",
        })
    };
    match kind {
        EventKind::CallStarted | EventKind::CallInitiated => call("initiated"),
        EventKind::CallRinging => call("ringing"),
        EventKind::CallAnswered => call("in_progress"),
        EventKind::CallCompleted => with(
            with(call("completed"), ended),
            json!({
                "recording_url": "https://api.ringyo.ai/v1/calls/call_xyz789/recording",
                "analysis": {"sentiment": "positive", "summary": "Booked a cleaning for Thursday."},
            }),
        ),
        EventKind::CallFailed => with(call("busy"), json!({"duration": 0, "outcome": "busy"})),
        EventKind::CallTransferred => with(
            call("transferred"),
            json!({
                "duration": 64,
                "transferred_to": "+15555550199",
            }),
        ),
        EventKind::CallRecordingReady => with(
            with(call("completed"), ended),
            json!({
                "recording_url": "https://api.ringyo.ai/v1/calls/call_xyz789/recording",
            }),
        ),
        EventKind::CallTranscriptReady => with(
            with(call("completed"), ended),
            json!({
                "transcript": [
                    {"role": "agent", "content": "Thanks for calling Bright Smile Dental, how can I help?", "timestamp": 0.4},
                    {"role": "user", "content": "Hi, I'd like to book a cleaning.", "timestamp": 3.1},
                    {"role": "agent", "content": "Thursday at 3 PM works. Shall I book it?", "timestamp": 7.8},
                    {"role": "user", "content": "Yes please.", "timestamp": 11.2},
                ],
            }),
        ),
        EventKind::AppointmentCreated | EventKind::AppointmentUpdated => appointment("confirmed"),
        EventKind::AppointmentCancelled => appointment("cancelled"),
        EventKind::AppointmentReminder => with(
            appointment("confirmed"),
            json!({
                "reminder_sent_at": "2024-01-17T15:00:00Z",
            }),
        ),
        EventKind::AgentCreated | EventKind::AgentUpdated | EventKind::AgentDeleted => agent,
        EventKind::PhoneNumberAssigned => phone_number(json!("agent_abc123")),
        EventKind::PhoneNumberReleased => phone_number(Value::Null),
        EventKind::CreditsLow => json!({"balance": 12.5, "threshold": 50, "currency": "USD"}),
        EventKind::Unknown(_) => json!({}),
    }
}

/// A [`Clock`] that only moves when told to, for testing freshness and expiry.
///
/// Clones share one time, so a test keeps a clone and moves the layer's clock:
///
/// ```
/// use std::time::Duration;
/// use ringyo_webhook::{testing::ManualClock, Clock, RingyoWebhookLayer};
///
/// let clock = ManualClock::new("2024-01-15T10:30:00Z".parse().unwrap());
/// let layer = RingyoWebhookLayer::new("whsec_test")?.clock(clock.clone());
/// clock.advance(Duration::from_secs(13 * 60));
/// assert_eq!(clock.now().to_rfc3339(), "2024-01-15T10:43:00+00:00");
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock that reads `now` until moved.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Sets the time.
    pub fn set(&self, now: DateTime<Utc>) {
        *self.lock() = now;
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now = after(*now, by);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A plain value: a panic elsewhere cannot leave it half-written.
        self.now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::FromEventData, Event};

    #[test]
    fn signer_matches_the_seed_node_algorithm() {
        // crypto.createHmac('sha256', secret).update(body).digest('hex'), run under Node.
        let body = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00Z","webhook_id":"wh_abc123","data":{"id":"call_xyz789"}}"#;
        assert_eq!(
            sign("whsec_a1b2c3d4e5f6g7h8i9j0", body).unwrap(),
            "72d34d0e8843ebffab0e86ee065dbe484b179988222ca4f5a402824658241a46"
        );
        let pretty = "{\n  \"event\": \"call.completed\",\n  \"timestamp\": \"2024-01-15T10:30:00Z\",\n  \"webhook_id\": \"wh_abc123\",\n  \"data\": {\n    \"id\": \"call_xyz789\",\n    \"transcript\": [\n      {\"role\": \"user\", \"content\": \"Caf\\u00e9 at 3 \\u2014 \\ud83d\\udcde\"}\n    ]\n  }\n}\n";
        assert_eq!(
            sign("whsec_a1b2c3d4e5f6g7h8i9j0", pretty.as_bytes()).unwrap(),
            "0dc658bf6bf3a869d8cc533cee01679b7d2342f31e82cdcde797b32161d75f11"
        );
    }

    #[test]
    fn every_known_event_has_sample_data_that_types_fully() {
        for name in EventKind::KNOWN {
            let kind = EventKind::from(*name);
            let data = sample_data(&kind);
            assert!(data.as_object().is_some_and(|o| !o.is_empty()), "{name}");
            let event = Event::from_event_data(&kind, data).unwrap();
            let id = match &event {
                Event::CreditsLow(credits) => credits.balance.map(|b| b.to_string()),
                Event::AppointmentCreated(a) | Event::AppointmentCancelled(a) => a.id.clone(),
                Event::AgentDeleted(a) => a.id.clone(),
                Event::PhoneNumberAssigned(p) => p.phone_number.clone(),
                Event::CallTranscriptReady(c) => c.transcript.as_ref().map(|t| t.len().to_string()),
                Event::CallCompleted(c) => c.recording_url.clone(),
                _ => Some(String::new()),
            };
            assert!(id.is_some(), "{name}: {event:?}");
        }
    }

    #[test]
    fn envelope_fields_come_in_ringyos_order() {
        let (body, _) = TestDelivery::new("credits.low").body_and_signature();
        let at = |field: &str| body.find(&format!("\"{field}\":")).unwrap();
        assert!(at("event") < at("timestamp"));
        assert!(at("timestamp") < at("webhook_id"));
        assert!(at("webhook_id") < at("data"), "{body}");
    }

    #[test]
    fn padding_reaches_about_the_size_asked() {
        for size in [2 << 10, 256 << 10] {
            let body = TestDelivery::new("call.transcript.ready")
                .pad_to(size)
                .body_and_signature()
                .0;
            assert!(
                body.len() <= size && body.len() > size - 100,
                "{} for {size}",
                body.len()
            );
        }
        let small = TestDelivery::new("credits.low")
            .pad_to(10)
            .body_and_signature()
            .0;
        assert!(!small.contains("transcript"));
    }

    #[test]
    fn faults_change_what_they_say() {
        let at: DateTime<Utc> = "2024-01-15T10:30:00Z".parse().unwrap();
        let good = TestDelivery::new("credits.low").timestamp(at);
        let (body, signature) = good.body_and_signature();
        let signature = signature.unwrap();
        assert!(crate::verify([DEVELOPMENT_SECRET], body.as_bytes(), &signature).is_ok());
        assert!(
            body.contains(r#""timestamp":"2024-01-15T10:30:00Z""#),
            "{body}"
        );

        let (tampered, sig) = good.clone().fault(Fault::Tamper).body_and_signature();
        assert_ne!(tampered, body);
        assert!(crate::verify([DEVELOPMENT_SECRET], tampered.as_bytes(), &sig.unwrap()).is_err());

        let (wrong, sig) = good.clone().fault(Fault::WrongSecret).body_and_signature();
        assert!(crate::verify([DEVELOPMENT_SECRET], wrong.as_bytes(), &sig.unwrap()).is_err());

        let (stale, sig) = good.clone().fault(Fault::Stale).body_and_signature();
        assert!(stale.contains("2024-01-15T08:30:00Z"), "{stale}");
        assert!(crate::verify([DEVELOPMENT_SECRET], stale.as_bytes(), &sig.unwrap()).is_ok());

        let request = good.fault(Fault::MissingSignature).into_request();
        assert!(request.headers().get(SIGNATURE_HEADER).is_none());
        assert_eq!(request.uri(), DEFAULT_PATH);
    }
}
