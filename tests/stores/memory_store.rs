//! Delivery stores: one behaviour suite every store passes, and the layer's answer to a store
//! that fails, is slow, or releases asynchronously. In memory, through the layer's real
//! service (`tower::ServiceExt::oneshot`).

use ringyo_test_support as support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{extract::State, http::StatusCode, routing::post, Router};
use chrono::{DateTime, TimeDelta, Utc};
use ringyo_webhook::{
    middleware::{StoreFailure, DUPLICATE_HEADER},
    testing::{ManualClock, TestDelivery},
    MemoryDeliveryStore, RingyoEvent, RingyoWebhookLayer,
};
use tower::ServiceExt;

use ringyo_test_support::stores::Faulty;

const SECRET: &str = "whsec_stores";

fn t(seconds: i64) -> DateTime<Utc> {
    "2024-01-15T10:30:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::seconds(seconds)
}

#[tokio::test]
async fn memory_store_passes_the_store_suite() {
    support::stores::behaves_as_a_delivery_store(&MemoryDeliveryStore::new()).await;
}

#[tokio::test]
async fn a_store_with_async_steps_passes_the_store_suite() {
    let store = Faulty::default();
    store.delay.store(20, Ordering::SeqCst);
    support::stores::behaves_as_a_delivery_store(&store).await;
}

/// How the handler behaves on each run: panics, hangs or answers 200, counting its runs.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Answer,
    Panic,
    Hang,
}

#[derive(Clone)]
struct Handler {
    runs: Arc<AtomicUsize>,
    first: Behaviour,
}

async fn handle(State(handler): State<Handler>, _: RingyoEvent) -> StatusCode {
    let run = handler.runs.fetch_add(1, Ordering::SeqCst);
    match handler.first {
        Behaviour::Panic if run == 0 => panic!("the handler's first run fails"),
        Behaviour::Hang if run == 0 => std::future::pending().await,
        _ => StatusCode::OK,
    }
}

struct Setup {
    app: Router,
    store: Arc<Faulty>,
    clock: ManualClock,
    runs: Arc<AtomicUsize>,
}

fn setup(first: Behaviour) -> Setup {
    setup_with(first, |layer| layer)
}

/// [`setup`], with the layer changed by `configure`.
fn setup_with(
    first: Behaviour,
    configure: impl FnOnce(RingyoWebhookLayer) -> RingyoWebhookLayer,
) -> Setup {
    let store = Arc::new(Faulty::default());
    let clock = ManualClock::new(t(60));
    let layer = RingyoWebhookLayer::new(SECRET)
        .unwrap()
        .clock(clock.clone())
        .delivery_store(Arc::clone(&store));
    let layer = configure(layer);
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = Handler {
        runs: Arc::clone(&runs),
        first,
    };
    let app = Router::new()
        .route("/", post(handle).route_layer(layer))
        .with_state(handler);
    Setup {
        app,
        store,
        clock,
        runs,
    }
}

fn delivery() -> TestDelivery {
    TestDelivery::new("call.completed")
        .secret(SECRET)
        .timestamp(t(0))
        .uri("/")
}

async fn send(app: &Router, delivery: &TestDelivery) -> axum::response::Response {
    app.clone()
        .oneshot(delivery.clone().into_request())
        .await
        .unwrap()
}

async fn code(response: axum::response::Response) -> String {
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    json["error"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn a_claim_that_fails_is_503_with_retry_after_and_the_handler_does_not_run() {
    let setup = setup(Behaviour::Answer);
    setup.store.claim_fails.store(true, Ordering::SeqCst);
    let delivery = delivery();
    let response = send(&setup.app, &delivery).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(code(response).await, "delivery_store_unavailable");
    assert_eq!(setup.runs.load(Ordering::SeqCst), 0);

    // The store recovers: Ringyo's retry is handled, once.
    setup.store.claim_fails.store(false, Ordering::SeqCst);
    assert_eq!(send(&setup.app, &delivery).await.status(), 200);
    let again = send(&setup.app, &delivery).await;
    assert_eq!(again.headers()[DUPLICATE_HEADER], "true");
    assert_eq!(setup.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_slow_store_delays_the_answer_but_not_its_outcome() {
    let setup = setup(Behaviour::Answer);
    setup.store.delay.store(150, Ordering::SeqCst);
    let delivery = delivery();
    let started = std::time::Instant::now();
    assert_eq!(send(&setup.app, &delivery).await.status(), 200);
    // Claim and complete each waited.
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (first, second) = tokio::join!(send(&setup.app, &delivery), send(&setup.app, &delivery));
    assert_eq!(first.headers()[DUPLICATE_HEADER], "true");
    assert_eq!(second.headers()[DUPLICATE_HEADER], "true");
    assert_eq!(setup.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_settle_keeps_the_answer_and_the_claim_lapses_with_its_lease() {
    let setup = setup(Behaviour::Answer);
    setup.store.complete_fails.store(true, Ordering::SeqCst);
    let delivery = delivery();
    // The handler ran and answered 200: that answer stands.
    assert_eq!(send(&setup.app, &delivery).await.status(), 200);
    assert_eq!(setup.runs.load(Ordering::SeqCst), 1);

    // The store could not record it, so the claim stays until its lease (15 s) runs out: a
    // copy meanwhile is told to retry, and one after the lease runs the handler again.
    setup.store.complete_fails.store(false, Ordering::SeqCst);
    let copy = send(&setup.app, &delivery).await;
    assert_eq!(copy.status(), 409);
    assert_eq!(code(copy).await, "delivery_in_progress");
    setup.clock.advance(Duration::from_secs(16));
    assert_eq!(send(&setup.app, &delivery).await.status(), 200);
    assert_eq!(setup.runs.load(Ordering::SeqCst), 2);
}

/// Waits (boundedly) until the store has released `count` claims.
async fn released(store: &Faulty, count: usize) {
    for _ in 0..100 {
        if store.releases.load(Ordering::SeqCst) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the claim was not released within a second");
}

#[tokio::test]
async fn a_panicking_handler_releases_its_claim_through_a_slow_async_store() {
    let setup = setup(Behaviour::Panic);
    setup.store.delay.store(50, Ordering::SeqCst);
    let delivery = delivery();
    let app = setup.app.clone();
    let request = delivery.clone().into_request();
    let panicked = tokio::spawn(async move { app.oneshot(request).await }).await;
    assert!(panicked.unwrap_err().is_panic());
    released(&setup.store, 1).await;
    // Within the lease, so only the release can have freed it.
    assert_eq!(send(&setup.app, &delivery).await.status(), 200);
    assert_eq!(setup.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_dropped_mid_handler_releases_its_claim_through_a_slow_async_store() {
    let setup = setup(Behaviour::Hang);
    setup.store.delay.store(50, Ordering::SeqCst);
    let delivery = delivery();
    // The client goes away (or an outer time-out fires) while the handler runs.
    let gone = tokio::time::timeout(Duration::from_millis(200), send(&setup.app, &delivery)).await;
    assert!(gone.is_err());
    assert_eq!(setup.runs.load(Ordering::SeqCst), 1);
    released(&setup.store, 1).await;
    assert_eq!(send(&setup.app, &delivery).await.status(), 200);
    assert_eq!(setup.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_time_out_layer_releases_the_claim_of_the_request_it_ends() {
    let setup = setup(Behaviour::Hang);
    setup.store.delay.store(50, Ordering::SeqCst);
    let app = setup
        .app
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(300),
        ));
    let delivery = delivery();
    assert_eq!(send(&app, &delivery).await.status(), 408);
    released(&setup.store, 1).await;
    assert_eq!(send(&app, &delivery).await.status(), 200);
    assert_eq!(setup.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_dropped_while_its_claim_is_asked_for_leaves_no_claim_behind() {
    let setup = setup(Behaviour::Answer);
    setup.store.delay.store(100, Ordering::SeqCst);
    let delivery = delivery();
    let gone = tokio::time::timeout(Duration::from_millis(30), send(&setup.app, &delivery)).await;
    assert!(gone.is_err(), "dropped while the claim was in flight");
    // The claim went through in the background, and was released as nobody holds it.
    released(&setup.store, 1).await;
    assert_eq!(send(&setup.app, &delivery).await.status(), 200);
    assert_eq!(setup.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_dropped_while_its_outcome_is_recorded_is_still_recorded() {
    let setup = setup(Behaviour::Answer);
    setup.store.delay.store(300, Ordering::SeqCst);
    let delivery = delivery();
    // Claimed after 300 ms, handled at once, then dropped while `complete` runs (300 ms more).
    let gone = tokio::time::timeout(Duration::from_millis(450), send(&setup.app, &delivery)).await;
    assert!(gone.is_err(), "dropped while the outcome was recorded");
    assert_eq!(setup.runs.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Ringyo saw no 2xx and retries: the delivery was recorded, so it is not run again.
    let retry = send(&setup.app, &delivery).await;
    assert_eq!(retry.headers()[DUPLICATE_HEADER], "true");
    assert_eq!(setup.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
    let (logs, _guard) = support::Captured::start(tracing_subscriber::fmt::format::FmtSpan::NONE);
    let setup = setup(Behaviour::Answer);
    setup.store.claim_fails.store(true, Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(send(&setup.app, &delivery()).await.status(), 503);
    }
    setup.store.claim_fails.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(send(&setup.app, &delivery()).await.status(), 200);
    }
    let logs = logs.text();
    let count = |text: &str| logs.lines().filter(|line| line.contains(text)).count();
    assert_eq!(count("ERROR"), 1, "{logs}");
    assert_eq!(count("delivery store unavailable"), 1, "{logs}");
    assert_eq!(count("delivery store answers again"), 1, "{logs}");
}

#[tokio::test]
async fn failing_open_runs_the_handler_without_deduplication() {
    let setup = setup_with(Behaviour::Answer, |layer| {
        layer.on_store_failure(StoreFailure::RunHandler)
    });
    setup.store.claim_fails.store(true, Ordering::SeqCst);
    let delivery = delivery();
    // The trade: no delay, and a copy runs again while the store cannot tell.
    assert_eq!(send(&setup.app, &delivery).await.status(), 200);
    assert_eq!(send(&setup.app, &delivery).await.status(), 200);
    assert_eq!(setup.runs.load(Ordering::SeqCst), 2);
}

/// Real HTTP: a memory store at its cap keeps every claim in flight, and refuses a new
/// delivery with 503 and `Retry-After` rather than forget one (its retry would run twice).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_memory_store_refuses_a_new_delivery_rather_than_forget_one_in_flight() {
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (counted, open) = (Arc::clone(&runs), Arc::clone(&gate));
    let handler = move |_: RingyoEvent| {
        let (runs, gate) = (Arc::clone(&counted), Arc::clone(&open));
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            gate.notified().await;
            StatusCode::NO_CONTENT
        }
    };
    let layer = support::layer().delivery_store(MemoryDeliveryStore::with_capacity(1));
    let addr = support::serve(Router::new().route("/", post(handler).route_layer(layer))).await;
    let first = support::envelope("credits.low", serde_json::json!({ "balance": 1 }));
    let second = support::envelope("credits.low", serde_json::json!({ "balance": 2 }));
    let send = |body: Vec<u8>| async move {
        let signature = support::sign(&body);
        support::deliver(addr, "/", body, Some(&signature)).await
    };

    let ran = |times: usize| {
        let runs = Arc::clone(&runs);
        async move {
            for _ in 0..400 {
                if runs.load(Ordering::SeqCst) >= times {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("the handler did not run {times} times");
        }
    };
    let held = tokio::spawn(send(first.clone()));
    ran(1).await;
    let (status, json, headers) = send(second.clone()).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (503, Some("delivery_store_unavailable"))
    );
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(
        send(first).await.0,
        409,
        "the first is still known to be in flight"
    );
    gate.notify_one();
    assert_eq!(held.await.unwrap().0, 204);
    // Handled, the first makes room; the retry of the second runs.
    let retried = tokio::spawn(send(second));
    ran(2).await;
    gate.notify_one();
    assert_eq!(retried.await.unwrap().0, 204);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "each ran once");
}
