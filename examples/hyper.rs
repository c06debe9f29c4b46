//! The layer in a plain hyper 1.x server, no axum.
//!
//! ```text
//! RINGYO_WEBHOOK_SECRET=whsec_... cargo run --example hyper
//! ```
//!
//! The layer wraps a `service_fn`; the handler deserializes the verified payload the layer left
//! in the request's extensions with `RingyoEvent::from_extensions`. Connections are served by
//! hyper's HTTP/1.1 connection builder within documented limits (the receiver's accept loop,
//! `receiver/src/server.rs`): a connection that has not sent a request's headers within 10 s
//! (silent, trickling, or idle between requests) is closed, a request has 10 s, body included,
//! at most 1 024 connections are served at once, and on Ctrl-C or SIGTERM requests in flight
//! get 20 s to finish.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use ringyo_receiver::{server, signal};
use ringyo_webhook::{middleware::RequestBody, Event, RingyoEvent, RingyoWebhookLayer};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

pub(crate) use server::ServerLimits;

/// How long one request, body included, may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    // Not `std::env::var(..)?`: its error would print a secret that is not UTF-8.
    let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(
        listener,
        layer,
        ServerLimits::default(),
        signal::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// Serves the layer around [`handle`] on `listener` within `limits` (a header-read time-out
/// that also closes idle connections, a cap on connections, a deadline on shutdown; see
/// [`ServerLimits`]) until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    layer: RingyoWebhookLayer,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    // A body that trickles in is cut off here: the header-read time-out ends at the headers.
    let timeout = TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT);
    let service = ServiceBuilder::new()
        .layer(timeout)
        .layer(layer)
        .service_fn(handle);
    server::serve(listener, service, limits, shutdown).await
}

/// Only verified requests get here.
pub(crate) async fn handle(req: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(
        match RingyoEvent::<Event>::from_extensions(req.extensions()) {
            Ok(event) => Response::new(Full::new(Bytes::from(event.kind.to_string()))),
            // The same JSON errors the axum extractor answers with.
            Err(rejection) => rejection.to_response().map(Full::new),
        },
    )
}
