//! A Ringyo webhook receiver: verify, acknowledge fast, process in the background.
//!
//! ```text
//! cargo run --example receiver
//! ```
//!
//! Reads `RINGYO_WEBHOOK_SECRET` (without it, starts with a development secret that it prints)
//! and `RINGYO_BIND` (default `127.0.0.1:3000`), and serves `POST /webhooks/ringyo`. Each
//! verified event is queued on a bounded channel and answered 202 at once, as Ringyo asks
//! (answer within 5 s, do heavy work in the background); a background task logs it. When the
//! queue is full the answer is 503, so Ringyo retries later instead of the event being dropped.
//! Stale timestamps are refused, and a delivery store answers Ringyo's retries of an event
//! already queued with 200 without queueing it twice.
//! Ctrl-C or SIGTERM stops accepting connections, finishes in-flight requests, and drains the
//! queue before exiting.

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use ringyo_webhook::{
    testing::{DEFAULT_PATH, DEVELOPMENT_SECRET},
    Event, MemoryDeliveryStore, RingyoEvent, RingyoWebhookLayer,
};
use tokio::{net::TcpListener, sync::mpsc};
use tower_http::timeout::TimeoutLayer;

/// The path Ringyo is configured to POST to.
pub(crate) const PATH: &str = DEFAULT_PATH;

/// How many verified events may wait for the background task.
const QUEUE_CAPACITY: usize = 1024;

/// How long one request may take, body included. Ringyo gives up after 5 s; the bound keeps a
/// peer that trickles its body from holding a request, or a graceful shutdown, for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ringyo_webhook=debug".into()),
        )
        .init();

    let secret = match std::env::var("RINGYO_WEBHOOK_SECRET") {
        Ok(secret) => secret,
        // Only an unset variable falls back; a garbled one must not become a public secret.
        Err(std::env::VarError::NotPresent) => {
            tracing::warn!(
                "RINGYO_WEBHOOK_SECRET is not set: using the development secret \
                 {DEVELOPMENT_SECRET:?}. Anyone who reads this can sign events; never use it \
                 in production"
            );
            DEVELOPMENT_SECRET.to_owned()
        }
        Err(err) => return Err(format!("RINGYO_WEBHOOK_SECRET: {err}").into()),
    };
    let bind: SocketAddr = std::env::var("RINGYO_BIND")
        .unwrap_or_else(|_| "127.0.0.1:3000".to_owned())
        .parse()?;

    // Freshness is checked by default (events up to an hour old); the store makes each
    // delivery run once although Ringyo retries until it sees a 2xx.
    let layer = RingyoWebhookLayer::new(secret)?.delivery_store(MemoryDeliveryStore::new());
    let listener = TcpListener::bind(bind).await?;
    tracing::info!("listening on http://{}{PATH}", listener.local_addr()?);

    run(
        listener,
        layer,
        QUEUE_CAPACITY,
        log_event,
        shutdown_signal(),
    )
    .await?;
    tracing::info!("queue drained, bye");
    Ok(())
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
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                Json(serde_json::json!({
                    "error": "queue_full",
                    "message": "the receiver is busy; retry later",
                })),
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
