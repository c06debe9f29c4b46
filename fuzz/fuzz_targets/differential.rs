//! The layer's reading of the envelope against a full JSON parse, on any signed bytes: what the
//! layer checked for freshness is what `serde_json::Value` and the extractor read, or the body
//! never reaches the handler (or no full parse accepts it).
//!
//! The clock is fixed and the window has no width, so a body passes the layer only with
//! a `timestamp` equal to the clock: a full parse that read another one (a second `timestamp`,
//! an escaped key) would see a time outside it.
#![no_main]

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use ringyo_webhook::{
    chrono::{DateTime, Utc},
    extract::VerifiedPayload,
    middleware::RequestBody,
    testing::ManualClock,
    EventKind, RingyoEvent, RingyoWebhookLayer, Verifier,
};
use serde_json::Value;
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// The seeds' `timestamp`.
const NOW: &str = "2024-01-15T10:30:00Z";

fuzz_target!(|body: &[u8]| {
    let now = NOW.parse::<DateTime<Utc>>().unwrap();
    let verifier = Verifier::new("whsec_fuzz")
        .unwrap()
        .timestamp_tolerance(Duration::ZERO, Duration::ZERO)
        .clock(ManualClock::new(now));
    let mut request = Request::post("/")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let signature = verifier.sign(body).to_string();
    request
        .headers_mut()
        .insert("x-ringyo-signature", signature.parse().unwrap());
    let service = ServiceBuilder::new()
        .layer(RingyoWebhookLayer::from_verifier(verifier))
        .service(service_fn(move |req: Request<RequestBody>| async move {
            check(&req, now);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(service.oneshot(request)).unwrap();
});

/// In the handler: the layer let the body through as fresh at `now`.
fn check(req: &Request<RequestBody>, now: DateTime<Utc>) {
    let payload = req.extensions().get::<VerifiedPayload>().unwrap();
    let extracted = RingyoEvent::<Value>::from_extensions(req.extensions());
    let Ok(value) = serde_json::from_slice::<Value>(payload.bytes()) else {
        // serde_json refuses a lone surrogate escape (half an emoji, as Node writes it), which
        // the layer and the extractor read as U+FFFD: a parse that reads nothing reads nothing
        // else. Everything else the layer lets through, serde_json reads (`door_worker`).
        assert!(
            String::from_utf8_lossy(payload.bytes()).contains("\\u"),
            "the layer let through a body serde_json cannot read"
        );
        return;
    };
    let object = value
        .as_object()
        .expect("the layer let a non-object through");
    let timestamp = object
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .expect("serde_json reads no timestamp where the layer read one");
    assert_eq!(
        timestamp, now,
        "serde_json reads another timestamp than the layer"
    );
    if let Ok(event) = extracted {
        assert_eq!(event.timestamp, now);
        let name = object.get("event").and_then(Value::as_str);
        assert_eq!(Some(event.kind), name.map(EventKind::from));
    }
}
