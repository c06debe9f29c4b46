//! A Ringyo webhook receiver: verify, store durably, acknowledge, process in the background.
//!
//! ```text
//! cargo run --example receiver
//! ```
//!
//! Reads `RINGYO_WEBHOOK_SECRET` (without it, starts with a development secret that it prints)
//! or `RINGYO_SECRETS_FILE` (a file of secrets, one per line, the current first, re-read on
//! SIGHUP: rotation without a restart; see `support/secrets_file.rs`), `RINGYO_BIND` (default `127.0.0.1:3000`), `RINGYO_ADMIN_BIND` (default `127.0.0.1:9090`),
//! `RINGYO_INBOX_URL` (default `sqlite://ringyo-inbox.db`, a file in the working directory; or
//! `postgres://...`, shared by replicas) and `RINGYO_WORK_MS` (default 0: simulated work per
//! event, a stand-in for a slow downstream call). On `RINGYO_BIND` it serves only
//! `POST /webhooks/ringyo`, the one thing the internet should reach; on `RINGYO_ADMIN_BIND`,
//! for the orchestrator and Prometheus, `GET /healthz` (liveness: 200 while the process
//! serves), `GET /readyz` (200 while the inbox can commit, else 503) and
//! `GET /metrics` (Prometheus text format; see README for the metrics and alerts).
//!
//! Each verified delivery is committed to the inbox and only then answered 202, as Ringyo asks
//! (answer within 5 s, do heavy work in the background); a crash after that loses nothing,
//! because the worker finds the delivery in the inbox after the restart. A retry of a stored
//! delivery gets 200 and is not stored twice; if the database cannot commit, the answer is 503,
//! so Ringyo retries. The worker logs `processed event` once per finished delivery. Ctrl-C or
//! SIGTERM stops accepting connections, finishes in-flight requests and running handlers, and
//! leaves the rest in the inbox for the next start.
//!
//! Both servers close a connection that does not finish its request headers within 10 s
//! (silent, trickling, or idle between requests), serve at most 1 024 connections at once, and
//! give open connections 20 s to finish at shutdown ([`ServerLimits`]); a request, body
//! included, has 10 s.

#[path = "support/secrets_file.rs"]
mod secrets_file;
#[path = "support/server.rs"]
mod server;
#[path = "support/signal.rs"]
mod signal;

use std::{env::VarError, future::Future, net::SocketAddr, process::ExitCode, time::Duration};

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post_service},
    Json, Router,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use ringyo_webhook::{
    inbox::{Handler, Inbox, InboxError, Job, Worker},
    Event, RingyoWebhookLayer, SecretError,
};
use tokio::{net::TcpListener, sync::watch};
use tower_http::timeout::TimeoutLayer;

use secrets_file::SecretsFile;
use server::serve;
pub(crate) use server::ServerLimits;
use signal::shutdown_signal;

/// The path Ringyo is configured to POST to.
pub(crate) const PATH: &str = "/webhooks/ringyo";

/// The secret used when `RINGYO_WEBHOOK_SECRET` is unset, so the example runs out of the box.
/// It is public (the `send` example and the test kit sign with it): never use it in production.
pub(crate) const DEVELOPMENT_SECRET: &str = "whsec_ringyo_local_development_only";

/// Where the receiver listens unless `RINGYO_BIND` says otherwise.
pub(crate) const DEFAULT_BIND: &str = "127.0.0.1:3000";

/// Where health checks and metrics are served unless `RINGYO_ADMIN_BIND` says otherwise: apart
/// from the webhook, so the internet-facing port exposes nothing else.
pub(crate) const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9090";

/// Histogram buckets for every `_seconds` metric, in seconds: from verifying a small body
/// (tens of µs) to a handler near Ringyo's 5 s limit.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

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
    let layer = match std::env::var_os("RINGYO_SECRETS_FILE") {
        Some(_) if std::env::var_os("RINGYO_WEBHOOK_SECRET").is_some() => {
            return Err("set RINGYO_WEBHOOK_SECRET or RINGYO_SECRETS_FILE, not both".into())
        }
        Some(path) => layer_from_file(path)?,
        None => layer_from(std::env::var("RINGYO_WEBHOOK_SECRET"))?,
    };
    let inbox = inbox_from(std::env::var("RINGYO_INBOX_URL"))?;
    let work = work_from(std::env::var("RINGYO_WORK_MS"))?;
    let bind = bind_from(
        "RINGYO_BIND",
        std::env::var("RINGYO_BIND").ok(),
        DEFAULT_BIND,
    )?;
    let admin_bind = bind_from(
        "RINGYO_ADMIN_BIND",
        std::env::var("RINGYO_ADMIN_BIND").ok(),
        DEFAULT_ADMIN_BIND,
    )?;
    let metrics = install_metrics()?;
    check_inbox(&inbox).await?;
    let listeners = Listeners {
        webhook: listen("RINGYO_BIND", bind).await?,
        admin: listen("RINGYO_ADMIN_BIND", admin_bind).await?,
    };
    let addr = listeners
        .webhook
        .local_addr()
        .map_err(|err| err.to_string())?;
    let admin = listeners
        .admin
        .local_addr()
        .map_err(|err| err.to_string())?;
    tracing::info!("listening on http://{addr}{PATH}; health and metrics on http://{admin}");
    run(
        listeners,
        layer,
        inbox,
        process(work),
        metrics,
        ServerLimits::default(),
        shutdown_signal(),
    )
    .await
    .map_err(|err| format!("the receiver stopped: {err}"))
}

/// Checks, before serving, that the inbox can commit. A corrupt file stops the start with a
/// sentence that names it and says what to do; a database that is down or full does not: the
/// receiver answers 503 (and `/readyz` fails) until it can commit, with no restart.
pub(crate) async fn check_inbox(inbox: &Inbox) -> Result<(), String> {
    match inbox.ping().await {
        Ok(()) => Ok(()),
        Err(err @ InboxError::Corrupt { .. }) => Err(err.to_string()),
        Err(err) => {
            tracing::warn!("the inbox cannot commit yet ({err}); answering 503 until it can");
            Ok(())
        }
    }
}

/// The webhook's listener, and the admin routes' listener.
pub(crate) struct Listeners {
    pub(crate) webhook: TcpListener,
    pub(crate) admin: TcpListener,
}

async fn listen(variable: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| cannot_listen(variable, addr, &err))
}

/// Installs the Prometheus recorder the crate's metrics go to (once per process); `/metrics`
/// renders it.
pub(crate) fn install_metrics() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|err| format!("cannot install the metrics recorder: {err}"))?;
    ringyo_webhook::metrics::describe();
    // Without upkeep, the recorder's histograms grow without bound.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
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

/// The layer for the secrets in the file at `path`, re-read on SIGHUP.
pub(crate) fn layer_from_file(
    path: impl Into<std::path::PathBuf>,
) -> Result<RingyoWebhookLayer, String> {
    let file = SecretsFile::load(path)?;
    #[cfg(unix)]
    file.clone()
        .reload_on_hangup()
        .map_err(|err| format!("cannot listen for SIGHUP: {err}"))?;
    Ok(RingyoWebhookLayer::from_source(file.secrets()))
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

/// The address in `variable` (its value `bind`), or `default`.
pub(crate) fn bind_from(
    variable: &str,
    bind: Option<String>,
    default: &str,
) -> Result<SocketAddr, String> {
    let bind = bind.unwrap_or_else(|| default.to_owned());
    bind.parse().map_err(|_| {
        format!("{variable} is {bind:?}, which is not an address and port such as {default}")
    })
}

/// Why the receiver cannot listen on `addr` (from `variable`), and what to do about it.
pub(crate) fn cannot_listen(variable: &str, addr: SocketAddr, err: &std::io::Error) -> String {
    let reason = match err.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string(),
    };
    format!("cannot listen on {addr}: {reason}; set {variable} to another address")
}

/// Serves the webhook route and the admin routes, and runs the inbox's worker, until
/// `shutdown` resolves. Then `/readyz` turns 503 (take this replica out of rotation), the
/// webhook finishes its in-flight requests, running handlers end, and only then do the admin
/// routes stop, so `/metrics` is scraped to the last handled delivery.
pub(crate) async fn run<H>(
    listeners: Listeners,
    layer: RingyoWebhookLayer,
    inbox: Inbox,
    handler: H,
    metrics: PrometheusHandle,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    H: Handler<Event>,
{
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let worker = tokio::spawn(Worker::new(&inbox, handler).run(until_stopped(stopped.clone())));
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_routes = admin_routes(inbox.clone(), metrics, stopped.clone());
    let admin = tokio::spawn(serve(listeners.admin, admin_routes, limits, async move {
        let _ = admin_stopped.await;
    }));

    let app = Router::new()
        .route(PATH, post_service(inbox.clone()).route_layer(layer))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    let served = serve(listeners.webhook, app, limits, async move {
        shutdown.await;
        let _ = stop.send(true);
    })
    .await;
    // Whatever ended serving, the worker stops too (a no-op if the signal already did).
    drop(stopped);
    worker.await.map_err(std::io::Error::other)?;
    let _ = admin_stop.send(());
    let admin_served = admin.await.map_err(std::io::Error::other)?;
    served.and(admin_served)
}

/// `/healthz`, `/readyz` and `/metrics`, for the admin listener; `/readyz` answers 503 once
/// `stopping` turns `true`.
fn admin_routes(
    inbox: Inbox,
    metrics: PrometheusHandle,
    stopping: watch::Receiver<bool>,
) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(ready))
        .with_state((inbox, stopping))
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
}

/// 200 while the inbox can commit (a small write commits: see `Inbox::ping`) and the receiver
/// is not shutting down, else 503: a full disk, a read-only file system, a corrupt file or a
/// database that is down all take the replica out of rotation until commits go through.
async fn ready(
    State((inbox, stopping)): State<(Inbox, watch::Receiver<bool>)>,
) -> (StatusCode, Json<serde_json::Value>) {
    if *stopping.borrow() {
        return not_ready("shutting down");
    }
    let unreachable = "inbox cannot commit";
    match tokio::time::timeout(HEALTH_TIMEOUT, inbox.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))),
        Ok(Err(err)) => {
            // The detail goes to the log, not to whoever asks.
            tracing::warn!("readiness: the inbox cannot commit ({err})");
            not_ready(unreachable)
        }
        Err(_) => {
            tracing::warn!("readiness: the inbox did not commit in time");
            not_ready(unreachable)
        }
    }
}

fn not_ready(reason: &str) -> (StatusCode, Json<serde_json::Value>) {
    let body = serde_json::json!({ "status": "unavailable", "reason": reason });
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
    // Signed strings as `&str` fields, which log escaped: an event name may hold a newline or
    // a terminal's escape codes.
    tracing::info!(
        event = event.kind.as_str(),
        delivery_id = %event.delivery_id,
        timestamp = %event.timestamp,
        attempt = job.attempt,
        subject = subject.as_deref().unwrap_or("-"),
        "processed event"
    );
}
