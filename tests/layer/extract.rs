//! The extractor through real HTTP: typed events reach handlers, bad payloads get JSON errors.

use ringyo_test_support as support;

use axum::{http::StatusCode, routing::post, Json, Router};
use ringyo_test_support::{deliver, envelope, serve, sign};
use ringyo_webhook::{
    model::CallStatus, Event, EventKind, Rejection, RingyoEvent, VerifiedPayload,
};
use serde_json::{json, Value};

/// Describes the typed event it received: variant, and a field of its typed data.
async fn typed(event: RingyoEvent<Event>) -> Json<Value> {
    let (variant, detail) = match &event.data {
        Event::CallStarted(c) => ("CallStarted", c.id.clone()),
        Event::CallInitiated(c) => ("CallInitiated", c.id.clone()),
        Event::CallRinging(c) => ("CallRinging", c.id.clone()),
        Event::CallAnswered(c) => ("CallAnswered", c.id.clone()),
        Event::CallCompleted(c) => ("CallCompleted", c.id.clone()),
        Event::CallFailed(c) => ("CallFailed", c.id.clone()),
        Event::CallTransferred(c) => ("CallTransferred", c.id.clone()),
        Event::CallRecordingReady(c) => ("CallRecordingReady", c.id.clone()),
        Event::CallTranscriptReady(c) => ("CallTranscriptReady", c.id.clone()),
        Event::AppointmentCreated(a) => ("AppointmentCreated", a.id.clone()),
        Event::AppointmentUpdated(a) => ("AppointmentUpdated", a.id.clone()),
        Event::AppointmentCancelled(a) => ("AppointmentCancelled", a.id.clone()),
        Event::AppointmentReminder(a) => ("AppointmentReminder", a.id.clone()),
        Event::AgentCreated(a) => ("AgentCreated", a.id.clone()),
        Event::AgentUpdated(a) => ("AgentUpdated", a.id.clone()),
        Event::AgentDeleted(a) => ("AgentDeleted", a.id.clone()),
        Event::PhoneNumberAssigned(p) => ("PhoneNumberAssigned", p.id.clone()),
        Event::PhoneNumberReleased(p) => ("PhoneNumberReleased", p.id.clone()),
        Event::CreditsLow(c) => ("CreditsLow", c.balance.map(|b| b.to_string())),
        Event::Unknown { data, .. } => ("Unknown", Some(data.to_string())),
        _ => ("unmatched", None),
    };
    Json(json!({
        "variant": variant,
        "detail": detail,
        "kind": event.kind.as_str(),
        "timestamp": event.timestamp.to_rfc3339(),
        "webhook_id": event.webhook_id,
    }))
}

#[tokio::test]
async fn every_event_name_reaches_the_handler_as_its_variant() {
    let addr = serve(Router::new().route("/", post(typed).route_layer(support::layer()))).await;
    let expected = [
        ("call.started", "CallStarted"),
        ("call.initiated", "CallInitiated"),
        ("call.ringing", "CallRinging"),
        ("call.answered", "CallAnswered"),
        ("call.completed", "CallCompleted"),
        ("call.failed", "CallFailed"),
        ("call.transferred", "CallTransferred"),
        ("call.recording.ready", "CallRecordingReady"),
        ("call.transcript.ready", "CallTranscriptReady"),
        ("appointment.created", "AppointmentCreated"),
        ("appointment.updated", "AppointmentUpdated"),
        ("appointment.cancelled", "AppointmentCancelled"),
        ("appointment.reminder", "AppointmentReminder"),
        ("agent.created", "AgentCreated"),
        ("agent.updated", "AgentUpdated"),
        ("agent.deleted", "AgentDeleted"),
        ("phone_number.assigned", "PhoneNumberAssigned"),
        ("phone_number.released", "PhoneNumberReleased"),
    ];
    assert_eq!(expected.len() + 1, EventKind::KNOWN.len());
    for (name, variant) in expected {
        let body = envelope(
            name,
            json!({"id": format!("id_{name}"), "new_field": [1, 2]}),
        );
        let (status, json, _) = deliver(addr, "/", body.clone(), Some(&sign(&body))).await;
        assert_eq!(status, 200, "{name}: {json}");
        assert_eq!(json["variant"], variant);
        assert_eq!(json["detail"], format!("id_{name}"));
        assert_eq!(json["kind"], name);
        assert_eq!(json["timestamp"], "2024-01-15T10:30:00+00:00");
        assert_eq!(json["webhook_id"], "wh_abc123");
    }

    let body = envelope("credits.low", json!({"balance": 4.5, "threshold": 10}));
    let (_, json, _) = deliver(addr, "/", body.clone(), Some(&sign(&body))).await;
    assert_eq!(json["variant"], "CreditsLow");
    assert_eq!(json["detail"], "4.5");

    let body = envelope("call.voicemail", json!({"seconds": 3}));
    let (status, json, _) = deliver(addr, "/", body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 200);
    assert_eq!(json["variant"], "Unknown");
    assert_eq!(json["kind"], "call.voicemail");
    assert_eq!(json["detail"], r#"{"seconds":3}"#);
}

#[tokio::test]
async fn call_data_is_typed_leniently() {
    async fn handler(event: RingyoEvent) -> String {
        let Event::CallCompleted(call) = event.data else {
            return "wrong variant".into();
        };
        format!(
            "{:?} {:?} {:?} {}",
            call.status,
            call.duration,
            call.transcript.map(|t| t.len()),
            call.extra.contains_key("sentiment_v2")
        )
    }
    let addr = serve(Router::new().route("/", post(handler).route_layer(support::layer()))).await;
    let body = envelope(
        "call.completed",
        json!({
            "id": "call_xyz789", "status": "voicemail_left", "duration": "about a minute",
            "transcript": [{"role": "agent", "content": "Hello"}, {"role": "user", "content": "Hi"}],
            "sentiment_v2": {"score": 0.9}
        }),
    );
    let signature = sign(&body);
    let response = support::post_signed(addr, "/", body, &signature).await;
    assert_eq!(response.status(), 200);
    let expected = format!(
        "{:?} None Some(2) true",
        Some(CallStatus::Unknown("voicemail_left".into()))
    );
    assert_eq!(response.text().await.unwrap(), expected);
}

#[tokio::test]
async fn users_own_type_and_value_work_as_data() {
    #[derive(serde::Deserialize)]
    struct MyCall {
        id: String,
    }
    async fn mine(event: RingyoEvent<MyCall>) -> String {
        format!("{} {}", event.kind, event.data.id)
    }
    async fn value(event: RingyoEvent<Value>) -> String {
        event.data["id"].to_string()
    }
    let app = Router::new()
        .route("/mine", post(mine).route_layer(support::layer()))
        .route("/value", post(value).route_layer(support::layer()));
    let addr = serve(app).await;
    let body = envelope("call.completed", json!({"id": "call_1", "other": true}));
    let signature = sign(&body);
    for (path, expected) in [("/mine", "call.completed call_1"), ("/value", "\"call_1\"")] {
        let response = support::post_signed(addr, path, body.clone(), &signature).await;
        assert_eq!(response.text().await.unwrap(), expected);
    }

    // Data that does not fit the user's type: 422 with a code, and no value quoted.
    let body = envelope("call.completed", json!({"id": 15551234567_u64}));
    let (status, json, _) = deliver(addr, "/mine", body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 422);
    assert_eq!(json["error"], "invalid_event_data");
    assert!(
        !json["message"].as_str().unwrap().contains("1555"),
        "{json}"
    );
}

#[tokio::test]
async fn verified_body_that_is_not_json_is_400_invalid_json() {
    // The layer's timestamp check would refuse it first; this is the extractor's own answer.
    let addr = serve(Router::new().route(
        "/",
        post(typed).route_layer(support::layer().skip_timestamp_check()),
    ))
    .await;
    let body = b"{\"event\": \"call.completed\", ".to_vec();
    let (status, json, headers) = deliver(addr, "/", body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"], "invalid_json");
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn envelope_without_event_or_timestamp_is_422_with_its_own_code() {
    let addr = serve(Router::new().route(
        "/",
        post(typed).route_layer(support::layer().skip_timestamp_check()),
    ))
    .await;
    for (body, code) in [
        (
            json!({"timestamp": "2024-01-15T10:30:00Z", "data": {}}),
            "invalid_envelope",
        ),
        (
            json!({"event": "call.completed", "data": {}}),
            "invalid_timestamp",
        ),
        (
            json!({"event": "call.completed", "timestamp": "last tuesday"}),
            "invalid_timestamp",
        ),
        (
            json!({"event": 7, "timestamp": "2024-01-15T10:30:00Z"}),
            "invalid_envelope",
        ),
        (json!([1, 2, 3]), "invalid_envelope"),
    ] {
        let body = serde_json::to_vec(&body).unwrap();
        let (status, json, _) = deliver(addr, "/", body.clone(), Some(&sign(&body))).await;
        assert_eq!(status, 422, "{json}");
        assert_eq!(json["error"], code);
    }
}

#[tokio::test]
async fn extractor_without_the_layer_refuses_with_500() {
    async fn payload_only(payload: VerifiedPayload) -> String {
        payload.len().to_string()
    }
    let app = Router::new()
        .route("/event", post(typed))
        .route("/payload", post(payload_only));
    let addr = serve(app).await;
    let body = envelope("call.completed", json!({}));
    for path in ["/event", "/payload"] {
        // Even correctly signed bytes are not parsed: nothing verified them.
        let (status, json, _) = deliver(addr, path, body.clone(), Some(&sign(&body))).await;
        assert_eq!(status, 500, "{path}");
        assert_eq!(json["error"], "webhook_layer_missing");
        assert!(json["message"]
            .as_str()
            .unwrap()
            .contains("RingyoWebhookLayer"));
    }
}

#[tokio::test]
async fn handler_keeps_verified_bytes_when_its_type_does_not_fit() {
    #[derive(Debug, serde::Deserialize)]
    struct Strict {
        #[allow(dead_code)]
        required: u32,
    }
    async fn handler(
        payload: VerifiedPayload,
        event: Result<RingyoEvent<Strict>, Rejection>,
    ) -> (StatusCode, Vec<u8>) {
        match event {
            Ok(_) => (StatusCode::OK, b"parsed".to_vec()),
            Err(rejection) => {
                assert_eq!(rejection.code(), "invalid_event_data");
                (StatusCode::ACCEPTED, payload.into_bytes().to_vec())
            }
        }
    }
    let addr = serve(Router::new().route("/", post(handler).route_layer(support::layer()))).await;
    let body = envelope("call.completed", json!({"unexpected": "shape"}));
    let response = support::post_signed(addr, "/", body.clone(), &sign(&body)).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.bytes().await.unwrap(), body);
}

#[tokio::test]
async fn body_extractor_after_the_layer_shares_the_verified_bytes_without_a_copy() {
    async fn handler(payload: VerifiedPayload, bytes: axum::body::Bytes) -> String {
        // Same allocation: the body was buffered once, by the layer.
        format!(
            "{} {}",
            bytes == payload.bytes(),
            bytes.as_ptr() == payload.bytes().as_ptr()
        )
    }
    let addr = serve(Router::new().route("/", post(handler).route_layer(support::layer()))).await;
    let body = envelope("agent.created", json!({"name": "Ada"}));
    let response = support::post_signed(addr, "/", body.clone(), &sign(&body)).await;
    assert_eq!(response.text().await.unwrap(), "true true");
}

#[tokio::test]
async fn broken_envelopes_get_the_same_answer_with_the_timestamp_check_on_or_off() {
    let on = serve(Router::new().route("/", post(typed).route_layer(support::layer()))).await;
    let off = serve(Router::new().route(
        "/",
        post(typed).route_layer(support::layer().skip_timestamp_check()),
    ))
    .await;
    let cases: [(&[u8], u16, &str); 8] = [
        (b"{\"event\": \"call.completed\", ", 400, "invalid_json"),
        (br#"{"data":{}}"#, 422, "invalid_timestamp"),
        (br#"{"event":7}"#, 422, "invalid_timestamp"),
        (br#"[1,2,3]"#, 422, "invalid_envelope"),
        (b"\"just a string\"", 422, "invalid_envelope"),
        (
            br#"{"event":"call.completed","data":{}}"#,
            422,
            "invalid_timestamp",
        ),
        (
            br#"{"event":"call.completed","timestamp":"yesterday","data":{}}"#,
            422,
            "invalid_timestamp",
        ),
        (
            br#"{"timestamp":"2024-01-15T10:30:00Z","data":{}}"#,
            422,
            "invalid_envelope",
        ),
    ];
    for (body, status, code) in cases {
        for addr in [on, off] {
            let (got, json, _) = deliver(addr, "/", body.to_vec(), Some(&sign(body))).await;
            assert_eq!(
                (got, json["error"].as_str()),
                (status, Some(code)),
                "{json}"
            );
        }
    }
}
