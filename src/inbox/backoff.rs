//! [`Backoff`]: when a failed delivery is tried again.

use std::time::Duration;

use crate::replay::ClaimToken;

/// Exponential back-off with jitter between a failed attempt and the next.
///
/// After attempt `n` fails, the next waits `min(max, base × 2^(n-1))`, jittered down by up to
/// half (equal jitter), so deliveries that failed together (a downstream outage) do not all
/// retry in the same instant, and none retries sooner than half its step. The defaults, base
/// 1 s and max 10 min, with [`Worker`](super::Worker)'s default of 12 attempts, retry for 14 to
/// 27 minutes (by the jitter) before a delivery is dead-lettered.
///
/// ```
/// use std::time::Duration;
/// use ringyo_webhook::inbox::Backoff;
///
/// let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
/// let third = backoff.delay(3);
/// assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4));
/// assert!(backoff.delay(30) <= Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Base 1 s, at most 10 min.
    pub const DEFAULT: Self = Self {
        base: Duration::from_secs(1),
        max: Duration::from_secs(10 * 60),
    };

    /// Back-off from `base`, doubling, never over `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
        }
    }

    /// The wait after attempt `attempt` (from 1) failed, jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        // The top 53 bits of a fresh random token: uniform in [0, 1).
        #[allow(clippy::cast_precision_loss)] // 53 bits fit an f64 exactly
        let unit = (ClaimToken::new().get() >> 75) as f64 / (1u64 << 53) as f64;
        self.jittered(attempt, unit)
    }

    /// The step for `attempt`, less up to half of it by `unit` in [0, 1).
    fn jittered(&self, attempt: u32, unit: f64) -> Duration {
        // 2^31 times any base of a second or more is past every sensible cap; 2^32 would
        // overflow the multiplier itself.
        let doublings = attempt.saturating_sub(1).min(31);
        let step = self
            .base
            .checked_mul(1 << doublings)
            .map_or(self.max, |step| step.min(self.max));
        step - step.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let steps: Vec<_> = (1..=6)
            .map(|attempt| backoff.jittered(attempt, 0.0).as_secs())
            .collect();
        assert_eq!(steps, [1, 2, 4, 8, 10, 10]);
        for attempt in [32, 33, 34, 64, u32::MAX] {
            assert_eq!(backoff.jittered(attempt, 0.0), Duration::from_secs(10));
        }
        let tiny = Backoff::new(Duration::from_nanos(1), Duration::from_secs(3600));
        assert_eq!(tiny.jittered(40, 0.0), Duration::from_nanos(1 << 31));
    }

    #[test]
    fn jitter_takes_off_at_most_half() {
        let backoff = Backoff::DEFAULT;
        assert_eq!(backoff.jittered(2, 0.999_999).as_millis(), 1000);
        for _ in 0..1000 {
            let delay = backoff.delay(4);
            assert!(delay > Duration::from_secs(4) && delay <= Duration::from_secs(8));
        }
    }

    #[test]
    fn eleven_waits_by_default_take_at_most_27_minutes() {
        let total: Duration = (1..12).map(|n| Backoff::DEFAULT.jittered(n, 0.0)).sum();
        assert_eq!(total.as_secs(), 1023 + 600);
    }
}
