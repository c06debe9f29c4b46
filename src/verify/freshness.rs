//! Freshness: the signed `timestamp` must fall inside a window around now.
//!
//! A captured delivery verifies forever, so only its age can tell a replay from the real thing.
//! Ringyo documents no timestamp header, so the window applies to the envelope's `timestamp`,
//! which the signature covers. Whether Ringyo renews it on retries is not documented; the
//! defaults assume it does not, so the window covers Ringyo's whole retry schedule.

use std::{fmt, sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};

use crate::rejection::{Rejection, RejectionKind};

/// A source of the current time, so tests (yours too) can control freshness and expiry.
///
/// Any `Fn() -> DateTime<Utc>` is a clock:
///
/// ```
/// use ringyo_webhook::{chrono::{DateTime, Utc}, RingyoWebhookLayer};
///
/// // A test's layer: the test kit's public secret (feature `test-util`) and a fixed time.
/// let fixed: DateTime<Utc> = "2024-01-15T10:40:00Z".parse().unwrap();
/// let secret = ringyo_webhook::testing::DEVELOPMENT_SECRET;
/// let layer = RingyoWebhookLayer::new(secret)?.clock(move || fixed);
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

/// The system's clock, the default. See [`Clock`] for another.
///
/// ```
/// use ringyo_webhook::{Clock, SystemClock};
///
/// assert!(SystemClock.now().timestamp() > 1_700_000_000);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from(std::time::SystemTime::now())
    }
}

/// How far the signed `timestamp` may be from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tolerance {
    max_age: Duration,
    max_future: Duration,
}

/// The freshness check a [`Verifier`](super::Verifier) applies: a window (or none) and a clock.
#[derive(Clone)]
pub(crate) struct Freshness {
    /// `None` when the check is off.
    tolerance: Option<Tolerance>,
    clock: Arc<dyn Clock>,
}

impl Freshness {
    /// One hour: Ringyo's last retry comes about 13 minutes after the first attempt (1 s, 5 s,
    /// 30 s, 2 min and 10 min apart, plus each attempt's 5 s time-out), so this covers the
    /// whole schedule more than four times over, with room for delays before the first attempt.
    pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60 * 60);

    /// Five minutes of clock skew into the future.
    pub(crate) const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(5 * 60);

    pub(crate) fn set_tolerance(&mut self, max_age: Duration, max_future: Duration) {
        self.tolerance = Some(Tolerance {
            max_age,
            max_future,
        });
    }

    pub(crate) fn turn_off(&mut self) {
        self.tolerance = None;
    }

    pub(crate) fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The verdict on a delivery's `timestamp` (or why it has none) at `now`: until when a copy
    /// of it could still pass, so a delivery store remembers it that long; or why it is
    /// refused.
    ///
    /// With the check off, nothing is refused, and a copy is remembered for the default window.
    pub(crate) fn check(
        &self,
        timestamp: Result<DateTime<Utc>, Rejection>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Rejection> {
        let Some(tolerance) = self.tolerance else {
            return Ok(after(now, Self::DEFAULT_MAX_AGE));
        };
        let timestamp = timestamp?;
        let age = now.signed_duration_since(timestamp);
        if age > delta(tolerance.max_age) {
            return Err(out_of_tolerance(format!(
                "it is {} s old, and at most {} s are accepted",
                age.num_seconds(),
                tolerance.max_age.as_secs()
            )));
        }
        if -age > delta(tolerance.max_future) {
            return Err(out_of_tolerance(format!(
                "it is {} s ahead of this clock, and at most {} s are accepted",
                (-age).num_seconds(),
                tolerance.max_future.as_secs()
            )));
        }
        Ok(after(timestamp, tolerance.max_age))
    }
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            tolerance: Some(Tolerance {
                max_age: Self::DEFAULT_MAX_AGE,
                max_future: Self::DEFAULT_MAX_FUTURE,
            }),
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tolerance {
            Some(tolerance) => f
                .debug_struct("Freshness")
                .field("max_age", &tolerance.max_age)
                .field("max_future", &tolerance.max_future)
                .finish(),
            None => f.write_str("Freshness(off)"),
        }
    }
}

fn out_of_tolerance(detail: String) -> Rejection {
    Rejection::new(RejectionKind::TimestampOutOfTolerance).with_detail(detail)
}

/// A `Duration` as chrono's signed delta, saturating (a `Duration` can exceed chrono's range).
fn delta(duration: Duration) -> TimeDelta {
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

    fn window(max_age: Duration, max_future: Duration) -> Freshness {
        let mut freshness = Freshness::default();
        freshness.set_tolerance(max_age, max_future);
        freshness
    }

    fn kind(result: Result<DateTime<Utc>, Rejection>) -> Option<RejectionKind> {
        result.err().map(|rejection| rejection.kind())
    }

    const STALE: Option<RejectionKind> = Some(RejectionKind::TimestampOutOfTolerance);

    #[test]
    fn default_window_covers_the_retry_schedule() {
        let freshness = Freshness::default();
        let sent = at("2024-01-15T10:30:00Z");
        // The last retry: 1 s + 5 s + 30 s + 2 min + 10 min after the first, plus time-outs.
        let last_retry = sent + TimeDelta::seconds(1 + 5 + 30 + 120 + 600 + 6 * 5);
        assert_eq!(
            freshness.check(Ok(sent), last_retry),
            Ok(sent + TimeDelta::hours(1))
        );
        assert!(freshness
            .check(Ok(sent), sent + TimeDelta::minutes(59))
            .is_ok());
        let stale = freshness
            .check(Ok(sent), sent + TimeDelta::minutes(61))
            .unwrap_err();
        assert_eq!(stale.kind(), RejectionKind::TimestampOutOfTolerance);
        assert_eq!(
            stale.detail(),
            Some("it is 3660 s old, and at most 3600 s are accepted")
        );
    }

    #[test]
    fn small_skew_into_the_future_is_allowed() {
        let freshness = Freshness::default();
        let now = at("2024-01-15T10:30:00Z");
        assert!(freshness
            .check(Ok(now + TimeDelta::minutes(4)), now)
            .is_ok());
        assert_eq!(
            kind(freshness.check(Ok(now + TimeDelta::minutes(6)), now)),
            STALE
        );
    }

    #[test]
    fn a_missing_timestamp_is_refused_only_when_the_check_is_on() {
        let now = at("2024-01-15T10:30:00Z");
        let missing = || Err(Rejection::new(RejectionKind::InvalidTimestamp));
        assert_eq!(
            kind(Freshness::default().check(missing(), now)),
            Some(RejectionKind::InvalidTimestamp)
        );
        let mut off = Freshness::default();
        off.turn_off();
        assert_eq!(off.check(missing(), now), Ok(now + TimeDelta::hours(1)));
        let ancient = at("1970-01-01T00:00:00Z");
        assert!(off.check(Ok(ancient), now).is_ok());
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let wide = window(Duration::MAX, Duration::MAX);
        let now = at("2024-01-15T10:30:00Z");
        assert!(wide.check(Ok(DateTime::<Utc>::MIN_UTC), now).is_ok());
        assert_eq!(wide.check(Ok(now), now), Ok(DateTime::<Utc>::MAX_UTC));
        assert_eq!(
            after(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
        let strict = window(Duration::ZERO, Duration::ZERO);
        assert_eq!(kind(strict.check(Ok(DateTime::<Utc>::MIN_UTC), now)), STALE);
        assert_eq!(kind(strict.check(Ok(DateTime::<Utc>::MAX_UTC), now)), STALE);
    }
}
