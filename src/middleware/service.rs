//! [`RingyoWebhook`]: the cheap decisions, made before any body byte is read.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{
    admit,
    body::{RequestBody, ResponseBody},
    buffer::BoxError,
    config::{Config, RequestSecrets},
    future::{self, Next, ResponseFuture},
    trace,
};
use crate::secrets::Lookup;

/// The service made by [`RingyoWebhookLayer`](crate::RingyoWebhookLayer); see there for what
/// it checks.
///
/// Cheap to clone: the configuration is shared behind an `Arc`. See the [module docs](super)
/// for an example.
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
    S: Service<Request<RequestBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let span = trace::span();
        let config = Arc::clone(&self.config);
        let signature = match admit::precheck(&req, config.body_limit) {
            Ok(signature) => signature,
            Err(rejection) => return ResponseFuture::rejected(&rejection, config, span),
        };
        // The body is read before the inner service is called, so take the service that
        // `poll_ready` readied and leave a clone in its place (tower's advice for this case).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        let Some(source) = &config.source else {
            let next = Next::new(parts, body, inner, signature);
            return ResponseFuture::buffering(next, RequestSecrets::Fixed, config, span);
        };
        let next = |parts| Next::new(parts, body, inner, signature);
        match source.lookup(&parts) {
            Lookup::Ready(Ok(resolved)) => {
                future::lookup_succeeded(&config);
                let secrets = RequestSecrets::Found(resolved);
                ResponseFuture::buffering(next(parts), secrets, config, span)
            }
            Lookup::Ready(Err(err)) => ResponseFuture::lookup_failed(&err, config, span),
            Lookup::Pending(lookup) => ResponseFuture::resolving(lookup, next(parts), config, span),
        }
    }
}
