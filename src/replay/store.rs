//! [`DeliveryStore`]: the small async trait every delivery store implements.

use std::{
    collections::hash_map::RandomState,
    fmt,
    future::Future,
    hash::{BuildHasher, Hasher},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
};

use chrono::{DateTime, Utc};

use crate::verify::DeliveryId;

/// A boxed future, as the [`DeliveryStore`] methods return: the trait stays object safe, so the
/// layer needs no type parameter for it. The futures are `'static`: they must not borrow the
/// store, so clone what they need (a connection pool handle, say) into them. See
/// [`DeliveryStore`] for an example.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What [`DeliveryStore::claim`] found. See [`DeliveryStore`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// Not seen (or forgotten): the caller now holds it and runs the handler.
    Claimed,
    /// Another request holds it and has not finished.
    InFlight,
    /// It was handled successfully already.
    Handled,
}

/// Who holds a claim: a value unique to one request, across every replica.
///
/// The layer makes one per claim and passes it to [`claim`](DeliveryStore::claim),
/// [`complete`](DeliveryStore::complete) and [`release`](DeliveryStore::release), so a store
/// settles a claim only for the request that holds it: a request whose lease ran out, and whose
/// delivery another request claimed since, cannot complete or release that other claim.
///
/// ```
/// use ringyo_webhook::ClaimToken;
///
/// assert_ne!(ClaimToken::new(), ClaimToken::new());
/// assert_eq!(ClaimToken::new().to_string().len(), 32);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(u128);

impl ClaimToken {
    /// A new token: 128 bits from the standard library's randomly keyed hasher, keyed once
    /// per process, over a process-wide counter, so tokens differ within a process and, with
    /// overwhelming probability, across processes.
    ///
    /// (A hasher keyed afresh for each token, with the process id in it, cost 0.23 µs a
    /// token, about a seventh of what the memory store adds to a delivery: each new key reads
    /// a thread-local and each process id is a system call.)
    #[allow(clippy::new_without_default)] // a default value would suggest a fixed one
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let keys = KEYS.get_or_init(RandomState::new);
        let half = |which: u8| {
            let mut hasher = keys.build_hasher();
            hasher.write_u8(which);
            hasher.write_u64(count);
            u128::from(hasher.finish())
        };
        Self((half(0) << 64) | half(1))
    }

    /// The token's value.
    pub fn get(self) -> u128 {
        self.0
    }

    /// A token with a fixed value, for tests that need two known ones.
    #[cfg(test)]
    pub(crate) const fn from_raw(value: u128) -> Self {
        Self(value)
    }
}

impl fmt::Display for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimToken({self})")
    }
}

/// A store failed, for example a shared database could not be reached. The layer answers 503
/// `delivery_store_unavailable` with `Retry-After`; see [`DeliveryStore`] for an example.
#[derive(Debug, thiserror::Error)]
#[error("delivery store error: {0}")]
pub struct StoreError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl StoreError {
    /// Wraps the store's own error.
    pub fn new(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(err.into())
    }
}

/// Remembers deliveries between requests, for [`RingyoWebhookLayer::delivery_store`].
///
/// The protocol, per delivery: [`claim`](Self::claim); if claimed, the handler runs, then the
/// layer calls [`complete`](Self::complete) if it answered 2xx, or [`release`](Self::release)
/// otherwise. Methods are async so a store shared by several replicas (Redis, a SQL table) can
/// back it; each must be atomic with respect to the others for the same id.
///
/// If the request ends at any point (the handler panicked, the client went away, a time-out
/// dropped it), the layer carries the store call it was awaiting to its end on the tokio
/// runtime, and releases a claim no request holds any more, so a store that does I/O is left
/// consistent too. Only without a tokio runtime (or if the process dies) does a claim wait for
/// its lease to run out.
///
/// A claim that fails makes the layer answer 503 `delivery_store_unavailable` with
/// `Retry-After`, so Ringyo retries later rather than the handler running twice. A `complete`
/// or `release` that fails does not change the answer already given: the claim then stays until
/// its lease runs out, and copies arriving meanwhile get 409.
///
/// The crate's own stores pass one behaviour suite (`test-support/src/stores.rs` in the
/// repository, run by `tests/stores/`); a new backend in this crate proves itself by passing the
/// same cases.
///
/// A store is three methods returning boxed futures that own what they need:
///
/// ```
/// use std::{collections::HashSet, sync::{Arc, Mutex}};
/// use ringyo_webhook::{
///     chrono::{DateTime, Utc}, replay::StoreFuture, Claim, ClaimToken, DeliveryId, DeliveryStore,
///     StoreError,
/// };
///
/// /// Remembers handled deliveries for ever, and never sees a claim in flight: a sketch only.
/// #[derive(Default)]
/// struct Sketch(Arc<Mutex<HashSet<DeliveryId>>>);
///
/// impl DeliveryStore for Sketch {
///     fn claim(&self, id: DeliveryId, _: ClaimToken, _: DateTime<Utc>, _: DateTime<Utc>)
///         -> StoreFuture<Result<Claim, StoreError>>
///     {
///         let handled = self.0.lock().unwrap().contains(&id);
///         Box::pin(async move { Ok(if handled { Claim::Handled } else { Claim::Claimed }) })
///     }
///
///     fn complete(&self, id: DeliveryId, _: ClaimToken, _: DateTime<Utc>)
///         -> StoreFuture<Result<(), StoreError>>
///     {
///         let handled = Arc::clone(&self.0);
///         Box::pin(async move {
///             handled.lock().map_err(|_| StoreError::new("poisoned"))?.insert(id);
///             Ok(())
///         })
///     }
///
///     fn release(&self, _: DeliveryId, _: ClaimToken) -> StoreFuture<Result<(), StoreError>> {
///         Box::pin(async { Ok(()) })
///     }
/// }
///
/// # std::env::set_var("RINGYO_WEBHOOK_SECRET", "whsec_doctest_only");
/// let layer = ringyo_webhook::RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?
///     .delivery_store(Sketch::default());
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
///
/// [`RingyoWebhookLayer::delivery_store`]: crate::RingyoWebhookLayer::delivery_store
pub trait DeliveryStore: Send + Sync + 'static {
    /// Claims `id` for the request holding `token`, unless it is handled or held.
    ///
    /// A claim not completed or released by `lease_until` is abandoned: a later `claim` after
    /// that time may take it. Entries whose `keep_until` (see [`complete`](Self::complete)) is
    /// before `now` are gone.
    fn claim(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreFuture<Result<Claim, StoreError>>;

    /// Records `id` as handled until `keep_until`, after which the layer's timestamp check
    /// refuses a replay of it anyway (with the check off, `keep_until` is an hour after
    /// handling, and a later replay runs again).
    ///
    /// Only for the claim `token` holds, or for none: if the lease ran out and another request
    /// claimed `id` since, that request's claim stands and this call changes nothing.
    fn complete(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        keep_until: DateTime<Utc>,
    ) -> StoreFuture<Result<(), StoreError>>;

    /// Forgets the claim `token` holds, so a retry runs the handler again. Any other claim,
    /// and a handled entry, stay.
    fn release(&self, id: DeliveryId, token: ClaimToken) -> StoreFuture<Result<(), StoreError>>;
}

/// A shared store is a store, so you can keep a handle to one you give the layer.
impl<S: DeliveryStore + ?Sized> DeliveryStore for std::sync::Arc<S> {
    fn claim(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreFuture<Result<Claim, StoreError>> {
        (**self).claim(id, token, now, lease_until)
    }

    fn complete(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        keep_until: DateTime<Utc>,
    ) -> StoreFuture<Result<(), StoreError>> {
        (**self).complete(id, token, keep_until)
    }

    fn release(&self, id: DeliveryId, token: ClaimToken) -> StoreFuture<Result<(), StoreError>> {
        (**self).release(id, token)
    }
}
