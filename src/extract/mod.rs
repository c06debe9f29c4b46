//! What handlers receive: the verified bytes ([`VerifiedPayload`]) and the typed event
//! ([`RingyoEvent`]), as axum extractors (feature `axum`) or from a request's extensions.
//!
//! Both refuse to work on a route without [`RingyoWebhookLayer`](crate::RingyoWebhookLayer):
//! only the layer puts a `VerifiedPayload` in a request, so unverified bytes never reach a
//! parser. Every refusal is a [`Rejection`](crate::Rejection), the same type the layer answers
//! with. [`RingyoEvent::verify`] does the layer's and the extractor's work in one call, for code
//! outside tower.
//!
//! ```
//! use axum::{routing::post, Router};
//! use ringyo_webhook::{DeliveryId, RingyoEvent, RingyoWebhookLayer, VerifiedPayload};
//!
//! async fn handle(event: RingyoEvent, id: DeliveryId, payload: VerifiedPayload) {
//!     println!("{} ({id}, {} bytes)", event.kind, payload.len());
//! }
//!
//! # std::env::set_var("RINGYO_WEBHOOK_SECRET", "whsec_doctest_only");
//! let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
//! let app: Router = Router::new().route("/webhooks/ringyo", post(handle).route_layer(layer));
//! # Ok::<(), ringyo_webhook::SecretError>(())
//! ```

#[cfg(feature = "axum")]
mod axum;
mod event;
mod payload;

#[cfg(feature = "inbox")]
pub(crate) use event::payload;
pub use event::RingyoEvent;
pub use payload::VerifiedPayload;
