//! The servers `benches/load.sh` compares; they differ only in how they verify, and in the
//! delivery store behind the layer.
//!
//! ```text
//! cargo build --release -p ringyo-webhook-benches --example load_server
//! target/release/examples/load_server serve <MODE> [ADDR]
//! target/release/examples/load_server payload <BYTES> <BODY_FILE>
//! target/release/examples/load_server pool <BYTES> <FIRST> <COUNT> <POOL_FILE> [SUBJECTS]
//! target/release/examples/load_server roundtrip <REDIS_URL> <COUNT> <ROUNDS>
//! target/release/examples/load_server features
//! ```
//!
//! Built with the feature `metrics` and run with `LOAD_METRICS` set, every mode records the
//! crate's metrics into a Prometheus recorder (the receiver's buckets, upkeep every
//! 5 s), as a receiver serving `/metrics` does; `features` says whether it was built so.
//!
//! Modes: `layer`, `manual`, `none`, `parse` (verification), and `layer-memory`,
//! `layer-redis`: `layer` with a `MemoryDeliveryStore` or a `RedisDeliveryStore` (on the Redis
//! at `$LOAD_REDIS_URL`, default `redis://127.0.0.1:6379`, under a key prefix of its own).
//! Every server also answers `GET /stats` with how many times its handler ran.
//!
//! The durable inbox (`benches/inbox.sh`): `queue` is the in-memory receiver the inbox
//! replaced: the layer, then a handler that `try_send`s the `RingyoEvent` on a bounded tokio
//! channel and answers 202, with a task draining it. `inbox-sqlite`, `inbox-sqlite-single`,
//! `inbox-postgres`, `inbox-postgres-single`: the layer, then `Inbox::service()` on the
//! database at `$LOAD_INBOX_URL` (`sqlite://PATH` or `postgres://...`), with group commit
//! (default `max_batch`) or one transaction per delivery (`max_batch(1)`), and a worker
//! (concurrency `$LOAD_WORKER_CONCURRENCY`, default 64, as many as wrk's connections) in the
//! same process whose handler only counts. `inbox-sqlite-ordered` and `inbox-postgres-ordered`
//! are `inbox-sqlite` and `inbox-postgres` with `Inbox::order_by_subject(true)` and a reorder
//! window of `$LOAD_REORDER_WINDOW_MS` (default: the inbox's, 1 s). In these modes `GET /stats`
//! also counts the webhook route's answers by status, and `GET /latency` gives the time from a
//! delivery's 202 to its handler starting (matched by delivery id), p50 and p99.
//!
//! `payload` writes a signed `call.transcript.ready` body of about BYTES to BODY_FILE and prints
//! its signature. With a store every copy of one body after the first is a duplicate (answered
//! 200 without running the handler), so `pool` writes COUNT distinct deliveries instead, one a
//! line, `<signature> <body>`, numbered from FIRST in their `webhook_id`, all signed with the servers'
//! secret and stamped now. With SUBJECTS, the pool is for per-subject ordering: each delivery
//! names one of SUBJECTS calls in `data.id` (`call_load_000000` onwards, delivery `i` the call
//! `i % SUBJECTS`, so consecutive deliveries fall on different calls), and its timestamp is the
//! pool's stamp plus 10 µs per delivery, so each call's events are timestamped in the order the
//! pool sends them, as Ringyo stamps a call's events as they happen. `roundtrip` times deliveries one at a time through the layer
//! (in-process, `oneshot`) with no store, the memory store and the Redis store, to isolate what
//! the Redis round trips add to one delivery. Each server runs on one thread, so the load
//! generator can have the other core.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    future::Future,
    io::{BufWriter, Write},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        LazyLock, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Request, Response, StatusCode},
    middleware::map_response,
    routing::{get, post, post_service},
    Json, Router,
};
use hmac::{Hmac, KeyInit, Mac};
use ringyo_webhook::{
    chrono::{DateTime, TimeDelta, Utc},
    inbox::{Inbox, Job, Worker},
    replay::RedisDeliveryStore,
    testing::{sample_data, TestDelivery},
    DeliveryId, EventKind, MemoryDeliveryStore, RingyoEvent, RingyoWebhookLayer, VerifiedPayload,
};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};

const SECRET: &str = "whsec_load_test_secret";
const PATH: &str = "/webhooks/ringyo";

/// How many times a handler ran, for `GET /stats`: with a store, a duplicate does not run it.
static HANDLED: AtomicU64 = AtomicU64::new(0);
/// The webhook route's answers in the `queue` and `inbox-*` modes, for `GET /stats`: 202
/// (accepted), 200 (a duplicate) and anything else.
static ANSWERED_202: AtomicU64 = AtomicU64::new(0);
static ANSWERED_200: AtomicU64 = AtomicU64::new(0);
static ANSWERED_OTHER: AtomicU64 = AtomicU64::new(0);
/// The `queue` mode's channel: far above what a run sends, so `try_send` never finds it full
/// (a full queue would answer 503, which `inbox.sh` reports).
const QUEUE_CAPACITY: usize = 1 << 22;
/// The time from each delivery's 202 to its handler starting, in the `queue` and `inbox-*`
/// modes.
static HANDOVER: LazyLock<Handover> = LazyLock::new(Handover::default);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["payload", size, path] => {
            let (body, signature) = TestDelivery::new("call.transcript.ready")
                .secret(SECRET)
                .pad_to(size.parse()?)
                .body_and_signature();
            std::fs::write(path, body)?;
            println!("{}", signature.expect("signed"));
            Ok(())
        }
        ["pool", size, first, count, path] => {
            let mut out = BufWriter::new(std::fs::File::create(path)?);
            for (body, signature) in pool(size.parse()?, first.parse()?, count.parse()?) {
                writeln!(out, "{signature} {body}")?;
            }
            out.flush()?;
            Ok(())
        }
        ["pool", size, first, count, path, subjects] => {
            let mut out = BufWriter::new(std::fs::File::create(path)?);
            let deliveries =
                subject_pool(size.parse()?, first.parse()?, count.parse()?, subjects.parse()?)?;
            for (body, signature) in deliveries {
                writeln!(out, "{signature} {body}")?;
            }
            out.flush()?;
            Ok(())
        }
        ["features"] => {
            println!(
                "metrics {}",
                if cfg!(feature = "metrics") {
                    "on"
                } else {
                    "off"
                }
            );
            Ok(())
        }
        ["serve", mode] => serve(mode, "127.0.0.1:3000"),
        ["serve", mode, addr] => serve(mode, addr),
        ["roundtrip", url, count, rounds] => roundtrip(url, count.parse()?, rounds.parse()?),
        _ => Err(
            "usage: load_server serve <MODE> [ADDR] | payload <BYTES> <FILE> \
                  | pool <BYTES> <FIRST> <COUNT> <FILE> [SUBJECTS] | roundtrip <REDIS_URL> <COUNT> <ROUNDS>"
                .into(),
        ),
    }
}

/// `count` distinct deliveries of about `size` bytes, numbered from `first` in their
/// `webhook_id` (fixed width, so every body has the same length), signed with [`SECRET`],
/// timestamped now.
fn pool(size: usize, first: usize, count: usize) -> impl Iterator<Item = (String, String)> {
    let template = TestDelivery::new("call.transcript.ready")
        .secret(SECRET)
        .pad_to(size);
    (first..first + count).map(move |index| {
        let (body, signature) = template
            .clone()
            .webhook_id(format!("wh_load_{index:010}"))
            .body_and_signature();
        (body, signature.expect("signed"))
    })
}

/// `count` distinct `call.transcript.ready` deliveries of about `size` bytes over `subjects`
/// calls, numbered from `first` in their `webhook_id`: delivery `index` names the call
/// `index % subjects` in `data.id`, and is stamped 10 µs after the one before it (the first
/// now), so that within a call timestamps rise in the order the pool is sent. Every body has
/// the same length: fixed-width numbers, and six digits of fraction in every timestamp (each
/// one's microseconds end in 1, so the RFC 3339 form never shortens them).
fn subject_pool(
    size: usize,
    first: usize,
    count: usize,
    subjects: usize,
) -> Result<impl Iterator<Item = (String, String)>, Box<dyn std::error::Error>> {
    if subjects == 0 || subjects > 1_000_000 {
        return Err("SUBJECTS: from 1 to 1000000".into());
    }
    // Now, to the second, plus 1 µs: every stamp below then ends in 1 µs.
    let now = DateTime::<Utc>::from(std::time::SystemTime::now());
    let stamp = now - TimeDelta::nanoseconds(i64::from(now.timestamp_subsec_nanos()))
        + TimeDelta::microseconds(1);
    let mut data = sample_data(&EventKind::CallTranscriptReady);
    data["id"] = Value::from("call_load_000000");
    // Padded once, to learn how many transcript turns make `size`; each delivery then only
    // changes fixed-width fields.
    let padded = TestDelivery::new("call.transcript.ready")
        .secret(SECRET)
        .data(data)
        .timestamp(stamp)
        .webhook_id(format!("wh_load_{first:010}"))
        .pad_to(size);
    let (body, _) = padded.body_and_signature();
    let template: Value = serde_json::from_str(&body)?;
    let data = template["data"].clone();
    Ok((first..first + count).map(move |index| {
        let mut data = data.clone();
        data["id"] = Value::from(format!("call_load_{:06}", index % subjects));
        let offset = i64::try_from(index - first).expect("a pool fits in i64");
        let (body, signature) = TestDelivery::new("call.transcript.ready")
            .secret(SECRET)
            .data(data)
            .timestamp(stamp + TimeDelta::microseconds(10 * offset))
            .webhook_id(format!("wh_load_{index:010}"))
            .body_and_signature();
        (body, signature.expect("signed"))
    }))
}

/// The verifying layer, with the store `mode` names.
fn layer(mode: &str, redis_url: &str) -> Result<RingyoWebhookLayer, Box<dyn std::error::Error>> {
    let layer = RingyoWebhookLayer::new(SECRET)?;
    Ok(match mode {
        "layer" => layer,
        "layer-memory" => {
            // The default capacity, as a receiver runs it: a run sends more distinct deliveries
            // than it holds, so it forgets the oldest handled, as it would in production. Sized
            // far above (2,000,000, as this bench had it), the table, allocated at its cap and
            // untouched, faulted a fresh page in for nearly every insert of a 10 s run (README,
            // "Delivery stores"). `$LOAD_MEMORY_CAPACITY` sets another (the soak's).
            let store = match std::env::var("LOAD_MEMORY_CAPACITY") {
                Ok(capacity) => MemoryDeliveryStore::with_capacity(capacity.parse()?),
                Err(_) => MemoryDeliveryStore::new(),
            };
            layer.delivery_store(store)
        }
        "layer-redis" => {
            let store = RedisDeliveryStore::open(redis_url)?
                .prefix(format!("ringyo-load:{}:", std::process::id()));
            layer.delivery_store(store)
        }
        other => return Err(format!("unknown mode {other}").into()),
    })
}

async fn verified(_: RingyoEvent<Value>) -> StatusCode {
    HANDLED.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

fn serve(mode: &str, addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // `RedisDeliveryStore::open` spawns its connection task, so it needs the runtime.
    let _entered = runtime.enter();
    let redis_url =
        std::env::var("LOAD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    if std::env::var_os("LOAD_METRICS").is_some() {
        record_metrics()?;
    }
    let app = match mode {
        "layer" | "layer-memory" | "layer-redis" => {
            Router::new().route(PATH, post(verified).route_layer(layer(mode, &redis_url)?))
        }
        "queue"
        | "inbox-sqlite"
        | "inbox-sqlite-single"
        | "inbox-sqlite-ordered"
        | "inbox-postgres"
        | "inbox-postgres-single"
        | "inbox-postgres-ordered" => {
            let service = if mode == "queue" {
                queue()
            } else {
                runtime.block_on(inbox(mode))?
            };
            Router::new()
                .route(PATH, service.route_layer(RingyoWebhookLayer::new(SECRET)?))
                .layer(map_response(count_answer))
                .route("/latency", get(|| async { HANDOVER.report() }))
        }
        "manual" => Router::new().route(PATH, post(hand_written)),
        "none" => Router::new().route(
            PATH,
            post(|_: Json<Value>| async { StatusCode::NO_CONTENT }),
        ),
        // No verification, and the same parse as `manual`: axum's `Json` is slower than a plain
        // `serde_json::from_slice` (it tracks error paths), so this is the true floor.
        "parse" => Router::new().route(
            PATH,
            post(|body: Bytes| async move {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(_) => StatusCode::NO_CONTENT,
                    Err(_) => StatusCode::BAD_REQUEST,
                }
            }),
        ),
        other => return Err(format!("unknown mode {other}").into()),
    }
    .route(
        "/stats",
        get(|| async {
            format!(
                "handled {}\nanswered_202 {}\nanswered_200 {}\nanswered_other {}\n",
                HANDLED.load(Ordering::Relaxed),
                ANSWERED_202.load(Ordering::Relaxed),
                ANSWERED_200.load(Ordering::Relaxed),
                ANSWERED_OTHER.load(Ordering::Relaxed),
            )
        }),
    );
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, app).await
    })?;
    Ok(())
}

/// Installs a Prometheus recorder for the crate's metrics.
#[cfg(feature = "metrics")]
fn record_metrics() -> Result<(), Box<dyn std::error::Error>> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)?
        .install_recorder()?;
    ringyo_webhook::metrics::describe();
    // A task on the server's runtime, as the receiver does; not a thread: a second
    // thread would switch glibc's malloc from its single-threaded fast path to locking, which
    // costs this single-threaded server about a tenth of its throughput whatever it records.
    tokio::spawn(async move {
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        loop {
            upkeep.tick().await;
            handle.run_upkeep();
        }
    });
    Ok(())
}

#[cfg(not(feature = "metrics"))]
fn record_metrics() -> Result<(), Box<dyn std::error::Error>> {
    Err("LOAD_METRICS is set, but load_server was built without the feature metrics".into())
}

/// The `queue` route: today's in-memory receiver before the inbox (the receiver example
/// until the inbox replaced it): `try_send` the event on a bounded channel, answer 202 (503 if
/// full), and a task drains the channel, running the handler (here: count) on each event.
fn queue() -> axum::routing::MethodRouter {
    let (sender, mut events) = mpsc::channel::<RingyoEvent<Value>>(QUEUE_CAPACITY);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            HANDOVER.started(event.delivery_id);
            HANDLED.fetch_add(1, Ordering::Relaxed);
        }
    });
    let enqueue = |State(queue): State<mpsc::Sender<RingyoEvent<Value>>>,
                   event: RingyoEvent<Value>| async move {
        match queue.try_send(event) {
            Ok(()) => StatusCode::ACCEPTED,
            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    };
    post_service(Acked(axum::handler::Handler::with_state(enqueue, sender)))
}

/// An `inbox-*` route: `Inbox::service()` on `$LOAD_INBOX_URL` (created and migrated here,
/// before serving), ordered by subject in the `-ordered` modes, and a worker (concurrency `$LOAD_WORKER_CONCURRENCY`, default 64) whose
/// handler only counts.
async fn inbox(mode: &str) -> Result<axum::routing::MethodRouter, Box<dyn std::error::Error>> {
    let url = std::env::var("LOAD_INBOX_URL").map_err(|_| "LOAD_INBOX_URL is not set")?;
    let engine = if mode.starts_with("inbox-sqlite") {
        "sqlite://"
    } else {
        "postgres://"
    };
    if !url.starts_with(engine) {
        return Err(format!("{mode} needs a {engine} LOAD_INBOX_URL").into());
    }
    let mut inbox = Inbox::open(&url)?;
    if mode.ends_with("-single") {
        inbox = inbox.max_batch(1);
    }
    if mode.ends_with("-ordered") {
        inbox = inbox.order_by_subject(true);
        if let Ok(window) = std::env::var("LOAD_REORDER_WINDOW_MS") {
            inbox = inbox.reorder_window(Duration::from_millis(window.parse()?));
        }
    }
    inbox.ping().await?;
    let worker = Worker::new(&inbox, |job: Job<Value>| async move {
        HANDOVER.started(job.delivery_id());
        HANDLED.fetch_add(1, Ordering::Relaxed);
        Ok::<(), String>(())
    })
    .concurrency(worker_concurrency()?);
    tokio::spawn(worker.run(std::future::pending()));
    Ok(post_service(Acked(inbox.clone())))
}

fn worker_concurrency() -> Result<usize, Box<dyn std::error::Error>> {
    match std::env::var("LOAD_WORKER_CONCURRENCY") {
        Ok(value) => Ok(value.parse()?),
        Err(_) => Ok(64),
    }
}

/// Counts the webhook route's answers by status.
async fn count_answer(response: axum::response::Response) -> axum::response::Response {
    match response.status() {
        StatusCode::ACCEPTED => &ANSWERED_202,
        StatusCode::OK => &ANSWERED_200,
        _ => &ANSWERED_OTHER,
    }
    .fetch_add(1, Ordering::Relaxed);
    response
}

/// Wraps the service behind the layer: when its response resolves with 202, records the
/// instant for the delivery's id (from the `VerifiedPayload` the layer put in the request).
#[derive(Clone)]
struct Acked<S>(S);

impl<S, B> Service<Request<Body>> for Acked<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: 'static,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let id = request
            .extensions()
            .get::<VerifiedPayload>()
            .map(VerifiedPayload::delivery_id);
        let answer = self.0.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if let (Some(id), StatusCode::ACCEPTED) = (id, response.status()) {
                HANDOVER.acked(id);
            }
            Ok(response)
        })
    }
}

/// Matches each delivery's 202 with its handler's start. Usually the 202 comes first; the
/// handler may also start before the 202 is recorded (the worker claims the row as soon as it
/// is committed), which counts as a negative time.
#[derive(Default)]
struct Handover {
    open: Mutex<HashMap<DeliveryId, Mark>>,
    /// Every delivery whose handler started, so that a second start is a rerun even after the
    /// first was matched with its 202.
    started: Mutex<HashSet<DeliveryId>>,
    /// Handler start minus 202, in µs.
    micros: Mutex<Vec<i64>>,
    /// Handler starts for a delivery already handled (a rerun); none are expected.
    reruns: AtomicU64,
}

enum Mark {
    Acked(Instant),
    Started(Instant),
}

impl Handover {
    fn acked(&self, id: DeliveryId) {
        let now = Instant::now();
        let mut open = self.open.lock().expect("not poisoned");
        match open.remove(&id) {
            Some(Mark::Started(at)) => self.sample(-micros(now - at)),
            _ => {
                open.insert(id, Mark::Acked(now));
            }
        }
    }

    fn started(&self, id: DeliveryId) {
        let now = Instant::now();
        let mut open = self.open.lock().expect("not poisoned");
        if !self.started.lock().expect("not poisoned").insert(id) {
            self.reruns.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // A first start: its 202 came first, or comes later.
        match open.remove(&id) {
            Some(Mark::Acked(at)) => self.sample(micros(now - at)),
            _ => {
                open.insert(id, Mark::Started(now));
            }
        }
    }

    fn sample(&self, micros: i64) {
        self.micros.lock().expect("not poisoned").push(micros);
    }

    /// `samples`, p50 and p99 in µs, how many handlers started before their 202 was recorded,
    /// and what is unmatched: 202s whose handler has not started, handlers whose delivery was
    /// never answered 202 (its request was cut off after the row was committed), reruns.
    fn report(&self) -> String {
        let mut micros = self.micros.lock().expect("not poisoned").clone();
        micros.sort_unstable();
        let percentile = |p: usize| {
            micros
                .get((micros.len() * p / 100).min(micros.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        let open = self.open.lock().expect("not poisoned");
        let acked_unhandled = open
            .values()
            .filter(|mark| matches!(mark, Mark::Acked(_)))
            .count();
        format!(
            "samples {}\np50_us {}\np99_us {}\nhandler_first {}\nacked_unhandled {}\n\
             handled_unacked {}\nreruns {}\n",
            micros.len(),
            percentile(50),
            percentile(99),
            micros.iter().filter(|&&micros| micros < 0).count(),
            acked_unhandled,
            open.len() - acked_unhandled,
            self.reruns.load(Ordering::Relaxed),
        )
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Deliveries one at a time through the layer, in this process (`oneshot`, no HTTP): `rounds`
/// rounds of `count` distinct deliveries for each of no store, the memory store and the Redis
/// store, interleaved; prints each one's median round in µs per delivery. Every response must
/// be 204 (the handler ran), or it fails.
fn roundtrip(url: &str, count: usize, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let modes = ["layer", "layer-memory", "layer-redis"];
    let _entered = runtime.enter();
    let routers = modes
        .iter()
        .map(|mode| Ok(Router::new().route(PATH, post(verified).route_layer(layer(mode, url)?))))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    // A warm-up round, then `rounds` measured ones; each round has fresh deliveries, and each
    // store sees each delivery once.
    let deliveries: Vec<_> = pool(2048, 0, count * (rounds + 1)).collect();
    let mut times = vec![Vec::new(); modes.len()];
    for (round, chunk) in deliveries.chunks(count).enumerate() {
        for (index, router) in routers.iter().enumerate() {
            let start = Instant::now();
            for (body, signature) in chunk {
                let request = Request::post(PATH)
                    .header("content-type", "application/json")
                    .header("x-ringyo-signature", signature)
                    .body(Body::from(body.clone()))?;
                let response = runtime.block_on(router.clone().oneshot(request))?;
                if response.status() != StatusCode::NO_CONTENT {
                    return Err(format!("{}: answered {}", modes[index], response.status()).into());
                }
            }
            if round > 0 {
                times[index].push(start.elapsed() / u32::try_from(count)?);
            }
        }
    }
    let median = |mut list: Vec<Duration>| {
        list.sort();
        list[list.len() / 2]
    };
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    for (mode, time) in modes.iter().zip(&medians) {
        println!("{mode:13} {:8.2} µs per delivery", time.as_secs_f64() * 1e6);
    }
    println!(
        "redis - memory: {:.2} µs per delivery (claim + complete: two round trips)",
        (medians[2].as_secs_f64() - medians[1].as_secs_f64()) * 1e6
    );
    Ok(())
}

/// What a careful user writes by hand: the body as bytes, HMAC with the hmac crate, a
/// constant-time comparison (`verify_slice`), then the JSON.
async fn hand_written(headers: HeaderMap, body: Bytes) -> Result<StatusCode, Infallible> {
    let Some(signature) = headers
        .get("x-ringyo-signature")
        .and_then(|value| hex::decode(value.as_bytes()).ok())
    else {
        return Ok(StatusCode::UNAUTHORIZED);
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(&body);
    if mac.verify_slice(&signature).is_err() {
        return Ok(StatusCode::UNAUTHORIZED);
    }
    Ok(match serde_json::from_slice::<Value>(&body) {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::BAD_REQUEST,
    })
}
