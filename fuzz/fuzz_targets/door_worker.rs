//! The door against the worker, on any signed bytes: every body the layer lets through, the
//! inbox's worker reads. A 2xx is the last Ringyo hears of a delivery, so a body the layer
//! answers 2xx and the worker then dead-letters as unreadable is an event lost.
//!
//! The worker reads a stored body with `RingyoEvent::<Event>`'s parse (`from_payload` is the
//! same call on the same bytes); a user's own narrower type may refuse data, which is that
//! type's business. The layer runs with its timestamp check on (a clock at the seeds'
//! `timestamp` and a window of a century either way, so a timestamp seldom stands in the way)
//! and off (where it still refuses what the worker cannot read).
//!
//! Each input is tried as a whole body, and as the `data` of a known event (its first byte
//! picks which) in an envelope that is otherwise valid, so mutations spend their time where
//! the typed models read.
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
    Event, EventKind, RingyoEvent, RingyoWebhookLayer, Verifier,
};
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// The seeds' `timestamp`.
const NOW: &str = "2024-01-15T10:30:00Z";

const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

fuzz_target!(|input: &[u8]| {
    door_agrees_with_worker(input);
    if let Some((&pick, data)) = input.split_first() {
        let name = EventKind::KNOWN[usize::from(pick) % EventKind::KNOWN.len()];
        let head = format!(r#"{{"event":"{name}","timestamp":"{NOW}","data":"#);
        door_agrees_with_worker(&[head.as_bytes(), data, b"}"].concat());
    }
});

/// Sends `body`, signed, through the layer; the handler behind it reads it as the worker does.
fn door_agrees_with_worker(body: &[u8]) {
    let now = NOW.parse::<DateTime<Utc>>().unwrap();
    let verifier = Verifier::new("whsec_fuzz")
        .unwrap()
        .timestamp_tolerance(CENTURY, CENTURY)
        .clock(ManualClock::new(now));
    let signature = verifier.sign(body).to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for verifier in [verifier.clone(), verifier.skip_timestamp_check()] {
        let mut request = Request::post("/")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        request
            .headers_mut()
            .insert("x-ringyo-signature", signature.parse().unwrap());
        let service = ServiceBuilder::new()
            .layer(RingyoWebhookLayer::from_verifier(verifier))
            .service(service_fn(|req: Request<RequestBody>| async move {
                worker_reads(&req);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }));
        runtime.block_on(service.oneshot(request)).unwrap();
    }
}

/// Behind the door: the worker's parse reads what the layer let in.
fn worker_reads(req: &Request<RequestBody>) {
    let payload = req.extensions().get::<VerifiedPayload>().unwrap();
    if let Err(rejection) = RingyoEvent::<Event>::from_payload(payload) {
        panic!("the door let in a body the worker cannot read: {rejection}");
    }
    // The generic reading too: `serde_json::Value` reads any `data` the models read.
    if let Err(rejection) = RingyoEvent::<serde_json::Value>::from_payload(payload) {
        panic!("the door let in a body a Value cannot read: {rejection}");
    }
}
