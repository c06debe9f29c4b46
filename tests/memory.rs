//! Memory: bodies are buffered once and never past the limit, even many large ones at a time.
//!
//! Its own test binary, so no other test's allocations blur the peak RSS it measures.

use ringyo_test_support as support;

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::Request, routing::post, Router};
use http_body::{Body, Frame};
use ringyo_test_support::{envelope, sign};
use ringyo_webhook::{RingyoWebhookLayer, VerifiedPayload};
use serde_json::json;
use tokio::sync::Barrier;
use tower::ServiceExt;

const LIMIT: usize = RingyoWebhookLayer::DEFAULT_BODY_LIMIT;

/// A body of exactly the default limit, 1 MiB.
fn megabyte_body() -> Bytes {
    let skeleton = envelope("call.completed", json!({"notes": ""}));
    let body = envelope(
        "call.completed",
        json!({"notes": "x".repeat(LIMIT - skeleton.len())}),
    );
    assert_eq!(body.len(), LIMIT);
    body.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_megabyte_deliveries_at_once_keep_peak_rss_under_twice_the_bytes_in_flight() {
    const DELIVERIES: usize = 256;
    let body = megabyte_body();
    let signature = sign(&body);

    // Every handler waits until all deliveries are inside: all bodies are in flight at once.
    // It holds the verified bytes only: deserializing into owned strings (`RingyoEvent`) makes
    // a copy of its own, which is the handler's choice, not the layer's buffering.
    let barrier = Arc::new(Barrier::new(DELIVERIES));
    async fn handle(State(barrier): State<Arc<Barrier>>, payload: VerifiedPayload) -> String {
        barrier.wait().await;
        payload.len().to_string()
    }
    let app = Router::new()
        .route("/", post(handle).route_layer(support::layer()))
        .with_state(barrier);
    let addr = support::serve(app).await;

    let base = support::proc_status_bytes("VmHWM:");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let requests = (0..DELIVERIES).map(|_| {
        // The client shares one copy of the body: only the server's buffers count.
        let request = client
            .post(format!("http://{addr}/"))
            .header("x-ringyo-signature", &signature)
            .body(body.clone());
        tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
    });
    for answer in futures_util::future::join_all(requests).await {
        assert_eq!(answer.unwrap(), LIMIT.to_string());
    }

    let in_flight = (DELIVERIES * LIMIT) as u64;
    let growth = support::proc_status_bytes("VmHWM:").saturating_sub(base);
    let fixed = 64 << 20; // runtime, connections, hyper's read buffers
    println!(
        "peak RSS grew {} MiB for {} MiB in flight",
        growth >> 20,
        in_flight >> 20
    );
    assert!(
        growth < 2 * in_flight + fixed,
        "peak RSS grew {growth} bytes for {in_flight} bytes in flight"
    );
}

/// A body that never ends, counting what was taken from it.
struct Endless {
    taken: Arc<AtomicUsize>,
}

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.taken.fetch_add(CHUNK.len(), Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))))
    }
}

/// Sends an endless body through a layer that discards for `discard_time`; the answer's
/// status and how much of the body was taken.
async fn endless(discard_time: Duration) -> (u16, usize) {
    let layer = support::layer().discard_time(discard_time);
    let app = Router::new().route("/", post(|| async {}).route_layer(layer));
    let taken = Arc::new(AtomicUsize::new(0));
    let request = Request::post("/")
        .header("x-ringyo-signature", "ab".repeat(32))
        .body(Endless {
            taken: Arc::clone(&taken),
        })
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), app.oneshot(request))
        .await
        .expect("no hang")
        .unwrap();
    (response.status().as_u16(), taken.load(Ordering::SeqCst))
}

/// A body that never ends is refused: at once past the limit with no discard time, and once
/// the discard time is up otherwise (what it reads meanwhile is thrown away, not kept).
#[tokio::test]
async fn endless_body_is_refused_past_the_limit_or_once_the_discard_time_is_up() {
    let (status, taken) = endless(Duration::ZERO).await;
    assert_eq!(status, 413);
    // The chunk that crossed the limit, and the one that showed the body goes on.
    assert!(taken <= LIMIT + 2 * CHUNK.len(), "read {taken} bytes");

    let (status, taken) = endless(Duration::from_millis(200)).await;
    assert_eq!(status, 413);
    assert!(
        taken > LIMIT + CHUNK.len(),
        "read on, to discard: {taken} bytes"
    );
}
