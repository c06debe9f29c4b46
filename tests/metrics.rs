//! The metrics through real HTTP on 127.0.0.1: each outcome moves its counter by exactly what
//! happened, and no label carries a delivery id, a body value or an unknown event's name.
//!
//! One recorder per process (the `metrics` facade has one global recorder), drained before and
//! after each case; the cases take turns.

use ringyo_test_support as support;

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc, OnceLock},
    time::Duration,
};

use axum::{http::StatusCode, routing::post, Router};
use chrono::{DateTime, TimeDelta, Utc};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ringyo_test_support::{envelope, sign, stores::Faulty};
use ringyo_webhook::{
    inbox::{Inbox, Job, Worker},
    metrics::{
        DELIVERIES_TOTAL, HANDLER_SECONDS, INBOX_ATTEMPTS_TOTAL, INBOX_DELIVERIES,
        INBOX_HANDLER_SECONDS, INBOX_OLDEST_PENDING_SECONDS, STORE_OUTAGES_TOTAL, VERIFY_SECONDS,
    },
    testing::TestDelivery,
    Event, EventKind, MemoryDeliveryStore, RingyoEvent,
};
use serde_json::json;
use tokio::sync::{mpsc, Mutex, Notify};

const PATH: &str = "/webhooks/ringyo";

/// The recorder, installed once; and the lock the cases take turns with.
fn recorder() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    })
}
static TURN: Mutex<()> = Mutex::const_new(());

/// What was recorded since the last call: counters by `name{label=value,...}`, histograms by
/// the same key with their number of samples, gauges with their value.
fn recorded() -> BTreeMap<String, f64> {
    let mut moved = BTreeMap::new();
    for (key, _, _, value) in recorder().snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        #[allow(clippy::cast_precision_loss)]
        let value = match value {
            DebugValue::Counter(0) => continue,
            DebugValue::Counter(count) => count as f64,
            DebugValue::Histogram(samples) if samples.is_empty() => continue,
            DebugValue::Histogram(samples) => samples.len() as f64,
            DebugValue::Gauge(value) => value.into_inner(),
        };
        moved.insert(name, value);
    }
    moved
}

/// Adds what is recorded to `moved` (counts add up, gauges take the latest value) until
/// `done` holds, for at most 5 s.
async fn until(moved: &mut BTreeMap<String, f64>, done: impl Fn(&BTreeMap<String, f64>) -> bool) {
    for _ in 0..200 {
        for (key, value) in recorded() {
            if key.starts_with(INBOX_DELIVERIES) || key.starts_with(INBOX_OLDEST_PENDING_SECONDS) {
                moved.insert(key, value);
            } else {
                *moved.entry(key).or_default() += value;
            }
        }
        if done(moved) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {moved:?}");
}

fn only<'a>(moved: &'a BTreeMap<String, f64>, name: &str) -> BTreeMap<&'a str, f64> {
    moved
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{name}{{")))
        .map(|(key, value)| (&key[name.len()..], *value))
        .collect()
}

async fn send(addr: std::net::SocketAddr, body: Vec<u8>, signature: Option<&str>) -> u16 {
    support::deliver(addr, PATH, body, signature).await.0
}

async fn send_signed(addr: std::net::SocketAddr, body: Vec<u8>) -> u16 {
    let signature = sign(&body);
    send(addr, body, Some(&signature)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_layer_outcome_moves_its_counter_by_exactly_what_happened() {
    let _turn = TURN.lock().await;
    // `credits.low` waits at the gate (so a second copy finds it in flight); `call.failed`
    // answers 500.
    let (entered, mut inside) = mpsc::unbounded_channel();
    let gate = std::sync::Arc::new(Notify::new());
    let open = gate.clone();
    let handler = move |event: RingyoEvent<Event>| {
        let (entered, gate) = (entered.clone(), gate.clone());
        async move {
            match event.kind.as_str() {
                "credits.low" => {
                    let _ = entered.send(());
                    gate.notified().await;
                    StatusCode::NO_CONTENT
                }
                "call.failed" => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::NO_CONTENT,
            }
        }
    };
    let layer = support::layer()
        .delivery_store(MemoryDeliveryStore::new())
        .body_limit(16 * 1024);
    let addr = support::serve(Router::new().route(PATH, post(handler).route_layer(layer))).await;
    recorded();

    let accepted = envelope("call.completed", json!({ "id": "call_1" }));
    assert_eq!(send_signed(addr, accepted.clone()).await, 204);
    assert_eq!(send_signed(addr, accepted).await, 200);
    let slow = envelope("credits.low", json!({ "balance": 1 }));
    let first = tokio::spawn(send_signed(addr, slow.clone()));
    inside.recv().await.unwrap();
    assert_eq!(send_signed(addr, slow).await, 409);
    open.notify_one();
    assert_eq!(first.await.unwrap(), 204);
    assert_eq!(
        send_signed(addr, envelope("call.failed", json!({}))).await,
        500
    );
    let stale = TestDelivery::new("call.completed")
        .timestamp(support::test_now() - chrono::TimeDelta::hours(2))
        .body_and_signature()
        .0
        .into_bytes();
    assert_eq!(send_signed(addr, stale).await, 401);
    let body = envelope("call.completed", json!({ "id": "call_2" }));
    assert_eq!(send(addr, body.clone(), Some(&"0".repeat(64))).await, 401);
    assert_eq!(send(addr, body, None).await, 401);
    let big = envelope("call.completed", json!({ "pad": "x".repeat(20_000) }));
    assert_eq!(send_signed(addr, big).await, 413);

    let moved = recorded();
    assert_eq!(
        only(&moved, DELIVERIES_TOTAL),
        BTreeMap::from([
            ("{outcome=accepted}", 2.0),
            ("{outcome=duplicate}", 1.0),
            ("{code=500,outcome=handler_error}", 1.0),
            ("{code=delivery_in_progress,outcome=in_flight}", 1.0),
            ("{code=invalid_signature,outcome=rejected}", 1.0),
            ("{code=missing_signature,outcome=rejected}", 1.0),
            ("{code=payload_too_large,outcome=rejected}", 1.0),
            ("{code=timestamp_out_of_tolerance,outcome=stale}", 1.0),
        ])
    );
    // The handler ran three times (the duplicate and the copy in flight never reached it);
    // the verifier saw every body that arrived whole and signed.
    assert_eq!(
        only(&moved, HANDLER_SECONDS),
        BTreeMap::from([
            ("{event=call.completed}", 1.0),
            ("{event=call.failed}", 1.0),
            ("{event=credits.low}", 1.0),
        ])
    );
    assert_eq!(moved[&format!("{VERIFY_SECONDS}{{}}")], 7.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_never_carry_an_unknown_event_name_a_delivery_id_or_a_body_value() {
    let _turn = TURN.lock().await;
    let layer = support::layer();
    let handler = |_: RingyoEvent<Event>| async { StatusCode::NO_CONTENT };
    let addr = support::serve(Router::new().route(PATH, post(handler).route_layer(layer))).await;
    recorded();
    let odd = envelope(
        "call.voicemail\n\u{1b}[31m",
        json!({ "secret_value": "hunter2" }),
    );
    assert_eq!(send_signed(addr, odd).await, 204);
    let moved = recorded();
    assert_eq!(
        only(&moved, HANDLER_SECONDS),
        BTreeMap::from([("{event=other}", 1.0)])
    );
    for key in moved.keys() {
        assert!(
            !key.contains("voicemail") && !key.contains("hunter2"),
            "{key}"
        );
        assert!(!key.contains("delivery"), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inbox_counts_attempts_by_result_and_its_rows_by_state() {
    let _turn = TURN.lock().await;
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open())
        .order_by_subject(true)
        .reorder_window(Duration::ZERO);
    let app = Router::new().route(
        PATH,
        axum::routing::post_service(inbox.clone()).route_layer(support::layer()),
    );
    let addr = support::serve(app).await;
    // `call.failed` fails on its first attempt, then is handled; the rest are handled at once,
    // but for a `call.ringing` older than the handled `call.completed` of its call, skipped.
    let worker = Worker::new(&inbox, |job: Job<Event>| async move {
        if job.event.kind.as_str() == "call.failed" && job.attempt == 1 {
            return Err("downstream unavailable".to_owned());
        }
        Ok(())
    })
    .backoff(ringyo_webhook::inbox::Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(10),
    ))
    .poll_interval(Duration::from_millis(50))
    .skip_superseded([EventKind::CallRinging]);
    recorded();
    let call = json!({ "id": "call_1" });
    for event in ["call.completed", "call.failed", "credits.low"] {
        assert_eq!(send_signed(addr, envelope(event, call.clone())).await, 202);
    }
    assert_eq!(
        send_signed(addr, envelope("credits.low", call.clone())).await,
        200,
        "a retry of a stored delivery"
    );
    let mut moved = BTreeMap::new();
    let handled = format!("{INBOX_ATTEMPTS_TOTAL}{{result=handled}}");
    let running = tokio::spawn(worker.run(std::future::pending()));
    until(&mut moved, |moved| moved.get(&handled) == Some(&3.0)).await;
    let (late, _) = TestDelivery::new("call.ringing")
        .data(call)
        .timestamp(support::SENT_AT.parse::<DateTime<Utc>>().unwrap() - TimeDelta::seconds(10))
        .body_and_signature();
    assert_eq!(send_signed(addr, late.into_bytes()).await, 202);
    let superseded = format!("{INBOX_ATTEMPTS_TOTAL}{{result=superseded}}");
    until(&mut moved, |moved| moved.get(&superseded) == Some(&1.0)).await;
    running.abort();
    // A worker counts the inbox as it starts, then every 15 s: a fresh one shows the end.
    let idle = Worker::new(&inbox, |_: Job<Event>| async { Ok::<(), String>(()) });
    let counting = tokio::spawn(idle.run(std::future::pending()));
    let done = format!("{INBOX_DELIVERIES}{{state=done}}");
    until(&mut moved, |moved| moved.get(&done) == Some(&3.0)).await;
    counting.abort();
    assert_eq!(
        only(&moved, INBOX_ATTEMPTS_TOTAL),
        BTreeMap::from([
            ("{result=handled}", 3.0),
            ("{result=retry}", 1.0),
            ("{result=superseded}", 1.0)
        ])
    );
    assert_eq!(
        only(&moved, INBOX_HANDLER_SECONDS),
        BTreeMap::from([
            ("{event=call.completed}", 1.0),
            ("{event=call.failed}", 2.0),
            ("{event=credits.low}", 1.0),
        ])
    );
    assert_eq!(
        only(&moved, INBOX_DELIVERIES),
        BTreeMap::from([
            ("{state=dead}", 0.0),
            ("{state=done}", 3.0),
            ("{state=pending}", 0.0),
            ("{state=running}", 0.0),
            ("{state=superseded}", 1.0),
        ])
    );
    assert_eq!(
        only(&moved, DELIVERIES_TOTAL),
        BTreeMap::from([("{outcome=accepted}", 4.0), ("{outcome=duplicate}", 1.0)]),
        "the inbox's 202 is an accepted delivery, its 200 a duplicate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_is_counted_once_and_each_refused_delivery_by_its_code() {
    let _turn = TURN.lock().await;
    // Its claims fail while `claim_fails` is set, as a store that lost its server.
    let store = Arc::new(Faulty::default());
    let layer = support::layer().delivery_store(Arc::clone(&store));
    let handler = |_: RingyoEvent<Event>| async { StatusCode::NO_CONTENT };
    let addr = support::serve(Router::new().route(PATH, post(handler).route_layer(layer))).await;
    let delivery = |n: u32| envelope("credits.low", json!({ "balance": n }));
    recorded();

    // Down for three deliveries, up for one, down again for one: two outages.
    store.claim_fails.store(true, Ordering::SeqCst);
    for n in 0..3 {
        assert_eq!(send_signed(addr, delivery(n)).await, 503);
    }
    store.claim_fails.store(false, Ordering::SeqCst);
    assert_eq!(send_signed(addr, delivery(3)).await, 204);
    store.claim_fails.store(true, Ordering::SeqCst);
    assert_eq!(send_signed(addr, delivery(4)).await, 503);

    let moved = recorded();
    assert_eq!(moved[&format!("{STORE_OUTAGES_TOTAL}{{}}")], 2.0);
    assert_eq!(
        only(&moved, DELIVERIES_TOTAL),
        BTreeMap::from([
            ("{code=delivery_store_unavailable,outcome=rejected}", 4.0),
            ("{outcome=accepted}", 1.0),
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_whose_handler_panics_or_times_out_is_counted_as_aborted() {
    let _turn = TURN.lock().await;
    let handler = |event: RingyoEvent<Event>| async move {
        match event.kind.as_str() {
            "call.failed" => panic!("the handler's bug"),
            _ => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::NO_CONTENT
            }
        }
    };
    let app = Router::new()
        .route(PATH, post(handler).route_layer(support::layer()))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(200),
        ));
    let addr = support::serve(app).await;
    recorded();

    let body = envelope("call.failed", json!({}));
    let signature = sign(&body);
    let cut = support::client()
        .post(format!("http://{addr}{PATH}"))
        .header("x-ringyo-signature", signature)
        .body(body)
        .send()
        .await;
    assert!(cut.is_err(), "the connection dies with the panic: {cut:?}");
    let slow = envelope("call.completed", json!({}));
    assert_eq!(send_signed(addr, slow).await, 408);

    let moved = recorded();
    assert_eq!(
        only(&moved, DELIVERIES_TOTAL),
        BTreeMap::from([
            ("{code=dropped,outcome=aborted}", 1.0),
            ("{code=panic,outcome=aborted}", 1.0),
        ])
    );
}
