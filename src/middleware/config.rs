//! What every service made by one layer shares, behind an `Arc`.

use std::{fmt, sync::Arc, time::Duration};

use crate::{replay::DeliveryStore, verify::Verifier};

/// The default body limit: 1 MiB.
pub(super) const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default claim lease: 15 seconds, three times Ringyo's 5 s attempt time-out.
pub(super) const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(15);

/// A layer's settings.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) verifier: Verifier,
    pub(crate) body_limit: usize,
    pub(crate) store: Option<Arc<dyn DeliveryStore>>,
    pub(crate) claim_lease: Duration,
}

impl Config {
    pub(super) fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            body_limit: DEFAULT_BODY_LIMIT,
            store: None,
            claim_lease: DEFAULT_CLAIM_LEASE,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("verifier", &self.verifier)
            .field("body_limit", &self.body_limit)
            .field("delivery_store", &self.store.is_some())
            .field("claim_lease", &self.claim_lease)
            .finish()
    }
}
