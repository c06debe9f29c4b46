//! The whole layer and extractor through `tower::ServiceExt::oneshot` on an axum `Router`,
//! against the same router with no verification and `Json<serde_json::Value>`.
//!
//! `cargo bench -p ringyo-webhook-benches --bench layer`; see benches/README.md.

#[path = "support/report.rs"]
mod report;

use axum::{body::Body, http::Request, http::StatusCode, routing::post, Json, Router};
use criterion::{BenchmarkId, Criterion, Throughput};
use ringyo_webhook::{testing::TestDelivery, RingyoEvent, RingyoWebhookLayer};
use serde_json::Value;
use tower::ServiceExt;

const GROUP: &str = "layer";
const SECRET: &str = "whsec_a1b2c3d4e5f6g7h8i9j0";
const SIZES: [(&str, usize); 2] = [("2KiB", 2 << 10), ("256KiB", 256 << 10)];

/// A signed `call.transcript.ready` delivery of about `size` bytes.
fn delivery(size: usize) -> (bytes::Bytes, String) {
    let (body, signature) = TestDelivery::new("call.transcript.ready")
        .secret(SECRET)
        .pad_to(size)
        .body_and_signature();
    (body.into(), signature.expect("signed"))
}

fn request(body: &bytes::Bytes, signature: &str) -> Request<Body> {
    Request::post("/")
        .header("content-type", "application/json")
        .header("x-ringyo-signature", signature)
        .body(Body::from(body.clone()))
        .expect("valid request")
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let verified = Router::new().route(
        "/",
        post(|_: RingyoEvent<Value>| async { StatusCode::NO_CONTENT })
            .route_layer(RingyoWebhookLayer::new(SECRET).unwrap()),
    );
    let unverified =
        Router::new().route("/", post(|_: Json<Value>| async { StatusCode::NO_CONTENT }));

    let mut group = c.benchmark_group(GROUP);
    for (name, size) in SIZES {
        let (body, signature) = delivery(size);
        for router in [&verified, &unverified] {
            let status = runtime.block_on(router.clone().oneshot(request(&body, &signature)));
            assert_eq!(status.unwrap().status(), StatusCode::NO_CONTENT);
        }
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(BenchmarkId::new("layer_and_extractor", name), |b| {
            b.to_async(&runtime)
                .iter(|| verified.clone().oneshot(request(&body, &signature)))
        });
        group.bench_function(BenchmarkId::new("json_unverified", name), |b| {
            b.to_async(&runtime)
                .iter(|| unverified.clone().oneshot(request(&body, &signature)))
        });
    }
    group.finish();
}

fn main() {
    report::run(
        bench,
        GROUP,
        &SIZES,
        &["layer_and_extractor", "json_unverified"],
        &[("layer_and_extractor", "json_unverified")],
    );
}
