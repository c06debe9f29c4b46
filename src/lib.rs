//! The receiving side of [Ringyo AI](https://ringyo.ai) webhooks: only genuine deliveries reach
//! your handlers, as typed Rust values.
//!
//! Ringyo signs each delivery with HMAC-SHA256 over the raw body, keyed with the endpoint's
//! whole `whsec_...` secret, and sends the hex digest in `x-ringyo-signature`. This crate:
//!
//! - [`RingyoWebhookLayer`], a tower layer for axum, hyper and tonic: buffers the body up to a
//!   limit, verifies the signature over those exact bytes in constant time, and answers anything
//!   else with a JSON 401/413/400 before a handler runs;
//! - [`RingyoEvent<T>`], an axum extractor that deserializes the verified payload into the
//!   crate's [`Event`] enum, `serde_json::Value` or your own type;
//! - replay protection: the signed `timestamp` must be fresh (on by default), and an optional
//!   [`DeliveryStore`] makes each delivery run its handler once despite Ringyo's retries;
//! - [`Verifier`] and [`verify`], the same check as plain functions for code outside tower.
//!
//! # Quick start
//!
//! ```
//! use axum::{http::StatusCode, routing::post, Router};
//! use ringyo_webhook::{Event, RingyoEvent, RingyoWebhookLayer};
//!
//! async fn handle(event: RingyoEvent<Event>) -> StatusCode {
//!     if let Event::CallCompleted(call) = &event.data {
//!         println!("call {:?} completed at {}", call.id, event.timestamp);
//!     }
//!     StatusCode::NO_CONTENT
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = std::env::var("RINGYO_WEBHOOK_SECRET")?;
//! let layer = RingyoWebhookLayer::new(secret)?;
//! // On the method router: a wrong path keeps axum's 404 and a wrong method its 405.
//! let app = Router::new().route("/webhooks/ringyo", post(handle).route_layer(layer));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `axum` (default): the extractors and `IntoResponse` for the rejections.
//! - `test-util`: [`testing`], signing helpers for your own tests.
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

#[macro_use]
mod macros;

mod body;
mod buffer;
mod envelope;
mod error;
mod event;
mod extract;
mod future;
mod layer;
pub mod model;
mod payload;
mod rejection;
mod replay;
mod service;
mod store;
#[cfg(feature = "test-util")]
pub mod testing;
mod verify;

pub use body::{ResponseBody, VerifiedBody};
pub use error::{Rejection, RejectionKind};
pub use event::{Event, EventKind, FromEventData};
pub use extract::RingyoEvent;
pub use future::{ResponseFuture, DUPLICATE_HEADER};
pub use layer::RingyoWebhookLayer;
pub use payload::VerifiedPayload;
pub use rejection::{
    InvalidEnvelope, InvalidEventData, InvalidJson, MissingLayer, RingyoEventRejection,
};
pub use replay::{Clock, SystemClock};
pub use service::RingyoWebhook;
pub use store::{Claim, DeliveryStore, MemoryDeliveryStore, StoreError, StoreFuture};
pub use verify::{
    verify, DeliveryId, SecretError, Signature, Verified, Verifier, VerifyError, SIGNATURE_HEADER,
};

// Compiles README.md's Rust examples as doctests, so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
