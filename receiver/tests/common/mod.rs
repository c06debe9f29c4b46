//! What the receiver's tests share: deliveries signed by the crate's test kit, a client, inbox
//! databases, captured logs, and the receiver's binary as a real process.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own part of this module

pub mod inbox;
pub mod process;

use std::{
    net::SocketAddr,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ringyo_webhook::{
    chrono::{DateTime, Utc},
    testing::TestDelivery,
    Clock, RingyoWebhookLayer, SystemClock,
};
use serde_json::Value;
use tokio::{io::AsyncReadExt, net::TcpListener};

/// The secret the tests' receivers verify with and their deliveries are signed with.
pub const SECRET: &str = "whsec_receiver_tests";

/// The layer the tests' receivers use: [`SECRET`], on the real clock.
pub fn layer() -> RingyoWebhookLayer {
    RingyoWebhookLayer::new(SECRET).unwrap()
}

/// A delivery of `event` with `data` as Ringyo sends it, signed with [`SECRET`]: its body and
/// its `x-ringyo-signature`. Every delivery in a test process is sent at the same time (the
/// first one's), so the same `event` and `data` are the same bytes: Ringyo's retry.
pub fn signed(event: &str, data: Value) -> (Vec<u8>, String) {
    static SENT_AT: OnceLock<DateTime<Utc>> = OnceLock::new();
    let (body, signature) = TestDelivery::new(event)
        .data(data)
        .timestamp(*SENT_AT.get_or_init(|| SystemClock.now()))
        .secret(SECRET)
        .body_and_signature();
    (body.into_bytes(), signature.unwrap())
}

/// A listener on an ephemeral port of 127.0.0.1, and its address.
pub async fn local_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A Prometheus handle whose recorder is not installed, for `/metrics` where a test does not
/// read it (a process has one global recorder).
pub fn detached_metrics() -> PrometheusHandle {
    PrometheusBuilder::new().build_recorder().handle()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A status, the JSON body (`null` if it is not JSON) and the headers.
pub type Answer = (u16, Value, reqwest::header::HeaderMap);

/// POSTs `body` to the receiver's path on `addr`, with `signature` if any.
pub async fn post(addr: SocketAddr, body: Vec<u8>, signature: Option<&str>) -> Answer {
    let url = format!("http://{addr}{}", ringyo_receiver::PATH);
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("x-ringyo-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, headers)
}

/// The status of a new delivery of `event` (empty `data`) to `addr`.
pub async fn send(addr: SocketAddr, event: &str) -> Answer {
    let (body, signature) = signed(event, serde_json::json!({}));
    post(addr, body, Some(&signature)).await
}

/// The status of `GET path`, such as a health route's.
pub async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let url = format!("http://{addr}{path}");
    client().get(url).send().await.unwrap().status().as_u16()
}

/// Whether the server closed `stream` within `within`: reading gives end of file or an error.
/// An answer before the close (an idle client's 408, say) is read past.
pub async fn closed_within(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    within: Duration,
) -> bool {
    let mut read = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut read))
        .await
        .is_ok()
}

/// Sends this process SIGHUP, on which a receiver re-reads its secrets file.
#[cfg(unix)]
pub async fn hang_up() {
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
pub struct Logs(tempfile::NamedTempFile);

impl Logs {
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Mutex::new(file.reopen().unwrap()))
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        (Self(file), tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(self.0.path()).unwrap()
    }

    /// Whether the log comes to hold `text` within 5 s.
    pub async fn comes_to_hold(&self, text: &str) -> bool {
        for _ in 0..250 {
            if self.text().contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
