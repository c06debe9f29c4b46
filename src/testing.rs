//! Helpers for testing your own handlers (feature `test-util`).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};

use crate::{
    replay::{delta, Clock},
    verify::{SecretError, Verifier},
};

/// The `x-ringyo-signature` value Ringyo would send for `body` under `secret`.
///
/// ```
/// let body = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:00Z","data":{}}"#;
/// let header = ringyo_webhook::testing::sign("whsec_test", body)?;
/// assert_eq!(header.len(), 64);
/// assert!(ringyo_webhook::verify(["whsec_test"], body, &header).is_ok());
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
///
/// # Errors
///
/// [`SecretError`] if the secret would be refused by the layer.
pub fn sign(secret: &str, body: &[u8]) -> Result<String, SecretError> {
    Ok(Verifier::new(secret)?.sign(body).to_string())
}

/// A [`Clock`] that only moves when told to, for testing freshness and expiry.
///
/// Clones share one time, so a test keeps a clone and moves the layer's clock:
///
/// ```
/// use std::time::Duration;
/// use ringyo_webhook::{testing::ManualClock, Clock, RingyoWebhookLayer};
///
/// let clock = ManualClock::new("2024-01-15T10:30:00Z".parse().unwrap());
/// let layer = RingyoWebhookLayer::new("whsec_test")?.clock(clock.clone());
/// clock.advance(Duration::from_secs(13 * 60));
/// assert_eq!(clock.now().to_rfc3339(), "2024-01-15T10:43:00+00:00");
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock that reads `now` until moved.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Sets the time.
    pub fn set(&self, now: DateTime<Utc>) {
        *self.lock() = now;
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now += delta(by);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A plain value: a panic elsewhere cannot leave it half-written.
        self.now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}
