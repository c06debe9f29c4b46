//! Replay protection and exactly-once handling, through real HTTP on 127.0.0.1.

use ringyo_test_support as support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{extract::State, http::StatusCode, routing::post, Router};
use chrono::{DateTime, TimeDelta, Utc};
use ringyo_test_support::{deliver, sign, SECRET};
use ringyo_webhook::{
    middleware::DUPLICATE_HEADER,
    testing::{ManualClock, TestDelivery},
    Clock, DeliveryId, MemoryDeliveryStore, RingyoEvent, RingyoWebhookLayer,
};
use serde_json::json;

const NOW: &str = "2024-01-15T12:00:00Z";

fn now() -> DateTime<Utc> {
    NOW.parse().unwrap()
}

/// An envelope whose `timestamp` is `age` before [`NOW`] (negative: in the future).
fn aged(event: &str, age: TimeDelta, data: serde_json::Value) -> Vec<u8> {
    TestDelivery::new(event)
        .data(data)
        .timestamp(now() - age)
        .body_and_signature()
        .0
        .into_bytes()
}

/// How the test handler behaves: answers `status` after `delay`, counting its runs.
#[derive(Clone)]
struct Handler {
    runs: Arc<AtomicUsize>,
    delay: Duration,
    fail_first: usize,
}

async fn handle(
    State(handler): State<Handler>,
    id: DeliveryId,
    _: RingyoEvent,
) -> (StatusCode, String) {
    let run = handler.runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(handler.delay).await;
    if run < handler.fail_first {
        return (StatusCode::INTERNAL_SERVER_ERROR, "failed".into());
    }
    (StatusCode::OK, id.to_string())
}

async fn serve(layer: RingyoWebhookLayer, handler: Handler) -> SocketAddr {
    let app = Router::new()
        .route("/", post(handle).route_layer(layer))
        .with_state(handler);
    support::serve(app).await
}

fn handler(delay: Duration, fail_first: usize) -> Handler {
    Handler {
        runs: Arc::new(AtomicUsize::new(0)),
        delay,
        fail_first,
    }
}

fn layer_at_now() -> RingyoWebhookLayer {
    RingyoWebhookLayer::new(SECRET).unwrap().clock(now)
}

async fn send(
    addr: SocketAddr,
    body: &[u8],
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    deliver(addr, "/", body.to_vec(), Some(&sign(body))).await
}

#[tokio::test]
async fn timestamps_inside_the_window_pass_and_outside_are_401() {
    let handler = handler(Duration::ZERO, 0);
    let addr = serve(layer_at_now(), handler.clone()).await;
    let cases = [
        (TimeDelta::minutes(13), 200, None), // Ringyo's last retry, about 13 minutes late
        (TimeDelta::minutes(59), 200, None),
        (TimeDelta::minutes(-4), 200, None), // a little clock skew
        (
            TimeDelta::minutes(61),
            401,
            Some("timestamp_out_of_tolerance"),
        ),
        (
            TimeDelta::days(400),
            401,
            Some("timestamp_out_of_tolerance"),
        ),
        (
            TimeDelta::minutes(-6),
            401,
            Some("timestamp_out_of_tolerance"),
        ),
    ];
    for (age, status, code) in cases {
        let (got, json, _) = send(addr, &aged("call.completed", age, json!({}))).await;
        assert_eq!(got, status, "age {age}: {json}");
        if let Some(code) = code {
            assert_eq!(json["error"], code);
        }
    }
    assert_eq!(handler.runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn missing_or_malformed_timestamp_is_422_not_401_and_not_a_pass() {
    let handler = handler(Duration::ZERO, 0);
    let addr = serve(layer_at_now(), handler.clone()).await;
    for body in [
        json!({"event": "call.completed", "data": {}}),
        json!({"event": "call.completed", "timestamp": "15/01/2024 10:30", "data": {}}),
        json!({"event": "call.completed", "timestamp": 1705314600, "data": {}}),
    ] {
        let body = serde_json::to_vec(&body).unwrap();
        let (status, json, _) = send(addr, &body).await;
        assert_eq!(status, 422, "{json}");
        assert_eq!(json["error"], "invalid_timestamp");
    }
    let (status, json, _) = send(addr, b"not json at all").await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_json"))
    );
    assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn timestamp_check_can_be_narrowed_or_turned_off() {
    let handler = handler(Duration::ZERO, 0);
    let narrow = layer_at_now().timestamp_tolerance(Duration::from_secs(60), Duration::ZERO);
    let addr = serve(narrow, handler.clone()).await;
    let (status, _, _) = send(
        addr,
        &aged("call.completed", TimeDelta::minutes(2), json!({})),
    )
    .await;
    assert_eq!(status, 401);

    let addr = serve(layer_at_now().skip_timestamp_check(), handler.clone()).await;
    let (status, _, _) = send(
        addr,
        &aged("call.completed", TimeDelta::days(400), json!({})),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn same_delivery_twice_runs_the_handler_once() {
    let handler = handler(Duration::ZERO, 0);
    let layer = layer_at_now().delivery_store(MemoryDeliveryStore::new());
    let addr = serve(layer, handler.clone()).await;
    let body = aged(
        "call.completed",
        TimeDelta::minutes(1),
        json!({"id": "call_1"}),
    );

    let (status, _, headers) = send(addr, &body).await;
    assert_eq!(status, 200);
    assert!(headers.get(DUPLICATE_HEADER.as_str()).is_none());
    let (status, _, headers) = send(addr, &body).await;
    assert_eq!(status, 200);
    assert_eq!(headers[DUPLICATE_HEADER.as_str()], "true");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);

    // A different delivery is not a duplicate, even from the same webhook endpoint.
    let other = aged(
        "call.completed",
        TimeDelta::minutes(1),
        json!({"id": "call_2"}),
    );
    assert_eq!(send(addr, &other).await.0, 200);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn twenty_concurrent_copies_run_the_handler_exactly_once() {
    let handler = handler(Duration::from_millis(300), 0);
    let layer = layer_at_now().delivery_store(MemoryDeliveryStore::new());
    let addr = serve(layer, handler.clone()).await;
    let body = aged(
        "call.completed",
        TimeDelta::minutes(1),
        json!({"id": "call_1"}),
    );
    let signature = sign(&body);
    let client = support::client();
    let copies = (0..20).map(|_| {
        let request = client
            .post(format!("http://{addr}/"))
            .header("x-ringyo-signature", &signature)
            .body(body.clone());
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    });
    let statuses: Vec<u16> = futures_util::future::join_all(copies)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        statuses
            .iter()
            .all(|&status| status == 200 || status == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn copy_arriving_mid_handling_gets_retryable_409() {
    let handler = handler(Duration::from_millis(500), 0);
    let addr = serve(
        layer_at_now().delivery_store(MemoryDeliveryStore::new()),
        handler.clone(),
    )
    .await;
    let body = aged("call.completed", TimeDelta::minutes(1), json!({}));
    let first = tokio::spawn({
        let body = body.clone();
        async move { send(addr, &body).await.0 }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, json, _) = send(addr, &body).await;
    assert_eq!(status, 409);
    assert_eq!(json["error"], "delivery_in_progress");
    assert_eq!(first.await.unwrap(), 200);
    let (status, _, headers) = send(addr, &body).await;
    assert_eq!(
        (status, &headers[DUPLICATE_HEADER.as_str()]),
        (200, &"true".parse().unwrap())
    );
}

#[tokio::test]
async fn failed_handling_is_not_recorded_so_the_retry_runs_again() {
    let handler = handler(Duration::ZERO, 1);
    let addr = serve(
        layer_at_now().delivery_store(MemoryDeliveryStore::new()),
        handler.clone(),
    )
    .await;
    let body = aged("call.completed", TimeDelta::minutes(1), json!({}));
    assert_eq!(send(addr, &body).await.0, 500);
    assert_eq!(send(addr, &body).await.0, 200); // Ringyo's retry
    let (status, _, headers) = send(addr, &body).await;
    assert_eq!(
        (status, headers.contains_key(DUPLICATE_HEADER.as_str())),
        (200, true)
    );
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn panicked_handler_is_not_recorded_so_the_retry_runs_again() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/",
            post(
                |State(runs): State<Arc<AtomicUsize>>, _: RingyoEvent| async move {
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("handler bug on the first try");
                    }
                    "ok"
                },
            )
            .route_layer(layer_at_now().delivery_store(MemoryDeliveryStore::new())),
        )
        .with_state(Arc::clone(&runs));
    let addr = support::serve(app).await;
    let body = aged("call.completed", TimeDelta::minutes(1), json!({}));
    let first = support::client()
        .post(format!("http://{addr}/"))
        .header("x-ringyo-signature", sign(&body))
        .body(body.clone())
        .send()
        .await;
    assert!(first.is_err(), "the panic drops the connection: {first:?}");
    assert_eq!(send(addr, &body).await.0, 200);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn delivery_id_is_the_same_for_every_copy_and_differs_between_deliveries() {
    let handler = handler(Duration::ZERO, 0);
    let addr = serve(layer_at_now(), handler).await;
    let body = aged("call.completed", TimeDelta::minutes(1), json!({"id": "a"}));
    let first = support::post_signed(addr, "/", body.clone(), &sign(&body))
        .await
        .text()
        .await
        .unwrap();
    let second = support::client()
        .post(format!("http://{addr}/"))
        .header("x-ringyo-signature", sign(&body).to_uppercase())
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(first.len(), 64);
    assert_eq!(first, second);
    let other = aged("call.completed", TimeDelta::minutes(1), json!({"id": "b"}));
    let third = support::post_signed(addr, "/", other.clone(), &sign(&other))
        .await
        .text()
        .await
        .unwrap();
    assert_ne!(first, third);
}

#[tokio::test]
async fn store_entries_expire_with_the_window_on_an_injected_clock() {
    let clock = ManualClock::new(now());
    let store = Arc::new(MemoryDeliveryStore::new());
    let handler = handler(Duration::ZERO, 0);
    let layer = RingyoWebhookLayer::new(SECRET)
        .unwrap()
        .clock(clock.clone())
        .delivery_store(Arc::clone(&store));
    let addr = serve(layer, handler.clone()).await;

    // Sent at NOW; handled at NOW: remembered until NOW + 1 h.
    let body = aged("call.completed", TimeDelta::zero(), json!({"id": "call_1"}));
    assert_eq!(send(addr, &body).await.0, 200);
    assert_eq!(store.len(), 1);

    clock.advance(Duration::from_secs(59 * 60));
    let (status, _, headers) = send(addr, &body).await;
    assert_eq!(
        (status, headers.contains_key(DUPLICATE_HEADER.as_str())),
        (200, true)
    );

    // Past the window the replay is refused as stale, so the store need not remember it: the
    // next deliveries purge the expired entry (each claim purges its shard and the next in
    // turn, and a store has at most 64 shards).
    clock.advance(Duration::from_secs(2 * 60));
    let (status, json, _) = send(addr, &body).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("timestamp_out_of_tolerance"))
    );
    for n in 0..64 {
        let fresh = aged("credits.low", now() - clock.now(), json!({ "n": n }));
        assert_eq!(send(addr, &fresh).await.0, 200);
    }
    assert_eq!(
        store.len(),
        64,
        "the expired entry was purged, the fresh ones kept"
    );
    assert_eq!(handler.runs.load(Ordering::SeqCst), 65);
}
