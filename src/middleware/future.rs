//! [`ResponseFuture`]: a state machine that buffers the body, asks the
//! [admission decision](super::admit) what to do, and runs the inner service.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{request::Parts, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Span;

use super::{
    admit::{self, Admitted, ClaimTicket, ClaimVerdict},
    body::{RequestBody, ResponseBody},
    buffer::{self, BoxError, Buffer},
    config::{Config, RequestSecrets},
    trace::{self, Cause},
};
use crate::{
    metrics::record::{self, HandlerTimer, Stopwatch, Tally},
    middleware::DUPLICATE_HEADER,
    rejection::{Rejection, RejectionKind},
    replay::{Claim, ClaimCall, ClaimGuard, SettleCall, StoreError},
    secrets::{LookupError, Resolved},
    verify::Signature,
};

/// A secret source's lookup in progress.
type PendingLookup = Pin<Box<dyn Future<Output = Result<Resolved, LookupError>> + Send>>;

/// A request on its way to the inner service, before its body is read.
pub(super) struct Next<S, B> {
    parts: Parts,
    body: B,
    inner: S,
    signature: Signature,
}

impl<S, B> Next<S, B> {
    pub(super) fn new(parts: Parts, body: B, inner: S, signature: Signature) -> Self {
        Self {
            parts,
            body,
            inner,
            signature,
        }
    }
}

pin_project! {
    /// The response future of [`RingyoWebhook`](super::RingyoWebhook). See the
    /// [module docs](super) for an example.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RequestBody>>,
    {
        #[pin]
        state: ServiceState<S, B>,
        config: Arc<Config>,
        span: Span,
        tally: Tally,
    }

    impl<S, B> PinnedDrop for ResponseFuture<S, B>
    where
        S: Service<Request<RequestBody>>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Rejections and duplicates are counted when decided, answers when they come.
            let uncounted = matches!(
                &*this.state,
                State::Resolving { .. }
                    | State::Buffering { .. }
                    | State::Claiming { .. }
                    | State::Calling { .. }
            );
            this.tally.dropped(uncounted);
        }
    }
}

/// The state of a future for service `S` over request body `B`.
type ServiceState<S, B> = State<
    S,
    <S as Service<Request<RequestBody>>>::Future,
    B,
    Result<
        <S as Service<Request<RequestBody>>>::Response,
        <S as Service<Request<RequestBody>>>::Error,
    >,
>;

pin_project! {
    #[project = StateProj]
    enum State<S, F, B, Out> {
        /// Answer without the inner service: a rejection, or a duplicate.
        Respond {
            response: Option<Response<Bytes>>,
        },
        /// Waiting for the secret source's lookup, before the body is read.
        Resolving {
            lookup: PendingLookup,
            next: Option<Next<S, B>>,
        },
        /// Reading the body, up to the limit.
        Buffering {
            #[pin]
            body: B,
            buffer: Buffer,
            // `Option`s so they can be moved out of the pinned state when it ends.
            parts: Option<Parts>,
            inner: Option<S>,
            signature: Signature,
            secrets: Option<RequestSecrets>,
            started: Stopwatch,
        },
        /// Asking the delivery store for the claim.
        Claiming {
            #[pin]
            claim: ClaimCall,
            next: Option<(Request<RequestBody>, S, ClaimTicket, HandlerTimer)>,
        },
        /// Running the inner service, holding the claim (if any) until it answers: dropped
        /// with this state, the guard releases the claim.
        Calling {
            #[pin]
            future: F,
            guard: Option<ClaimGuard>,
            timer: HandlerTimer,
        },
        /// Recording the handler's outcome in the store, with the answer waiting.
        Settling {
            #[pin]
            settle: SettleCall,
            output: Option<Out>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<RequestBody>>,
{
    pub(super) fn rejected(rejection: &Rejection, config: Arc<Config>, span: Span) -> Self {
        span.in_scope(|| trace::rejected(&span, rejection, Cause::None));
        Self {
            state: respond(rejection.to_response()),
            config,
            span,
            tally: Tally::default(),
        }
    }

    pub(super) fn buffering(
        next: Next<S, B>,
        secrets: RequestSecrets,
        config: Arc<Config>,
        span: Span,
    ) -> Self
    where
        B: Body,
    {
        Self {
            state: buffer_body(next, secrets, &config),
            config,
            span,
            tally: Tally::default(),
        }
    }

    /// Waits for `lookup` before reading the body.
    pub(super) fn resolving(
        lookup: PendingLookup,
        next: Next<S, B>,
        config: Arc<Config>,
        span: Span,
    ) -> Self {
        Self {
            state: State::Resolving {
                lookup,
                next: Some(next),
            },
            config,
            span,
            tally: Tally::default(),
        }
    }

    /// Answers 503 `secrets_unavailable`: the source could not say which secrets apply.
    pub(super) fn lookup_failed(err: &LookupError, config: Arc<Config>, span: Span) -> Self {
        let state = span.in_scope(|| lookup_failed(&config, &span, err));
        Self {
            state,
            config,
            span,
            tally: Tally::default(),
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<RequestBody>, Response = Response<ResBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        this.tally.polling(true);
        let output = poll_state(this.state, this.config, this.span, cx);
        this.tally.polling(false);
        if output.is_ready() {
            this.tally.finished();
        }
        output
    }
}

/// Drives the state machine until it answers or waits.
fn poll_state<S, B, ResBody>(
    mut state: Pin<&mut ServiceState<S, B>>,
    config: &Config,
    span: &Span,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResponseBody<ResBody>>, S::Error>>
where
    S: Service<Request<RequestBody>, Response = Response<ResBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    loop {
        let next = match state.as_mut().project() {
            StateProj::Respond { response } => {
                let response = take(response).map(ResponseBody::own);
                return Poll::Ready(Ok(response));
            }
            StateProj::Resolving { lookup, next } => match ready!(lookup.as_mut().poll(cx)) {
                Ok(resolved) => {
                    lookup_succeeded(config);
                    buffer_body(take(next), RequestSecrets::Found(resolved), config)
                }
                Err(err) => lookup_failed(config, span, &err),
            },
            StateProj::Buffering {
                body,
                buffer,
                parts,
                inner,
                signature,
                secrets,
                started,
            } => {
                let read = ready!(buffer::poll_collect(body, buffer, cx));
                record::body_read(*started);
                let (parts, inner, secrets) = (take(parts), take(inner), take(secrets));
                after_body(config, span, parts, inner, read, signature, secrets)
            }
            StateProj::Claiming { claim, next } => {
                let claim = ready!(claim.poll(cx));
                let (request, inner, ticket, timer) = take(next);
                after_claim(config, span, &claim, request, inner, ticket, timer)
            }
            StateProj::Calling {
                future,
                guard,
                timer,
            } => {
                let output = ready!(future.poll(cx));
                answered(span, *timer, &output);
                let Some(guard) = guard.take() else {
                    return Poll::Ready(finish(output));
                };
                State::Settling {
                    settle: guard.settle(admit::is_handled(&output)),
                    output: Some(output),
                }
            }
            StateProj::Settling { settle, output } => {
                ready!(settle.poll(cx));
                return Poll::Ready(finish(take(output)));
            }
        };
        state.set(next);
    }
}

/// Starts reading the body of `next`, to verify it with `secrets`.
fn buffer_body<S, F, B: Body, Out>(
    next: Next<S, B>,
    secrets: RequestSecrets,
    config: &Config,
) -> State<S, F, B, Out> {
    let expected = usize::try_from(next.body.size_hint().lower()).unwrap_or(usize::MAX);
    State::Buffering {
        body: next.body,
        buffer: Buffer::new(expected, config.body_limit, config.discard_time),
        parts: Some(next.parts),
        inner: Some(next.inner),
        signature: next.signature,
        secrets: Some(secrets),
        started: Stopwatch::start(),
    }
}

/// The source failed: answered 503, logged at error once per outage with its error (which
/// names no secret), at debug for each request while it lasts.
fn lookup_failed<S, F, B, Out>(
    config: &Config,
    span: &Span,
    err: &LookupError,
) -> State<S, F, B, Out> {
    if config.lookup_health.failed() {
        tracing::error!("{err}; answering 503 secrets_unavailable until lookups work again");
    } else {
        tracing::debug!("rejected delivery: {err}; answering 503 so Ringyo retries");
    }
    let rejection = Rejection::new(RejectionKind::SecretsUnavailable);
    reject(span, &rejection, Cause::Logged)
}

/// The source answered: logs the end of an outage, once.
pub(super) fn lookup_succeeded(config: &Config) {
    if config.lookup_health.recovered() {
        tracing::info!("secret lookups work again");
    }
}

fn respond<S, F, B, Out>(response: Response<Bytes>) -> State<S, F, B, Out> {
    State::Respond {
        response: Some(response),
    }
}

/// Logs a rejection once, and answers with it.
fn reject<S, F, B, Out>(
    span: &Span,
    rejection: &Rejection,
    cause: Cause<'_>,
) -> State<S, F, B, Out> {
    trace::rejected(span, rejection, cause);
    respond(rejection.to_response())
}

/// The body is in (or failed): admit the delivery, or refuse it.
fn after_body<S, B>(
    config: &Config,
    span: &Span,
    parts: Parts,
    inner: S,
    read: Result<Bytes, Rejection>,
    signature: &Signature,
    secrets: RequestSecrets,
) -> ServiceState<S, B>
where
    S: Service<Request<RequestBody>>,
{
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(rejection) => return reject(span, &rejection, Cause::None),
    };
    let body_len = bytes.len();
    let secret_count = secrets.keys(config).len();
    let verifying = Stopwatch::start();
    let admitted = admit::admit(config, bytes, signature, secrets);
    record::verified(verifying);
    match admitted {
        Ok(admitted) => pass(span, parts, inner, admitted),
        Err(rejection) => {
            let cause = if rejection.kind() == RejectionKind::SignatureMismatch {
                Cause::Mismatch {
                    headers: &parts.headers,
                    body_len,
                    secrets: secret_count,
                }
            } else {
                Cause::None
            };
            reject(span, &rejection, cause)
        }
    }
}

/// Hands an admitted delivery on: to the store for a claim first, if there is one, else to the
/// inner service.
fn pass<S, B>(span: &Span, mut parts: Parts, mut inner: S, admitted: Admitted) -> ServiceState<S, B>
where
    S: Service<Request<RequestBody>>,
{
    let kind = admitted.payload.head().kind();
    trace::verified(span, &admitted.payload, kind);
    let timer = HandlerTimer::start(kind);
    let body = RequestBody::new(admitted.payload.bytes().clone());
    parts.extensions.insert(admitted.payload);
    let request = Request::from_parts(parts, body);
    match admitted.claim {
        None => State::Calling {
            future: inner.call(request),
            guard: None,
            timer,
        },
        Some(ticket) => State::Claiming {
            claim: ticket.claim(),
            next: Some((request, inner, ticket, timer)),
        },
    }
}

/// The store has answered the claim: run the handler, answer as a duplicate, or refuse.
fn after_claim<S, B>(
    config: &Config,
    span: &Span,
    claim: &Result<Claim, StoreError>,
    request: Request<RequestBody>,
    mut inner: S,
    ticket: ClaimTicket,
    timer: HandlerTimer,
) -> ServiceState<S, B>
where
    S: Service<Request<RequestBody>>,
{
    trace::store_health(&config.store_health, claim, config.on_store_failure);
    match admit::claim_verdict(claim, config.on_store_failure) {
        ClaimVerdict::Run => {
            // Held before the call, so even a service that panics in `call` releases it.
            let guard = ticket.into_guard();
            State::Calling {
                future: inner.call(request),
                guard: Some(guard),
                timer: timer.restart(),
            }
        }
        ClaimVerdict::RunUnclaimed => State::Calling {
            future: inner.call(request),
            guard: None,
            timer: timer.restart(),
        },
        ClaimVerdict::Duplicate => {
            trace::duplicate(span);
            respond(admit::duplicate_response())
        }
        ClaimVerdict::Refuse(rejection) => {
            let cause = match claim {
                Err(_) => Cause::Store,
                Ok(_) => Cause::None,
            };
            reject(span, &rejection, cause)
        }
    }
}

/// Records the inner service's answer to a verified delivery.
fn answered<R, E>(span: &Span, timer: HandlerTimer, output: &Result<Response<R>, E>) {
    match output {
        Ok(response) => {
            let duplicate = response.headers().contains_key(DUPLICATE_HEADER);
            trace::handled(span, response.status(), duplicate);
            record::answered(timer, Some(response.status()), duplicate);
        }
        Err(_) => record::answered(timer, None, false),
    }
}

fn finish<R, E>(output: Result<Response<R>, E>) -> Result<Response<ResponseBody<R>>, E> {
    output.map(|response| response.map(ResponseBody::inner))
}

/// Moves a value out of a state that is about to end.
fn take<T>(slot: &mut Option<T>) -> T {
    slot.take().expect("ResponseFuture polled after completion")
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<RequestBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Respond { .. } => "Respond",
            State::Resolving { .. } => "Resolving",
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
