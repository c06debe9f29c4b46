//! The layer through real HTTP: every status it answers, on a real server on 127.0.0.1.

use ringyo_test_support as support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{extract::State, routing::post, Router};
use ringyo_test_support::{deliver, envelope, raw_exchange, read_response, serve, sign, status_of};
use ringyo_webhook::{Event, RingyoEvent, RingyoWebhookLayer, VerifiedPayload};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const PATH: &str = "/webhooks/ringyo";

/// Handled deliveries, and the router that counts them.
fn app(limit: usize) -> (Router, Arc<AtomicUsize>) {
    app_with(|layer| layer.body_limit(limit))
}

/// [`app`] with a layer configured by `configure`.
fn app_with(
    configure: impl FnOnce(RingyoWebhookLayer) -> RingyoWebhookLayer,
) -> (Router, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    async fn handle(
        State(handled): State<Arc<AtomicUsize>>,
        payload: VerifiedPayload,
        event: RingyoEvent<Event>,
    ) -> String {
        handled.fetch_add(1, Ordering::SeqCst);
        format!("{} {}", event.kind, payload.secret_index())
    }
    let layer = configure(support::layer().add_secret("whsec_previous").unwrap());
    let router = Router::new()
        .route(PATH, post(handle).route_layer(layer))
        .with_state(Arc::clone(&handled));
    (router, handled)
}

async fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let (router, handled) = app(RingyoWebhookLayer::DEFAULT_BODY_LIMIT);
    (serve(router).await, handled)
}

/// A raw HTTP response is the JSON rejection `status` / `code`.
fn assert_raw_rejection(response: &str, status: u16, code: &str) {
    assert_eq!(status_of(response), status, "{response}");
    assert!(
        response.contains(&format!(r#""error":"{code}""#)),
        "{response}"
    );
}

fn assert_rejected(status: u16, body: &serde_json::Value, expected: u16, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn valid_delivery_reaches_the_handler() {
    let (addr, handled) = server().await;
    let body = envelope("call.completed", json!({"id": "call_xyz789"}));
    let signature = sign(&body);
    let response = support::client()
        .post(format!("http://{addr}{PATH}"))
        .header("X-Ringyo-Signature", &signature) // header names are case-insensitive
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "call.completed 0");
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn signature_from_the_seed_node_code_verifies() {
    let (addr, _) = server().await;
    // Signed by the seed's Node verifier: createHmac('sha256', SECRET).update(body).digest('hex').
    let body = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00Z","webhook_id":"wh_abc123","data":{"id":"call_xyz789"}}"#;
    let node = "72d34d0e8843ebffab0e86ee065dbe484b179988222ca4f5a402824658241a46";
    let (status, _, _) = deliver(addr, PATH, body.to_vec(), Some(node)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn pretty_printed_unicode_escaped_body_is_hashed_as_received() {
    let (addr, _) = server().await;
    let body = "{\n  \"event\": \"call.completed\",\n  \"timestamp\": \"2024-01-15T10:30:00Z\",\n  \"webhook_id\": \"wh_abc123\",\n  \"data\": {\n    \"id\": \"call_xyz789\",\n    \"transcript\": [\n      {\"role\": \"user\", \"content\": \"Caf\\u00e9 at 3 \\u2014 \\ud83d\\udcde\"}\n    ]\n  }\n}\n";
    // Both from Node: HMAC of the raw bytes, and HMAC of JSON.stringify(JSON.parse(body)),
    // which is what the seed's handler computes and what must NOT be accepted.
    let raw = "0dc658bf6bf3a869d8cc533cee01679b7d2342f31e82cdcde797b32161d75f11";
    let reserialized = "42fa632f97136083d9bb4df74b77787dcad69c9d11fb7d4f38c0bd9face5cfc6";
    assert_eq!(sign(body.as_bytes()), raw);

    let (status, _, _) = deliver(addr, PATH, body.into(), Some(raw)).await;
    assert_eq!(status, 200);
    let (status, json, _) = deliver(addr, PATH, body.into(), Some(reserialized)).await;
    assert_rejected(status, &json, 401, "invalid_signature");
}

#[tokio::test]
async fn uppercase_and_prefixed_signatures_verify() {
    let (addr, _) = server().await;
    let body = envelope("credits.low", json!({"balance": 3}));
    let signature = sign(&body);
    for header in [signature.to_uppercase(), format!("sha256={signature}")] {
        let (status, _, _) = deliver(addr, PATH, body.clone(), Some(&header)).await;
        assert_eq!(status, 200, "{header}");
    }
}

#[tokio::test]
async fn missing_signature_is_401_missing_signature() {
    let (addr, handled) = server().await;
    let (status, json, headers) =
        deliver(addr, PATH, envelope("call.completed", json!({})), None).await;
    assert_rejected(status, &json, 401, "missing_signature");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn malformed_signatures_are_401_invalid_signature() {
    let (addr, handled) = server().await;
    let body = envelope("call.completed", json!({}));
    let good = sign(&body);
    let cases = [
        String::new(),
        "sha256=".into(),
        good[..63].into(),
        good[..32].into(),
        format!("{good}00"),
        format!("{}zz", &good[..62]),
    ];
    for header in &cases {
        let (status, json, _) = deliver(addr, PATH, body.clone(), Some(header)).await;
        assert_rejected(status, &json, 401, "invalid_signature");
    }
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn wrong_secret_or_tampered_body_is_401_invalid_signature() {
    let (addr, handled) = server().await;
    let body = envelope("call.completed", json!({"duration": 10}));
    let wrong = ringyo_webhook::testing::sign("whsec_other_endpoint", &body).unwrap();
    let (status, json, _) = deliver(addr, PATH, body.clone(), Some(&wrong)).await;
    assert_rejected(status, &json, 401, "invalid_signature");

    let tampered = envelope("call.completed", json!({"duration": 11}));
    let (status, json, _) = deliver(addr, PATH, tampered, Some(&sign(&body))).await;
    assert_rejected(status, &json, 401, "invalid_signature");
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn repeated_header_with_different_values_is_rejected() {
    let (addr, handled) = server().await;
    let body = envelope("call.completed", json!({}));
    let good = sign(&body);
    let other = sign(b"something else");
    for (first, second, expected) in [
        (&good, &good, 200),
        (&good, &other, 401),
        (&other, &good, 401),
    ] {
        let response = support::client()
            .post(format!("http://{addr}{PATH}"))
            .header("x-ringyo-signature", first)
            .header("x-ringyo-signature", second)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
        if expected == 401 {
            let json: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            assert_eq!(json["error"], "conflicting_signatures");
        }
    }
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn old_secret_verifies_and_is_reported() {
    let (addr, _) = server().await;
    let body = envelope("agent.updated", json!({}));
    let signature = ringyo_webhook::testing::sign("whsec_previous", &body).unwrap();
    let response = support::post_signed(addr, PATH, body, &signature).await;
    assert_eq!(response.text().await.unwrap(), "agent.updated 1");
}

/// A client that waits for `100 Continue` sends nothing until asked: one that announces a body
/// over the limit is answered at once, and never asked.
#[tokio::test]
async fn content_length_over_the_limit_with_expect_100_continue_is_413_before_the_body_is_sent() {
    let (router, handled) = app(1024);
    let addr = serve(router).await;
    // Only the head is sent: an answer proves the body was never waited for.
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: {}\r\ncontent-length: 1025\r\nexpect: 100-continue\r\n\r\n",
        "ab".repeat(32)
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let response = read_response(&mut stream).await;
    assert_raw_rejection(&response, 413, "payload_too_large");
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bad_signature_headers_are_rejected_before_the_body_is_sent() {
    let (addr, _) = server().await;
    let conflicting = format!(
        "x-ringyo-signature: {}\r\nx-ringyo-signature: {}\r\n",
        "00".repeat(32),
        "11".repeat(32)
    );
    let cases = [
        ("", "missing_signature"),
        ("x-ringyo-signature: sha256=\r\n", "invalid_signature"),
        ("x-ringyo-signature: abc\r\n", "invalid_signature"),
        (conflicting.as_str(), "conflicting_signatures"),
    ];
    for (header, code) in cases {
        // The head announces a body that never comes: an answer proves it was not awaited.
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\n{header}content-length: 100\r\n\r\n"
        );
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let response = read_response(&mut stream).await;
        assert_raw_rejection(&response, 401, code);
    }
}

/// A body over the limit that does not end, chunked or with a `Content-Length` far past what
/// arrives: thrown away only for the discard time, then answered 413 while the client is still
/// sending, so no peer holds the connection by sending for ever.
#[tokio::test]
async fn a_body_over_the_limit_that_keeps_coming_is_413_once_the_discard_time_is_up() {
    let limit = 64 * 1024;
    let (router, handled) = app_with(|layer| {
        layer
            .body_limit(limit)
            .discard_time(Duration::from_millis(100))
    });
    let addr = serve(router).await;
    let signature = "ab".repeat(32);
    let chunked = (
        format!("x-ringyo-signature: {signature}\r\ntransfer-encoding: chunked\r\n"),
        format!("{:x}\r\n{}\r\n", 4096, "x".repeat(4096)),
    );
    let announced = (
        format!(
            "x-ringyo-signature: {signature}\r\ncontent-length: {}\r\n",
            1_u64 << 40
        ),
        "x".repeat(4096),
    );
    for (headers, chunk) in [chunked, announced] {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let head = format!("POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\n{headers}\r\n");
        // Chunks until the server answers, paced so the discard time passes while they come,
        // and bounded (at 64 MiB).
        let writing = tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await.unwrap();
            for _ in 0..16 * 1024 {
                if writer.write_all(chunk.as_bytes()).await.is_err() {
                    return false; // the server closed the connection after answering
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            true
        });
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !support::response_complete(&out) {
            match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        assert_raw_rejection(&String::from_utf8_lossy(&out), 413, "payload_too_large");
        writing.abort();
        let sent_it_all = writing.await.unwrap_or(false);
        assert!(!sent_it_all, "answered only after 64 MiB");
    }
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn chunked_body_under_limit_verifies() {
    let (addr, handled) = server().await;
    let body = envelope(
        "call.transcript.ready",
        json!({"transcript": [{"role": "agent", "content": "hello"}]}),
    );
    let response = support::post_signed(addr, PATH, support::chunked(&body, 7), &sign(&body)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn body_failing_mid_read_is_400() {
    let (addr, handled) = server().await;
    let request = format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: {}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nnot-a-chunk-size\r\n\r\n",
        "ab".repeat(32)
    );
    let response = raw_exchange(addr, request.as_bytes()).await;
    assert_raw_rejection(&response, 400, "body_read_failed");
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn wrong_path_is_404_and_wrong_method_is_405_not_401() {
    let (addr, _) = server().await;
    let statuses = support::wrong_path_and_method(addr, PATH).await;
    assert_eq!(statuses, (404, 405));
}

#[tokio::test]
async fn two_hundred_concurrent_deliveries_all_verify() {
    let (addr, handled) = server().await;
    let client = support::client();
    let requests = (0..200).map(|i| {
        let body = envelope("call.completed", json!({"id": format!("call_{i}")}));
        let signature = sign(&body);
        let request = client
            .post(format!("http://{addr}{PATH}"))
            .header("x-ringyo-signature", signature)
            .body(body);
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses
        .iter()
        .all(|status| *status.as_ref().unwrap() == 200));
    assert_eq!(handled.load(Ordering::SeqCst), 200);
}

#[tokio::test]
async fn server_keeps_serving_after_bad_input() {
    let (addr, handled) = server().await;
    let garbage: [&[u8]; 4] = [
        b"\x00\x01\x02 not http\r\n\r\n",
        b"POST /webhooks/ringyo HTTP/1.1\r\ncontent-length: nope\r\n\r\n",
        b"POST /webhooks/ringyo HTTP/1.1\r\nhost: x\r\nx-ringyo-signature: \xff\xfe\r\ncontent-length: 2\r\n\r\n{}",
        b"POST /webhooks/ringyo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nx-ringyo-signature: sha256=\r\n\r\nzz\r\n",
    ];
    for request in garbage {
        let response = raw_exchange(addr, request).await;
        let status = status_of(&response);
        assert!(status == 0 || (400..500).contains(&status), "{response}");
    }
    let body = envelope("call.completed", json!({}));
    let (status, _, _) = deliver(addr, PATH, body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 200);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

/// Guards the docs' advice: `Router::route_layer` wraps the method router's 405 fallback too.
#[tokio::test]
async fn router_route_layer_would_turn_a_wrong_method_into_401() {
    let router = Router::new()
        .route(PATH, post(|| async {}))
        .route_layer(support::layer());
    let addr = serve(router).await;
    let statuses = support::wrong_path_and_method(addr, PATH).await;
    assert_eq!(statuses, (404, 401));
}

/// `Router::layer` works too, and guards every path, including unknown ones.
#[tokio::test]
async fn router_layer_guards_every_path() {
    let router = Router::new()
        .route(PATH, post(|| async { "ok" }))
        .layer(support::layer());
    let addr = serve(router).await;
    let body = envelope("call.completed", json!({}));
    let (status, _, _) = deliver(addr, PATH, body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 200);
    let (status, json, _) = deliver(addr, "/nope", body, None).await;
    assert_eq!(status, 401);
    assert_eq!(json["error"], "missing_signature");
}

#[tokio::test]
async fn body_exactly_at_the_limit_passes_and_one_byte_more_is_413() {
    let body = envelope("credits.low", json!({"balance": 1}));
    let (router, handled) = app(body.len());
    let addr = serve(router).await;
    let (status, _, _) = deliver(addr, PATH, body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 200);

    let mut longer = body.clone();
    longer.push(b' ');
    let (status, json, _) = deliver(addr, PATH, longer.clone(), Some(&sign(&longer))).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (413, Some("payload_too_large"))
    );

    // The same bodies streamed without a Content-Length.
    for (bytes, expected) in [(body, 200), (longer, 413)] {
        let body = support::chunked(&bytes, 5);
        let response = support::post_signed(addr, PATH, body, &sign(&bytes)).await;
        assert_eq!(response.status(), expected);
    }
    assert_eq!(handled.load(Ordering::SeqCst), 2);
}

/// A client that sends its whole body before it reads the answer (Python's `http.client`,
/// Node's `http`, many SDKs) sees the 413 for a body over the limit, with a `Content-Length`
/// or chunked, rather than a reset connection: the layer reads the rest and throws it away.
#[tokio::test]
async fn a_client_that_sends_all_before_reading_sees_the_413() {
    let (router, handled) = app(1024);
    let addr = serve(router).await;
    let body = vec![b'x'; 2000];
    let signature = "ab".repeat(32);
    let with_length = format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: {signature}\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let chunked = format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: {signature}\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    let mut chunked_body = Vec::new();
    for part in body.chunks(300) {
        chunked_body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked_body.extend_from_slice(part);
        chunked_body.extend_from_slice(b"\r\n");
    }
    chunked_body.extend_from_slice(b"0\r\n\r\n");
    for (head, body) in [(with_length, body.clone()), (chunked, chunked_body)] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // Everything, in small writes with pauses, before reading a byte.
        stream.write_all(head.as_bytes()).await.unwrap();
        for part in body.chunks(256) {
            stream.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let response = read_response(&mut stream).await;
        assert_raw_rejection(&response, 413, "payload_too_large");
    }
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

/// Node's `http` and Python's `http.client` write the whole body before they read the answer:
/// 4 and 16 MiB against the default 1 MiB limit are read and thrown away, and the client
/// reads the 413, rather than a reset connection (issue 20, item 7).
#[tokio::test]
async fn a_client_that_writes_4_or_16_mib_before_reading_sees_the_413() {
    let (addr, handled) = server().await;
    for mib in [4, 16] {
        let body = vec![b'x'; mib << 20];
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: {}\r\n\
             content-length: {}\r\n\r\n",
            "ab".repeat(32),
            body.len()
        );
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let written = stream.write_all(&body).await;
        assert!(written.is_ok(), "{mib} MiB: {written:?}");
        let response = read_response(&mut stream).await;
        assert_raw_rejection(&response, 413, "payload_too_large");
    }
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

/// The head of a signed POST of `body` to the webhook, with `extra` header lines.
fn signed_head(body: &[u8], extra: &str) -> String {
    format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: {}\r\ncontent-length: {}\r\n{extra}\r\n",
        sign(body),
        body.len()
    )
}

/// `Expect: 100-continue`: the server asks for the body only once the header checks passed,
/// then verifies it; a bad signature is refused without asking for the body at all.
#[tokio::test]
async fn expect_100_continue_asks_for_the_body_only_when_the_headers_pass() {
    let (addr, handled) = server().await;
    let body = envelope("call.completed", json!({}));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(signed_head(&body, "expect: 100-continue\r\n").as_bytes())
        .await
        .unwrap();
    let interim = support::read_until(&mut stream, |bytes| bytes.ends_with(b"\r\n\r\n")).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    stream.write_all(&body).await.unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(handled.load(Ordering::SeqCst), 1);

    let request = format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: nope\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    let response = raw_exchange(addr, request.as_bytes()).await;
    assert!(!response.contains("100 Continue"), "{response}");
    assert_raw_rejection(&response, 401, "invalid_signature");
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

/// Pipelined requests, all written before any answer is read, are each answered, in order.
#[tokio::test]
async fn pipelined_deliveries_are_each_answered_in_order() {
    let (addr, handled) = server().await;
    let first = envelope("call.completed", json!({"id": "call_1"}));
    let second = envelope("call.failed", json!({"id": "call_2"}));
    let mut requests = Vec::new();
    requests.extend_from_slice(signed_head(&first, "").as_bytes());
    requests.extend_from_slice(&first);
    // A forged one between two genuine ones.
    requests.extend_from_slice(
        signed_head(&second, "")
            .replace(&sign(&second), &"0".repeat(64))
            .as_bytes(),
    );
    requests.extend_from_slice(&second);
    requests.extend_from_slice(signed_head(&second, "").as_bytes());
    requests.extend_from_slice(&second);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&requests).await.unwrap();
    // Split at each status line: no body here holds one.
    let answers = |bytes: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(bytes)
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|answer| format!("HTTP/1.1 {answer}"))
            .collect()
    };
    let all = support::read_until(&mut stream, |bytes| {
        let seen = answers(bytes);
        seen.len() == 3 && support::response_complete(seen[2].as_bytes())
    })
    .await;
    let seen = answers(all.as_bytes());
    assert_eq!(seen.len(), 3, "{all}");
    assert_eq!(status_of(&seen[0]), 200, "{}", seen[0]);
    assert!(seen[0].ends_with("call.completed 0"), "{}", seen[0]);
    assert_raw_rejection(&seen[1], 401, "invalid_signature");
    assert_eq!(status_of(&seen[2]), 200, "{}", seen[2]);
    assert!(seen[2].ends_with("call.failed 0"), "{}", seen[2]);
    assert_eq!(handled.load(Ordering::SeqCst), 2);
}

/// 60 KB of headers (60 lines of 1 KB) around a genuine delivery: answered like any other,
/// and the server goes on serving.
#[tokio::test]
async fn sixty_kilobytes_of_headers_are_answered_and_the_server_keeps_serving() {
    let (addr, handled) = server().await;
    let body = envelope("credits.low", json!({}));
    let padding: String = (0..60)
        .map(|line| format!("x-padding-{line}: {}\r\n", "a".repeat(1000)))
        .collect();
    let mut request = signed_head(&body, &padding).into_bytes();
    request.extend_from_slice(&body);
    let response = raw_exchange(addr, &request).await;
    assert_eq!(status_of(&response), 200, "{response}");
    let (status, _, _) = deliver(addr, PATH, body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 200);
    assert_eq!(handled.load(Ordering::SeqCst), 2);
}

/// A client that goes away halfway through its body: no handler runs, and the server serves
/// the next client.
#[tokio::test]
async fn a_client_that_disconnects_mid_body_runs_no_handler() {
    let (addr, handled) = server().await;
    let body = envelope("call.completed", json!({}));
    let stalled = support::stalled_mid_body(addr, PATH).await;
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    let (status, _, _) = deliver(addr, PATH, body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 200);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

/// Bodies that parsers read differently never reach a handler: a second `timestamp` after the
/// first (most parsers keep the last, so freshness would have checked one value and the
/// handler read another), bytes after the object, bytes that are not UTF-8.
///
/// The handler takes the raw `VerifiedPayload`, as one that parses with its own parser would:
/// the refusal is the layer's, not the extractor's.
#[tokio::test]
async fn bodies_that_parsers_read_differently_are_refused_by_the_layer() {
    let handled = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handled);
    let router = Router::new().route(
        PATH,
        post(move |_: VerifiedPayload| async move {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .route_layer(support::layer()),
    );
    let addr = serve(router).await;
    let at = support::SENT_AT;
    let cases: [(Vec<u8>, u16, &str); 3] = [
        (
            format!(r#"{{"event":"call.completed","timestamp":"{at}","data":{{}},"timestamp":"2020-01-01T00:00:00Z"}}"#).into_bytes(),
            422,
            "invalid_envelope",
        ),
        (
            format!(r#"{{"event":"call.completed","timestamp":"{at}","data":{{}}}}{{"event":"call.failed"}}"#).into_bytes(),
            400,
            "invalid_json",
        ),
        (
            [format!(r#"{{"event":"call.completed","timestamp":"{at}","x":""#).as_bytes(), b"\xff\"}"].concat(),
            400,
            "invalid_json",
        ),
    ];
    for (body, status, code) in cases {
        let (answered, json, _) = deliver(addr, PATH, body.clone(), Some(&sign(&body))).await;
        assert_rejected(answered, &json, status, code);
    }
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}
