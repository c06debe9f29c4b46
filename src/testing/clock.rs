//! [`ManualClock`]: a clock a test moves by hand.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};

use crate::verify::{after, Clock};

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
        *now = after(*now, by);
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
