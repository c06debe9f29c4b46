//! [`CachedLookup`]: your own async lookup of a tenant's secrets, behind a bounded cache.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::{Lookup, LookupError, Resolved, Tenant, TenantLookup};
use crate::verify::Secrets;

/// A tenant's secrets from your own async lookup (a database, a vault), remembered for a while
/// so most requests wait for no I/O.
///
/// `fetch` answers `Ok(Some(secrets))` for a known tenant, `Ok(None)` for an unknown one, and
/// `Err` when it cannot tell (answered 503 `secrets_unavailable`, so Ringyo retries). Both
/// answers are cached for the [`ttl`](Self::ttl), so a name asked for again costs the same
/// whether it is a tenant or not. Errors are not cached, and a fetch that takes longer than
/// the [`timeout`](Self::timeout) is an error.
///
/// What a cache cannot hide: a tenant whose deliveries arrive often is usually cached, and a
/// name nobody sent before waits for `fetch`, so the latency of a first request tells a busy
/// tenant from a made-up name. When tenant names are guessable and that matters, load every
/// tenant into a [`TenantMap`](super::TenantMap) instead (from the same database, on a timer
/// or on change). Likewise, each made-up name costs one `fetch`: a flood of them is a flood of
/// lookups, so rate-limit in front of the route.
///
/// The cache holds at most [`capacity`](Self::capacity) answers; past that, expired ones go
/// first, then unknown names, then any. A change in the database shows within the TTL plus
/// the time of one fetch. Concurrent requests for a name not cached yet each call `fetch`.
///
/// ```
/// use ringyo_webhook::{
///     secrets::{CachedLookup, LookupError, Secrets, Tenant, TenantKey, Tenants},
///     RingyoWebhookLayer,
/// };
///
/// # async fn workspace_secret(_: &str) -> Result<Option<String>, LookupError> { Ok(None) }
/// async fn secrets_of(tenant: Tenant) -> Result<Option<Secrets>, LookupError> {
///     // SELECT secret FROM workspaces WHERE name = $1
///     let secret = workspace_secret(tenant.as_str()).await?;
///     secret.map(Secrets::new).transpose().map_err(LookupError::new)
/// }
///
/// let lookup = CachedLookup::new(secrets_of).ttl(std::time::Duration::from_secs(30));
/// let header = ringyo_webhook::http::HeaderName::from_static("x-workspace");
/// let layer = RingyoWebhookLayer::from_source(Tenants::new(TenantKey::Header(header), lookup));
/// ```
pub struct CachedLookup<F> {
    fetch: Arc<F>,
    capacity: usize,
    ttl: Duration,
    timeout: Duration,
    cache: Arc<Mutex<HashMap<Tenant, Entry>>>,
}

struct Entry {
    /// `None`: no such tenant.
    secrets: Option<Secrets>,
    until: Instant,
}

impl<F> CachedLookup<F> {
    /// How many tenants are cached by default: 10 000.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// How long an answer is cached by default: 60 seconds.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

    /// How long a fetch may take by default: 3 seconds, well inside the 5 s Ringyo waits for
    /// an answer.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

    /// Looks tenants up with `fetch`, caching up to
    /// [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) answers for
    /// [`DEFAULT_TTL`](Self::DEFAULT_TTL).
    pub fn new(fetch: F) -> Self {
        Self {
            fetch: Arc::new(fetch),
            capacity: Self::DEFAULT_CAPACITY,
            ttl: Self::DEFAULT_TTL,
            timeout: Self::DEFAULT_TIMEOUT,
            cache: Arc::default(),
        }
    }

    /// Sets how long a fetch may take before the request is answered 503
    /// `secrets_unavailable` (the fetch is dropped, and not cached). Needs a Tokio runtime with
    /// its timer, as `#[tokio::main]` gives.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how many tenants the cache holds (at least 1).
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sets how long an answer is used before `fetch` is asked again.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many answers are cached now.
    pub fn cached(&self) -> usize {
        lock(&self.cache).len()
    }
}

impl<F> Clone for CachedLookup<F> {
    fn clone(&self) -> Self {
        Self {
            fetch: Arc::clone(&self.fetch),
            capacity: self.capacity,
            ttl: self.ttl,
            timeout: self.timeout,
            cache: Arc::clone(&self.cache),
        }
    }
}

impl<F> std::fmt::Debug for CachedLookup<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedLookup")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .field("cached", &self.cached())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the map whole, so a panic elsewhere does not spoil it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn resolved(tenant: Tenant, secrets: Option<Secrets>) -> Resolved {
    match secrets {
        Some(secrets) => Resolved::tenant(tenant, secrets),
        None => Resolved::unknown(),
    }
}

/// Caches `secrets` for `tenant` until `until`, within `capacity`.
fn remember(cache: &Mutex<HashMap<Tenant, Entry>>, capacity: usize, tenant: Tenant, entry: Entry) {
    let mut cache = lock(cache);
    if cache.len() >= capacity && !cache.contains_key(&tenant) {
        let now = Instant::now();
        cache.retain(|_, entry| entry.until > now);
        if cache.len() >= capacity {
            // Made-up names go before tenants, so a flood of them cannot push tenants out.
            let unknown = cache.iter().find(|(_, entry)| entry.secrets.is_none());
            let evicted = unknown.or_else(|| cache.iter().next());
            if let Some(evicted) = evicted.map(|(tenant, _)| tenant.clone()) {
                cache.remove(&evicted);
            }
        }
    }
    cache.insert(tenant, entry);
}

impl<F, Fut> TenantLookup for CachedLookup<F>
where
    F: Fn(Tenant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Secrets>, LookupError>> + Send + 'static,
{
    fn lookup_tenant(&self, tenant: Tenant) -> Lookup {
        if let Some(entry) = lock(&self.cache).get(&tenant) {
            if entry.until > Instant::now() {
                return Lookup::ready(resolved(tenant, entry.secrets.clone()));
            }
        }
        let (cache, capacity, ttl) = (Arc::clone(&self.cache), self.capacity, self.ttl);
        let timeout = self.timeout;
        let fetched = (self.fetch)(tenant.clone());
        Lookup::Pending(Box::pin(async move {
            let secrets = tokio::time::timeout(timeout, fetched)
                .await
                .map_err(|_| LookupError::new(format!("no answer within {timeout:?}")))??;
            let entry = Entry {
                secrets: secrets.clone(),
                until: Instant::now() + ttl,
            };
            remember(&cache, capacity, tenant.clone(), entry);
            Ok(resolved(tenant, secrets))
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Resolves a lookup, counting whether it had to wait.
    async fn resolve(lookup: Lookup) -> (bool, Result<Resolved, LookupError>) {
        match lookup {
            Lookup::Ready(result) => (false, result),
            Lookup::Pending(future) => (true, future.await),
        }
    }

    fn tenant(name: &str) -> Tenant {
        Tenant::new(name).unwrap()
    }

    #[tokio::test]
    async fn answers_are_cached_for_the_ttl_unknown_tenants_too_errors_never() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let lookup = CachedLookup::new(move |tenant: Tenant| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match tenant.as_str() {
                    "acme" => Ok(Some(Secrets::new("whsec_acme").unwrap())),
                    "down" => Err(LookupError::new("the database is down")),
                    _ => Ok(None),
                }
            }
        })
        .ttl(Duration::from_millis(200));

        let (waited, found) = resolve(lookup.lookup_tenant(tenant("acme"))).await;
        assert!(waited);
        assert_eq!(found.unwrap().tenant_name(), Some(&tenant("acme")));
        let (waited, found) = resolve(lookup.lookup_tenant(tenant("acme"))).await;
        assert!(!waited, "the second lookup is cached");
        assert!(found.unwrap().tenant_name().is_some());

        for _ in 0..2 {
            let (_, found) = resolve(lookup.lookup_tenant(tenant("nobody"))).await;
            assert!(found.unwrap().tenant_name().is_none());
        }
        for _ in 0..2 {
            let (_, found) = resolve(lookup.lookup_tenant(tenant("down"))).await;
            assert!(found.is_err());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4, "acme, nobody, down, down");

        tokio::time::sleep(Duration::from_millis(250)).await;
        let (waited, _) = resolve(lookup.lookup_tenant(tenant("acme"))).await;
        assert!(waited, "an expired answer is fetched again");
    }

    #[tokio::test]
    async fn the_cache_never_holds_more_than_its_capacity_and_keeps_tenants_over_made_up_names() {
        let lookup = CachedLookup::new(|tenant: Tenant| async move {
            Ok((tenant.as_str() == "acme").then(|| Secrets::new("whsec_acme").unwrap()))
        })
        .capacity(3);
        let _ = resolve(lookup.lookup_tenant(tenant("acme"))).await;
        for index in 0..20 {
            let (_, found) = resolve(lookup.lookup_tenant(tenant(&format!("t{index}")))).await;
            assert!(found.is_ok());
            assert!(lookup.cached() <= 3);
        }
        assert_eq!(lookup.cached(), 3);
        let (waited, _) = resolve(lookup.lookup_tenant(tenant("acme"))).await;
        assert!(!waited, "the tenant outlived 20 made-up names");
    }

    #[tokio::test]
    async fn a_fetch_past_the_timeout_is_an_error_and_is_not_cached() {
        let lookup = CachedLookup::new(|_: Tenant| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(None)
        })
        .timeout(Duration::from_millis(50));
        let (waited, found) = resolve(lookup.lookup_tenant(tenant("slow"))).await;
        assert!(waited);
        assert!(found.unwrap_err().to_string().contains("no answer within"));
        assert_eq!(lookup.cached(), 0);
    }
}
