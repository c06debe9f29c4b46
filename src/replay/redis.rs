//! [`RedisDeliveryStore`]: one delivery store for every replica, in Redis (feature `redis`).

use std::{fmt, future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use redis::{aio::ConnectionManager, aio::ConnectionManagerConfig, Script};

use super::store::{Claim, ClaimToken, DeliveryStore, StoreError, StoreFuture};
use crate::{
    metrics::record::{self, Stopwatch},
    verify::DeliveryId,
};

/// Claims a free key for a token until the lease ends; says what holds it otherwise.
/// KEYS[1]: the delivery; ARGV[1]: the claim's value; ARGV[2]: the lease's end, Unix ms.
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
///   stores the claiming request's [`ClaimToken`] with the lease as the key's expiry; `complete`
///   and `release` are small Lua scripts that act only while the key still holds that token,
///   so a replica whose lease ran out cannot settle or release another's claim.
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
}

/// The three Lua scripts, sent by hash once Redis has them.
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
            }),
        }
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
        let key = format!("{}{id}", inner.prefix);
        Box::pin(async move {
            let round_trip = Stopwatch::start();
            let answer = bounded(inner.timeout, async {
                let mut connection = inner.connection.clone();
                which(&inner.scripts)
                    .key(key)
                    .arg(args)
                    .invoke_async(&mut connection)
                    .await
            })
            .await;
            record::store_round_trip(round_trip, "redis", op, answer.is_ok());
            answer
        })
    }
}

/// `future`, failing with a [`StoreError`] if it takes longer than `timeout`.
async fn bounded<T>(
    timeout: Duration,
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result.map_err(StoreError::new),
        Err(_) => Err(StoreError::new(format!(
            "Redis did not answer within {} ms",
            timeout.as_millis()
        ))),
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
        _now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreFuture<Result<Claim, StoreError>> {
        let claimed = self.run(
            "claim",
            |s| &s.claim,
            id,
            vec![claim_value(token), unix_ms(lease_until)],
        );
        Box::pin(async move {
            match claimed.await? {
                1 => Ok(Claim::Claimed),
                2 => Ok(Claim::Handled),
                _ => Ok(Claim::InFlight),
            }
        })
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

    #[test]
    fn opening_outside_a_runtime_is_an_error_not_a_panic() {
        let err = RedisDeliveryStore::open("redis://127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }
}
