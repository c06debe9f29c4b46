//! What the crate's tests share: a real server on 127.0.0.1 and a real client, signed
//! deliveries, raw HTTP exchanges, captured logs ([`Captured`]), inbox databases ([`inbox`]) and
//! the behaviour suite every delivery store passes ([`stores`]).
//!
//! A library of its own (never published) rather than a `tests/common` module: each test binary
//! uses its own part of it, and a library's unused public items are no dead code.

pub mod inbox;
pub mod stores;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use ringyo_webhook::testing::TestDelivery;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tracing_subscriber::fmt::{format::FmtSpan, MakeWriter};

/// The secret the tests' layers verify with and their deliveries are signed with.
pub const SECRET: &str = "whsec_a1b2c3d4e5f6g7h8i9j0";

/// The `timestamp` in every envelope these tests send (the fixed test vectors need one).
pub const SENT_AT: &str = "2024-01-15T10:30:00Z";

/// The time the test layers see: five minutes after [`SENT_AT`].
pub fn test_now() -> ringyo_webhook::chrono::DateTime<ringyo_webhook::chrono::Utc> {
    "2024-01-15T10:35:00Z".parse().unwrap()
}

/// The layer the tests use: [`SECRET`], and a clock at [`test_now`].
pub fn layer() -> ringyo_webhook::RingyoWebhookLayer {
    ringyo_webhook::RingyoWebhookLayer::new(SECRET)
        .unwrap()
        .clock(test_now)
}

/// Serves `app` on an ephemeral port of 127.0.0.1 until the test ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A field of /proc/self/status (`VmHWM:`, `VmSize:`, ...), in bytes.
pub fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .expect("field present");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Whether the server closed `stream` within `within`: reading gives end of file or an error.
/// An answer before the close (an idle client's 408, say) is read past.
pub async fn closed_within(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    within: Duration,
) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

/// A listener on an ephemeral port of 127.0.0.1, and its address.
pub async fn local_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A Prometheus handle whose recorder is not installed, for the receiver's `/metrics` where a
/// test does not read it (a process has one global recorder).
pub fn detached_metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle()
}

/// A client with a 10 s time-out, so a test that waits on a stuck server fails rather than hangs.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A JSON envelope as Ringyo sends it, sent at [`SENT_AT`], built by the crate's test kit.
pub fn envelope(event: &str, data: serde_json::Value) -> Vec<u8> {
    TestDelivery::new(event)
        .data(data)
        .timestamp(SENT_AT.parse().unwrap())
        .webhook_id("wh_abc123")
        .body_and_signature()
        .0
        .into_bytes()
}

/// The `x-ringyo-signature` of `body` with [`SECRET`], by the crate's test kit.
pub fn sign(body: &[u8]) -> String {
    ringyo_webhook::testing::sign(SECRET, body).unwrap()
}

/// POSTs `body` signed with `signature` (if any) and returns the status and the JSON body.
pub async fn deliver(
    addr: SocketAddr,
    path: &str,
    body: Vec<u8>,
    signature: Option<&str>,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let mut request = client()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("x-ringyo-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json, headers)
}

/// The status of `GET path`, such as a health route's.
pub async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let url = format!("http://{addr}{path}");
    client().get(url).send().await.unwrap().status().as_u16()
}

/// POSTs `body` with the `x-ringyo-signature` value `signature`, for tests that read the
/// response themselves.
pub async fn post_signed(
    addr: SocketAddr,
    path: &str,
    body: impl Into<reqwest::Body>,
    signature: &str,
) -> reqwest::Response {
    client()
        .post(format!("http://{addr}{path}"))
        .header("x-ringyo-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// `body` as a chunked request body (no `Content-Length`), `size` bytes a chunk.
pub fn chunked(body: &[u8], size: usize) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(size).map(|chunk| Ok(chunk.to_vec())).collect();
    reqwest::Body::wrap_stream(tokio_stream::iter(chunks))
}

/// The statuses of a POST to an unknown path and of a GET to `path`.
pub async fn wrong_path_and_method(addr: SocketAddr, path: &str) -> (u16, u16) {
    let client = client();
    let wrong_path = client
        .post(format!("http://{addr}/nope"))
        .send()
        .await
        .unwrap();
    let wrong_method = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (wrong_path.status().as_u16(), wrong_method.status().as_u16())
}

/// A connection that sent a signed delivery's headers to `path` and the first 10 bytes of its
/// body, then stalls.
pub async fn stalled_mid_body(addr: SocketAddr, path: &str) -> TcpStream {
    let body = envelope("call.completed", serde_json::json!({}));
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: {}\r\ncontent-length: {}\r\n\r\n",
        sign(&body),
        body.len()
    );
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stalled
}

/// Writes raw bytes to the server and reads what comes back until it closes or `deadline`.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream).await
}

/// Reads one HTTP response head and body (whatever arrives within a few seconds).
pub async fn read_response(stream: &mut TcpStream) -> String {
    read_until(stream, response_complete).await
}

/// Reads until what arrived satisfies `done`, the peer closes, or a few seconds pass.
pub async fn read_until(stream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if done(&out) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `bytes` hold a whole response with a `content-length`.
pub fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .is_some_and(|len| body.len() >= len)
}

/// The status code of a raw response.
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Log lines captured from a test, to assert on what the layer logs.
#[derive(Clone, Debug, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

impl Captured {
    /// Captures everything logged on this thread, with span closes if `spans`, until the guard
    /// drops. `#[tokio::test]` runs server and client on this one thread, so the thread-local
    /// subscriber sees the server's spans too.
    pub fn start(spans: FmtSpan) -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(spans)
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Opens a silent connection and one that trickles its headers to `path`, has a signed
/// delivery answered meanwhile, and checks both stalled ones are closed within `within`: what
/// a server's header-read time-out or maximum connection age must do.
pub async fn stalled_connections_are_closed_while_a_delivery_is_served(
    addr: SocketAddr,
    path: &str,
    within: Duration,
) {
    let silent = TcpStream::connect(addr).await.unwrap();
    let mut trickling = TcpStream::connect(addr).await.unwrap();
    trickling
        .write_all(format!("POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n").as_bytes())
        .await
        .unwrap();
    let body = envelope("credits.low", serde_json::json!({}));
    let response = post_signed(addr, path, body.clone(), &sign(&body)).await;
    assert_eq!(response.status(), 200, "served meanwhile");
    for stream in [silent, trickling] {
        assert!(
            closed_within(stream, within).await,
            "the stalled connection was not closed"
        );
    }
}

/// With a client stalled mid-body on `addr`, sends `stop` and checks that `served` (the
/// server's task) ends by itself, having waited about its shutdown `deadline` for the request:
/// a stalled client holds no shutdown past its deadline.
pub async fn stops_by_its_deadline_despite_a_stalled_client(
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), String>>,
    deadline: Duration,
) {
    let stalled = stalled_mid_body(addr, "/webhooks/ringyo").await;
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("the stalled client held the shutdown")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= deadline.mul_f32(0.8),
        "it waited for the request: {:?}",
        started.elapsed()
    );
    drop(stalled);
}
