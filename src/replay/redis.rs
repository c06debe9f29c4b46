//! [`RedisDeliveryStore`]: one delivery store for every replica, in Redis (feature `redis`).

use std::{
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use redis::{aio::ConnectionManager, aio::ConnectionManagerConfig, RedisError, Script};

use super::store::{Claim, ClaimToken, DeliveryStore, StoreError, StoreFuture};
use crate::{
    metrics::record::{self, Stopwatch},
    verify::DeliveryId,
};

/// Claims a free key for a token until the lease ends; says what holds it otherwise.
/// KEYS[1]: the delivery; ARGV[1]: the claim's value; ARGV[2]: the lease's end, Unix ms.
///
/// For Redis 6.2 only, which refuses `SET .. NX .. GET` (see [`claim_natively`]).
const CLAIM: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
  return 1
elseif value == 'handled' then
  return 2
end
return 3
";

/// The value of a handled delivery's key.
const HANDLED: &str = "handled";

/// Marks a delivery handled until ARGV[2] (Unix ms), if the claim ARGV[1] still holds it or
/// nothing does: a request whose lease ran out never overwrites the claim that replaced it.
const COMPLETE: &str = r"
local value = redis.call('GET', KEYS[1])
if not value or value == ARGV[1] then
  redis.call('SET', KEYS[1], 'handled', 'PXAT', ARGV[2])
end
return 0
";

/// Deletes the claim ARGV[1], and nothing else.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
";

/// A [`DeliveryStore`] in Redis, shared by every replica of a receiver.
///
/// Behind a load balancer, Ringyo's retry of a delivery can reach another replica than the
/// first attempt did; with this store every replica answers it as the in-memory store would in
/// one process: handled (200, duplicate), in flight (409), or free to run.
///
/// - **Atomic, owned claims.** Each delivery is one key (`{prefix}{delivery id}`). A claim
///   stores the claiming request's [`ClaimToken`] with the lease as the key's expiry, in one
///   command (`SET .. NX PXAT .. GET`: set if free, and say what held it); `complete` and
///   `release` are small Lua scripts that act only while the key still holds that token, so a
///   replica whose lease ran out cannot settle or release another's claim.
/// - **Redis 6.2 or later** (for `PXAT`). Redis 6.2 refuses `NX` with `GET`, which came in
///   7.0: there the first claim's refusal switches the store to a Lua script that claims the
///   same way, for the rest of its life.
/// - **Bounded memory.** A handled delivery's key expires when a copy of it could no longer
///   pass the freshness check (one hour after its timestamp, by default), so Redis holds about
///   one key per delivery of the last hour, whatever the history.
/// - **Time is Redis's.** Expiry is absolute (`PXAT`), on Redis's clock; the layer's clock only
///   computes the instants. Keep replicas' clocks in sync (NTP), as the freshness check needs
///   anyway.
/// - **Faults.** Every call is bounded by a time-out (default 1 s, well under Ringyo's 5 s per
///   attempt); a call that fails or times out is a [`StoreError`], which the layer answers with
///   503 and `Retry-After`, so Ringyo retries and nothing is lost. The connection is redis-rs's
///   [`ConnectionManager`], which reconnects by itself: the store recovers when Redis does,
///   and a receiver can start while Redis is still down.
///
/// # What Redis does not guarantee
///
/// A single Redis is the one authority here; this store builds no consensus of its own and
/// uses no Redlock. With replication and failover, writes are acknowledged before they reach a
/// replica, so a claim (or a completion) written just before a failover can be lost: Redis's
/// own documentation says that replication is asynchronous and that a failover may lose
/// acknowledged writes (<https://redis.io/docs/latest/operate/oss_and_stack/management/replication/>).
/// The worst case is then a handler run twice for one delivery. Handlers whose effects must
/// not happen twice should make them idempotent on the delivery id, which
/// [`RingyoEvent::delivery_id`](crate::RingyoEvent::delivery_id) exposes. Without persistence
/// (RDB or AOF), a Redis restart forgets what was handled.
///
/// ```no_run
/// use ringyo_webhook::{replay::RedisDeliveryStore, RingyoWebhookLayer};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisDeliveryStore::open("redis://127.0.0.1:6379")?.prefix("shop-a:");
/// let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?.delivery_store(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisDeliveryStore {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
    /// Set once Redis refused a claim in one command (Redis 6.2): claims then run
    /// [`CLAIM`]. Shared by the store's clones, which share a connection.
    scripted_claims: Arc<AtomicBool>,
}

/// The Lua scripts, sent by hash once Redis has them.
#[derive(Clone)]
struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
}

impl RedisDeliveryStore {
    /// How long one Redis call may take by default: 1 second. A claim that takes longer is
    /// answered 503, well inside Ringyo's 5 s per attempt.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

    /// The default key prefix: `ringyo-webhook:delivery:`.
    pub const DEFAULT_PREFIX: &'static str = "ringyo-webhook:delivery:";

    /// A store on the Redis at `url` (`redis://host:port/db`, `rediss://` for TLS if redis-rs
    /// was built with it). It connects on first use and reconnects by itself, so this succeeds
    /// while Redis is down; deliveries are answered 503 until it is up.
    ///
    /// Call it inside the tokio runtime that serves the layer: the connection's reconnecting
    /// task is spawned there.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the URL is not a Redis URL, or if there is no tokio runtime to run the
    /// connection on (rather than redis-rs's panic).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::new(
                "RedisDeliveryStore::open needs a tokio runtime: call it inside the runtime that \
                 serves the layer",
            ));
        }
        let client = redis::Client::open(url).map_err(StoreError::new)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Self::DEFAULT_TIMEOUT))
            .set_response_timeout(Some(Self::DEFAULT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(StoreError::new)?;
        Ok(Self::from_connection(connection))
    }

    /// A store on a connection manager configured elsewhere.
    pub fn from_connection(connection: ConnectionManager) -> Self {
        Self {
            inner: Arc::new(Inner {
                connection,
                prefix: Self::DEFAULT_PREFIX.to_owned(),
                timeout: Self::DEFAULT_TIMEOUT,
                scripts: Scripts {
                    claim: Script::new(CLAIM),
                    complete: Script::new(COMPLETE),
                    release: Script::new(RELEASE),
                },
                scripted_claims: Arc::default(),
            }),
        }
    }

    /// Claims with the Lua script that Redis 6.2 needs, as if Redis had refused the one
    /// command: for the crate's own tests of that path against a newer Redis.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    #[must_use]
    pub fn with_scripted_claims(self) -> Self {
        self.inner.scripted_claims.store(true, Ordering::Relaxed);
        self
    }

    /// Sets the key prefix, so several receivers can share one Redis. Default:
    /// [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX).
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        self.map(|inner| inner.prefix = prefix.into())
    }

    /// Sets how long one Redis call may take. Default:
    /// [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT).
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|inner| inner.timeout = timeout)
    }

    fn map(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Runs the script `which` picks (`op`, for the metrics) on `id`'s key with `args`,
    /// within the time-out. Every script answers an integer.
    fn run(
        &self,
        op: &'static str,
        which: fn(&Scripts) -> &Script,
        id: DeliveryId,
        args: Vec<String>,
    ) -> StoreFuture<Result<i64, StoreError>> {
        let inner = Arc::clone(&self.inner);
        let key = inner.key(id);
        Box::pin(async move { Ok(inner.script(op, which, key, args).await?) })
    }
}

impl Inner {
    fn key(&self, id: DeliveryId) -> String {
        format!("{}{id}", self.prefix)
    }

    /// `call` on a connection, within the time-out, its round trip recorded as `op`.
    async fn call<T, F>(
        &self,
        op: &'static str,
        call: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, Failed>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let round_trip = Stopwatch::start();
        let answer = bounded(self.timeout, call(self.connection.clone())).await;
        record::store_round_trip(round_trip, "redis", op, answer.is_ok());
        answer
    }

    /// The script `which` picks on `key` with `args`, as [`call`](Self::call) runs it.
    async fn script(
        &self,
        op: &'static str,
        which: fn(&Scripts) -> &Script,
        key: String,
        args: Vec<String>,
    ) -> Result<i64, Failed> {
        self.call(op, |mut connection| async move {
            which(&self.scripts)
                .key(key)
                .arg(args)
                .invoke_async(&mut connection)
                .await
        })
        .await
    }

    /// A claim of `key` for `value` at `now` until `lease_until`, as
    /// [`claim_once`](Self::claim_once) makes it. A claim Redis did not answer in time (this
    /// store's time-out, or the connection's own) may still run once Redis gets to it, and
    /// would then hold the delivery for its whole lease, every copy answered 409 meanwhile: so
    /// it is released after it, on the same connection, whose commands Redis runs in order.
    /// The release is sent at once; its answer is awaited for at most the lease.
    async fn claim(
        self: Arc<Self>,
        key: String,
        value: String,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let claimed = self.claim_once(&key, &value, unix_ms(lease_until)).await;
        if claimed.as_ref().is_err_and(Failed::may_still_run) {
            let lease = (lease_until - now).to_std().unwrap_or_default();
            tokio::spawn(async move {
                let mut connection = self.connection.clone();
                // The script whole (`EVAL`): sent by hash, a Redis that has not loaded it
                // would refuse it, and its loading would wait for an answer that may be late.
                let mut release = redis::cmd("EVAL");
                release.arg(RELEASE).arg(1).arg(key).arg(value);
                let round_trip = Stopwatch::start();
                let released =
                    tokio::time::timeout(lease, release.query_async::<i64>(&mut connection)).await;
                // Best effort: a release that fails leaves the lease to run out, as before.
                record::store_round_trip(
                    round_trip,
                    "redis",
                    "release",
                    matches!(released, Ok(Ok(_))),
                );
            });
        }
        Ok(claimed?)
    }

    /// A claim of `key` for `value` until `until`: in one command, or with [`CLAIM`] on a
    /// Redis that refuses it (from then on).
    async fn claim_once(&self, key: &str, value: &str, until: String) -> Result<Claim, Failed> {
        if !self.scripted_claims.load(Ordering::Relaxed) {
            let claimed = self
                .call("claim", |connection| {
                    claim_natively(connection, key, value, &until)
                })
                .await?;
            if let Some(claim) = claimed {
                return Ok(claim);
            }
            self.scripted_claims.store(true, Ordering::Relaxed);
            tracing::info!(
                "Redis refused SET with both NX and GET (Redis 6.2): claiming with a Lua \
                 script from now on"
            );
        }
        let claimed = self
            .script(
                "claim",
                |s| &s.claim,
                key.to_owned(),
                vec![value.to_owned(), until],
            )
            .await?;
        Ok(match claimed {
            1 => Claim::Claimed,
            2 => Claim::Handled,
            _ => Claim::InFlight,
        })
    }
}

/// `SET key value NX PXAT until GET`: sets the key if it is free, and answers what held it
/// otherwise, in one command where [`CLAIM`] runs a script (about 1.8 µs of Redis's time
/// against 4.9, `INFO commandstats` under `redis-benchmark`). `None` if Redis refuses `NX`
/// with `GET` (before 7.0), which sets nothing.
async fn claim_natively(
    mut connection: ConnectionManager,
    key: &str,
    value: &str,
    until: &str,
) -> redis::RedisResult<Option<Claim>> {
    let held: redis::RedisResult<Option<String>> = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PXAT")
        .arg(until)
        .arg("GET")
        .query_async(&mut connection)
        .await;
    match held {
        Ok(None) => Ok(Some(Claim::Claimed)),
        Ok(Some(held)) if held == HANDLED => Ok(Some(Claim::Handled)),
        Ok(Some(_)) => Ok(Some(Claim::InFlight)),
        Err(err) if is_syntax_error(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Whether Redis answered `ERR syntax error`: what Redis 6.2 says to `SET` with `NX` and
/// `GET`.
fn is_syntax_error(err: &RedisError) -> bool {
    err.code() == Some("ERR")
        && err
            .detail()
            .is_some_and(|detail| detail.contains("syntax error"))
}

/// How a call to Redis failed.
#[derive(Debug)]
enum Failed {
    /// Redis, or the connection to it, answered an error.
    Redis(RedisError),
    /// No answer within the time-out: the command may still run.
    TimedOut(Duration),
}

impl Failed {
    /// Whether the command may still run: no answer came in time, by this store's time-out or
    /// by the connection's own (redis-rs's response time-out, an I/O error).
    fn may_still_run(&self) -> bool {
        match self {
            Self::TimedOut(_) => true,
            Self::Redis(err) => err.is_timeout(),
        }
    }
}

impl From<Failed> for StoreError {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Redis(err) => Self::new(err),
            Failed::TimedOut(timeout) => Self::new(format!(
                "Redis did not answer within {} ms",
                timeout.as_millis()
            )),
        }
    }
}

/// `future`, failing if it takes longer than `timeout`.
async fn bounded<T>(
    timeout: Duration,
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Failed> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result.map_err(Failed::Redis),
        Err(_) => Err(Failed::TimedOut(timeout)),
    }
}

/// The value a claim stores: the holder's token.
fn claim_value(token: ClaimToken) -> String {
    format!("claim:{token}")
}

fn unix_ms(time: DateTime<Utc>) -> String {
    // `PXAT` takes a positive integer; an instant before 1970 has long expired anyway.
    time.timestamp_millis().max(1).to_string()
}

impl DeliveryStore for RedisDeliveryStore {
    fn claim(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreFuture<Result<Claim, StoreError>> {
        let key = self.inner.key(id);
        let claimed = Arc::clone(&self.inner).claim(key, claim_value(token), now, lease_until);
        Box::pin(claimed)
    }

    fn complete(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        keep_until: DateTime<Utc>,
    ) -> StoreFuture<Result<(), StoreError>> {
        let done = self.run(
            "complete",
            |s| &s.complete,
            id,
            vec![claim_value(token), unix_ms(keep_until)],
        );
        Box::pin(async move { done.await.map(drop) })
    }

    fn release(&self, id: DeliveryId, token: ClaimToken) -> StoreFuture<Result<(), StoreError>> {
        let done = self.run("release", |s| &s.release, id, vec![claim_value(token)]);
        Box::pin(async move { done.await.map(drop) })
    }
}

impl fmt::Debug for RedisDeliveryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("RedisDeliveryStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(reply: &[u8]) -> RedisError {
        redis::parse_redis_value(reply)
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    #[test]
    fn only_redis_6_2s_refusal_of_nx_with_get_switches_claims_to_the_script() {
        // What Redis 6.2 answers `SET k v NX PXAT 1 GET`, byte for byte.
        assert!(is_syntax_error(&server_error(b"-ERR syntax error\r\n")));
        for other in [
            &b"-ERR invalid expire time in 'set' command\r\n"[..],
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            b"-NOPERM this user has no permissions to run the 'set' command\r\n",
            b"-LOADING Redis is loading the dataset in memory\r\n",
        ] {
            assert!(!is_syntax_error(&server_error(other)), "{other:?}");
        }
    }

    #[test]
    fn opening_outside_a_runtime_is_an_error_not_a_panic() {
        let err = RedisDeliveryStore::open("redis://127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }
}
