//! The servers `benches/load.sh` compares; they differ only in how they verify.
//!
//! ```text
//! cargo build --release -p ringyo-webhook-benches --example load_server
//! target/release/examples/load_server serve <layer|manual|none|parse> [ADDR]
//! target/release/examples/load_server payload <BYTES> <BODY_FILE>
//! ```
//!
//! `payload` writes a signed `call.transcript.ready` body of about BYTES to BODY_FILE and prints
//! its signature. Each server runs on one thread, so the load generator can have the other core.

use std::convert::Infallible;

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    routing::post,
    Json, Router,
};
use hmac::{Hmac, Mac};
use ringyo_webhook::{testing::TestDelivery, RingyoEvent, RingyoWebhookLayer};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "whsec_load_test_secret";
const PATH: &str = "/webhooks/ringyo";

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
        ["serve", mode] => serve(mode, "127.0.0.1:3000"),
        ["serve", mode, addr] => serve(mode, addr),
        _ => Err(
            "usage: load_server serve <layer|manual|none|parse> [ADDR] | payload <BYTES> <FILE>"
                .into(),
        ),
    }
}

fn serve(mode: &str, addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let app = match mode {
        "layer" => Router::new().route(
            PATH,
            post(|_: RingyoEvent<Value>| async { StatusCode::NO_CONTENT })
                .route_layer(RingyoWebhookLayer::new(SECRET)?),
        ),
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
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, app).await
    })?;
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
