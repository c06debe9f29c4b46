//! What the receiver's tests share beyond `ringyo-test-support`: deliveries signed with the
//! receiver tests' secret at the real time, captured logs, SIGHUP, and the receiver's binary as a
//! real process.

pub(crate) mod process;

use std::{
    net::SocketAddr,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use metrics_exporter_prometheus::PrometheusHandle;
use ringyo_webhook::{
    chrono::{DateTime, Utc},
    testing::TestDelivery,
    Clock, RingyoWebhookLayer, SystemClock,
};
use serde_json::Value;

/// The receiver's Prometheus recorder, installed once for this test process. Every test here
/// that serves a layer calls it before serving: the crate takes its metric handles from the
/// recorder installed when it first counts a delivery ("install yours before serving",
/// `ringyo_webhook::metrics`), and the tests that read `/metrics` need that to be this one.
pub(crate) fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // `install_metrics` spawns its upkeep on the runtime of the first test to get here.
            ringyo_receiver::admin::install_metrics().unwrap()
        })
        .clone()
}

/// The secret the tests' receivers verify with and their deliveries are signed with.
pub(crate) const SECRET: &str = "whsec_receiver_tests";

/// The layer the tests' receivers use: [`SECRET`], on the real clock.
pub(crate) fn layer() -> RingyoWebhookLayer {
    RingyoWebhookLayer::new(SECRET).unwrap()
}

/// A delivery of `event` with `data` as Ringyo sends it, signed with [`SECRET`]: its body and
/// its `x-ringyo-signature`. Every delivery in a test process is sent at the same time (the
/// first one's), so the same `event` and `data` are the same bytes: Ringyo's retry.
pub(crate) fn signed(event: &str, data: Value) -> (Vec<u8>, String) {
    static SENT_AT: OnceLock<DateTime<Utc>> = OnceLock::new();
    let (body, signature) = TestDelivery::new(event)
        .data(data)
        .timestamp(*SENT_AT.get_or_init(|| SystemClock.now()))
        .secret(SECRET)
        .body_and_signature();
    (body.into_bytes(), signature.unwrap())
}

/// A status, the JSON body (`null` if it is not JSON) and the headers.
pub(crate) type Answer = (u16, Value, reqwest::header::HeaderMap);

/// POSTs `body` to the receiver's path on `addr`, with `signature` if any.
pub(crate) async fn post(addr: SocketAddr, body: Vec<u8>, signature: Option<&str>) -> Answer {
    ringyo_test_support::deliver(addr, ringyo_receiver::PATH, body, signature).await
}

/// The status of a new delivery of `event` (empty `data`) to `addr`.
pub(crate) async fn send(addr: SocketAddr, event: &str) -> Answer {
    let (body, signature) = signed(event, serde_json::json!({}));
    post(addr, body, Some(&signature)).await
}

/// Sends this process SIGHUP, on which a receiver re-reads its secrets file: every test's
/// receiver in this binary that reads one, which the tests allow for.
#[cfg(unix)]
pub(crate) async fn hang_up() {
    let pid = std::process::id();
    let status = tokio::process::Command::new("sh")
        .args(["-c", &format!("kill -HUP {pid}")])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

/// What this thread logs, captured into a file of its own until the guard drops.
/// `#[tokio::test]` runs the server, its tasks and the client on this one thread.
pub(crate) struct Logs(tempfile::NamedTempFile);

impl Logs {
    pub(crate) fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Mutex::new(file.reopen().unwrap()))
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        (Self(file), tracing::subscriber::set_default(subscriber))
    }

    pub(crate) fn text(&self) -> String {
        std::fs::read_to_string(self.0.path()).unwrap()
    }

    /// Whether the log comes to hold `text` within 5 s.
    pub(crate) async fn comes_to_hold(&self, text: &str) -> bool {
        for _ in 0..250 {
            if self.text().contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
