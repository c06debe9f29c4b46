//! Secrets at run time: what a secret source costs against the fixed set, and whether a
//! tenant's lookup grows with the number of tenants.
//!
//! `cargo bench -p ringyo-webhook-benches --bench secrets`; see benches/README.md.
//!
//! - `secrets_layer`: the layer (no extractor) through `tower::ServiceExt::oneshot` on a 2 KiB
//!   delivery, built with `RingyoWebhookLayer::new` (`fixed`, today's layer), with
//!   `from_source(Secrets)` (`fixed_source`), with `from_source(RotatingSecrets)` (`rotating`),
//!   and with `Tenants` over a `TenantMap` of 10 and of 10 000 tenants.
//! - `secrets_lookup`: `SecretSource::lookup` alone (the path read, the name checked, the map
//!   probed), for a `TenantMap` of 10, 10 000 and 100 000 tenants, each iteration asking for
//!   the next of the same number (10) of tenants spread over the map, so only the map's size
//!   differs; and for 100 000 tenants asked in turns of 1 024, where the working set no longer
//!   fits the CPU's caches.

#[path = "support/report.rs"]
mod report;

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use http::{request::Parts, Request, Response, StatusCode};
use http_body_util::Full;
use ringyo_webhook::{
    secrets::{RotatingSecrets, SecretSource, Secrets, Tenant, TenantKey, TenantMap, Tenants},
    testing::TestDelivery,
    RingyoWebhookLayer,
};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

const LAYER: &str = "secrets_layer";
const LOOKUP: &str = "secrets_lookup";
const SECRET: &str = "whsec_a1b2c3d4e5f6g7h8i9j0";
const SIZE: [(&str, usize); 1] = [("2KiB", 2 << 10)];
const LOOKUPS: [(&str, usize); 1] = [("lookup", 0)];
/// How many different tenants the requests name, spread over the map.
const ASKED: usize = 1024;

/// A map of `count` tenants `t0`, `t1`, ..., each with its own secret except that every one
/// asked for (below) has [`SECRET`], so its deliveries verify.
fn tenants(count: usize) -> TenantMap {
    let step = count.div_ceil(ASKED).max(1);
    (0..count)
        .map(|index| {
            let secret = if index % step == 0 {
                SECRET.to_owned()
            } else {
                format!("whsec_tenant_{index}")
            };
            let tenant = Tenant::new(&format!("t{index}")).expect("a valid name");
            (tenant, Secrets::new(secret).expect("a valid secret"))
        })
        .collect()
}

/// The paths of `asked` tenants spread over a map of `count`.
fn asked(count: usize, asked: usize) -> Vec<String> {
    let step = count.div_ceil(asked).max(1);
    (0..count)
        .step_by(step)
        .map(|index| format!("/t{index}"))
        .collect()
}

fn request(path: &str, body: &Bytes, signature: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("x-ringyo-signature", signature)
        .body(Full::new(body.clone()))
        .expect("valid request")
}

/// The layer around a service that answers 204, ready to be cloned per request.
fn service(
    layer: RingyoWebhookLayer,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<ringyo_webhook::middleware::ResponseBody<Full<Bytes>>>,
    Error = Infallible,
    Future: Send,
> + Clone {
    ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_| async {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok::<_, Infallible>(response)
        }))
}

fn bench_layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let (body, signature) = TestDelivery::new("call.completed")
        .secret(SECRET)
        .pad_to(SIZE[0].1)
        .body_and_signature();
    let (body, signature) = (Bytes::from(body), signature.expect("signed"));
    let fixed = Secrets::new(SECRET).expect("a valid secret");
    let by_path = |count| {
        RingyoWebhookLayer::from_source(Tenants::new(TenantKey::PathSegment(0), tenants(count)))
            .skip_timestamp_check()
    };
    let layers = [
        (
            "fixed",
            RingyoWebhookLayer::new(SECRET)
                .expect("valid")
                .skip_timestamp_check(),
            1,
        ),
        (
            "fixed_source",
            RingyoWebhookLayer::from_source(fixed.clone()).skip_timestamp_check(),
            1,
        ),
        (
            "rotating",
            RingyoWebhookLayer::from_source(RotatingSecrets::new(fixed)).skip_timestamp_check(),
            1,
        ),
        ("tenants_10", by_path(10), 10),
        ("tenants_10000", by_path(10_000), 10_000),
    ];
    let mut group = c.benchmark_group(LAYER);
    group.throughput(Throughput::Bytes(body.len() as u64));
    for (name, layer, count) in layers {
        let service = service(layer);
        let paths = if count == 1 {
            vec!["/".to_owned()]
        } else {
            asked(count, ASKED)
        };
        for path in &paths {
            let response =
                runtime.block_on(service.clone().oneshot(request(path, &body, &signature)));
            assert_eq!(
                response.expect("infallible").status(),
                StatusCode::NO_CONTENT,
                "{name} {path}"
            );
        }
        let mut next = paths.iter().cycle();
        group.bench_function(BenchmarkId::new(name, SIZE[0].0), |b| {
            b.to_async(&runtime).iter(|| {
                let path = next.next().expect("cycles");
                service.clone().oneshot(request(path, &body, &signature))
            })
        });
    }
    group.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group(LOOKUP);
    let runs = [
        ("tenants_10", 10, 10),
        ("tenants_10000", 10_000, 10),
        ("tenants_100000", 100_000, 10),
        ("tenants_100000_asked_1024", 100_000, ASKED),
    ];
    for (name, count, distinct) in runs {
        let source = Tenants::new(TenantKey::PathSegment(0), tenants(count));
        let requests: Vec<Parts> = asked(count, distinct)
            .iter()
            .map(|path| request(path, &Bytes::new(), "").into_parts().0)
            .collect();
        let mut next = requests.iter().cycle();
        group.bench_function(BenchmarkId::new(name, LOOKUPS[0].0), |b| {
            b.iter(|| source.lookup(next.next().expect("cycles")))
        });
    }
    group.finish();
}

fn main() {
    report::run(
        bench_layer,
        LAYER,
        &SIZE,
        &[
            "fixed",
            "fixed_source",
            "rotating",
            "tenants_10",
            "tenants_10000",
        ],
        &[
            ("fixed_source", "fixed"),
            ("rotating", "fixed"),
            ("tenants_10", "fixed"),
            ("tenants_10000", "tenants_10"),
        ],
    );
    report::run(
        bench_lookup,
        LOOKUP,
        &LOOKUPS,
        &[
            "tenants_10",
            "tenants_10000",
            "tenants_100000",
            "tenants_100000_asked_1024",
        ],
        &[
            ("tenants_10000", "tenants_10"),
            ("tenants_100000", "tenants_10"),
            ("tenants_100000_asked_1024", "tenants_100000"),
        ],
    );
}
