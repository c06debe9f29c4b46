//! The tower middleware: [`RingyoWebhookLayer`] lets only verified, fresh deliveries through
//! to the service it wraps.
//!
//! Like tower-http's own middleware, it is a trio: the layer holds the configuration (shared
//! behind an `Arc`, so cloning is cheap), the [`RingyoWebhook`] service makes the checks that
//! need no body before reading any, and the [`ResponseFuture`] buffers the body and carries the
//! request through the remaining checks, a state machine whose decisions are plain functions.
//! The inner service receives a [`RequestBody`] of the verified bytes; the response body is a
//! [`ResponseBody`], either the inner service's body or a rejection's JSON.
//!
//! Add it with `route_layer` on the method router in axum, so a wrong path keeps axum's 404 and
//! a wrong method its 405:
//!
//! ```
//! use axum::{routing::post, Router};
//! use ringyo_webhook::{RingyoEvent, RingyoWebhookLayer};
//!
//! async fn handle(event: RingyoEvent) {
//!     println!("{} at {}", event.kind, event.timestamp);
//! }
//!
//! # std::env::set_var("RINGYO_WEBHOOK_SECRET", "whsec_doctest_only");
//! // The endpoint's secret, from the environment: never from code.
//! let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
//! let app: Router = Router::new().route("/webhooks/ringyo", post(handle).route_layer(layer));
//! # Ok::<(), ringyo_webhook::SecretError>(())
//! ```
//!
//! In a plain hyper or tower stack it wraps any service of `Request<RequestBody>`:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use ringyo_webhook::{middleware::RequestBody, Event, RingyoEvent, RingyoWebhookLayer};
//! use tower::ServiceBuilder;
//!
//! async fn handle(req: Request<RequestBody>) -> Result<Response<String>, Infallible> {
//!     Ok(match RingyoEvent::<Event>::from_extensions(req.extensions()) {
//!         Ok(event) => Response::new(event.kind.to_string()),
//!         // The same JSON answer the layer gives.
//!         Err(rejection) => rejection.to_response().map(|json| String::from_utf8_lossy(&json).into()),
//!     })
//! }
//!
//! # std::env::set_var("RINGYO_WEBHOOK_SECRET", "whsec_doctest_only");
//! let service = ServiceBuilder::new()
//!     .layer(RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?)
//!     .service_fn(handle);
//! # Ok::<(), ringyo_webhook::SecretError>(())
//! ```

mod admit;
mod body;
mod buffer;
mod config;
mod future;
mod layer;
mod service;
mod trace;

pub use admit::DUPLICATE_HEADER;
pub use body::{RequestBody, ResponseBody};
pub use config::StoreFailure;
pub use future::ResponseFuture;
pub use layer::RingyoWebhookLayer;
pub use service::RingyoWebhook;
