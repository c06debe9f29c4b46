//! [`TestDelivery`]: a delivery as Ringyo would send it, or with a deliberate [`Fault`].

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::SystemTime,
};

use chrono::{DateTime, TimeDelta, Utc};
use http::{header, Method, Request};
use serde_json::{json, Value};

use super::{sample_data, sign, DEFAULT_PATH, DEVELOPMENT_SECRET};
use crate::{
    event::{envelope::Head, EventKind, Subject},
    rejection::RejectionKind,
    secrets::Tenant,
    verify::{DeliveryId, Verifier, SIGNATURE_HEADER},
};

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

    /// The rejection a layer with default settings answers this fault with; its
    /// [`code`](RejectionKind::code) and [`status`](RejectionKind::status) are the answer's.
    pub fn expected(self) -> RejectionKind {
        match self {
            Self::Tamper | Self::WrongSecret => RejectionKind::SignatureMismatch,
            Self::Stale => RejectionKind::TimestampOutOfTolerance,
            Self::MissingSignature => RejectionKind::MissingSignature,
        }
    }
}

/// A delivery as Ringyo would send it, for tests and local tools.
///
/// Defaults: the event's [`sample_data`], the current time (unique within the process, to the
/// microsecond) as `timestamp`, `webhook_id`
/// `wh_test`, the [`DEVELOPMENT_SECRET`], and the path [`DEFAULT_PATH`]. See the
/// [module docs](super) for a whole handler test.
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
            timestamp: unique_now(),
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

    /// The envelope's `timestamp`, as signed (faults aside): the order the chaos kit keeps.
    pub(super) fn signed_at(&self) -> DateTime<Utc> {
        self.timestamp
    }

    /// The secret it signs with: the chaos kit's layer verifies with it.
    #[cfg(feature = "sqlite")]
    pub(super) fn signing_secret(&self) -> &str {
        &self.secret
    }

    /// Its deliberate fault, if any.
    #[cfg(feature = "inbox")]
    pub(super) fn deliberate_fault(&self) -> Option<Fault> {
        self.fault
    }

    /// What the layer reads of `body` (this delivery's, from
    /// [`body_and_signature`](Self::body_and_signature)) once verified for `tenant` (`None`
    /// without tenants): the delivery id and the subject, as the kit's chaos and jobs name
    /// them. Faults are not checked: the id is the one the body's own signature gives.
    ///
    /// # Panics
    ///
    /// If the secret is one the layer would refuse.
    pub(super) fn layer_reads(&self, body: &str, tenant: Option<&Tenant>) -> LayerReads {
        let verifier = Verifier::new(&self.secret)
            .unwrap_or_else(|err| panic!("TestDelivery cannot sign with this secret: {err}"));
        // The id the layer derives from the signature it verifies, folded with the tenant it
        // verified for.
        let verified = verifier
            .verify(body.as_bytes(), &verifier.sign(body.as_bytes()))
            .expect("a body verifies with its own signature");
        let verified = match tenant {
            Some(tenant) => verified.for_tenant(tenant.as_str()),
            None => verified,
        };
        LayerReads {
            id: verified.delivery_id(),
            subject: Head::scan(body.as_bytes())
                .ok()
                .and_then(|head| head.subject()),
        }
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
            // Whole seconds as Ringyo sends them, and the fraction only when there is one.
            timestamp: timestamp.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
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

/// What the layer reads of a [`TestDelivery`]: see [`TestDelivery::layer_reads`].
pub(super) struct LayerReads {
    pub(super) id: DeliveryId,
    pub(super) subject: Option<Subject>,
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

/// Now, to the microsecond, and later than any earlier call in this process: two deliveries of
/// the same sample are never the same bytes by accident.
fn unique_now() -> DateTime<Utc> {
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = DateTime::<Utc>::from(SystemTime::now()).timestamp_micros();
    let next = |last: i64| now.max(last.saturating_add(1));
    // The closure never refuses, so the update always succeeds and yields the value it replaced.
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(next(last))
        })
        .unwrap_or_else(|last| last);
    let micros = next(previous);
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Signature;

    fn verifies(body: &str, signature: &str) -> bool {
        let verifier = Verifier::new(DEVELOPMENT_SECRET).unwrap();
        Signature::parse(signature)
            .is_ok_and(|signature| verifier.verify(body.as_bytes(), &signature).is_ok())
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
        assert!(verifies(&body, &signature));
        assert!(
            body.contains(r#""timestamp":"2024-01-15T10:30:00Z""#),
            "{body}"
        );

        let (tampered, sig) = good.clone().fault(Fault::Tamper).body_and_signature();
        assert_ne!(tampered, body);
        assert!(!verifies(&tampered, &sig.unwrap()));

        let (wrong, sig) = good.clone().fault(Fault::WrongSecret).body_and_signature();
        assert!(!verifies(&wrong, &sig.unwrap()));

        let (stale, sig) = good.clone().fault(Fault::Stale).body_and_signature();
        assert!(stale.contains("2024-01-15T08:30:00Z"), "{stale}");
        assert!(verifies(&stale, &sig.unwrap()));

        let request = good.fault(Fault::MissingSignature).into_request();
        assert!(request.headers().get(SIGNATURE_HEADER).is_none());
        assert_eq!(request.uri(), DEFAULT_PATH);
    }

    #[test]
    fn two_new_deliveries_differ_but_a_clone_is_a_replay() {
        let first = TestDelivery::new("credits.low");
        let second = TestDelivery::new("credits.low");
        assert_ne!(first.body_and_signature(), second.body_and_signature());
        assert_eq!(
            first.body_and_signature(),
            first.clone().body_and_signature()
        );
    }

    #[test]
    fn each_fault_expects_its_own_rejection() {
        for fault in Fault::ALL {
            assert_eq!(fault.expected().status(), 401, "{fault:?}");
        }
        assert_eq!(Fault::Stale.expected().code(), "timestamp_out_of_tolerance");
    }
}
