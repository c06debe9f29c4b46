//! What the layer logs: the span fields that help, and never secrets or payload values.

mod common;

use axum::{routing::post, Router};
use common::{deliver, envelope, serve, sign, Captured, SECRET};
use ringyo_webhook::{RingyoEvent, RingyoWebhookLayer};
use serde_json::json;
use tracing_subscriber::fmt::format::FmtSpan;

#[tokio::test]
async fn spans_name_the_event_and_outcome_but_never_secrets_or_payload_values() {
    let (logs, _guard) = Captured::start(FmtSpan::CLOSE);

    // A secret of the user's own choosing is accepted, with a warning.
    RingyoWebhookLayer::new("my-own-secret").unwrap();

    let layer = common::layer();
    let app = Router::new()
        .route("/", post(|_: RingyoEvent| async {}).route_layer(layer))
        .route("/unguarded", post(|_: RingyoEvent| async {}));
    let addr = serve(app).await;

    let body = envelope(
        "call.completed",
        json!({
            "phone_number": "+15551234567",
            "transcript": [{"role": "user", "content": "my card number is secret-words"}],
        }),
    );
    assert_eq!(
        deliver(addr, "/", body.clone(), Some(&sign(&body))).await.0,
        200
    );
    let forged = ringyo_webhook::testing::sign("whsec_wrong", &body).unwrap();
    assert_eq!(deliver(addr, "/", body.clone(), Some(&forged)).await.0, 401);
    assert_eq!(deliver(addr, "/", body, None).await.0, 401);
    let stale = serde_json::to_vec(&json!({
        "event": "credits.low", "timestamp": "2020-01-01T00:00:00Z", "data": {}
    }))
    .unwrap();
    assert_eq!(
        deliver(addr, "/", stale.clone(), Some(&sign(&stale)))
            .await
            .0,
        401
    );

    let body = envelope("call.completed", json!({}));
    let (status, _, _) = deliver(addr, "/unguarded", body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 500);

    let logs = logs.text();
    // A route that forgot the layer is a deployment bug: logged at error level.
    assert!(
        logs.lines()
            .any(|line| line.contains("ERROR") && line.contains("without RingyoWebhookLayer")),
        "{logs}"
    );
    // Each stale rejection is an attack or a lost event: logged at warn level.
    assert!(
        logs.lines()
            .any(|line| line.contains("WARN") && line.contains("timestamp_out_of_tolerance")),
        "{logs}"
    );
    for expected in [
        "event=\"call.completed\"",
        "outcome=\"handled\"",
        "secret_index=0",
        "status=200",
        "reason=\"invalid_signature\"",
        "reason=\"missing_signature\"",
        "signature mismatch",
        "body_len=",
        "WARN",
        "does not start with `whsec_`",
        "delivery_id=",
    ] {
        assert!(logs.contains(expected), "missing {expected:?} in:\n{logs}");
    }
    for leaked in [
        SECRET,
        "a1b2c3",
        "my-own-secret",
        "+1555",
        "5551234567",
        "secret-words",
        &forged,
    ] {
        assert!(!logs.contains(leaked), "logs leak {leaked:?}:\n{logs}");
    }
}

#[tokio::test]
async fn each_rejection_is_logged_once() {
    let (logs, _guard) = Captured::start(FmtSpan::NONE);
    let app = Router::new().route(
        "/",
        post(|_: RingyoEvent| async {}).route_layer(common::layer()),
    );
    let addr = serve(app).await;

    let body = envelope("call.completed", json!({}));
    let forged = ringyo_webhook::testing::sign("whsec_wrong", &body).unwrap();
    assert_eq!(deliver(addr, "/", body.clone(), Some(&forged)).await.0, 401);
    assert_eq!(deliver(addr, "/", body.clone(), None).await.0, 401);
    assert_eq!(
        deliver(addr, "/", b"{".to_vec(), Some(&sign(b"{"))).await.0,
        400
    );

    let logs = logs.text();
    let rejections = logs
        .lines()
        .filter(|line| line.contains("rejected delivery"))
        .count();
    assert_eq!(rejections, 3, "{logs}");
}
