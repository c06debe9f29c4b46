//! A Ringyo webhook receiver: verify, acknowledge fast, process in the background.
//!
//! ```text
//! cargo run --example receiver
//! ```
//!
//! Reads `RINGYO_WEBHOOK_SECRET` (without it, starts with a development secret that it prints)
//! and `RINGYO_BIND` (default `127.0.0.1:3000`), and serves `POST /webhooks/ringyo`. With
//! `RINGYO_REDIS_URL` (and `--features redis`) replicas share one delivery store in Redis. Each
//! verified event is queued on a bounded channel and answered 202 at once, as Ringyo asks
//! (answer within 5 s, do heavy work in the background); a background task logs it. When the
//! queue is full the answer is 503, so Ringyo retries later instead of the event being dropped.
//! Stale timestamps are refused, and a delivery store answers Ringyo's retries of an event
//! already queued with 200 without queueing it twice.
//! Ctrl-C or SIGTERM stops accepting connections, finishes in-flight requests, and drains the
//! queue before exiting.

use std::{env::VarError, future::Future, net::SocketAddr, process::ExitCode, time::Duration};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use ringyo_webhook::{Event, MemoryDeliveryStore, RingyoEvent, RingyoWebhookLayer, SecretError};
use tokio::{net::TcpListener, sync::mpsc};
use tower_http::timeout::TimeoutLayer;

/// The path Ringyo is configured to POST to.
pub(crate) const PATH: &str = "/webhooks/ringyo";

/// The secret used when `RINGYO_WEBHOOK_SECRET` is unset, so the example runs out of the box.
/// It is public (the `send` example and the test kit sign with it): never use it in production.
pub(crate) const DEVELOPMENT_SECRET: &str = "whsec_ringyo_local_development_only";

/// Where the receiver listens unless `RINGYO_BIND` says otherwise.
const DEFAULT_BIND: &str = "127.0.0.1:3000";

/// How many verified events may wait for the background task.
const QUEUE_CAPACITY: usize = 1024;

/// How long one request may take, body included. Ringyo gives up after 5 s; the bound keeps a
/// peer that trickles its body from holding a request, or a graceful shutdown, for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ringyo_webhook=debug".into()),
        )
        .init();
    match start().await {
        Ok(()) => {
            tracing::info!("queue drained, bye");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            // A sentence for the person at the terminal, not a `Debug` dump.
            eprintln!("error: {problem}");
            ExitCode::FAILURE
        }
    }
}

async fn start() -> Result<(), String> {
    let layer = layer_from(std::env::var("RINGYO_WEBHOOK_SECRET"))?;
    let layer = with_store(layer, std::env::var("RINGYO_REDIS_URL").ok())?;
    let bind = bind_from(std::env::var("RINGYO_BIND").ok())?;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|err| cannot_listen(bind, &err))?;
    let addr = listener.local_addr().map_err(|err| err.to_string())?;
    tracing::info!("listening on http://{addr}{PATH}");
    run(
        listener,
        layer,
        QUEUE_CAPACITY,
        log_event,
        shutdown_signal(),
    )
    .await
    .map_err(|err| format!("the receiver stopped: {err}"))
}

/// The layer for the secret in `RINGYO_WEBHOOK_SECRET`, or the development secret if it is
/// unset. Freshness is checked by default (events up to an hour old).
pub(crate) fn layer_from(secret: Result<String, VarError>) -> Result<RingyoWebhookLayer, String> {
    let secret = match secret {
        Ok(secret) => secret,
        // Only an unset variable falls back; a garbled one must not become a public secret.
        Err(VarError::NotPresent) => {
            tracing::warn!(
                "RINGYO_WEBHOOK_SECRET is not set: using the development secret \
                 {DEVELOPMENT_SECRET:?}. Anyone who reads this can sign events; never use it \
                 in production"
            );
            DEVELOPMENT_SECRET.to_owned()
        }
        Err(VarError::NotUnicode(_)) => {
            return Err("RINGYO_WEBHOOK_SECRET is not valid UTF-8; Ringyo's secrets are".into())
        }
    };
    let layer = RingyoWebhookLayer::new(secret).map_err(|err| match err {
        SecretError::Empty => "RINGYO_WEBHOOK_SECRET is empty; set it to your endpoint's \
                               secret (whsec_...), or unset it to use the development secret"
            .to_owned(),
        SecretError::SurroundingWhitespace => "RINGYO_WEBHOOK_SECRET has whitespace at its \
                                               start or end (a trailing newline?); Ringyo's \
                                               secrets have none"
            .to_owned(),
        other => format!("RINGYO_WEBHOOK_SECRET cannot be used: {other}"),
    })?;
    Ok(layer)
}

/// The delivery store, so each delivery runs once although Ringyo retries until it sees a 2xx:
/// in Redis at `RINGYO_REDIS_URL`, shared by every replica (with `--features redis`), else in
/// this process's memory.
pub(crate) fn with_store(
    layer: RingyoWebhookLayer,
    redis_url: Option<String>,
) -> Result<RingyoWebhookLayer, String> {
    match redis_url {
        None => Ok(layer.delivery_store(MemoryDeliveryStore::new())),
        #[cfg(feature = "redis")]
        Some(url) => {
            let store = ringyo_webhook::replay::RedisDeliveryStore::open(&url)
                .map_err(|err| format!("RINGYO_REDIS_URL cannot be used: {err}"))?;
            tracing::info!("deliveries are deduplicated in Redis, across every replica");
            Ok(layer.delivery_store(store))
        }
        #[cfg(not(feature = "redis"))]
        Some(_) => Err(
            "RINGYO_REDIS_URL is set, but this receiver was built without Redis; \
                        run it with `cargo run --features redis --example receiver`"
                .to_owned(),
        ),
    }
}

/// The address in `RINGYO_BIND`, or the default.
pub(crate) fn bind_from(bind: Option<String>) -> Result<SocketAddr, String> {
    let bind = bind.unwrap_or_else(|| DEFAULT_BIND.to_owned());
    bind.parse().map_err(|_| {
        format!("RINGYO_BIND is {bind:?}, which is not an address and port such as {DEFAULT_BIND}")
    })
}

/// Why the receiver cannot listen on `addr`, and what to do about it.
pub(crate) fn cannot_listen(addr: SocketAddr, err: &std::io::Error) -> String {
    let reason = match err.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string(),
    };
    format!("cannot listen on {addr}: {reason}; set RINGYO_BIND to another address")
}

/// Serves the webhook route until `shutdown` resolves, then drains the queue.
///
/// `process` runs in one background task, once per verified event, in arrival order.
pub(crate) async fn run<P, Fut>(
    listener: TcpListener,
    layer: RingyoWebhookLayer,
    queue_capacity: usize,
    mut process: P,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    P: FnMut(RingyoEvent) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (queue, mut events) = mpsc::channel(queue_capacity);
    let worker = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            process(event).await;
        }
    });

    let app = Router::new()
        .route(PATH, post(enqueue).route_layer(layer))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(queue);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;

    // Serving is over, so every clone of the sender is dropped: the worker empties the queue
    // and then sees the channel closed.
    worker.await.map_err(std::io::Error::other)
}

async fn enqueue(State(queue): State<mpsc::Sender<RingyoEvent>>, event: RingyoEvent) -> Response {
    match queue.try_send(event) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(err) => {
            tracing::warn!("event queue unavailable ({err}); answering 503 so Ringyo retries");
            // The crate's JSON error shape, trailing newline included.
            let body = serde_json::json!({
                "error": "queue_full",
                "message": "the receiver is busy; retry later",
            });
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [
                    (header::RETRY_AFTER, "5"),
                    (header::CONTENT_TYPE, "application/json"),
                ],
                format!("{body}\n"),
            )
                .into_response()
        }
    }
}

/// The background work: here, a log line without payload values.
async fn log_event(event: RingyoEvent) {
    let subject = match &event.data {
        Event::CallCompleted(call) | Event::CallFailed(call) => call.id.clone(),
        Event::AppointmentCreated(appointment) => appointment.id.clone(),
        _ => None,
    };
    tracing::info!(
        event = %event.kind,
        delivery_id = %event.delivery_id,
        timestamp = %event.timestamp,
        subject = subject.as_deref().unwrap_or("-"),
        "processed event"
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests and queued events");
}
