//! The layer outside plain axum: in a hyper 1.x server and beside a gRPC service in tonic.

use ringyo_test_support as support;

#[allow(dead_code)]
#[path = "../../examples/hyper.rs"]
mod hyper_example;

#[allow(dead_code)]
#[path = "../../examples/tonic.rs"]
mod tonic_example;

use std::{future::pending, net::SocketAddr, time::Duration};

use ringyo_test_support::{deliver, envelope, sign};
use serde_json::json;
use tokio::net::TcpListener;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// The hyper example's documented limits.
fn limits() -> hyper_example::ServerLimits {
    hyper_example::ServerLimits::default()
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[tokio::test]
async fn hyper_service_gets_only_verified_events() {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        hyper_example::serve(listener, support::layer(), limits(), pending())
            .await
            .unwrap()
    });

    let body = envelope(
        "phone_number.assigned",
        json!({"phone_number": "+15551234567"}),
    );
    let response = support::post_signed(addr, "/anything", body.clone(), &sign(&body)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "phone_number.assigned");

    // A verified body that is no event gets the extractor's JSON error, from plain hyper too.
    let not_json = b"not json".to_vec();
    let layer = support::layer().skip_timestamp_check();
    let (listener2, addr2) = bind().await;
    tokio::spawn(async move {
        hyper_example::serve(listener2, layer, limits(), pending())
            .await
            .unwrap()
    });
    let (status, json, headers) =
        deliver(addr2, "/", not_json.clone(), Some(&sign(&not_json))).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_json"))
    );
    assert_eq!(headers["content-type"], "application/json");

    let (status, json, _) = deliver(addr, "/", body, Some(&"00".repeat(32))).await;
    assert_eq!(status, 401);
    assert_eq!(json["error"], "invalid_signature");
    let (status, json, headers) = deliver(addr, "/", Vec::new(), None).await;
    assert_eq!(status, 401);
    assert_eq!(json["error"], "missing_signature");
    assert_eq!(headers["content-type"], "application/json");
}

/// The hyper example closes a connection that sends nothing, or trickles its headers, once
/// the header-read time-out passes, and serves others meanwhile.
#[tokio::test]
async fn hyper_example_closes_connections_that_stall_before_their_headers() {
    let (listener, addr) = bind().await;
    let limits = hyper_example::ServerLimits {
        header_read_timeout: Duration::from_millis(300),
        ..limits()
    };
    tokio::spawn(async move {
        hyper_example::serve(listener, support::layer(), limits, pending())
            .await
            .unwrap()
    });
    stalled_connections_are_closed_while_a_delivery_is_served(addr, "/", Duration::from_secs(3))
        .await;
}

/// The tonic example closes every connection at its maximum age (and grace): one that sends
/// nothing or trickles its headers is gone by then, and a webhook is served meanwhile.
#[tokio::test]
async fn tonic_example_closes_stalled_connections_at_their_maximum_age() {
    let (listener, addr) = bind().await;
    let limits = tonic_example::Limits {
        max_connection_age: Duration::from_millis(300),
        connection_grace: Duration::from_millis(300),
        ..tonic_example::Limits::default()
    };
    tokio::spawn(async move {
        tonic_example::serve(listener, support::layer(), limits, pending())
            .await
            .unwrap()
    });
    let within = Duration::from_secs(5);
    stalled_connections_are_closed_while_a_delivery_is_served(addr, "/webhooks/ringyo", within)
        .await;
}

/// Opens a silent connection and one that trickles its headers to `path`, has a signed
/// delivery answered meanwhile, and checks both stalled ones are closed within `within`.
async fn stalled_connections_are_closed_while_a_delivery_is_served(
    addr: SocketAddr,
    path: &str,
    within: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut trickling = tokio::net::TcpStream::connect(addr).await.unwrap();
    trickling
        .write_all(format!("POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n").as_bytes())
        .await
        .unwrap();
    let body = envelope("credits.low", json!({}));
    let response = support::post_signed(addr, path, body.clone(), &sign(&body)).await;
    assert_eq!(response.status(), 200, "served meanwhile");
    for stream in [silent, trickling] {
        assert!(
            support::closed_within(stream, within).await,
            "the stalled connection was not closed"
        );
    }
}

#[tokio::test]
async fn tonic_server_hosts_webhook_route_beside_grpc() {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        let limits = tonic_example::Limits::default();
        tonic_example::serve(listener, support::layer(), limits, pending())
            .await
            .unwrap()
    });

    let body = envelope("appointment.created", json!({"id": "appt_1"}));
    let (status, _, _) = deliver(addr, "/webhooks/ringyo", body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 200);
    let (status, json, _) = deliver(addr, "/webhooks/ringyo", body, None).await;
    assert_eq!(status, 401);
    assert_eq!(json["error"], "missing_signature");

    // The gRPC service beside it is not behind the layer.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let reply = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
}

/// Past the tonic example's cap, a connection waits for a slot rather than being served beside
/// the others; the slot frees once the connection holding it reaches its maximum age.
#[tokio::test]
async fn tonic_example_past_the_connection_cap_a_client_waits_for_a_slot_and_is_then_served() {
    let (listener, addr) = bind().await;
    let limits = tonic_example::Limits {
        max_connection_age: Duration::from_millis(800),
        connection_grace: Duration::from_millis(200),
        max_connections: 1,
        ..tonic_example::Limits::default()
    };
    tokio::spawn(async move {
        tonic_example::serve(listener, support::layer(), limits, pending())
            .await
            .unwrap()
    });
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let body = envelope("credits.low", json!({}));
    let (status, _, _) = deliver(addr, "/webhooks/ringyo", body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "served only once the slot was free: {:?}",
        started.elapsed()
    );
    drop(silent);
}

/// A client stalled mid-body holds neither example's shutdown past its deadline: `serve`
/// returns once the deadline passes, having waited for the request until then.
#[tokio::test]
async fn hyper_and_tonic_examples_stop_by_their_shutdown_deadline_despite_a_stalled_client() {
    let deadline = Duration::from_millis(500);
    for example in ["hyper", "tonic"] {
        let (listener, addr) = bind().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let served = match example {
            "hyper" => {
                let limits = hyper_example::ServerLimits {
                    shutdown_deadline: deadline,
                    ..limits()
                };
                tokio::spawn(async move {
                    hyper_example::serve(listener, support::layer(), limits, shutdown)
                        .await
                        .map_err(|err| err.to_string())
                })
            }
            _ => {
                let limits = tonic_example::Limits {
                    shutdown_deadline: deadline,
                    ..tonic_example::Limits::default()
                };
                tokio::spawn(async move {
                    tonic_example::serve(listener, support::layer(), limits, shutdown)
                        .await
                        .map_err(|err| err.to_string())
                })
            }
        };
        let stalled = support::stalled_mid_body(addr, "/webhooks/ringyo").await;
        let started = std::time::Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .unwrap_or_else(|_| panic!("{example}: the stalled client held the shutdown"))
            .unwrap()
            .unwrap();
        assert!(
            started.elapsed() >= deadline.mul_f32(0.8),
            "{example}: it waited for the request: {:?}",
            started.elapsed()
        );
        drop(stalled);
    }
}
