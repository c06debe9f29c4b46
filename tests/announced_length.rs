//! Memory follows the bytes a client sends, not the `Content-Length` it announces.
//!
//! Its own test binary: it measures the process's reserved memory, which no other test may
//! move meanwhile.

use ringyo_test_support as support;

use std::time::Duration;

use axum::{http::StatusCode, routing::post, Router};
use ringyo_webhook::{RingyoEvent, RingyoWebhookLayer};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// `count` clients that each send `head` and two short chunks of body, then wait.
async fn hold(addr: std::net::SocketAddr, head: &str, count: usize) -> Vec<TcpStream> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(b"{\"event\":").await.unwrap();
        clients.push(stream);
    }
    // A second chunk each: the layer now joins chunks in a buffer of its own.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for stream in &mut clients {
        stream.write_all(b"\"call.completed\",").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_announcing_the_limit_and_sending_a_few_bytes_reserve_little() {
    const CLIENTS: usize = 400;
    let limit = RingyoWebhookLayer::DEFAULT_BODY_LIMIT;
    let handler = |_: RingyoEvent| async { StatusCode::NO_CONTENT };
    let app = Router::new().route("/", post(handler).route_layer(support::layer()));
    let addr = support::serve(app).await;
    // A well-formed signature that will not match: the body must be read before it fails.
    let head = format!(
        "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         x-ringyo-signature: {}\r\ncontent-length: {limit}\r\n\r\n",
        "0".repeat(64)
    );

    // A first wave, not measured: the allocator's per-thread arenas (64 MiB of address space
    // each) are set up by then.
    drop(hold(addr, &head, CLIENTS / 4).await);
    let base = support::proc_status_bytes("VmSize:");
    let clients = hold(addr, &head, CLIENTS).await;
    let reserved = support::proc_status_bytes("VmSize:").saturating_sub(base);
    drop(clients);

    let announced = (CLIENTS * limit) as u64;
    println!(
        "{CLIENTS} clients announcing {} MiB in all, sending 26 bytes each: the process \
         reserved {} MiB more",
        announced >> 20,
        reserved >> 20
    );
    assert!(
        reserved < announced / 8,
        "reserved {reserved} bytes for {announced} bytes announced and 5 KiB received"
    );
}
