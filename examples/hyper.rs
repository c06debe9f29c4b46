//! The layer in a plain hyper 1.x server, no axum.
//!
//! ```text
//! RINGYO_WEBHOOK_SECRET=whsec_... cargo run --example hyper
//! ```
//!
//! The layer wraps a `service_fn`; the handler deserializes the verified payload the layer left
//! in the request's extensions with `RingyoEvent::from_extensions`. Connections are served by
//! the crate's `serve` (feature `serve`), hyper's HTTP/1.1 connection builder within
//! documented limits: a connection that has not sent a request's headers within 10 s (silent,
//! trickling, or idle between requests) is closed, a request has 10 s, body included, at most
//! 1 024 connections are served at once, and on Ctrl-C or SIGTERM requests in flight get 20 s
//! to finish. `tests/serve.rs` tests those limits.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use ringyo_receiver::signal;
use ringyo_webhook::{
    middleware::RequestBody, serve::ServerLimits, Event, RingyoEvent, RingyoWebhookLayer,
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

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
async fn serve(
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
    ringyo_webhook::serve::serve(listener, service, limits, shutdown).await
}

/// Only verified requests get here.
async fn handle(req: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(
        match RingyoEvent::<Event>::from_extensions(req.extensions()) {
            Ok(event) => Response::new(Full::new(Bytes::from(event.kind.to_string()))),
            // The same JSON errors the axum extractor answers with.
            Err(rejection) => rejection.to_response().map(Full::new),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use ringyo_test_support as support;
    use serde_json::json;
    use support::{deliver, envelope, sign};

    use super::*;

    #[tokio::test]
    async fn hyper_service_gets_only_verified_events() {
        let (listener, addr) = support::local_listener().await;
        tokio::spawn(async move {
            serve(
                listener,
                support::layer(),
                ServerLimits::default(),
                pending(),
            )
            .await
            .unwrap()
        });

        let body = envelope(
            "phone_number.assigned",
            json!({"phone_number": "+15551234567"}),
        );
        let response = support::post_signed(addr, "/anything", body.clone(), &sign(&body)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "phone_number.assigned");

        // A verified body that is no event gets the extractor's JSON error, from plain hyper too.
        let not_json = b"not json".to_vec();
        let layer = support::layer().skip_timestamp_check();
        let (listener2, addr2) = support::local_listener().await;
        tokio::spawn(async move {
            serve(listener2, layer, ServerLimits::default(), pending())
                .await
                .unwrap()
        });
        let (status, json, headers) =
            deliver(addr2, "/", not_json.clone(), Some(&sign(&not_json))).await;
        assert_eq!(
            (status, json["error"].as_str()),
            (400, Some("invalid_json"))
        );
        assert_eq!(headers["content-type"], "application/json");

        let (status, json, _) = deliver(addr, "/", body, Some(&"00".repeat(32))).await;
        assert_eq!(status, 401);
        assert_eq!(json["error"], "invalid_signature");
        let (status, json, headers) = deliver(addr, "/", Vec::new(), None).await;
        assert_eq!(status, 401);
        assert_eq!(json["error"], "missing_signature");
        assert_eq!(headers["content-type"], "application/json");
    }
}
