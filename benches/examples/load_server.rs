//! The servers `benches/load.sh` compares; they differ only in how they verify, and in the
//! delivery store behind the layer.
//!
//! ```text
//! cargo build --release -p ringyo-webhook-benches --example load_server
//! target/release/examples/load_server serve <MODE> [ADDR]
//! target/release/examples/load_server payload <BYTES> <BODY_FILE>
//! target/release/examples/load_server pool <BYTES> <FIRST> <COUNT> <POOL_FILE>
//! target/release/examples/load_server roundtrip <REDIS_URL> <COUNT> <ROUNDS>
//! ```
//!
//! Modes: `layer`, `manual`, `none`, `parse` (verification), and `layer-memory`,
//! `layer-redis`: `layer` with a `MemoryDeliveryStore` or a `RedisDeliveryStore` (on the Redis
//! at `$LOAD_REDIS_URL`, default `redis://127.0.0.1:6379`, under a key prefix of its own).
//! Every server also answers `GET /stats` with how many times its handler ran.
//!
//! `payload` writes a signed `call.transcript.ready` body of about BYTES to BODY_FILE and prints
//! its signature. With a store every copy of one body after the first is a duplicate (answered
//! 200 without running the handler), so `pool` writes COUNT distinct deliveries instead, one a
//! line, `<signature> <body>`, numbered from FIRST in their `webhook_id`, all signed with the servers'
//! secret and stamped now. `roundtrip` times deliveries one at a time through the layer
//! (in-process, `oneshot`) with no store, the memory store and the Redis store, to isolate what
//! the Redis round trips add to one delivery. Each server runs on one thread, so the load
//! generator can have the other core.

use std::{
    convert::Infallible,
    io::{BufWriter, Write},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, Request, StatusCode},
    routing::{get, post},
    Json, Router,
};
use hmac::{Hmac, Mac};
use ringyo_webhook::{
    replay::RedisDeliveryStore, testing::TestDelivery, MemoryDeliveryStore, RingyoEvent,
    RingyoWebhookLayer,
};
use serde_json::Value;
use sha2::Sha256;
use tower::ServiceExt;

const SECRET: &str = "whsec_load_test_secret";
const PATH: &str = "/webhooks/ringyo";
/// The memory store's cap: above any pool `load.sh` sends, so it never forgets a delivery in a
/// run (the Redis store never does either), and the comparison is like for like.
const MEMORY_CAPACITY: usize = 2_000_000;

/// How many times a handler ran, for `GET /stats`: with a store, a duplicate does not run it.
static HANDLED: AtomicU64 = AtomicU64::new(0);

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
        ["serve", mode] => serve(mode, "127.0.0.1:3000"),
        ["serve", mode, addr] => serve(mode, addr),
        ["roundtrip", url, count, rounds] => roundtrip(url, count.parse()?, rounds.parse()?),
        _ => Err(
            "usage: load_server serve <MODE> [ADDR] | payload <BYTES> <FILE> \
                  | pool <BYTES> <FIRST> <COUNT> <FILE> | roundtrip <REDIS_URL> <COUNT> <ROUNDS>"
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

/// The verifying layer, with the store `mode` names.
fn layer(mode: &str, redis_url: &str) -> Result<RingyoWebhookLayer, Box<dyn std::error::Error>> {
    let layer = RingyoWebhookLayer::new(SECRET)?;
    Ok(match mode {
        "layer" => layer,
        "layer-memory" => layer.delivery_store(MemoryDeliveryStore::with_capacity(MEMORY_CAPACITY)),
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
    let app = match mode {
        "layer" | "layer-memory" | "layer-redis" => {
            Router::new().route(PATH, post(verified).route_layer(layer(mode, &redis_url)?))
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
        get(|| async { format!("handled {}\n", HANDLED.load(Ordering::Relaxed)) }),
    );
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, app).await
    })?;
    Ok(())
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
