//! The admin listener's routes, for the orchestrator and Prometheus: `GET /healthz`,
//! `GET /readyz` and `GET /metrics`; and the metrics recorder `/metrics` renders.

use std::time::Duration;

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use ringyo_webhook::inbox::Inbox;
use tokio::sync::watch;

/// Histogram buckets for every `_seconds` metric, in seconds: from verifying a small body
/// (tens of µs) to a handler near Ringyo's 5 s limit.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// How long the readiness check waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Installs the Prometheus recorder the crate's metrics go to (once per process), and its
/// upkeep every 5 s on the current runtime; `/metrics` renders it.
///
/// # Errors
///
/// A recorder already installed in this process.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
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

/// `/healthz` (200 while the process serves), `/readyz` (200 while the inbox can commit and
/// `stopping` is `false`, else 503) and `/metrics` (what `metrics` renders).
pub fn routes(inbox: Inbox, metrics: PrometheusHandle, stopping: watch::Receiver<bool>) -> Router {
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
