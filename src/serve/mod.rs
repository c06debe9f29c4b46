//! A hardened HTTP/1.1 server for the webhook route: [`serve`] within [`ServerLimits`].
//!
//! `axum::serve` has no header-read time-out, no cap on connections and no deadline on its
//! graceful shutdown. Each gap lets a client that holds connections open (sending nothing, or a
//! header line now and then) exhaust the server or delay its stop past an orchestrator's
//! patience. [`serve`] takes the same listener and router and closes all three:
//!
//! - a connection that has not sent a request's headers within the header-read time-out is
//!   closed: a silent client, a trickling one, and an idle keep-alive connection alike;
//! - at most `max_connections` are served at once; more wait in the kernel's accept queue;
//! - once the shutdown signal resolves, no connection is accepted, requests in flight finish
//!   for up to the shutdown deadline, and the connections still open are then closed.
//!
//! A body that trickles is not the server's to cut off: give the router a request time-out
//! (tower-http's `TimeoutLayer`), as the example below does.
//!
//! ```
//! use std::time::Duration;
//!
//! use axum::{http::StatusCode, routing::post, Router};
//! use ringyo_webhook::{
//!     serve::{serve, ServerLimits},
//!     Event, RingyoEvent, RingyoWebhookLayer,
//! };
//! use tower_http::timeout::TimeoutLayer;
//!
//! async fn handle(event: RingyoEvent<Event>) -> StatusCode {
//!     println!("{} at {}", event.kind, event.timestamp);
//!     StatusCode::NO_CONTENT
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
//! let app = Router::new()
//!     .route("/webhooks/ringyo", post(handle).route_layer(layer))
//!     // A request, body included, has 10 s: Ringyo gives up after 5.
//!     .layer(TimeoutLayer::with_status_code(
//!         StatusCode::REQUEST_TIMEOUT,
//!         Duration::from_secs(10),
//!     ));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let limits = ServerLimits::default().max_connections(256);
//! let shutdown = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! serve(listener, app, limits, shutdown).await?;
//! # Ok(())
//! # }
//! ```

mod connection;
mod limits;
mod server;

pub use limits::ServerLimits;
pub use server::serve;
