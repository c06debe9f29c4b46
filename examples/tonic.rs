//! A tonic gRPC server that also hosts the webhook route.
//!
//! ```text
//! RINGYO_WEBHOOK_SECRET=whsec_... cargo run --example tonic
//! ```
//!
//! tonic's routes are an axum router, so the webhook route joins them with the layer on its
//! method router, exactly as in plain axum; gRPC services are untouched by it. HTTP/1.1 is
//! enabled because webhook senders use it, while gRPC keeps using HTTP/2.

use std::time::Duration;

use axum::{http::StatusCode, routing::post};
use ringyo_webhook::{RingyoEvent, RingyoWebhookLayer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{service::Routes, transport::Server};

/// Every connection is closed this long after it opened (in-flight requests get
/// [`CONNECTION_GRACE`] more): a client that sends nothing, or trickles its headers, cannot
/// hold a connection for longer. Webhook deliveries are short; gRPC clients reconnect.
pub(crate) const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30);
/// How long a request in flight may finish once its connection reached its age.
pub(crate) const CONNECTION_GRACE: Duration = Duration::from_secs(10);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Not `std::env::var(..)?`: its error would print a secret that is not UTF-8.
    let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "gRPC and POST /webhooks/ringyo on {}",
        listener.local_addr()?
    );
    serve(listener, layer, MAX_CONNECTION_AGE, CONNECTION_GRACE).await?;
    Ok(())
}

/// Serves the gRPC health service and the webhook route on one listener, closing each
/// connection `max_connection_age` after it opened, and at most `grace` later if a request
/// is still in flight (or its headers still arriving).
pub(crate) async fn serve(
    listener: TcpListener,
    layer: RingyoWebhookLayer,
    max_connection_age: Duration,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let routes = Routes::new(health)
        .into_axum_router()
        .route("/webhooks/ringyo", post(webhook).route_layer(layer));
    Server::builder()
        .accept_http1(true)
        .timeout(REQUEST_TIMEOUT)
        .max_connection_age(max_connection_age)
        .max_connection_age_grace(grace)
        .add_routes(Routes::from(routes))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
}

async fn webhook(event: RingyoEvent) -> (StatusCode, String) {
    (StatusCode::OK, event.kind.to_string())
}
