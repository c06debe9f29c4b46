//! Helpers for testing your own handlers without Ringyo (feature `test-util`).
//!
//! - [`TestDelivery`] builds a signed `http::Request` as Ringyo would send it, or one with a
//!   deliberate [`Fault`], ready for `tower::ServiceExt::oneshot` on your axum `Router`;
//! - [`sample_data`] gives a realistic `data` payload for every event the crate knows;
//! - [`sign`] gives the exact `x-ringyo-signature` value for any body;
//! - [`ManualClock`] lets a test move the layer's clock;
//! - [`TestJob`] (with the `inbox` feature) builds the [`Job`](crate::inbox::Job) a worker
//!   would hand your inbox handler for a sample event, so a unit test calls the handler
//!   itself, with no database and no worker;
//! - [`Chaos`] plays a set of events against your handler (a route, or an inbox handler) with
//!   duplicates, retries out of order, crashes and lost leases, and checks your state ends as
//!   after one clean delivery of each.
//!
//! Every [`TestDelivery`] is a delivery of its own (its default timestamp is unique within the
//! process), so two sends of the same sample are two deliveries, not a duplicate. To send a
//! replay, send the same `TestDelivery` (or a clone of it) again: its bytes do not change.
//!
//! A handler test, start to finish:
//!
//! ```
//! use axum::{http::StatusCode, routing::post, Router};
//! use ringyo_webhook::{testing::{Fault, TestDelivery}, Event, RingyoEvent, RingyoWebhookLayer};
//! use tower::ServiceExt;
//!
//! async fn handle(event: RingyoEvent) -> StatusCode {
//!     match event.data {
//!         Event::CallCompleted(call) if call.duration.is_some() => StatusCode::NO_CONTENT,
//!         _ => StatusCode::UNPROCESSABLE_ENTITY,
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = "whsec_test_secret";
//! let app = Router::new()
//!     .route("/webhooks/ringyo", post(handle).route_layer(RingyoWebhookLayer::new(secret)?));
//!
//! let delivery = TestDelivery::new("call.completed").secret(secret);
//! let response = app.clone().oneshot(delivery.into_request()).await?;
//! assert_eq!(response.status(), StatusCode::NO_CONTENT);
//!
//! let forged = TestDelivery::new("call.completed").secret(secret).fault(Fault::WrongSecret);
//! let response = app.oneshot(forged.into_request()).await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! # Ok(())
//! # }
//! ```

mod chaos;
mod clock;
mod delivery;
#[cfg(feature = "inbox")]
mod job;
mod samples;

pub use chaos::{Chaos, ChaosFailure, ChaosFault, ChaosRun};
pub use clock::ManualClock;
pub use delivery::{Fault, TestDelivery};
#[cfg(feature = "inbox")]
#[cfg_attr(docsrs, doc(cfg(feature = "inbox")))]
pub use job::TestJob;
pub use samples::sample_data;

use crate::verify::{SecretError, Verifier};

/// The secret [`TestDelivery`] signs with unless told otherwise, and the examples' development
/// secret. Public, so for tests and local development only.
pub const DEVELOPMENT_SECRET: &str = "whsec_ringyo_local_development_only";

/// The path [`TestDelivery`] posts to unless told otherwise, as the examples serve it.
pub const DEFAULT_PATH: &str = "/webhooks/ringyo";

/// The `x-ringyo-signature` value Ringyo would send for `body` under `secret`.
///
/// ```
/// use ringyo_webhook::{Signature, Verifier};
///
/// let body = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:00Z","data":{}}"#;
/// let header = ringyo_webhook::testing::sign("whsec_test", body)?;
/// assert_eq!(header.len(), 64);
/// assert!(Verifier::new("whsec_test")?.verify(body, &Signature::parse(&header)?).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`SecretError`] if the secret would be refused by the layer.
pub fn sign(secret: &str, body: &[u8]) -> Result<String, SecretError> {
    Ok(Verifier::new(secret)?.sign(body).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_matches_the_seed_node_algorithm() {
        // crypto.createHmac('sha256', secret).update(body).digest('hex'), run under Node.
        let body = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00Z","webhook_id":"wh_abc123","data":{"id":"call_xyz789"}}"#;
        assert_eq!(
            sign("whsec_a1b2c3d4e5f6g7h8i9j0", body).unwrap(),
            "72d34d0e8843ebffab0e86ee065dbe484b179988222ca4f5a402824658241a46"
        );
        let pretty = "{\n  \"event\": \"call.completed\",\n  \"timestamp\": \"2024-01-15T10:30:00Z\",\n  \"webhook_id\": \"wh_abc123\",\n  \"data\": {\n    \"id\": \"call_xyz789\",\n    \"transcript\": [\n      {\"role\": \"user\", \"content\": \"Caf\\u00e9 at 3 \\u2014 \\ud83d\\udcde\"}\n    ]\n  }\n}\n";
        assert_eq!(
            sign("whsec_a1b2c3d4e5f6g7h8i9j0", pretty.as_bytes()).unwrap(),
            "0dc658bf6bf3a869d8cc533cee01679b7d2342f31e82cdcde797b32161d75f11"
        );
    }
}
