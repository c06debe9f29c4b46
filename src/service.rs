//! [`RingyoWebhook`]: the cheap decisions, made before any body byte is read.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{header, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::{
    body::{ResponseBody, VerifiedBody},
    error::Rejection,
    future::ResponseFuture,
    layer::Config,
    verify::Signature,
};

/// The service made by [`RingyoWebhookLayer`](crate::RingyoWebhookLayer).
///
/// Cheap to clone: the configuration is shared behind an `Arc`.
#[derive(Clone, Debug)]
pub struct RingyoWebhook<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> RingyoWebhook<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RingyoWebhook<S>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
    ReqBody::Error: std::fmt::Display,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let span = tracing::info_span!(
            "ringyo_webhook",
            event = tracing::field::Empty,
            outcome = tracing::field::Empty,
            reason = tracing::field::Empty,
            status = tracing::field::Empty,
            secret_index = tracing::field::Empty,
            delivery_id = tracing::field::Empty,
        );

        let signature = match Signature::from_headers(req.headers()) {
            Ok(signature) => signature,
            Err(err) => {
                let config = Arc::clone(&self.config);
                return ResponseFuture::rejected(Rejection::from(err), config, span);
            }
        };
        let limit = self.config.body_limit;
        if declared_length(&req) > limit as u64 {
            let config = Arc::clone(&self.config);
            return ResponseFuture::rejected(Rejection::too_large(limit), config, span);
        }

        // The body is read before the inner service is called, so take the service that
        // `poll_ready` readied and leave a clone in its place (tower's advice for this case).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::buffering(req, inner, signature, Arc::clone(&self.config), span)
    }
}

/// The body length the request announces: its `Content-Length`, or the body's own lower bound.
fn declared_length<B: Body>(req: &Request<B>) -> u64 {
    let header = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    header.max(req.body().size_hint().lower())
}
