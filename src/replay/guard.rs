//! [`ClaimGuard`]: a claim held while a handler runs, released on every path that does not
//! settle it.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use chrono::{DateTime, Utc};

use super::store::{DeliveryStore, StoreError, StoreFuture};
use crate::verify::DeliveryId;

/// A claim on a delivery while its handler runs.
///
/// [`settle`](Self::settle) records the outcome. Dropped unsettled (the handler panicked, the
/// client went away, a time-out dropped the request), it releases the claim so a retry runs the
/// handler again: `Drop` cannot await, so it starts the release, and if the store needs more
/// than one poll (any store that does I/O) spawns the rest on the tokio runtime.
pub(crate) struct ClaimGuard {
    store: Arc<dyn DeliveryStore>,
    id: DeliveryId,
    keep_until: DateTime<Utc>,
    settled: bool,
}

impl ClaimGuard {
    pub(crate) fn new(
        store: Arc<dyn DeliveryStore>,
        id: DeliveryId,
        keep_until: DateTime<Utc>,
    ) -> Self {
        Self {
            store,
            id,
            keep_until,
            settled: false,
        }
    }

    /// Records the outcome: handled (the handler answered 2xx) until the delivery leaves the
    /// freshness window, or released for a retry.
    pub(crate) fn settle(mut self, handled: bool) -> StoreFuture<Result<(), StoreError>> {
        self.settled = true;
        if handled {
            self.store.complete(self.id, self.keep_until)
        } else {
            self.store.release(self.id)
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        tracing::debug!("request ended before its handler finished; releasing the delivery");
        let mut release = self.store.release(self.id);
        // An in-memory store finishes on the first poll: no task needed.
        let first = release
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        if let Poll::Ready(result) = first {
            log_failure(result);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { log_failure(release.await) });
            }
            Err(_) => tracing::warn!(
                "no tokio runtime to finish releasing a delivery; its claim lapses when its \
                 lease runs out"
            ),
        }
    }
}

fn log_failure(result: Result<(), StoreError>) {
    if let Err(err) = result {
        tracing::warn!(
            error = %err,
            "delivery store failed to release a delivery; its claim lapses when its lease runs out"
        );
    }
}

impl fmt::Debug for ClaimGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimGuard")
            .field("id", &self.id)
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;
    use crate::replay::store::Claim;

    /// A store whose release takes 50 ms, as one over the network would.
    #[derive(Default)]
    struct SlowRelease {
        released: Arc<AtomicUsize>,
    }

    impl DeliveryStore for SlowRelease {
        fn claim(
            &self,
            _: DeliveryId,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> StoreFuture<Result<Claim, StoreError>> {
            Box::pin(async { Ok(Claim::Claimed) })
        }

        fn complete(&self, _: DeliveryId, _: DateTime<Utc>) -> StoreFuture<Result<(), StoreError>> {
            Box::pin(async { Ok(()) })
        }

        fn release(&self, _: DeliveryId) -> StoreFuture<Result<(), StoreError>> {
            let released = Arc::clone(&self.released);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                released.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }
    }

    fn id() -> DeliveryId {
        let verifier = crate::verify::Verifier::new("whsec_test").unwrap();
        verifier
            .verify(b"{}", &verifier.sign(b"{}"))
            .unwrap()
            .delivery_id()
    }

    #[tokio::test]
    async fn dropped_guard_finishes_a_slow_release() {
        let store = SlowRelease::default();
        let released = Arc::clone(&store.released);
        drop(ClaimGuard::new(Arc::new(store), id(), DateTime::UNIX_EPOCH));
        assert_eq!(released.load(Ordering::SeqCst), 0, "not released yet");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn settled_guard_does_not_release_again() {
        let store = SlowRelease::default();
        let released = Arc::clone(&store.released);
        let guard = ClaimGuard::new(Arc::new(store), id(), DateTime::UNIX_EPOCH);
        guard.settle(true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(released.load(Ordering::SeqCst), 0);
    }
}
