//! What every service made by one layer shares, behind an `Arc`.

use std::{fmt, sync::Arc, time::Duration};

use crate::{
    outage::Outage,
    replay::DeliveryStore,
    secrets::{Resolved, SecretSource},
    verify::{Keys, Verifier},
};

/// The default body limit: 1 MiB.
pub(super) const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default discard time: 5 seconds, Ringyo's own attempt time-out, after which its sender
/// has stopped listening anyway.
pub(super) const DEFAULT_DISCARD_TIME: Duration = Duration::from_secs(5);

/// The default claim lease: 15 seconds, three times Ringyo's 5 s attempt time-out.
pub(super) const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(15);

/// What the layer does with a delivery when its delivery store fails to claim it. See
/// [`RingyoWebhookLayer::on_store_failure`](super::RingyoWebhookLayer::on_store_failure).
///
/// ```
/// use ringyo_webhook::{middleware::StoreFailure, MemoryDeliveryStore, RingyoWebhookLayer};
///
/// # std::env::set_var("RINGYO_WEBHOOK_SECRET", "whsec_doctest_only");
/// let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?
///     .delivery_store(MemoryDeliveryStore::new())
///     .on_store_failure(StoreFailure::RunHandler);
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreFailure {
    /// Answer 503 `delivery_store_unavailable` with `Retry-After`, so Ringyo retries later
    /// (the default): nothing runs twice, at the price of a delay while the store is down.
    #[default]
    Reject,
    /// Run the handler without deduplication: nothing waits, at the price of a possible double
    /// run of a delivery that was already handled, or is being handled elsewhere.
    RunHandler,
}

/// Which secrets verify one request.
pub(crate) enum RequestSecrets {
    /// The layer's own fixed set, the verifier's.
    Fixed,
    /// What the layer's [`SecretSource`] found: an endpoint's set, a tenant's, or none.
    Found(Resolved),
}

impl RequestSecrets {
    /// The keys to check the body against.
    pub(crate) fn keys<'a>(&'a self, config: &'a Config) -> Keys<'a> {
        match self {
            Self::Fixed => Keys::Endpoint(config.verifier.secrets()),
            Self::Found(resolved) => resolved.keys(),
        }
    }
}

/// A layer's settings.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) verifier: Verifier,
    /// Asked per request, when there is one; else the verifier's secrets serve every request.
    pub(crate) source: Option<Arc<dyn SecretSource>>,
    pub(crate) body_limit: usize,
    /// How long the rest of a body over the limit is read and thrown away.
    pub(crate) discard_time: Duration,
    pub(crate) store: Option<Arc<dyn DeliveryStore>>,
    pub(crate) claim_lease: Duration,
    pub(crate) on_store_failure: StoreFailure,
    /// Shared by every service the layer makes.
    pub(crate) store_health: Arc<Outage>,
    /// Whether the secret source's lookups are failing, likewise shared.
    pub(crate) lookup_health: Arc<Outage>,
}

impl Config {
    pub(super) fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            source: None,
            body_limit: DEFAULT_BODY_LIMIT,
            discard_time: DEFAULT_DISCARD_TIME,
            store: None,
            claim_lease: DEFAULT_CLAIM_LEASE,
            on_store_failure: StoreFailure::default(),
            store_health: Arc::default(),
            lookup_health: Arc::default(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("verifier", &self.verifier)
            .field("secret_source", &self.source.is_some())
            .field("body_limit", &self.body_limit)
            .field("discard_time", &self.discard_time)
            .field("delivery_store", &self.store.is_some())
            .field("claim_lease", &self.claim_lease)
            .field("on_store_failure", &self.on_store_failure)
            .finish_non_exhaustive()
    }
}
