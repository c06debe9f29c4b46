//! [`Inbox`] as a tower service: the endpoint behind the layer that stores each verified
//! delivery.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tower_service::Service;

use super::{handle::Inbox, store::Stored};
use crate::{
    extract::payload,
    middleware::DUPLICATE_HEADER,
    rejection::{Rejection, RejectionKind},
};

/// The response future of [`Inbox`] as a service. Boxed: it awaits a database commit, next to
/// which one allocation is nothing.
pub type InboxResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

/// Stores the delivery [`RingyoWebhookLayer`](crate::RingyoWebhookLayer) verified, and answers
/// once it is durable; see [`Inbox`] for the answers.
impl<B> Service<Request<B>> for Inbox {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = InboxResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Only the extension is needed: the body's bytes are the payload's, already buffered.
        let payload = payload(request.extensions()).cloned();
        let inbox = self.clone();
        Box::pin(async move {
            let payload = match payload {
                Ok(payload) => payload,
                Err(rejection) => return Ok(rejection.to_response().map(Full::new)),
            };
            Ok(match inbox.accept(&payload).await {
                Ok(stored) => answer(stored),
                Err(err) => {
                    tracing::warn!(
                        delivery_id = %payload.delivery_id(),
                        "delivery not stored ({err}); answering 503 so Ringyo retries"
                    );
                    Rejection::new(RejectionKind::InboxUnavailable)
                        .to_response()
                        .map(Full::new)
                }
            })
        })
    }
}

/// The answer for a stored delivery.
fn answer(stored: Stored) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    match stored {
        Stored::New => *response.status_mut() = StatusCode::ACCEPTED,
        Stored::Duplicate => {
            response
                .headers_mut()
                .insert(DUPLICATE_HEADER, HeaderValue::from_static("true"));
        }
    }
    response
}
