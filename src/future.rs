//! [`ResponseFuture`]: buffers and verifies the body, then runs the inner service.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Buf;
use http::{header, request::Parts, HeaderMap, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Span;

use crate::{
    body::{ResponseBody, VerifiedBody},
    buffer::Buffer,
    envelope::Envelope,
    error::{Rejection, RejectionKind},
    layer::Config,
    payload::VerifiedPayload,
    verify::{Signature, SIGNATURE_HEADER},
};

pin_project! {
    /// The response future of [`RingyoWebhook`](crate::RingyoWebhook).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<VerifiedBody>>,
    {
        #[pin]
        state: State<S, S::Future, B>,
        span: Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, B> {
        Rejected {
            rejection: Option<Rejection>,
        },
        Buffering {
            #[pin]
            body: B,
            buffer: Buffer,
            // `Option`s so they can be moved out of the pinned state when it ends.
            parts: Option<Parts>,
            inner: Option<S>,
            signature: Signature,
            config: Arc<Config>,
        },
        Calling {
            #[pin]
            future: F,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    pub(crate) fn rejected(rejection: Rejection, span: Span) -> Self {
        Self {
            state: State::Rejected {
                rejection: Some(rejection),
            },
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
                config,
            },
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
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Rejected { rejection } => {
                    let rejection = rejection.take().expect("future polled after completion");
                    return Poll::Ready(Ok(respond_rejected(&rejection, this.span)));
                }
                StateProj::Buffering {
                    mut body,
                    buffer,
                    parts,
                    inner,
                    signature,
                    config,
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
                    match read.and_then(|bytes| match config.verifier.verify(&bytes, signature) {
                        Ok(index) => Ok((bytes, index)),
                        Err(err) => {
                            log_mismatch(&parts.headers, bytes.len(), config);
                            Err(Rejection::from(err))
                        }
                    }) {
                        Ok((bytes, secret_index)) => {
                            let envelope = Envelope::parse(&bytes);
                            this.span.record("secret_index", secret_index);
                            if let Ok(envelope) = &envelope {
                                this.span.record("event", envelope.kind.as_str());
                            }
                            let mut parts = parts;
                            parts.extensions.insert(VerifiedPayload::new(
                                bytes.clone(),
                                secret_index,
                                envelope,
                            ));
                            let req = Request::from_parts(parts, VerifiedBody::new(bytes));
                            let mut inner = inner.take().expect("future polled after completion");
                            State::Calling {
                                future: inner.call(req),
                            }
                        }
                        Err(rejection) => State::Rejected {
                            rejection: Some(rejection),
                        },
                    }
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    if let Ok(response) = &result {
                        let status = response.status();
                        this.span.record("status", status.as_u16());
                        let outcome = if status.is_success() {
                            "handled"
                        } else {
                            "handler_error"
                        };
                        this.span.record("outcome", outcome);
                        tracing::debug!(status = status.as_u16(), "verified delivery {outcome}");
                    }
                    return Poll::Ready(result.map(|response| response.map(ResponseBody::inner)));
                }
            };
            this.state.set(next);
        }
    }
}

fn respond_rejected<B>(rejection: &Rejection, span: &Span) -> Response<ResponseBody<B>> {
    span.record("outcome", "rejected");
    span.record("reason", rejection.code());
    span.record("status", rejection.status().as_u16());
    tracing::debug!(reason = rejection.code(), "rejected delivery: {rejection}");
    rejection.to_response().map(ResponseBody::rejection)
}

/// Says, at debug level, what helps find why a well-formed signature did not match, without
/// the secret, the body or the signature itself.
fn log_mismatch(headers: &HeaderMap, body_len: usize, config: &Config) {
    let header = headers
        .get(SIGNATURE_HEADER)
        .map_or(&[][..], |value| value.as_bytes());
    tracing::debug!(
        body_len,
        header_len = header.len(),
        header_has_sha256_prefix = header.len() > 64,
        header_has_uppercase = header.iter().any(u8::is_ascii_uppercase),
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
            State::Rejected { .. } => "Rejected",
            State::Buffering { .. } => "Buffering",
            State::Calling { .. } => "Calling",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
