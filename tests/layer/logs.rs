//! What the layer logs: the span fields that help, and never secrets or payload values.

use ringyo_test_support as support;

use axum::{routing::post, Router};
use ringyo_test_support::{deliver, envelope, serve, sign, Captured, SECRET};
use ringyo_webhook::{RingyoEvent, RingyoWebhookLayer};
use serde_json::json;
use tracing_subscriber::fmt::format::FmtSpan;

#[tokio::test]
async fn spans_name_the_event_and_outcome_but_never_secrets_or_payload_values() {
    let (logs, _guard) = Captured::start(FmtSpan::CLOSE);

    // A secret of the user's own choosing is accepted, with a warning.
    RingyoWebhookLayer::new("my-own-secret").unwrap();

    let layer = support::layer();
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
        "outcome=\"accepted\"",
        "outcome=\"stale\"",
        "outcome=\"rejected\"",
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
        post(|_: RingyoEvent| async {}).route_layer(support::layer()),
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

/// Every way the layer refuses a delivery, logged at trace level (every crate): neither the
/// secret nor any value from a body reaches the log.
#[tokio::test]
async fn no_rejection_path_logs_the_secret_or_a_body_value() {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use ringyo_webhook::{Event, MemoryDeliveryStore};

    let (logs, _guard) = Captured::start(FmtSpan::FULL);
    let canary = "body-value-canary-4711";
    let gate = Arc::new(tokio::sync::Notify::new());
    let open = Arc::clone(&gate);
    let handler = move |event: RingyoEvent<Event>| {
        let gate = Arc::clone(&open);
        async move {
            if event.kind.as_str() == "credits.low" {
                gate.notified().await;
            }
            StatusCode::NO_CONTENT
        }
    };
    let layer = support::layer()
        .delivery_store(MemoryDeliveryStore::new())
        .body_limit(4096);
    let addr = serve(Router::new().route("/", post(handler).route_layer(layer))).await;
    let signed = |body: Vec<u8>| {
        let signature = sign(&body);
        (body, Some(signature))
    };
    let cases: Vec<(Vec<u8>, Option<String>, u16)> = vec![
        // A malformed signature, and one that does not match.
        (
            envelope("call.completed", json!({ "note": canary })),
            Some("zz".into()),
            401,
        ),
        (
            envelope("call.completed", json!({ "note": canary })),
            Some("00".repeat(32)),
            401,
        ),
        // Too large, read to the end and thrown away.
        {
            let (body, signature) = signed(envelope(
                "call.completed",
                json!({ "note": canary.repeat(400) }),
            ));
            (body, signature, 413)
        },
        // Signed, but not JSON; JSON but no envelope; no usable timestamp; data of the wrong
        // shape for its event.
        {
            let (body, signature) = signed(format!("not json {canary}").into_bytes());
            (body, signature, 400)
        },
        {
            let (body, signature) = signed(json!({ "note": canary }).to_string().into_bytes());
            (body, signature, 422)
        },
        {
            let body = json!({ "event": "call.completed", "timestamp": canary, "data": {} });
            let (body, signature) = signed(body.to_string().into_bytes());
            (body, signature, 422)
        },
        {
            let (body, signature) = signed(envelope("call.completed", json!([canary])));
            (body, signature, 422)
        },
    ];
    for (body, signature, status) in cases {
        let (answer, json, _) = deliver(addr, "/", body, signature.as_deref()).await;
        assert_eq!(answer, status, "{json}");
        assert!(!json.to_string().contains(canary), "{json}");
    }
    // In flight: a second copy while the first waits at the gate.
    let slow = envelope("credits.low", json!({ "note": canary }));
    let signature = sign(&slow);
    let first = tokio::spawn({
        let (slow, signature) = (slow.clone(), signature.clone());
        async move { deliver(addr, "/", slow, Some(&signature)).await.0 }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(deliver(addr, "/", slow, Some(&signature)).await.0, 409);
    gate.notify_one();
    assert_eq!(first.await.unwrap(), 204);

    let logs = logs.text();
    assert!(logs.contains("rejected delivery"), "{logs}");
    assert!(!logs.contains(SECRET), "the secret is in the log:\n{logs}");
    assert!(
        !logs.contains(canary),
        "a body value is in the log:\n{logs}"
    );
}

/// The delivery's span names the tenant and the secret that matched; the log holds neither
/// the tenant's secret nor, for an unknown tenant, anything that tells it apart.
#[tokio::test]
async fn the_span_names_the_tenant_and_the_secret_index_never_the_secret() {
    use ringyo_webhook::secrets::{Secrets, Tenant, TenantKey, TenantMap, Tenants};

    let (logs, _guard) = support::Captured::start(FmtSpan::CLOSE);
    let map = TenantMap::new();
    map.insert(
        Tenant::new("acme").unwrap(),
        Secrets::new("whsec_acme_current")
            .unwrap()
            .with("whsec_acme_previous")
            .unwrap(),
    );
    let layer = RingyoWebhookLayer::from_source(Tenants::new(TenantKey::PathSegment(2), map))
        .clock(support::test_now);
    let app = Router::new().route(
        "/webhooks/ringyo/{tenant}",
        post(|_: RingyoEvent| async {}).route_layer(layer),
    );
    let addr = serve(app).await;
    let body = envelope("call.completed", json!({}));
    let signature = ringyo_webhook::testing::sign("whsec_acme_previous", &body).unwrap();
    let (status, _, _) = deliver(
        addr,
        "/webhooks/ringyo/acme",
        body.clone(),
        Some(&signature),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = deliver(addr, "/webhooks/ringyo/nobody", body, Some(&signature)).await;
    assert_eq!(status, 401);

    let text = logs.text();
    let verified = text
        .lines()
        .find(|line| line.contains("tenant=\"acme\"") || line.contains("tenant=acme"))
        .unwrap_or_else(|| panic!("no span names the tenant:\n{text}"));
    assert!(verified.contains("secret_index=1"), "{verified}");
    assert!(!text.contains("whsec_acme"), "{text}");
    assert!(!text.contains("nobody"), "{text}");
}

/// Corruption is logged once at error level, naming the file, however many operations meet
/// it; every operation after it is refused with the same error. (sqlx logs its own line for
/// each connection it fails to set up on the file, during the first attempt only.)
#[tokio::test]
async fn a_corrupt_inbox_file_is_logged_once_at_error_level_naming_the_file() {
    use ringyo_webhook::inbox::{Inbox, InboxError};

    let (logs, _guard) = Captured::start(FmtSpan::NONE);
    let database = support::inbox::sqlite();
    let file = database.url.strip_prefix("sqlite://").unwrap().to_owned();
    std::fs::write(&file, vec![0x5A_u8; 64 * 1024]).unwrap();
    let inbox = Inbox::open(&database.url).unwrap();
    for _ in 0..3 {
        let err = inbox.ping().await.unwrap_err();
        assert!(matches!(err, InboxError::Corrupt { .. }), "{err:?}");
        assert!(inbox.stats().await.is_err());
    }

    let text = logs.text();
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("ERROR ringyo_webhook") && line.contains("is corrupt"))
        .collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains(&file), "{text}");
}
