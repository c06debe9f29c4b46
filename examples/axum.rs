//! The layer and the extractor in an axum app: only verified, fresh deliveries reach the
//! handler, as typed events.
//!
//! ```text
//! RINGYO_WEBHOOK_SECRET=whsec_... cargo run --example axum
//! ```
//!
//! The handler answers 200 at once: work that takes longer belongs in a background queue, or
//! in the durable inbox (`cargo run --example inbox`), since Ringyo gives a receiver 5 s and
//! never retries after a 2xx. Served by the crate's `serve` (feature `serve`: a header-read
//! time-out, a connection cap and a shutdown deadline, which `axum::serve` does not have).

use axum::{routing::post, Router};
use ringyo_receiver::signal;
use ringyo_webhook::{
    model::Call,
    serve::{serve, ServerLimits},
    Event, RingyoEvent, RingyoWebhookLayer,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    // Not `std::env::var(..)?`: its error would print a secret that is not UTF-8.
    let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
    let app = Router::new()
        .route("/webhooks/ringyo", post(any_event))
        .route("/webhooks/ringyo/calls", post(completed_call))
        .route_layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let limits = ServerLimits::default();
    serve(listener, app, limits, signal::shutdown_signal()).await?;
    Ok(())
}

/// Every event, known or not: unknown names and fields never fail.
async fn any_event(event: RingyoEvent<Event>) {
    println!(
        "{} {} at {}",
        event.delivery_id, event.kind, event.timestamp
    );
}

/// `data` as a call (the crate's lenient model, or any serde type of yours): a `data` that does
/// not fit is refused with 422 and says where.
async fn completed_call(event: RingyoEvent<Call>) {
    let call = &event.data;
    println!(
        "{}: call {} after {:?} s",
        event.kind,
        call.id.as_deref().unwrap_or("-"),
        call.duration
    );
}
