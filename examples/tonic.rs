//! A tonic gRPC server that also hosts the webhook route.
//!
//! ```text
//! RINGYO_WEBHOOK_SECRET=whsec_... cargo run --example tonic
//! ```
//!
//! tonic's routes are an axum router, so the webhook route joins them with the layer on its
//! method router, exactly as in plain axum; gRPC services are untouched by it. HTTP/1.1 is
//! enabled because webhook senders use it, while gRPC keeps using HTTP/2.

use axum::{http::StatusCode, routing::post};
use ringyo_webhook::{RingyoEvent, RingyoWebhookLayer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{service::Routes, transport::Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Not `std::env::var(..)?`: its error would print a secret that is not UTF-8.
    let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "gRPC and POST /webhooks/ringyo on {}",
        listener.local_addr()?
    );
    serve(listener, layer).await?;
    Ok(())
}

/// Serves the gRPC health service and the webhook route on one listener.
pub(crate) async fn serve(
    listener: TcpListener,
    layer: RingyoWebhookLayer,
) -> Result<(), tonic::transport::Error> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let routes = Routes::new(health)
        .into_axum_router()
        .route("/webhooks/ringyo", post(webhook).route_layer(layer));
    Server::builder()
        .accept_http1(true)
        .add_routes(Routes::from(routes))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
}

async fn webhook(event: RingyoEvent) -> (StatusCode, String) {
    (StatusCode::OK, event.kind.to_string())
}
