//! [`RingyoWebhookLayer`]: configuration only.

use std::{sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{
    config::{self, Config, StoreFailure},
    service::RingyoWebhook,
};
use crate::{
    replay::DeliveryStore,
    secrets::SecretSource,
    verify::{Clock, SecretError, Secrets, Verifier},
};

/// A tower [`Layer`] that lets only verified Ringyo deliveries through.
///
/// For each request, cheapest check first, so hostile traffic costs little:
///
/// - a missing, malformed or conflicting `x-ringyo-signature` header: 401, body not read;
/// - a `Content-Length` over the [body limit](Self::body_limit) with `Expect: 100-continue`:
///   413, body not read;
/// - the body is buffered with the limit enforced while it streams (chunked bodies too):
///   past it, nothing is kept and the rest is thrown away (for at most the
///   [discard time](Self::discard_time)) before the 413; 400 if the body fails mid-read;
/// - the HMAC-SHA256 of the raw bytes, exactly as received, is compared in constant time with
///   the header under each secret: 401 if none matches;
/// - the signed `timestamp` must be within the [tolerance](Self::timestamp_tolerance) of
///   now (on by default): 401 `timestamp_out_of_tolerance` outside it, 422
///   `invalid_timestamp` if there is none (422 `invalid_envelope` if the body is not a JSON
///   object, 400 `invalid_json` if it is not JSON);
/// - what is let through must be readable later, by the inbox's worker too: 422
///   `invalid_envelope` without a string `event`, or for a known event with a `data` that is
///   not an object or gives one of its fields twice, `json_too_deep` past 127 levels of nesting,
///   `number_out_of_range` for a number like `1e400` (a lone UTF-16 surrogate escape, as Node
///   writes half an emoji, is read as U+FFFD);
/// - with a [delivery store](Self::delivery_store) (opt-in), a delivery already handled is
///   answered 200 with `x-webhook-duplicate: true` without running the handler, and one being
///   handled right now gets 409 `delivery_in_progress`; if the store fails, 503
///   `delivery_store_unavailable` with `Retry-After`;
/// - only then is the request passed on, with a [`RequestBody`](super::RequestBody) holding
///   the same bytes and a [`VerifiedPayload`](crate::VerifiedPayload) in its extensions.
///
/// # Replays and retries
///
/// A captured delivery verifies forever; only its signed `timestamp` ages. The default window
/// accepts events up to one hour old and five minutes ahead of this clock. Ringyo's last retry
/// arrives about 13 minutes after the first attempt, and whether it renews the `timestamp` is
/// undocumented, so the window covers the whole retry schedule with a wide margin. It errs
/// toward accepting on purpose: a genuine event refused as stale is lost once Ringyo's retries
/// run out, whereas a replay inside the window is caught by a delivery store. Stale
/// rejections are logged at warn level, since each is an attack or a lost event.
///
/// Ringyo retries until it gets a 2xx, so the same delivery can arrive more than once; a
/// [`MemoryDeliveryStore`](crate::MemoryDeliveryStore) (or another [`DeliveryStore`]) makes the
/// handler run once per delivery. The delivery's identity is its content: see
/// [`DeliveryId`](crate::DeliveryId).
///
/// Every rejection is `{"error": "<code>", "message": "<text>"}` as `application/json`; see
/// [`RejectionKind`](crate::RejectionKind) for the codes. The layer adds no 500s of its own.
///
/// Outside tower, [`RingyoEvent::verify`](crate::RingyoEvent::verify) makes the same checks
/// with the same [`Verifier`].
///
/// Each delivery runs in a `tracing` span `ringyo_webhook` with fields `event`, `outcome`
/// (the words of the metrics' `outcome` label, as the `metrics` module's table says:
/// `accepted`, `duplicate`, `handler_error`, `in_flight`, `stale` or `rejected`), `reason`,
/// `status`, `tenant`, `secret_index` and `delivery_id`; it never records secrets, bodies or
/// payload values.
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
/// use ringyo_webhook::{Event, MemoryDeliveryStore, RingyoEvent, RingyoWebhookLayer};
///
/// async fn handle(event: RingyoEvent<Event>) {
///     println!("{} at {}", event.kind, event.timestamp);
/// }
///
/// # std::env::set_var("RINGYO_WEBHOOK_SECRET", "whsec_doctest_current");
/// # let previous = "whsec_doctest_previous";
/// // Secrets come from the environment or a file, never from code; `previous`, the old
/// // secret, is read the same way.
/// let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?
///     .add_secret(previous)? // still accepted during rotation
///     .body_limit(512 * 1024)
///     .delivery_store(MemoryDeliveryStore::new());
///
/// let app: Router = Router::new().route("/webhooks/ringyo", post(handle).route_layer(layer));
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RingyoWebhookLayer {
    config: Arc<Config>,
}

impl RingyoWebhookLayer {
    /// The default [body limit](Self::body_limit): 1 MiB.
    pub const DEFAULT_BODY_LIMIT: usize = config::DEFAULT_BODY_LIMIT;

    /// How long the rest of a body over the limit is read and thrown away by default: 5
    /// seconds. See [`discard_time`](Self::discard_time).
    pub const DEFAULT_DISCARD_TIME: Duration = config::DEFAULT_DISCARD_TIME;

    /// How old an event may be by default: one hour. See
    /// [`timestamp_tolerance`](Self::timestamp_tolerance).
    pub const DEFAULT_MAX_AGE: Duration = Verifier::DEFAULT_MAX_AGE;

    /// How far ahead of this clock an event may be by default: five minutes.
    pub const DEFAULT_MAX_FUTURE: Duration = Verifier::DEFAULT_MAX_FUTURE;

    /// How long a delivery store claim lasts by default: 15 seconds. See
    /// [`claim_lease`](Self::claim_lease).
    pub const DEFAULT_CLAIM_LEASE: Duration = config::DEFAULT_CLAIM_LEASE;

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

    /// A layer that verifies with the secret in the environment variable `variable`; see
    /// [`Verifier::from_env`]. Its errors never hold the variable's value.
    ///
    /// # Errors
    ///
    /// [`SecretError`] if the variable is unset, not UTF-8, or not a usable secret.
    pub fn from_env(variable: &'static str) -> Result<Self, SecretError> {
        Verifier::from_env(variable).map(Self::from_verifier)
    }

    /// A layer around a [`Verifier`] built elsewhere, with its secrets and its freshness
    /// window.
    pub fn from_verifier(verifier: Verifier) -> Self {
        Self {
            config: Arc::new(Config::new(verifier)),
        }
    }

    /// A layer that asks `source` for the secrets of each request, before its body is read:
    /// secrets that change at run time ([`RotatingSecrets`](crate::secrets::RotatingSecrets)),
    /// or one set per tenant ([`Tenants`](crate::secrets::Tenants)). See [`crate::secrets`].
    ///
    /// The freshness window and every other setting work as with [`new`](Self::new);
    /// [`add_secret`](Self::add_secret) is refused with [`SecretError::FromSource`] (the
    /// source owns the secrets).
    ///
    /// ```
    /// use ringyo_webhook::{secrets::{RotatingSecrets, Secrets}, RingyoWebhookLayer};
    ///
    /// # let current = "whsec_doctest_only";
    /// // `current`: the endpoint's secret, from the environment or a file.
    /// let secrets = RotatingSecrets::new(Secrets::new(current)?);
    /// let layer = RingyoWebhookLayer::from_source(secrets.clone()).body_limit(256 * 1024);
    /// # Ok::<(), ringyo_webhook::SecretError>(())
    /// ```
    pub fn from_source(source: impl SecretSource) -> Self {
        // The verifier keeps the freshness window; its secrets are a stand-in that never
        // verifies, so nothing can pass through it by mistake.
        let mut config = Config::new(Verifier::with_secrets(Secrets::decoy()));
        config.source = Some(Arc::new(source));
        Self {
            config: Arc::new(config),
        }
    }

    /// Also accepts deliveries signed with `secret`, for rotation. Which secret matched is
    /// recorded in the span and in [`VerifiedPayload::secret_index`](crate::VerifiedPayload::secret_index).
    ///
    /// # Errors
    ///
    /// [`SecretError`] as for [`new`](Self::new); [`SecretError::FromSource`] on a layer built
    /// with [`from_source`](Self::from_source).
    pub fn add_secret(self, secret: impl AsRef<str>) -> Result<Self, SecretError> {
        if self.config.source.is_some() {
            return Err(SecretError::FromSource);
        }
        let verifier = self.config.verifier.clone().add_secret(secret)?;
        Ok(self.map_verifier(|_| verifier))
    }

    /// The verifier this layer checks with, for [`RingyoEvent::verify`](crate::RingyoEvent::verify)
    /// on a path outside tower. For a layer built with [`from_source`](Self::from_source) it
    /// holds the freshness window only: its secrets never verify.
    pub fn verifier(&self) -> &Verifier {
        &self.config.verifier
    }

    /// Sets the largest body accepted, in bytes. Default: 1 MiB
    /// ([`DEFAULT_BODY_LIMIT`](Self::DEFAULT_BODY_LIMIT)).
    ///
    /// Larger deliveries get 413 `payload_too_large`, and nothing past the limit is kept. The
    /// rest of such a body is read and thrown away, for at most the
    /// [discard time](Self::discard_time), so that a client that sends its whole body before
    /// reading sees the 413 rather than a reset connection. A client that announces a larger
    /// body and waits to be asked for it (`Expect: 100-continue`) gets the 413 at once.
    #[must_use]
    pub fn body_limit(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.config).body_limit = limit;
        self
    }

    /// Sets how long the rest of a body over the [limit](Self::body_limit) is read and thrown
    /// away before the 413 is answered. Default: 5 seconds
    /// ([`DEFAULT_DISCARD_TIME`](Self::DEFAULT_DISCARD_TIME)), Ringyo's own attempt time-out.
    ///
    /// A server that closes a connection with bytes unread makes the kernel reset it, and a
    /// client still sending (Node's `http`, Python's `http.client`, most SDKs send the whole
    /// body before they read) then sees "connection reset" instead of the 413. So the layer
    /// reads on, copying nothing, until the body ends, at line speed, or until this time is
    /// up, as nginx's `lingering_time` does; then hyper closes the connection with the rest
    /// unread. The time is checked as bytes arrive: a client that stops sending altogether is
    /// the server's time-out to end, as for any stalled body. `Duration::ZERO` answers at the
    /// first bytes past the limit.
    #[must_use]
    pub fn discard_time(mut self, time: Duration) -> Self {
        Arc::make_mut(&mut self.config).discard_time = time;
        self
    }

    /// Sets the freshness window: see [`Verifier::timestamp_tolerance`]. Defaults: one hour old
    /// and five minutes ahead.
    #[must_use]
    pub fn timestamp_tolerance(self, max_age: Duration, max_future: Duration) -> Self {
        self.map_verifier(|verifier| verifier.timestamp_tolerance(max_age, max_future))
    }

    /// Turns the timestamp check off: see [`Verifier::skip_timestamp_check`].
    #[must_use]
    pub fn skip_timestamp_check(self) -> Self {
        self.map_verifier(Verifier::skip_timestamp_check)
    }

    /// Sets the clock the timestamp check and the delivery store use: see [`Verifier::clock`].
    #[must_use]
    pub fn clock(self, clock: impl Clock) -> Self {
        self.map_verifier(|verifier| verifier.clock(clock))
    }

    /// Runs the handler once per delivery, with `store` remembering what was handled. Off by
    /// default.
    ///
    /// A delivery already handled (the handler answered 2xx) is answered 200 with the header
    /// `x-webhook-duplicate: true` without running the handler. One that arrives while the same
    /// delivery is still being handled gets 409 `delivery_in_progress`, which Ringyo retries. A
    /// delivery whose handling failed (a non-2xx answer, a panic, a dropped connection) is not
    /// recorded, so its retry runs the handler again. Handled deliveries are remembered only
    /// while their timestamp is inside the tolerance window. Pass an `Arc` to keep a handle.
    #[must_use]
    pub fn delivery_store(mut self, store: impl DeliveryStore) -> Self {
        Arc::make_mut(&mut self.config).store = Some(Arc::new(store));
        self
    }

    /// Sets how long a delivery store claim lasts if the request that took it never finishes
    /// (its process died, or its store could not release it). Default: 15 seconds
    /// ([`DEFAULT_CLAIM_LEASE`](Self::DEFAULT_CLAIM_LEASE)).
    ///
    /// Copies that arrive meanwhile get 409, so a long lease spends Ringyo's retries (1 s, 5 s
    /// and 30 s apart at first) on an abandoned claim; a lease shorter than your slowest
    /// handler lets a retry run while the first run is still going. Ringyo gives up on an
    /// attempt after 5 s, so handlers should be well under that, and 15 s is three times it.
    #[must_use]
    pub fn claim_lease(mut self, lease: Duration) -> Self {
        Arc::make_mut(&mut self.config).claim_lease = lease;
        self
    }

    /// Sets what happens to a delivery when the delivery store fails to claim it (unreachable,
    /// too slow). Default: [`StoreFailure::Reject`], a 503 with `Retry-After` that Ringyo
    /// retries, so nothing runs twice and nothing is lost, only delayed.
    /// [`StoreFailure::RunHandler`] runs the handler without deduplication instead, for
    /// receivers that prefer a possible double run to a delay.
    ///
    /// Either way an outage is logged once when it starts (at error level, or warn when
    /// running unchecked) and once when the store answers again, not once per request.
    #[must_use]
    pub fn on_store_failure(mut self, policy: StoreFailure) -> Self {
        Arc::make_mut(&mut self.config).on_store_failure = policy;
        self
    }
}

impl RingyoWebhookLayer {
    #[must_use]
    fn map_verifier(mut self, change: impl FnOnce(Verifier) -> Verifier) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.verifier = change(config.verifier.clone());
        self
    }
}

impl<S> Layer<S> for RingyoWebhookLayer {
    type Service = RingyoWebhook<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RingyoWebhook::new(inner, Arc::clone(&self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_settings_but_never_secrets() {
        let layer = RingyoWebhookLayer::new("whsec_topsecret")
            .unwrap()
            .add_secret("whsec_oldsecret")
            .unwrap();
        let debug = format!("{layer:?}");
        assert!(
            !debug.contains("topsecret") && !debug.contains("oldsecret"),
            "{debug}"
        );
        assert!(
            debug.contains("secrets: 2") && debug.contains("body_limit"),
            "{debug}"
        );
    }
}
