//! The layer outside plain axum: in a hyper 1.x server and beside a gRPC service in tonic.

mod common;

#[allow(dead_code)]
#[path = "../examples/hyper.rs"]
mod hyper_example;

#[allow(dead_code)]
#[path = "../examples/tonic.rs"]
mod tonic_example;

use std::net::SocketAddr;

use common::{deliver, envelope, sign};
use serde_json::json;
use tokio::net::TcpListener;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[tokio::test]
async fn hyper_service_gets_only_verified_events() {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        hyper_example::serve(listener, common::layer())
            .await
            .unwrap()
    });

    let body = envelope(
        "phone_number.assigned",
        json!({"phone_number": "+15551234567"}),
    );
    let response = common::post_signed(addr, "/anything", body.clone(), &sign(&body)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "phone_number.assigned");

    // A verified body that is no event gets the extractor's JSON error, from plain hyper too.
    let not_json = b"not json".to_vec();
    let layer = common::layer().skip_timestamp_check();
    let (listener2, addr2) = bind().await;
    tokio::spawn(async move { hyper_example::serve(listener2, layer).await.unwrap() });
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

#[tokio::test]
async fn tonic_server_hosts_webhook_route_beside_grpc() {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        tonic_example::serve(listener, common::layer())
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
