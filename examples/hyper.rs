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

use server::ServerLimits;

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
    server::serve(listener, service, limits, shutdown).await
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
    use std::{future::pending, time::Duration};

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

    /// A connection that sends nothing, or trickles its headers, is closed once the
    /// header-read time-out passes, and others are served meanwhile.
    #[tokio::test]
    async fn hyper_example_closes_connections_that_stall_before_their_headers() {
        let (listener, addr) = support::local_listener().await;
        let limits = ServerLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ServerLimits::default()
        };
        tokio::spawn(async move {
            serve(listener, support::layer(), limits, pending())
                .await
                .unwrap()
        });
        support::stalled_connections_are_closed_while_a_delivery_is_served(
            addr,
            "/",
            Duration::from_secs(3),
        )
        .await;
    }

    /// A client stalled mid-body holds no shutdown past its deadline.
    #[tokio::test]
    async fn hyper_example_stops_by_its_shutdown_deadline_despite_a_stalled_client() {
        let deadline = Duration::from_millis(500);
        let (listener, addr) = support::local_listener().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let limits = ServerLimits {
            shutdown_deadline: deadline,
            ..ServerLimits::default()
        };
        let served = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            serve(listener, support::layer(), limits, shutdown)
                .await
                .map_err(|err| err.to_string())
        });
        support::stops_by_its_deadline_despite_a_stalled_client(addr, stop, served, deadline).await;
    }
}
