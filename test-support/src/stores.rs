//! The behaviour every delivery store must have, as one suite each store's tests call.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use ringyo_webhook::chrono::{DateTime, TimeDelta, Utc};
use ringyo_webhook::{
    replay::StoreFuture, Claim, ClaimToken, Clock, DeliveryId, DeliveryStore, MemoryDeliveryStore,
    Signature, StoreError, SystemClock, Verifier,
};

/// Delivery ids no earlier run has used, so a store that persists (Redis) starts clean.
pub fn ids() -> impl Fn(u32) -> DeliveryId {
    let run = ClaimToken::new().to_string();
    move |n| {
        let verifier = Verifier::new("whsec_stores").unwrap();
        let body = format!("{run}/{n}");
        let signature = Signature::parse(verifier.sign(body.as_bytes()).to_string()).unwrap();
        verifier
            .verify(body.as_bytes(), &signature)
            .unwrap()
            .delivery_id()
    }
}

/// The cases every [`DeliveryStore`] must pass, on the real clock (a shared store keeps time by
/// its server's), with leases short enough to watch run out. A new backend calls this with its
/// own store.
pub async fn behaves_as_a_delivery_store(store: &dyn DeliveryStore) {
    let id = ids();
    let start = SystemClock.now();
    let at = |ms: i64| start + TimeDelta::milliseconds(ms);
    let (mine, theirs) = (ClaimToken::new(), ClaimToken::new());
    let claim = |n, token, now| store.claim(id(n), token, now, now + TimeDelta::milliseconds(400));

    // Claimed once; a copy meanwhile is in flight; completed, a copy is handled.
    assert_eq!(claim(1, mine, at(0)).await.unwrap(), Claim::Claimed);
    assert_eq!(claim(1, theirs, at(0)).await.unwrap(), Claim::InFlight);
    store.complete(id(1), mine, at(60_000)).await.unwrap();
    assert_eq!(claim(1, theirs, at(0)).await.unwrap(), Claim::Handled);

    // Released: the retry claims it again.
    assert_eq!(claim(2, mine, at(0)).await.unwrap(), Claim::Claimed);
    store.release(id(2), mine).await.unwrap();
    assert_eq!(claim(2, theirs, at(0)).await.unwrap(), Claim::Claimed);

    // Only the holder settles a claim, and a release never undoes a completion.
    assert_eq!(claim(3, mine, at(0)).await.unwrap(), Claim::Claimed);
    store.release(id(3), theirs).await.unwrap();
    store.complete(id(3), theirs, at(60_000)).await.unwrap();
    assert_eq!(claim(3, theirs, at(0)).await.unwrap(), Claim::InFlight);
    store.complete(id(3), mine, at(60_000)).await.unwrap();
    store.release(id(3), mine).await.unwrap();
    assert_eq!(claim(3, theirs, at(0)).await.unwrap(), Claim::Handled);

    // Deliveries are independent.
    assert_eq!(claim(4, mine, at(0)).await.unwrap(), Claim::Claimed);
    assert_eq!(claim(5, mine, at(0)).await.unwrap(), Claim::Claimed);

    // An abandoned claim lapses with its lease, and a handled entry at its `keep_until`; the
    // first holder's late completion does not overwrite the claim that replaced its own.
    store.complete(id(5), mine, at(400)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let later = SystemClock.now();
    assert_eq!(claim(4, theirs, later).await.unwrap(), Claim::Claimed);
    store.complete(id(4), mine, at(60_000)).await.unwrap();
    assert_eq!(claim(4, mine, later).await.unwrap(), Claim::InFlight);
    assert_eq!(claim(5, theirs, later).await.unwrap(), Claim::Claimed);
}

/// A memory store with faults and delays switched on by the test.
#[derive(Debug, Default)]
pub struct Faulty {
    /// The store that does the work when no fault is switched on.
    pub inner: Arc<MemoryDeliveryStore>,
    /// Milliseconds each call waits before doing its work, as one over a network would.
    pub delay: AtomicUsize,
    /// Whether `claim` fails, as a store that cannot be reached.
    pub claim_fails: AtomicBool,
    /// Whether `complete` fails.
    pub complete_fails: AtomicBool,
    /// How many releases were asked for.
    pub releases: Arc<AtomicUsize>,
}

impl Faulty {
    fn step<T: Send + 'static>(
        &self,
        fails: bool,
        work: impl FnOnce() -> StoreFuture<Result<T, StoreError>> + Send + 'static,
    ) -> StoreFuture<Result<T, StoreError>> {
        let delay = Duration::from_millis(self.delay.load(Ordering::SeqCst) as u64);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if fails {
                return Err(StoreError::new("connection refused"));
            }
            work().await
        })
    }
}

impl DeliveryStore for Faulty {
    fn claim(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreFuture<Result<Claim, StoreError>> {
        let inner = Arc::clone(&self.inner);
        let fails = self.claim_fails.load(Ordering::SeqCst);
        self.step(fails, move || inner.claim(id, token, now, lease_until))
    }

    fn complete(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        keep_until: DateTime<Utc>,
    ) -> StoreFuture<Result<(), StoreError>> {
        let inner = Arc::clone(&self.inner);
        let fails = self.complete_fails.load(Ordering::SeqCst);
        self.step(fails, move || inner.complete(id, token, keep_until))
    }

    fn release(&self, id: DeliveryId, token: ClaimToken) -> StoreFuture<Result<(), StoreError>> {
        let inner = Arc::clone(&self.inner);
        let releases = Arc::clone(&self.releases);
        self.step(false, move || {
            releases.fetch_add(1, Ordering::SeqCst);
            inner.release(id, token)
        })
    }
}
