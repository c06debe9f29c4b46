//! Checking a route: the deliveries go through your service (your `Router`, with the layer on
//! the route) as Ringyo's requests would.

use std::{
    fmt,
    future::{poll_fn, Future},
    task::Poll,
};

use http::{Request, Response};
use tower_service::Service;

use super::{
    check::{ChaosRun, Target},
    events::Planned,
    fault::Plan,
    Chaos, ChaosFailure, ChaosFault,
};

impl<S: fmt::Debug + PartialEq> Chaos<S> {
    /// Checks `service`, your axum `Router` (or any tower service) with
    /// [`RingyoWebhookLayer`](crate::RingyoWebhookLayer) on the webhook route: every
    /// delivery must be answered 2xx, and your state must end as after one clean, in-order
    /// delivery of each event, under [`SentTwice`](ChaosFault::SentTwice),
    /// [`SentTwiceAtOnce`](ChaosFault::SentTwiceAtOnce) and
    /// [`Reordered`](ChaosFault::Reordered). A crash after your handler's effect is an answer
    /// Ringyo never saw, which it sends again: `SentTwice`; a route has no lease.
    ///
    /// The requests are [`TestDelivery::into_request`](crate::testing::TestDelivery::into_request)'s,
    /// sent at once (the layer's own clock judges their freshness; a reordering only changes
    /// their order). Key your effects on
    /// [`RingyoEvent::delivery_id`](crate::RingyoEvent) to pass.
    ///
    /// ```
    /// use std::{collections::HashSet, sync::{Arc, Mutex}};
    /// use axum::{extract::State, http::StatusCode, routing::post, Router};
    /// use ringyo_webhook::{testing::{Chaos, DEVELOPMENT_SECRET}, RingyoEvent, RingyoWebhookLayer};
    ///
    /// type Seen = Arc<Mutex<HashSet<String>>>;
    ///
    /// // Idempotent: a retry of a delivery is the same delivery id.
    /// async fn handle(State(seen): State<Seen>, event: RingyoEvent) -> StatusCode {
    ///     seen.lock().unwrap().insert(event.delivery_id.to_string());
    ///     StatusCode::NO_CONTENT
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let seen = Seen::default();
    /// let layer = RingyoWebhookLayer::new(DEVELOPMENT_SECRET).unwrap();
    /// let app = Router::new()
    ///     .route("/webhooks/ringyo", post(handle).route_layer(layer))
    ///     .with_state(Arc::clone(&seen));
    /// let (reset, read) = (Arc::clone(&seen), Arc::clone(&seen));
    /// Chaos::samples()
    ///     .setup(move |_| { reset.lock().unwrap().clear(); async {} })
    ///     .snapshot(move |_| { let n = read.lock().unwrap().len(); async move { n } })
    ///     .check_service(app)
    ///     .await
    ///     .unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChaosFailure`]: a delivery answered with other than a 2xx, or the first fault that
    /// changed the state.
    pub async fn check_service<Svc, B>(&self, service: Svc) -> Result<(), ChaosFailure>
    where
        Svc: Service<Request<String>, Response = Response<B>> + Clone,
        Svc::Error: fmt::Debug,
    {
        self.check(&Route(service)).await
    }
}

/// A service the deliveries are sent to as they arrive.
struct Route<Svc>(Svc);

impl<Svc, B> Target for Route<Svc>
where
    Svc: Service<Request<String>, Response = Response<B>> + Clone,
    Svc::Error: fmt::Debug,
{
    type World = ();

    fn suffers(&self, fault: ChaosFault) -> bool {
        !fault.in_the_worker()
    }

    fn begin<S>(&self, fault: Option<ChaosFault>, _: &Chaos<S>) -> (ChaosRun, ()) {
        let run = ChaosRun {
            fault,
            #[cfg(feature = "sqlite")]
            inbox: None,
        };
        (run, ())
    }

    async fn play(
        &self,
        (): &mut (),
        deliveries: &[Planned],
        plan: &Plan,
    ) -> Result<(), ChaosFailure> {
        for arrival in &plan.arrivals {
            send(
                &self.0,
                &deliveries[arrival.index],
                arrival.twice,
                plan.fault,
            )
            .await?;
        }
        Ok(())
    }
}

/// Sends `planned` to `service`, twice at once if `twice`; each must be answered 2xx.
pub(super) async fn send<Svc, B>(
    service: &Svc,
    planned: &Planned,
    twice: bool,
    fault: Option<ChaosFault>,
) -> Result<(), ChaosFailure>
where
    Svc: Service<Request<String>, Response = Response<B>> + Clone,
    Svc::Error: fmt::Debug,
{
    let once = || {
        let mut service = service.clone();
        let request = planned.delivery.clone().into_request();
        async move {
            poll_fn(|cx| service.poll_ready(cx))
                .await
                .unwrap_or_else(|err| panic!("the service is not ready: {err:?}"));
            let response = service.call(request).await;
            response
                .unwrap_or_else(|err| panic!("the service failed: {err:?}"))
                .status()
        }
    };
    let statuses = if twice {
        let (first, second) = both(once(), once()).await;
        vec![first, second]
    } else {
        vec![once().await]
    };
    match statuses.into_iter().find(|status| !status.is_success()) {
        Some(status) => Err(ChaosFailure::refused(
            fault,
            &planned.described,
            status.as_u16(),
        )),
        None => Ok(()),
    }
}

/// Both futures, polled together in this task, as `join` does (tokio's macro is not among
/// this build's features without the inbox).
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (Box::pin(a), Box::pin(b));
    let (mut first, mut second) = (None, None);
    poll_fn(|cx| {
        if first.is_none() {
            if let Poll::Ready(out) = a.as_mut().poll(cx) {
                first = Some(out);
            }
        }
        if second.is_none() {
            if let Poll::Ready(out) = b.as_mut().poll(cx) {
                second = Some(out);
            }
        }
        match (first.take(), second.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (first, second) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}
