//! `ringyo_webhook::serve` through real TCP on 127.0.0.1: the header-read time-out, the
//! connection cap, the graceful shutdown and its deadline, each with short limits.
//!
//! Times are asserted only as generous bounds, or as lower bounds the mechanism guarantees (a
//! connection freed by a time-out is not freed before it).

use ringyo_test_support as support;

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{http::StatusCode, routing::post, Router};
use ringyo_webhook::serve::{serve, ServerLimits};
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};

const PATH: &str = "/webhooks/ringyo";

/// Serves the tests' layer around a route that answers 200, within `limits`, until `shutdown`
/// resolves: the address, and the server's task.
async fn start(
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (SocketAddr, JoinHandle<Result<(), String>>) {
    let app = Router::new().route(
        PATH,
        post(|| async { StatusCode::OK }).route_layer(support::layer()),
    );
    let (listener, addr) = support::local_listener().await;
    let served = tokio::spawn(async move {
        serve(listener, app, limits, shutdown)
            .await
            .map_err(|err| err.to_string())
    });
    (addr, served)
}

/// [`start`], stopped when the returned sender sends (or is dropped).
async fn start_stoppable(
    limits: ServerLimits,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<Result<(), String>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let (addr, served) = start(limits, async move {
        let _ = stopped.await;
    })
    .await;
    (addr, stop, served)
}

/// A signed delivery to [`PATH`]: its status.
async fn deliver(addr: SocketAddr) -> u16 {
    let body = support::envelope("call.completed", json!({ "id": "call_1" }));
    let signature = support::sign(&body);
    support::deliver(addr, PATH, body, Some(&signature)).await.0
}

/// Clients that hold connections without finishing a request (headers a line at a time,
/// nothing at all, or idle after one request) are closed after the header-read time-out, and
/// a genuine delivery is served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn clients_that_stall_mid_headers_send_nothing_or_idle_are_closed_and_others_served() {
    let limits = ServerLimits::default().header_read_timeout(Duration::from_millis(500));
    let (addr, _served) = start(limits, std::future::pending()).await;
    let mut hostile = Vec::new();
    for n in 0..90 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        match n % 3 {
            // Headers a line at a time, for 10 s at most.
            0 => {
                stream
                    .write_all(b"POST /webhooks/ringyo HTTP/1.1\r\nhost: 127.0.0.1\r\n")
                    .await
                    .unwrap();
                let (reader, mut writer) = stream.into_split();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if writer.write_all(b"x-slow: 1\r\n").await.is_err() {
                            return;
                        }
                    }
                });
                hostile.push(Box::new(reader) as Box<dyn AsyncRead + Unpin + Send>);
            }
            // Nothing at all.
            1 => hostile.push(Box::new(stream)),
            // One request, then an idle keep-alive connection.
            _ => {
                stream
                    .write_all(b"GET /nothing HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                    .await
                    .unwrap();
                hostile.push(Box::new(stream));
            }
        }
    }
    assert_eq!(deliver(addr).await, 200, "served meanwhile");
    let closed = futures_util::future::join_all(
        hostile
            .into_iter()
            .map(|stream| support::closed_within(stream, Duration::from_secs(5))),
    )
    .await;
    assert!(closed.iter().all(|closed| *closed), "{closed:?}");
}

/// Past the cap, a connection waits for a slot rather than being served beside the others,
/// and is served as soon as one of them closes.
#[tokio::test(flavor = "multi_thread")]
async fn past_the_connection_cap_a_client_waits_until_a_connection_closes() {
    // A header-read time-out far beyond the test: only a close frees a slot.
    let limits = ServerLimits::default()
        .max_connections(2)
        .header_read_timeout(Duration::from_secs(60));
    let (addr, _served) = start(limits, std::future::pending()).await;
    let mut silent = vec![
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = tokio::spawn(deliver(addr));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "the third connection was served beside the two"
    );
    drop(silent.pop());
    let status = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the freed slot was not taken")
        .unwrap();
    assert_eq!(status, 200);
}

/// On the shutdown signal, a request whose body is still arriving finishes and is answered,
/// new connections are refused, and `serve` returns once the connection closed, long before
/// its deadline.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_finishes_the_request_in_flight_and_refuses_new_connections() {
    let limits = ServerLimits::default().shutdown_deadline(Duration::from_secs(20));
    let (addr, stop, served) = start_stoppable(limits).await;
    let body = support::envelope("call.completed", json!({}));
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: {}\r\n\
         content-length: {}\r\n\r\n",
        support::sign(&body),
        body.len()
    );
    let mut in_flight = TcpStream::connect(addr).await.unwrap();
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    stop.send(()).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting after the shutdown signal");
    assert!(!served.is_finished(), "stopped before the request ended");

    in_flight.write_all(&body[10..]).await.unwrap();
    let response = support::read_response(&mut in_flight).await;
    assert_eq!(support::status_of(&response), 200, "{response}");
    assert!(
        support::closed_within(in_flight, Duration::from_secs(5)).await,
        "the connection stayed open after its last request"
    );
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve did not return once its connections closed")
        .unwrap()
        .unwrap();
}

/// A client stalled mid-body holds no shutdown past its deadline: its connection is closed and
/// `serve` returns.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_client_does_not_hold_the_shutdown_past_its_deadline() {
    let deadline = Duration::from_millis(500);
    let (addr, stop, served) =
        start_stoppable(ServerLimits::default().shutdown_deadline(deadline)).await;
    support::stops_by_its_deadline_despite_a_stalled_client(addr, stop, served, deadline).await;
}
