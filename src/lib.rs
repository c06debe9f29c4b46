//! The receiving side of [Ringyo AI](https://ringyo.ai) webhooks: only genuine, fresh
//! deliveries reach your handlers, as typed Rust values.
//!
//! Ringyo signs each delivery with HMAC-SHA256 over the raw body, keyed with the endpoint's
//! whole `whsec_...` secret, and sends the hex digest in `x-ringyo-signature`. This crate:
//!
//! - [`RingyoWebhookLayer`], a tower layer for axum, hyper and tonic: buffers the body up to a
//!   limit, verifies the signature over those exact bytes in constant time, checks the signed
//!   `timestamp` is fresh, and answers anything else with a JSON error before a handler runs;
//! - [`RingyoEvent<T>`], an axum extractor that deserializes the verified payload into the
//!   crate's [`Event`] enum, `serde_json::Value` or your own type;
//! - a [`DeliveryStore`] (opt-in) so each delivery runs its handler once despite Ringyo's
//!   retries;
//! - [`RingyoEvent::verify`], the same checks in one call for code outside tower (a serverless
//!   function, a queue consumer), with a [`Verifier`].
//!
//! Every refusal is a [`Rejection`]: one [`RejectionKind`] with one status and one stable code.
//!
//! # Quick start
//!
//! ```
//! use axum::{http::StatusCode, routing::post, Router};
//! use ringyo_webhook::{
//!     serve::{serve, ServerLimits},
//!     Event, RingyoEvent, RingyoWebhookLayer,
//! };
//!
//! async fn handle(event: RingyoEvent<Event>) -> StatusCode {
//!     if let Event::CallCompleted(call) = &event.data {
//!         println!("call {:?} completed at {}", call.id, event.timestamp);
//!     }
//!     StatusCode::NO_CONTENT
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Unlike `std::env::var`'s, its error never repeats the value.
//! let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
//! // On the method router: a wrong path keeps axum's 404 and a wrong method its 405.
//! let app = Router::new().route("/webhooks/ringyo", post(handle).route_layer(layer));
//!
//! // Feature `serve`: `axum::serve` with a header-read time-out, a connection cap and a
//! // shutdown deadline.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let shutdown = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! serve(listener, app, ServerLimits::default(), shutdown).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are
//!
//! - [`verify`]: secrets and sets of them ([`Secrets`](verify::Secrets)), the signature
//!   header, the freshness window ([`Verifier`]).
//! - [`secrets`]: sources of secrets at run time: rotation, and one endpoint for many tenants.
//! - [`event`]: event names, typed events and lenient payload [`model`]s.
//! - [`middleware`]: the layer, its service, response future and bodies.
//! - [`replay`]: delivery stores, for exactly-once handling.
//! - `inbox` (features `sqlite`, `postgres`): a durable inbox, so a 2xx never outlives a crash.
//! - [`extract`]: [`RingyoEvent`] and [`VerifiedPayload`], and their axum extractors.
//! - [`rejection`]: the one table of failures.
//! - `metrics` (feature `metrics`): counters and histograms through the `metrics` facade.
//! - `serve` (feature `serve`): a hardened HTTP/1.1 server for the webhook route.
//! - `testing` (feature `test-util`): signed test deliveries and sample payloads.
//!
//! # Features
//!
//! - `axum` (default): the extractors and `IntoResponse` for [`Rejection`].
//! - `test-util`: `testing`, signing helpers for your own tests.
//! - `redis`: `RedisDeliveryStore`, one delivery store for every replica.
//! - `sqlite`, `postgres`: the `inbox` in an embedded SQLite file or in Postgres;
//!   `postgres-tls` adds TLS to Postgres.
//! - `metrics`: counters, gauges and histograms through the `metrics` facade.
//! - `serve`: `serve::serve`, a server with a header-read time-out, a connection cap and a
//!   shutdown deadline, which `axum::serve` lacks.
//!
//! # Traps this crate handles
//!
//! - Ringyo's Node example hashes `JSON.stringify(req.body)`, re-serialized JSON, which differs
//!   from the signed bytes; this crate hashes the raw bytes as received.
//! - The same example's `timingSafeEqual` throws on a length mismatch; here any malformed value
//!   is a plain 401, and comparisons run on exactly 32 decoded bytes.
//! - The two Ringyo pages list different event names; [`EventKind`] knows them all and keeps
//!   new ones as `Unknown`.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod event;
pub mod extract;
#[cfg(feature = "inbox")]
#[cfg_attr(docsrs, doc(cfg(feature = "inbox")))]
pub mod inbox;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
// Without the feature, only the recording hooks, each empty.
#[cfg(not(feature = "metrics"))]
mod metrics;
pub mod middleware;
mod outage;
pub mod rejection;
pub mod replay;
pub mod secrets;
#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod serve;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
pub mod verify;

pub use event::{model, Event, EventKind, FromEventData, Subject, SubjectKind};
pub use extract::{RingyoEvent, VerifiedPayload};
pub use middleware::RingyoWebhookLayer;
pub use rejection::{Rejection, RejectionKind};
pub use replay::{Claim, ClaimToken, DeliveryStore, MemoryDeliveryStore, StoreError};
pub use verify::{
    Clock, DeliveryId, SecretError, Signature, SignatureError, SystemClock, Verifier,
    SIGNATURE_HEADER,
};

// The crates whose types appear in this API, so users name the same versions.
pub use bytes;
pub use chrono;
pub use http;
pub use serde_json;

// Compiles README.md's Rust examples, and the guides' under docs/, as doctests, so they cannot
// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/layer.md")]
struct LayerGuideDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/inbox.md")]
struct InboxGuideDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/testing.md")]
struct TestingGuideDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/operations.md")]
struct OperationsGuideDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/security.md")]
struct SecurityGuideDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/secrets.md")]
struct SecretsGuideDoctests;
