//! [`ResponseFuture`]: buffers and verifies the body, checks freshness and duplicates, then
//! runs the inner service.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll, Waker},
};

use bytes::{Buf, Bytes};
use chrono::{DateTime, Utc};
use http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Span;

use crate::{
    body::{ResponseBody, VerifiedBody},
    buffer::Buffer,
    envelope::{EnvelopeError, Head},
    error::{Rejection, RejectionKind},
    layer::Config,
    payload::VerifiedPayload,
    replay::after,
    store::{Claim, DeliveryStore, StoreError, StoreFuture},
    verify::{DeliveryId, Signature, Verified, SIGNATURE_HEADER},
};

/// The header on a 200 that answers an already handled delivery without running the handler.
pub const DUPLICATE_HEADER: HeaderName = HeaderName::from_static("x-webhook-duplicate");

pin_project! {
    /// The response future of [`RingyoWebhook`](crate::RingyoWebhook).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<VerifiedBody>>,
    {
        #[pin]
        state: ServiceState<S, B>,
        config: Arc<Config>,
        // Held while the handler runs on a claimed delivery; dropping it releases the claim.
        claim: Option<ClaimGuard>,
        span: Span,
    }
}

/// The state of a future for service `S` over request body `B`.
type ServiceState<S, B> = State<
    S,
    <S as Service<Request<VerifiedBody>>>::Future,
    B,
    Result<
        <S as Service<Request<VerifiedBody>>>::Response,
        <S as Service<Request<VerifiedBody>>>::Error,
    >,
>;

pin_project! {
    #[project = StateProj]
    enum State<S, F, B, Out> {
        Respond {
            response: Option<Response<Bytes>>,
        },
        Buffering {
            #[pin]
            body: B,
            buffer: Buffer,
            // `Option`s so they can be moved out of the pinned state when it ends.
            parts: Option<Parts>,
            inner: Option<S>,
            signature: Signature,
        },
        Claiming {
            claim: StoreFuture<Result<Claim, StoreError>>,
            request: Option<Request<VerifiedBody>>,
            inner: Option<S>,
            id: DeliveryId,
            keep_until: DateTime<Utc>,
        },
        Calling {
            #[pin]
            future: F,
        },
        Settling {
            settle: StoreFuture<Result<(), StoreError>>,
            output: Option<Out>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    pub(crate) fn rejected(rejection: Rejection, config: Arc<Config>, span: Span) -> Self {
        let response = span.in_scope(|| reject(rejection, &span));
        Self {
            state: State::Respond {
                response: Some(response),
            },
            config,
            claim: None,
            span,
        }
    }

    pub(crate) fn buffering(
        req: Request<B>,
        inner: S,
        signature: Signature,
        config: Arc<Config>,
        span: Span,
    ) -> Self
    where
        B: Body,
    {
        let (parts, body) = req.into_parts();
        let expected = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
        Self {
            state: State::Buffering {
                body,
                buffer: Buffer::new(expected.min(config.body_limit)),
                parts: Some(parts),
                inner: Some(inner),
                signature,
            },
            config,
            claim: None,
            span,
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    B: Body,
    B::Error: fmt::Display,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let config = &**this.config;
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Respond { response } => {
                    let response = response.take().expect("future polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::rejection)));
                }
                StateProj::Buffering {
                    mut body,
                    buffer,
                    parts,
                    inner,
                    signature,
                } => {
                    let read = loop {
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                let Ok(mut data) = frame.into_data() else {
                                    continue; // trailers carry nothing that is signed
                                };
                                let chunk = data.copy_to_bytes(data.remaining());
                                if buffer.push(chunk, config.body_limit).is_err() {
                                    break Err(Rejection::too_large(config.body_limit));
                                }
                            }
                            Some(Err(err)) => {
                                tracing::debug!(error = %err, "the request body failed mid-read");
                                break Err(Rejection::new(
                                    RejectionKind::BodyReadFailed,
                                    "the request body could not be read to its end",
                                ));
                            }
                            None => break Ok(std::mem::take(buffer).finish()),
                        }
                    };
                    let parts = parts.take().expect("future polled after completion");
                    let inner = inner.take().expect("future polled after completion");
                    match read.and_then(|bytes| verify(config, &parts.headers, bytes, signature)) {
                        Ok((bytes, verified)) => {
                            admit(config, this.span, parts, bytes, verified, inner)
                        }
                        Err(rejection) => respond(reject(rejection, this.span)),
                    }
                }
                StateProj::Claiming {
                    claim,
                    request,
                    inner,
                    id,
                    keep_until,
                } => {
                    let claim = ready!(claim.as_mut().poll(cx));
                    match claim {
                        Ok(Claim::Claimed) => {
                            let store = Arc::clone(config.store.as_ref().expect("claimed"));
                            *this.claim = Some(ClaimGuard::new(store, *id, *keep_until));
                            let request = request.take().expect("future polled after completion");
                            let mut inner = inner.take().expect("future polled after completion");
                            State::Calling {
                                future: inner.call(request),
                            }
                        }
                        Ok(Claim::Handled) => respond(duplicate(this.span)),
                        Ok(Claim::InFlight) => respond(reject(
                            Rejection::new(
                                RejectionKind::DeliveryInProgress,
                                "this delivery is being handled by another request; retry later",
                            ),
                            this.span,
                        )),
                        Err(err) => {
                            tracing::error!(error = %err, "delivery store failed to claim a delivery");
                            respond(reject(
                                Rejection::new(
                                    RejectionKind::StoreUnavailable,
                                    "the receiver cannot check for duplicate deliveries right now; retry later",
                                ),
                                this.span,
                            ))
                        }
                    }
                }
                StateProj::Calling { future } => {
                    let output = ready!(future.poll(cx));
                    let handled = output
                        .as_ref()
                        .is_ok_and(|response| response.status().is_success());
                    if let Ok(response) = &output {
                        record_handled(this.span, response.status());
                    }
                    match this.claim.take() {
                        Some(claim) => State::Settling {
                            settle: claim.settle(handled),
                            output: Some(output),
                        },
                        None => return Poll::Ready(finish(output)),
                    }
                }
                StateProj::Settling { settle, output } => {
                    if let Err(err) = ready!(settle.as_mut().poll(cx)) {
                        // The answer stands; the claim's lease will run out by itself.
                        tracing::error!(error = %err, "delivery store failed to record an outcome");
                    }
                    let output = output.take().expect("future polled after completion");
                    return Poll::Ready(finish(output));
                }
            };
            this.state.set(next);
        }
    }
}

fn respond<S, F, B, Out>(response: Response<Bytes>) -> State<S, F, B, Out> {
    State::Respond {
        response: Some(response),
    }
}

fn finish<R, E>(output: Result<Response<R>, E>) -> Result<Response<ResponseBody<R>>, E> {
    output.map(|response| response.map(ResponseBody::inner))
}

/// Checks the signature over the whole body.
fn verify(
    config: &Config,
    headers: &HeaderMap,
    bytes: Bytes,
    signature: &Signature,
) -> Result<(Bytes, Verified), Rejection> {
    match config.verifier.verify(&bytes, signature) {
        Ok(verified) => Ok((bytes, verified)),
        Err(err) => {
            log_mismatch(headers, bytes.len(), config);
            Err(Rejection::from(err))
        }
    }
}

/// What follows a good signature: the freshness check, then the store or the handler.
fn admit<S, B>(
    config: &Config,
    span: &Span,
    mut parts: Parts,
    bytes: Bytes,
    verified: Verified,
    mut inner: S,
) -> ServiceState<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    // Only `event` and `timestamp`: the extractor parses the rest, in one pass.
    let head = Head::scan(&bytes);
    span.record("secret_index", verified.secret_index());
    // The id costs a short hash: only when a subscriber wants it.
    if !span.is_disabled() {
        span.record(
            "delivery_id",
            tracing::field::display(verified.delivery_id()),
        );
    }
    if let Ok(Head {
        kind: Some(kind), ..
    }) = &head
    {
        span.record("event", kind.as_str());
    }

    let now = config.clock.now();
    let timestamp = head.and_then(|head| head.timestamp());
    let keep_until = match (&config.tolerance, timestamp) {
        (Some(tolerance), Ok(timestamp)) => {
            if let Err(out) = tolerance.check(timestamp, now) {
                let rejection =
                    Rejection::new(RejectionKind::TimestampOutOfTolerance, out.to_string());
                return respond(reject(rejection, span));
            }
            tolerance.expiry(timestamp)
        }
        (Some(_), Err(err)) => {
            let kind = match err {
                EnvelopeError::Syntax { .. } => RejectionKind::InvalidJson,
                _ => RejectionKind::InvalidTimestamp,
            };
            let message = format!("the timestamp check needs the envelope's `timestamp`: {err}");
            return respond(reject(Rejection::new(kind, message), span));
        }
        // Without the check, replays are accepted anyway; remember for the default window.
        (None, _) => after(now, crate::RingyoWebhookLayer::DEFAULT_MAX_AGE),
    };

    parts
        .extensions
        .insert(VerifiedPayload::new(bytes.clone(), verified));
    let request = Request::from_parts(parts, VerifiedBody::new(bytes));
    match &config.store {
        Some(store) => {
            let id = verified.delivery_id();
            let lease_until = after(now, config.claim_lease);
            State::Claiming {
                claim: store.claim(id, now, lease_until),
                request: Some(request),
                inner: Some(inner),
                id,
                keep_until,
            }
        }
        None => State::Calling {
            future: inner.call(request),
        },
    }
}

/// A claim on a delivery while its handler runs. Dropped unsettled (the handler panicked, the
/// connection went away), it releases the claim so a retry runs the handler again.
struct ClaimGuard {
    store: Arc<dyn DeliveryStore>,
    id: DeliveryId,
    keep_until: DateTime<Utc>,
    settled: bool,
}

impl ClaimGuard {
    fn new(store: Arc<dyn DeliveryStore>, id: DeliveryId, keep_until: DateTime<Utc>) -> Self {
        Self {
            store,
            id,
            keep_until,
            settled: false,
        }
    }

    /// Records the outcome: handled (2xx) or released for a retry.
    fn settle(mut self, handled: bool) -> StoreFuture<Result<(), StoreError>> {
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
        // Drop cannot await: poll the release once, which finishes an in-memory store's; a
        // store that needs longer relies on the claim's lease running out.
        let mut release = self.store.release(self.id);
        let _ = release
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
    }
}

fn record_handled(span: &Span, status: http::StatusCode) {
    span.record("status", status.as_u16());
    let outcome = if status.is_success() {
        "handled"
    } else {
        "handler_error"
    };
    span.record("outcome", outcome);
    tracing::debug!(status = status.as_u16(), "verified delivery {outcome}");
}

fn reject(rejection: Rejection, span: &Span) -> Response<Bytes> {
    span.record("outcome", "rejected");
    span.record("reason", rejection.code());
    span.record("status", rejection.status().as_u16());
    if rejection.kind() == RejectionKind::TimestampOutOfTolerance {
        // Each one is a replay or an event lost to a too-narrow window: worth a look.
        tracing::warn!(reason = rejection.code(), "rejected delivery: {rejection}");
    } else {
        tracing::debug!(reason = rejection.code(), "rejected delivery: {rejection}");
    }
    rejection.to_response()
}

fn duplicate(span: &Span) -> Response<Bytes> {
    span.record("outcome", "duplicate");
    span.record("status", 200);
    tracing::debug!("delivery already handled; answering 200 without running the handler");
    let mut response = Response::new(Bytes::new());
    response
        .headers_mut()
        .insert(DUPLICATE_HEADER, HeaderValue::from_static("true"));
    response
}

/// Says, at debug level, what helps find why a well-formed signature did not match, without
/// the secret, the body or the signature itself.
fn log_mismatch(headers: &HeaderMap, body_len: usize, config: &Config) {
    let header = headers
        .get(SIGNATURE_HEADER)
        .map_or(&[][..], |value| value.as_bytes().trim_ascii());
    let prefixed = header
        .get(..7)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"sha256="));
    let hex = if prefixed { &header[7..] } else { header };
    tracing::debug!(
        body_len,
        header_len = header.len(),
        header_has_sha256_prefix = prefixed,
        header_hex_has_uppercase = hex.iter().any(u8::is_ascii_uppercase),
        content_encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|value| value.to_str().ok()),
        secrets_tried = config.verifier.secret_count(),
        "signature mismatch. Usual causes: something between Ringyo and this layer changed the \
         body (a proxy that re-encoded it, or a framework that parsed and re-serialized the \
         JSON: verification must see the raw bytes), or the secret belongs to another endpoint"
    );
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Respond { .. } => "Respond",
            State::Buffering { .. } => "Buffering",
            State::Claiming { .. } => "Claiming",
            State::Calling { .. } => "Calling",
            State::Settling { .. } => "Settling",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
