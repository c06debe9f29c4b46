//! A Ringyo webhook receiver: verify, store durably, acknowledge, process in the background.
//!
//! ```text
//! cargo run --example receiver
//! ```
//!
//! Reads `RINGYO_WEBHOOK_SECRET` (without it, starts with a development secret that it prints),
//! `RINGYO_BIND` (default `127.0.0.1:3000`), `RINGYO_INBOX_URL` (default
//! `sqlite://ringyo-inbox.db`, a file in the working directory; or `postgres://...`, shared by
//! replicas) and `RINGYO_WORK_MS` (default 0: simulated work per event, a stand-in for a slow
//! downstream call). It serves `POST /webhooks/ringyo` and `GET /healthz`.
//!
//! Each verified delivery is committed to the inbox and only then answered 202, as Ringyo asks
//! (answer within 5 s, do heavy work in the background); a crash after that loses nothing,
//! because the worker finds the delivery in the inbox after the restart. A retry of a stored
//! delivery gets 200 and is not stored twice; if the database cannot commit, the answer is 503,
//! so Ringyo retries. The worker logs `processed event` once per finished delivery. `/healthz`
//! answers 200 while the database does and 503 when it does not. Ctrl-C or SIGTERM stops
//! accepting connections, finishes in-flight requests and running handlers, and leaves the rest
//! in the inbox for the next start.

use std::{env::VarError, future::Future, net::SocketAddr, process::ExitCode, time::Duration};

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post_service},
    Json, Router,
};
use ringyo_webhook::{
    inbox::{Handler, Inbox, Job},
    Event, RingyoWebhookLayer, SecretError,
};
use tokio::{net::TcpListener, sync::watch};
use tower_http::timeout::TimeoutLayer;

/// The path Ringyo is configured to POST to.
pub(crate) const PATH: &str = "/webhooks/ringyo";

/// The secret used when `RINGYO_WEBHOOK_SECRET` is unset, so the example runs out of the box.
/// It is public (the `send` example and the test kit sign with it): never use it in production.
pub(crate) const DEVELOPMENT_SECRET: &str = "whsec_ringyo_local_development_only";

/// Where the receiver listens unless `RINGYO_BIND` says otherwise.
const DEFAULT_BIND: &str = "127.0.0.1:3000";

/// The inbox unless `RINGYO_INBOX_URL` says otherwise: a SQLite file in the working directory.
pub(crate) const DEFAULT_INBOX_URL: &str = "sqlite://ringyo-inbox.db";

/// How long one request may take, body included. Ringyo gives up after 5 s; the bound keeps a
/// peer that trickles its body from holding a request, or a graceful shutdown, for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the health check waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

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
            tracing::info!("stopped; what was not processed waits in the inbox");
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
    let inbox = inbox_from(std::env::var("RINGYO_INBOX_URL"))?;
    let work = work_from(std::env::var("RINGYO_WORK_MS"))?;
    let bind = bind_from(std::env::var("RINGYO_BIND").ok())?;
    if let Err(err) = inbox.ping().await {
        // Not fatal: the receiver answers 503 (and /healthz fails) until the database is up.
        tracing::warn!(
            "the inbox database is not reachable yet ({err}); answering 503 until it is"
        );
    }
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|err| cannot_listen(bind, &err))?;
    let addr = listener.local_addr().map_err(|err| err.to_string())?;
    tracing::info!("listening on http://{addr}{PATH}");
    run(listener, layer, inbox, process(work), shutdown_signal())
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

/// The inbox at `RINGYO_INBOX_URL`, or the SQLite file in the working directory.
pub(crate) fn inbox_from(url: Result<String, VarError>) -> Result<Inbox, String> {
    let url = match url {
        Ok(url) => url,
        Err(VarError::NotPresent) => DEFAULT_INBOX_URL.to_owned(),
        // Not printed: a database URL may hold a password.
        Err(VarError::NotUnicode(_)) => return Err("RINGYO_INBOX_URL is not valid UTF-8".into()),
    };
    let inbox =
        Inbox::open(&url).map_err(|err| format!("RINGYO_INBOX_URL cannot be used: {err}"))?;
    tracing::info!("deliveries are stored in {}", redacted(&url));
    Ok(inbox)
}

/// A database URL without its password, for the log.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://...{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// The simulated work per event in `RINGYO_WORK_MS`, or none.
pub(crate) fn work_from(work: Result<String, VarError>) -> Result<Duration, String> {
    match work {
        Err(VarError::NotPresent) => Ok(Duration::ZERO),
        Ok(ms) => ms.trim().parse().map(Duration::from_millis).map_err(|_| {
            format!("RINGYO_WORK_MS is {ms:?}, which is not a whole number of milliseconds")
        }),
        Err(VarError::NotUnicode(_)) => Err("RINGYO_WORK_MS is not valid UTF-8".into()),
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

/// Serves the webhook route and runs the inbox's worker until `shutdown` resolves; then
/// finishes in-flight requests and lets running handlers end.
pub(crate) async fn run<H>(
    listener: TcpListener,
    layer: RingyoWebhookLayer,
    inbox: Inbox,
    handler: H,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    H: Handler<Event>,
{
    let (stop, stopped) = watch::channel(false);
    let mut stopped_worker = stopped.clone();
    let worker = tokio::spawn(inbox.worker(handler).run(async move {
        let _ = stopped_worker.wait_for(|stop| *stop).await;
    }));

    let app = Router::new()
        .route(PATH, post_service(inbox.service()).route_layer(layer))
        .route("/healthz", get(health))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(inbox);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await;
    // Whatever ended serving, the worker stops too (a no-op if the signal already did).
    drop(stopped);
    worker.await.map_err(std::io::Error::other)?;
    served
}

/// 200 while the inbox's database answers, 503 when it does not.
async fn health(State(inbox): State<Inbox>) -> (StatusCode, Json<serde_json::Value>) {
    match tokio::time::timeout(HEALTH_TIMEOUT, inbox.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))),
        Ok(Err(err)) => unhealthy(&err.to_string()),
        Err(_) => unhealthy("the database did not answer in time"),
    }
}

fn unhealthy(reason: &str) -> (StatusCode, Json<serde_json::Value>) {
    tracing::warn!("health check failed: {reason}");
    let body =
        serde_json::json!({ "status": "unavailable", "reason": "inbox database unreachable" });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body))
}

/// The background work: `work` of simulated downstream calls, then a log line without
/// payload values.
pub(crate) fn process(work: Duration) -> impl Handler<Event> {
    move |job: Job<Event>| async move {
        if !work.is_zero() {
            tokio::time::sleep(work).await;
        }
        log_event(&job);
        Ok::<(), std::convert::Infallible>(())
    }
}

/// The `processed event` line for a finished delivery.
pub(crate) fn log_event(job: &Job<Event>) {
    let event = &job.event;
    let subject = match &event.data {
        Event::CallCompleted(call) | Event::CallFailed(call) => call.id.clone(),
        Event::AppointmentCreated(appointment) => appointment.id.clone(),
        _ => None,
    };
    tracing::info!(
        event = %event.kind,
        delivery_id = %event.delivery_id,
        timestamp = %event.timestamp,
        attempt = job.attempt,
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
    tracing::info!("shutting down: finishing in-flight requests and running handlers");
}
