//! [`RingyoWebhookLayer`]: configuration only.

use std::sync::Arc;

use tower_layer::Layer;

use crate::{
    service::RingyoWebhook,
    verify::{SecretError, Verifier},
};

/// A tower [`Layer`] that lets only verified Ringyo deliveries through.
///
/// For each request, cheapest check first, so hostile traffic costs little:
///
/// - a missing, malformed or conflicting `x-ringyo-signature` header: 401, body not read;
/// - a `Content-Length` over the [body limit](Self::body_limit): 413, body not read;
/// - the body is buffered with the limit enforced while it streams (chunked bodies too):
///   413 as soon as it is crossed, 400 if the body fails mid-read;
/// - the HMAC-SHA256 of the raw bytes, exactly as received, is compared in constant time with
///   the header under each secret: 401 if none matches;
/// - only then is the request passed on, with a [`VerifiedBody`](crate::VerifiedBody) holding
///   the same bytes and a [`VerifiedPayload`](crate::VerifiedPayload) in its extensions.
///
/// Every rejection is `{"error": "<code>", "message": "<text>"}` as `application/json`; see
/// [`RejectionKind`](crate::RejectionKind) for the codes. The layer adds no 500s of its own.
///
/// Each delivery runs in a `tracing` span `ringyo_webhook` with fields `event`, `outcome`,
/// `reason`, `status` and `secret_index`; it never records secrets, bodies or payload values.
///
/// # With axum
///
/// Add it to the method router with [`MethodRouter::route_layer`], so a wrong path still gets
/// axum's 404 and a wrong method its 405, rather than a 401. (`Router::layer` would answer 401
/// for unknown paths too, and `Router::route_layer` answers 401 for a wrong method, because it
/// wraps the method router's 405 fallback as well.)
///
/// [`MethodRouter::route_layer`]: https://docs.rs/axum/0.8/axum/routing/method_routing/struct.MethodRouter.html#method.route_layer
///
/// ```
/// use axum::{routing::post, Router};
/// use ringyo_webhook::{Event, RingyoEvent, RingyoWebhookLayer};
///
/// async fn handle(event: RingyoEvent<Event>) {
///     println!("{} at {}", event.kind, event.timestamp);
/// }
///
/// let layer = RingyoWebhookLayer::new("whsec_current")?
///     .add_secret("whsec_previous")? // still accepted during rotation
///     .body_limit(512 * 1024);
///
/// let app: Router = Router::new().route("/webhooks/ringyo", post(handle).route_layer(layer));
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RingyoWebhookLayer {
    config: Arc<Config>,
}

/// What every service made by one layer shares.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) verifier: Verifier,
    pub(crate) body_limit: usize,
}

impl RingyoWebhookLayer {
    /// The default [body limit](Self::body_limit): 1 MiB.
    pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

    /// A layer that verifies with `secret`, the endpoint's signing secret (`whsec_...`) used
    /// whole, as Ringyo does.
    ///
    /// # Errors
    ///
    /// [`SecretError`] if the secret is empty or has whitespace at either end; see
    /// [`Verifier::new`].
    pub fn new(secret: impl AsRef<str>) -> Result<Self, SecretError> {
        Verifier::new(secret).map(Self::from_verifier)
    }

    /// A layer around a [`Verifier`] built elsewhere.
    pub fn from_verifier(verifier: Verifier) -> Self {
        Self {
            config: Arc::new(Config {
                verifier,
                body_limit: Self::DEFAULT_BODY_LIMIT,
            }),
        }
    }

    /// Also accepts deliveries signed with `secret`, for rotation. Which secret matched is
    /// recorded in the span and in [`VerifiedPayload::secret_index`](crate::VerifiedPayload::secret_index).
    ///
    /// # Errors
    ///
    /// [`SecretError`] as for [`new`](Self::new).
    pub fn add_secret(mut self, secret: impl AsRef<str>) -> Result<Self, SecretError> {
        let config = Arc::make_mut(&mut self.config);
        config.verifier = config.verifier.clone().add_secret(secret)?;
        Ok(self)
    }

    /// Sets the largest body accepted, in bytes. Default: 1 MiB
    /// ([`DEFAULT_BODY_LIMIT`](Self::DEFAULT_BODY_LIMIT)).
    ///
    /// Larger deliveries get 413 `payload_too_large`, without the body being read past the
    /// limit.
    pub fn body_limit(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.config).body_limit = limit;
        self
    }
}

impl<S> Layer<S> for RingyoWebhookLayer {
    type Service = RingyoWebhook<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RingyoWebhook::new(inner, Arc::clone(&self.config))
    }
}
