//! The receiver's start, and its two servers: the webhook route on one listener, the
//! [`admin`] routes on another, and the inbox's worker beside them.

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{http::StatusCode, routing::post_service, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use ringyo_webhook::{
    chrono::{DateTime, SecondsFormat, Utc},
    inbox::{sqlx, Inbox, InboxError, Runs, Worker},
    serve::{serve, ServerLimits},
    Clock, Event, EventKind, RingyoWebhookLayer, SystemClock,
};
use tokio::{net::TcpListener, sync::watch};
use tower_http::timeout::TimeoutLayer;

use crate::{
    admin,
    config::{cannot_listen, Config, PostgresTarget},
    process::{counting_postgres, counting_sqlite, FailEvents, CALL_COUNTS, STATUS_EVENTS},
    signal::shutdown_signal,
};

/// The path Ringyo is configured to POST to: the one the crate's test kit
/// (`ringyo_webhook::testing::TestDelivery`) and the `send` example post to by default.
pub const PATH: &str = ringyo_webhook::testing::DEFAULT_PATH;

/// How long one request may take, body included. Ringyo gives up after 5 s; the bound keeps a
/// peer that trickles its body from holding a request, or a graceful shutdown, for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the receiver on `config` and serves until Ctrl-C or SIGTERM: installs the metrics
/// recorder, checks the inbox ([`check_inbox`]), says how many deliveries a previous run left
/// leased ([`report_leased`]) and which events fail on purpose (`RINGYO_FAIL_EVENTS`), binds
/// both listeners, logs where they listen, and [`run`]s a transactional worker with the demo
/// effect ([`counting_sqlite`] or [`counting_postgres`]).
///
/// # Errors
///
/// A sentence for the person at the terminal: a corrupt inbox, an address that cannot be
/// bound, or the servers stopping on an error.
pub async fn start(config: Config) -> Result<(), String> {
    let metrics = admin::install_metrics()?;
    if check_inbox(&config.inbox, config.postgres.as_ref()).await? {
        report_leased(&config.inbox).await;
    }
    let listeners = Listeners {
        webhook: listen("RINGYO_BIND", config.bind).await?,
        admin: listen("RINGYO_ADMIN_BIND", config.admin_bind).await?,
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
    let settings = Settings {
        limits: ServerLimits::default(),
        concurrency: config.concurrency,
        lease: config.lease,
        max_attempts: config.max_attempts,
    };
    let inbox = config.inbox;
    tokio::spawn(create_call_counts(inbox.clone()));
    let parts = Parts {
        listeners,
        layer: config.layer,
        inbox: inbox.clone(),
        metrics,
        settings,
        fail_events: config.fail_events.clone(),
    };
    // The demo effect commits with each delivery, in a transaction of the inbox's engine.
    let (work, fail) = (config.work, config.fail_events);
    let served = match Worker::transactional(&inbox, counting_sqlite(work, fail.clone())) {
        Ok(worker) => parts.run(worker).await,
        Err(_) => {
            let worker = Worker::transactional(&inbox, counting_postgres(work, fail))
                .map_err(|err| format!("the inbox cannot run transactional handlers: {err}"))?;
            parts.run(worker).await
        }
    };
    served.map_err(|err| format!("the receiver stopped: {err}"))
}

/// What [`start`] serves with, whichever engine's worker it runs.
struct Parts {
    listeners: Listeners,
    layer: RingyoWebhookLayer,
    inbox: Inbox,
    metrics: PrometheusHandle,
    settings: Settings,
    fail_events: FailEvents,
}

impl Parts {
    async fn run<H: Runs<Event>>(self, worker: Worker<Event, H>) -> std::io::Result<()> {
        let Self {
            listeners,
            layer,
            inbox,
            metrics,
            settings,
            fail_events,
        } = self;
        let attempts = settings
            .max_attempts
            .unwrap_or(Worker::<Event, H>::DEFAULT_MAX_ATTEMPTS);
        warn_failing(&fail_events, attempts);
        run(
            listeners,
            layer,
            inbox,
            worker,
            metrics,
            settings,
            shutdown_signal(),
        )
        .await
    }
}

/// Creates the demo effect's table ([`CALL_COUNTS`]) in the inbox's database, trying again
/// every second while the database is away: the receiver starts and answers 503 without it,
/// and the handlers that find no table yet fail and are retried.
async fn create_call_counts(inbox: Inbox) {
    let Some(sql) = inbox.sql() else { return };
    let mut failed = false;
    loop {
        let created = match (sql.sqlite_pool().await, sql.postgres_pool().await) {
            (Ok(pool), _) => sqlx::query(CALL_COUNTS).execute(&pool).await.map(drop),
            (_, Ok(pool)) => sqlx::query(CALL_COUNTS).execute(&pool).await.map(drop),
            (Err(err), _) => Err(sqlx::Error::Protocol(err.to_string())),
        };
        match created {
            Ok(()) => return,
            Err(err) if !failed => {
                tracing::warn!("cannot create the call_counts table yet ({err}); trying again");
                failed = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Checks, before serving, that the inbox can commit, and says whether it can. A corrupt file
/// stops the start with a sentence that names it and says what to do; a database that is down
/// or full does not: the receiver answers 503 (and `/readyz` fails) until it can commit, with
/// no restart.
///
/// A Postgres database that does not exist (`postgres`: where the URL points) is the same
/// case, said at error level with the `createdb` line to run
/// ([`PostgresTarget::createdb`]): the receiver stays up rather than exit, because creating the
/// database is the whole fix and needs no restart (an orchestrator that restarts a process
/// which exits would bury the sentence under restarts, and a database created by a job
/// running beside the receiver would race it), and Ringyo retries what was answered 503.
///
/// # Errors
///
/// A corrupt inbox file, as a sentence that names it.
pub async fn check_inbox(inbox: &Inbox, postgres: Option<&PostgresTarget>) -> Result<bool, String> {
    match inbox.ping().await {
        Ok(()) => Ok(true),
        Err(err @ InboxError::Corrupt { .. }) => Err(err.to_string()),
        Err(err) => {
            match postgres.filter(|_| database_missing(&err)) {
                Some(target) => tracing::error!("{}", target.createdb()),
                None => tracing::warn!(
                    "the inbox cannot commit yet ({err}); answering 503 until it can"
                ),
            }
            Ok(false)
        }
    }
}

/// Whether `err` is Postgres saying the database does not exist (SQLSTATE `3D000`,
/// `invalid_catalog_name`: <https://www.postgresql.org/docs/current/errcodes-appendix.html>).
fn database_missing(err: &InboxError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = source {
        let code = err
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)
            .and_then(|database| database.code());
        if code.as_deref() == Some("3D000") {
            return true;
        }
        source = err.source();
    }
    false
}

/// The end of each running delivery's lease, in Unix milliseconds: the inbox keeps it in
/// `available_at`, the time a row is next due (see its first migration).
const LEASED: &str = "SELECT COUNT(*), MAX(available_at) FROM ringyo_inbox WHERE state = 'running'";

/// Says how many deliveries were running when this process started (a previous run's, killed
/// before it finished them, or another replica's on Postgres) and until when they stay leased:
/// without it, `inbox stats` shows them `running` for up to a lease with nothing in the log.
/// Read before the worker starts, so none of them is this process's own.
pub async fn report_leased(inbox: &Inbox) {
    let Some((count, until)) = leased(inbox).await else {
        return;
    };
    let deliveries = if count == 1 {
        "1 delivery".to_owned()
    } else {
        format!("{count} deliveries")
    };
    let (were, run) = if count == 1 {
        ("was", "runs")
    } else {
        ("were", "run")
    };
    if until > SystemClock.now() {
        let until = until.to_rfc3339_opts(SecondsFormat::Secs, true);
        tracing::info!(
            "{deliveries} {were} running when this receiver started (from a previous run, or \
             another replica's): leased until {until}; a previous run's {run} again then"
        );
    } else {
        tracing::info!(
            "{deliveries} from a previous run never finished and {were} left leased; their \
             leases have run out, so they run again now, one at a time"
        );
    }
}

/// How many deliveries are running, and the latest end of their leases; `None` for none, or
/// an inbox that is not SQL.
async fn leased(inbox: &Inbox) -> Option<(i64, DateTime<Utc>)> {
    let sql = inbox.sql()?;
    let read = match (sql.sqlite_pool().await, sql.postgres_pool().await) {
        (Ok(pool), _) => sqlx::query_as(LEASED).fetch_one(&pool).await,
        (_, Ok(pool)) => sqlx::query_as(LEASED).fetch_one(&pool).await,
        (Err(err), _) => Err(sqlx::Error::Protocol(err.to_string())),
    };
    match read {
        Ok((count, Some(until))) if count > 0 => {
            Some((count, DateTime::from_timestamp_millis(until)?))
        }
        Ok(_) => None,
        Err(err) => {
            tracing::debug!("cannot count the deliveries leased before this start: {err}");
            None
        }
    }
}

/// Warns that deliveries of `fail`'s events fail on purpose, dead after `attempts`: a
/// receiver that fails real deliveries must not go unnoticed.
fn warn_failing(fail: &FailEvents, attempts: u32) {
    if fail.is_empty() {
        return;
    }
    let names: Vec<String> = fail
        .events()
        .iter()
        .map(|kind| kind.as_str().escape_debug().to_string())
        .collect();
    tracing::warn!(
        "RINGYO_FAIL_EVENTS is set: every delivery of {} fails on purpose, is retried, and is \
         dead-lettered after {attempts} attempts (RINGYO_MAX_ATTEMPTS); try `inbox dead` and \
         `inbox replay --dead`, and unset it before production",
        names.join(", ")
    );
    let unknown: Vec<&str> = fail
        .events()
        .iter()
        .filter(|kind| matches!(kind, EventKind::Unknown(_)))
        .map(EventKind::as_str)
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(
            "RINGYO_FAIL_EVENTS names events this version does not know ({}): a typo? Known \
             events are {}",
            unknown.join(", ").escape_debug(),
            EventKind::KNOWN.join(", ")
        );
    }
}

/// The webhook's listener, and the admin routes' listener.
#[derive(Debug)]
pub struct Listeners {
    /// Serves only `POST` [`PATH`].
    pub webhook: TcpListener,
    /// Serves the [`admin`] routes.
    pub admin: TcpListener,
}

/// What [`run`] runs with besides its parts: the servers' limits, and the worker's concurrency
/// and lease (`None`: the worker's defaults).
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// Both servers' limits.
    pub limits: ServerLimits,
    /// Handlers at once, from `RINGYO_CONCURRENCY`; by default
    /// [`Worker::DEFAULT_CONCURRENCY`].
    pub concurrency: Option<usize>,
    /// How long a claim lasts unless extended, from `RINGYO_LEASE_MS`; by default
    /// [`Worker::DEFAULT_LEASE`].
    pub lease: Option<Duration>,
    /// Attempts before a delivery is dead-lettered, from `RINGYO_MAX_ATTEMPTS`; by default
    /// [`Worker::DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: Option<u32>,
}

async fn listen(variable: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| cannot_listen(variable, addr, &err))
}

/// Serves the webhook route and the admin routes, and runs the inbox's worker, until
/// `shutdown` resolves. Then `/readyz` turns 503 (take this replica out of rotation), the
/// webhook finishes its in-flight requests, running handlers end, and only then do the admin
/// routes stop, so `/metrics` is scraped to the last handled delivery.
///
/// # Errors
///
/// Either server, or the worker's task, ending on an error.
pub async fn run<H>(
    listeners: Listeners,
    layer: RingyoWebhookLayer,
    inbox: Inbox,
    worker: Worker<Event, H>,
    metrics: PrometheusHandle,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    H: Runs<Event>,
{
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let mut worker = worker.skip_superseded(STATUS_EVENTS);
    if let Some(concurrency) = settings.concurrency {
        worker = worker.concurrency(concurrency);
    }
    if let Some(lease) = settings.lease {
        worker = worker.lease(lease);
    }
    if let Some(max_attempts) = settings.max_attempts {
        worker = worker.max_attempts(max_attempts);
    }
    let worker = tokio::spawn(worker.run(until_stopped(stopped.clone())));
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_routes = admin::routes(inbox.clone(), metrics, stopped.clone());
    let limits = settings.limits;
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
