//! The durable inbox in an axum app: a delivery is answered 202 only once it is committed to a
//! SQLite file, and a worker runs the handler afterwards, retried with back-off, dead-lettered
//! after the last attempt, never lost to a crash.
//!
//! ```text
//! RINGYO_WEBHOOK_SECRET=whsec_... cargo run --example inbox
//! ```
//!
//! The receiver (`cargo run -p ringyo-receiver`) is this, with configuration, health, metrics
//! and an admin command around it.

use axum::{routing::post_service, Router};
use ringyo_receiver::signal;
use ringyo_webhook::{
    inbox::{Inbox, Job, Worker},
    serve::{serve, ServerLimits},
    Event, RingyoWebhookLayer,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
    let inbox = Inbox::open("sqlite://ringyo-inbox-example.db")?;
    let app = Router::new().route(
        "/webhooks/ringyo",
        post_service(inbox.clone()).route_layer(layer),
    );
    let worker = tokio::spawn(Worker::new(&inbox, handle).run(signal::shutdown_signal()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let limits = ServerLimits::default();
    serve(listener, app, limits, signal::shutdown_signal()).await?;
    worker.await?;
    Ok(())
}

/// Runs at least once per delivery: a crash mid-handler runs it again, so effects are made
/// idempotent on the delivery id.
async fn handle(job: Job<Event>) -> Result<(), String> {
    println!(
        "{} {} (attempt {})",
        job.delivery_id(),
        job.event.kind,
        job.attempt
    );
    Ok(())
}
