//! The store calls the layer makes around a handler, each carried to its end on every path:
//! [`ClaimCall`] (the claim), [`ClaimGuard`] (held while the handler runs) and [`SettleCall`]
//! (recording the outcome).
//!
//! A request can end at any await: the client goes away, an outer time-out drops it, the handler
//! panics. A store call dropped half-way may still take effect on a shared store (Redis, SQL),
//! so none is simply dropped: what is left runs on the tokio runtime, and a claim granted to a
//! request that is gone is released.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll, Waker},
};

use chrono::{DateTime, Utc};

use super::store::{Claim, ClaimToken, DeliveryStore, StoreError, StoreFuture};
use crate::verify::DeliveryId;

/// A claim being asked for. Dropped before the store answers, it lets the call finish and
/// releases the claim if it was granted, so no claim outlives its request.
pub(crate) struct ClaimCall {
    future: Option<StoreFuture<Result<Claim, StoreError>>>,
    store: Arc<dyn DeliveryStore>,
    id: DeliveryId,
    token: ClaimToken,
}

impl ClaimCall {
    pub(crate) fn new(
        store: Arc<dyn DeliveryStore>,
        id: DeliveryId,
        token: ClaimToken,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Self {
        Self {
            future: Some(store.claim(id, token, now, lease_until)),
            store,
            id,
            token,
        }
    }
}

impl Future for ClaimCall {
    type Output = Result<Claim, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending; // finished: the layer never polls it again
        };
        let claim = ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(claim)
    }
}

impl Drop for ClaimCall {
    fn drop(&mut self) {
        let Some(claim) = self.future.take() else {
            return;
        };
        let (store, id, token) = (Arc::clone(&self.store), self.id, self.token);
        finish_in_background(async move {
            if let Ok(Claim::Claimed) = claim.await {
                log_release(store.release(id, token).await);
            }
        });
    }
}

/// A claim on a delivery while its handler runs.
///
/// [`settle`](Self::settle) records the outcome. Dropped unsettled (the handler panicked, the
/// client went away, a time-out dropped the request), it releases the claim so a retry runs the
/// handler again; the release runs on the tokio runtime, since `Drop` cannot await.
pub(crate) struct ClaimGuard {
    store: Arc<dyn DeliveryStore>,
    id: DeliveryId,
    token: ClaimToken,
    keep_until: DateTime<Utc>,
    settled: bool,
}

impl ClaimGuard {
    pub(crate) fn new(
        store: Arc<dyn DeliveryStore>,
        id: DeliveryId,
        token: ClaimToken,
        keep_until: DateTime<Utc>,
    ) -> Self {
        Self {
            store,
            id,
            token,
            keep_until,
            settled: false,
        }
    }

    /// Records the outcome: handled (the handler answered 2xx) until the delivery leaves the
    /// freshness window, or released for a retry.
    pub(crate) fn settle(mut self, handled: bool) -> SettleCall {
        self.settled = true;
        let future = if handled {
            self.store.complete(self.id, self.token, self.keep_until)
        } else {
            self.store.release(self.id, self.token)
        };
        SettleCall {
            future: Some(future),
            handled,
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        tracing::debug!("request ended before its handler finished; releasing the delivery");
        let release = self.store.release(self.id, self.token);
        finish_in_background(async move { log_release(release.await) });
    }
}

/// The outcome being recorded. Dropped before the store answers (the client went away while
/// it was written), it lets the call finish in the background.
pub(crate) struct SettleCall {
    future: Option<StoreFuture<Result<(), StoreError>>>,
    handled: bool,
}

impl Future for SettleCall {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Ready(());
        };
        let result = ready!(future.as_mut().poll(cx));
        self.future = None;
        log_settle(result, self.handled);
        Poll::Ready(())
    }
}

impl Drop for SettleCall {
    fn drop(&mut self) {
        if let Some(settle) = self.future.take() {
            let handled = self.handled;
            finish_in_background(async move { log_settle(settle.await, handled) });
        }
    }
}

/// Runs what is left of a store call on the tokio runtime.
///
/// Without a runtime (the layer outside tokio), one poll finishes an in-memory store's work; a
/// store that needs more relies on the claim's lease running out.
fn finish_in_background(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
        return;
    }
    // A store future polled outside a runtime may panic (tokio's timers do); never risk that
    // while a panic is already unwinding, which would abort the process.
    if !std::thread::panicking() {
        let mut task = std::pin::pin!(task);
        let done = task
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready();
        if done {
            return;
        }
    }
    tracing::warn!(
        "no tokio runtime to finish a delivery store call; the claim lapses when its lease runs out"
    );
}

fn log_release(result: Result<(), StoreError>) {
    log_settle(result, false);
}

/// Logs a store that failed to record an outcome. The answer already given stands.
fn log_settle(result: Result<(), StoreError>, handled: bool) {
    if let Err(err) = result {
        let what = if handled { "handled" } else { "released" };
        tracing::error!(
            error = %err,
            "delivery store failed to record the delivery as {what}; the answer stands, and \
             the claim lapses when its lease runs out"
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
            _: ClaimToken,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> StoreFuture<Result<Claim, StoreError>> {
            Box::pin(async { Ok(Claim::Claimed) })
        }

        fn complete(
            &self,
            _: DeliveryId,
            _: ClaimToken,
            _: DateTime<Utc>,
        ) -> StoreFuture<Result<(), StoreError>> {
            Box::pin(async { Ok(()) })
        }

        fn release(&self, _: DeliveryId, _: ClaimToken) -> StoreFuture<Result<(), StoreError>> {
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
        drop(ClaimGuard::new(
            Arc::new(store),
            id(),
            ClaimToken::new(),
            DateTime::UNIX_EPOCH,
        ));
        assert_eq!(released.load(Ordering::SeqCst), 0, "not released yet");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn settled_guard_does_not_release_again() {
        let store = SlowRelease::default();
        let released = Arc::clone(&store.released);
        let guard = ClaimGuard::new(
            Arc::new(store),
            id(),
            ClaimToken::new(),
            DateTime::UNIX_EPOCH,
        );
        guard.settle(true).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(released.load(Ordering::SeqCst), 0);
    }
}
