//! The receiver example, driven through real HTTP: queueing, back-pressure, graceful shutdown.

mod common;

#[allow(dead_code)]
#[path = "../examples/receiver.rs"]
mod receiver;

use std::{net::SocketAddr, time::Duration};

use common::{envelope, read_response, sign, status_of};
use ringyo_webhook::RingyoEvent;
use serde_json::json;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

struct Receiver {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: JoinHandle<std::io::Result<()>>,
}

/// Starts the example's `run` with a processing step that reports each event, after `delay`.
async fn start(queue: usize, delay: Duration) -> (Receiver, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (report, reports) = mpsc::unbounded_channel();
    let process = move |event: RingyoEvent| {
        let report = report.clone();
        async move {
            report.send(format!("started {}", event.kind)).unwrap();
            tokio::time::sleep(delay).await;
            report.send(format!("done {}", event.kind)).unwrap();
        }
    };
    let layer = common::layer().delivery_store(ringyo_webhook::MemoryDeliveryStore::new());
    let shutdown = async move {
        let _ = stopped.await;
    };
    let done = tokio::spawn(receiver::run(listener, layer, queue, process, shutdown));
    (Receiver { addr, stop, done }, reports)
}

type Answer = (u16, serde_json::Value, reqwest::header::HeaderMap);

async fn send(addr: SocketAddr, event: &str) -> Answer {
    send_body(addr, envelope(event, json!({}))).await
}

async fn send_body(addr: SocketAddr, body: Vec<u8>) -> Answer {
    let signature = sign(&body);
    common::deliver(addr, receiver::PATH, body, Some(&signature)).await
}

#[tokio::test]
async fn verified_event_is_acknowledged_then_processed_in_background() {
    let (receiver, mut reports) = start(8, Duration::ZERO).await;
    let (status, _, _) = send(receiver.addr, "call.completed").await;
    assert_eq!(status, 202);
    assert_eq!(reports.recv().await.unwrap(), "started call.completed");
    assert_eq!(reports.recv().await.unwrap(), "done call.completed");

    let (status, json, _) =
        common::deliver(receiver.addr, receiver::PATH, b"{}".to_vec(), None).await;
    assert_eq!(status, 401);
    assert_eq!(json["error"], "missing_signature");
    receiver.stop.send(()).unwrap();
    receiver.done.await.unwrap().unwrap();
}

#[tokio::test]
async fn full_queue_answers_503_so_ringyo_retries() {
    // One event being processed (slowly), one waiting: the queue of one is then full.
    let (receiver, mut reports) = start(1, Duration::from_secs(1)).await;
    assert_eq!(send(receiver.addr, "call.started").await.0, 202);
    assert_eq!(reports.recv().await.unwrap(), "started call.started");
    assert_eq!(send(receiver.addr, "call.ringing").await.0, 202);

    let (status, json, headers) = send(receiver.addr, "call.answered").await;
    assert_eq!(status, 503);
    assert_eq!(json["error"], "queue_full");
    assert_eq!(headers["retry-after"], "5");

    // Nothing accepted is lost: both accepted events are processed before shutdown ends.
    receiver.stop.send(()).unwrap();
    receiver.done.await.unwrap().unwrap();
    let mut seen = Vec::new();
    while let Ok(report) = reports.try_recv() {
        seen.push(report);
    }
    assert_eq!(
        seen,
        [
            "done call.started",
            "started call.ringing",
            "done call.ringing"
        ]
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_drains_the_queue() {
    let (receiver, mut reports) = start(16, Duration::from_millis(20)).await;
    for n in 0..5 {
        let body = envelope("credits.low", json!({ "balance": n }));
        assert_eq!(send_body(receiver.addr, body).await.0, 202);
    }

    // A request whose body is still arriving when the shutdown begins.
    let body = envelope("agent.created", json!({"name": "late"}));
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: {}\r\ncontent-length: {}\r\n\r\n",
        receiver::PATH,
        sign(&body),
        body.len()
    );
    let mut stream = TcpStream::connect(receiver.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    receiver.stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !receiver.done.is_finished(),
        "stopped before the in-flight request ended"
    );
    stream.write_all(&body[10..]).await.unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(status_of(&response), 202, "{response}");
    drop(stream);

    tokio::time::timeout(Duration::from_secs(10), receiver.done)
        .await
        .expect("receiver did not stop")
        .unwrap()
        .unwrap();
    let mut done = 0;
    while let Ok(report) = reports.try_recv() {
        done += usize::from(report.starts_with("done"));
    }
    assert_eq!(done, 6, "every accepted event is processed before exit");
}

#[test]
fn configuration_problems_are_sentences_that_say_what_to_do() {
    let problem = |secret: &str| receiver::layer_from(Ok(secret.into())).unwrap_err();
    assert_eq!(
        problem("whsec_abc\n"),
        "RINGYO_WEBHOOK_SECRET has whitespace at its start or end (a trailing newline?); \
         Ringyo's secrets have none"
    );
    assert!(problem("").starts_with("RINGYO_WEBHOOK_SECRET is empty;"));
    let layer = receiver::layer_from(Ok("whsec_x".into())).unwrap();
    #[cfg(not(feature = "redis"))]
    assert!(
        receiver::with_store(layer, Some("redis://127.0.0.1:1".into()))
            .unwrap_err()
            .contains("--features redis")
    );
    #[cfg(feature = "redis")]
    assert!(receiver::with_store(layer, Some("not a url".into()))
        .unwrap_err()
        .starts_with("RINGYO_REDIS_URL cannot be used"));
    assert!(receiver::layer_from(Err(std::env::VarError::NotPresent)).is_ok());

    assert_eq!(
        receiver::bind_from(None).unwrap().to_string(),
        "127.0.0.1:3000"
    );
    assert_eq!(
        receiver::bind_from(Some("localhost".into())).unwrap_err(),
        "RINGYO_BIND is \"localhost\", which is not an address and port such as 127.0.0.1:3000"
    );
}

#[tokio::test]
async fn address_in_use_is_a_sentence_that_names_the_fix() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = TcpListener::bind(addr).await.unwrap_err();
    assert_eq!(
        receiver::cannot_listen(addr, &err),
        format!("cannot listen on {addr}: address in use; set RINGYO_BIND to another address")
    );
}

#[test]
fn development_secret_is_the_one_the_test_kit_and_sender_use() {
    assert_eq!(
        receiver::DEVELOPMENT_SECRET,
        ringyo_webhook::testing::DEVELOPMENT_SECRET
    );
    assert_eq!(receiver::PATH, ringyo_webhook::testing::DEFAULT_PATH);
}
