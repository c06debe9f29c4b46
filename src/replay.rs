//! Freshness: the signed `timestamp` must fall inside a window around now.
//!
//! A captured delivery verifies forever, so only its age can tell a replay from the real thing.
//! Ringyo documents no timestamp header, so the window applies to the envelope's `timestamp`,
//! which the signature covers. Whether Ringyo renews it on retries is not documented; the
//! defaults assume it does not, so the window covers Ringyo's whole retry schedule.

use std::{fmt, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};

/// A source of the current time, so tests (yours too) can control freshness and expiry.
///
/// Any `Fn() -> DateTime<Utc>` is a clock:
///
/// ```
/// use chrono::{DateTime, Utc};
/// use ringyo_webhook::RingyoWebhookLayer;
///
/// let fixed: DateTime<Utc> = "2024-01-15T10:40:00Z".parse().unwrap();
/// let layer = RingyoWebhookLayer::new("whsec_test")?.clock(move || fixed);
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

impl<F> Clock for F
where
    F: Fn() -> DateTime<Utc> + Send + Sync + 'static,
{
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

/// The system's clock, the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from(std::time::SystemTime::now())
    }
}

/// How far the signed `timestamp` may be from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tolerance {
    pub(crate) max_age: Duration,
    pub(crate) max_future: Duration,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            max_age: Tolerance::DEFAULT_MAX_AGE,
            max_future: Tolerance::DEFAULT_MAX_FUTURE,
        }
    }
}

/// Where a timestamp falls outside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutOfTolerance {
    /// Older than `max_age`, by this much in all.
    Stale(Duration),
    /// Further ahead than `max_future`, by this much in all.
    Future(Duration),
}

impl Tolerance {
    /// One hour: Ringyo's last retry comes about 13 minutes after the first attempt (1 s, 5 s,
    /// 30 s, 2 min and 10 min apart, plus each attempt's 5 s time-out), so this covers the
    /// whole schedule more than four times over, with room for delays before the first attempt.
    pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60 * 60);

    /// Five minutes of clock skew into the future.
    pub(crate) const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(5 * 60);

    pub(crate) fn check(
        &self,
        timestamp: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), OutOfTolerance> {
        let age = now.signed_duration_since(timestamp);
        if age > delta(self.max_age) {
            return Err(OutOfTolerance::Stale(age.to_std().unwrap_or(Duration::MAX)));
        }
        let ahead = -age;
        if ahead > delta(self.max_future) {
            return Err(OutOfTolerance::Future(
                ahead.to_std().unwrap_or(Duration::MAX),
            ));
        }
        Ok(())
    }

    /// Until when a delivery with this `timestamp` could still pass the check: after that a
    /// replay is refused as stale, so a delivery store need not remember it.
    pub(crate) fn expiry(&self, timestamp: DateTime<Utc>) -> DateTime<Utc> {
        after(timestamp, self.max_age)
    }
}

impl fmt::Display for OutOfTolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stale(age) => write!(
                f,
                "the event's timestamp is {}s old, older than the tolerance allows",
                age.as_secs()
            ),
            Self::Future(ahead) => write!(
                f,
                "the event's timestamp is {}s in the future, further than the tolerance allows",
                ahead.as_secs()
            ),
        }
    }
}

/// A `Duration` as chrono's signed delta, saturating (a `Duration` can exceed chrono's range).
pub(crate) fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// `time + duration`, saturating at the end of time: `DateTime + TimeDelta` panics on overflow,
/// and durations come from configuration that may be as large as `Duration::MAX`.
pub(crate) fn after(time: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    time.checked_add_signed(delta(duration))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn default_window_covers_the_retry_schedule() {
        let tolerance = Tolerance::default();
        let sent = at("2024-01-15T10:30:00Z");
        // The last retry: 1 s + 5 s + 30 s + 2 min + 10 min after the first, plus time-outs.
        let last_retry = sent + TimeDelta::seconds(1 + 5 + 30 + 120 + 600 + 6 * 5);
        assert_eq!(tolerance.check(sent, last_retry), Ok(()));
        assert_eq!(tolerance.check(sent, sent + TimeDelta::minutes(59)), Ok(()));
        assert_eq!(
            tolerance.check(sent, sent + TimeDelta::minutes(61)),
            Err(OutOfTolerance::Stale(Duration::from_secs(61 * 60)))
        );
    }

    #[test]
    fn small_skew_into_the_future_is_allowed() {
        let tolerance = Tolerance::default();
        let now = at("2024-01-15T10:30:00Z");
        assert_eq!(tolerance.check(now + TimeDelta::minutes(4), now), Ok(()));
        assert_eq!(
            tolerance.check(now + TimeDelta::minutes(6), now),
            Err(OutOfTolerance::Future(Duration::from_secs(6 * 60)))
        );
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let tolerance = Tolerance {
            max_age: Duration::MAX,
            max_future: Duration::MAX,
        };
        let now = at("2024-01-15T10:30:00Z");
        assert_eq!(tolerance.check(DateTime::<Utc>::MIN_UTC, now), Ok(()));
        assert_eq!(tolerance.check(DateTime::<Utc>::MAX_UTC, now), Ok(()));
        assert_eq!(tolerance.expiry(now), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            after(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
        let strict = Tolerance {
            max_age: Duration::ZERO,
            max_future: Duration::ZERO,
        };
        assert!(strict.check(DateTime::<Utc>::MIN_UTC, now).is_err());
        assert!(strict.check(DateTime::<Utc>::MAX_UTC, now).is_err());
    }
}
