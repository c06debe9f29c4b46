//! A soak: a long stream of deliveries, a tenth of them bad, each answer checked.
//!
//! ```text
//! target/release/examples/soak <ADDR> <DELIVERIES> <CONCURRENCY> <SERVER_PID>
//! ```
//!
//! Sends to `load_server serve layer-memory` at ADDR (its secret, its path): genuine
//! deliveries (each distinct, expected 204), and one in ten bad, in turn: tampered, signed
//! with another secret, stale, unsigned (401 with their codes), over the 1 MiB limit (413,
//! the layer reading it to the end), signed but not JSON (400), and a replay of a genuine one
//! already answered (200, a duplicate). Every answer must be the expected status and code;
//! none may be a 5xx. It reads
//! the server's resident memory (`/proc/SERVER_PID/status`) after each tenth, then asks the
//! server how many times its handler ran (`GET /stats`), which must be the genuine count.
//! Prints a report; exits non-zero on any mismatch.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ringyo_webhook::{
    testing::{Fault, TestDelivery},
    RejectionKind, RingyoWebhookLayer,
};
use serde_json::{json, Value};

const SECRET: &str = "whsec_load_test_secret";
const PATH: &str = "/webhooks/ringyo";

/// What one request is, and what must come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Genuine,
    Fault(usize),
    Oversized,
    Malformed,
    Replay,
}

impl Kind {
    /// The `n`th request's kind: one in ten bad, the bad ones in turn.
    fn of(n: usize) -> Self {
        if n % 10 != 9 {
            return Self::Genuine;
        }
        match (n / 10) % (Fault::ALL.len() + 3) {
            bad if bad < Fault::ALL.len() => Self::Fault(bad),
            bad if bad == Fault::ALL.len() => Self::Oversized,
            bad if bad == Fault::ALL.len() + 1 => Self::Malformed,
            _ => Self::Replay,
        }
    }

    fn name(self) -> String {
        match self {
            Self::Genuine => "genuine".into(),
            Self::Fault(at) => format!("{:?}", Fault::ALL[at]).to_lowercase(),
            Self::Oversized => "oversized".into(),
            Self::Malformed => "malformed".into(),
            Self::Replay => "replay".into(),
        }
    }

    /// The status and error code (if any) this kind must get.
    fn expected(self) -> (StatusCode, Option<&'static str>) {
        let refused = |kind: RejectionKind| (kind.status(), Some(kind.code()));
        match self {
            Self::Genuine => (StatusCode::NO_CONTENT, None),
            Self::Fault(at) => refused(Fault::ALL[at].expected()),
            Self::Oversized => refused(RejectionKind::PayloadTooLarge),
            Self::Malformed => refused(RejectionKind::InvalidJson),
            Self::Replay => (StatusCode::OK, None),
        }
    }

    /// The `n`th request: its body and signature header, if any.
    fn request(self, n: usize) -> (Vec<u8>, Option<String>) {
        let delivery = TestDelivery::new("call.completed")
            .secret(SECRET)
            .data(json!({ "id": format!("call_soak_{n:08}") }));
        let (body, signature) = match self {
            Self::Genuine => delivery.body_and_signature(),
            Self::Fault(at) => delivery.fault(Fault::ALL[at]).body_and_signature(),
            Self::Oversized => delivery
                .pad_to(RingyoWebhookLayer::DEFAULT_BODY_LIMIT + 4096)
                .body_and_signature(),
            Self::Malformed => {
                let body = format!("not json {n}");
                let signature = ringyo_webhook::testing::sign(SECRET, body.as_bytes());
                (body, signature.ok())
            }
            // The worker resends its last genuine delivery's bytes instead.
            Self::Replay => unreachable!("a replay is the worker's last genuine delivery"),
        };
        (body.into_bytes(), signature)
    }
}

/// Tallies by kind: answers as expected, and anything else, with an example.
#[derive(Default)]
struct Tally {
    sent: std::collections::BTreeMap<Kind, usize>,
    wrong: Vec<String>,
    server_errors: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, deliveries, concurrency, pid] = &args[..] else {
        return Err("usage: soak <ADDR> <DELIVERIES> <CONCURRENCY> <SERVER_PID>".into());
    };
    let (deliveries, concurrency): (usize, usize) = (deliveries.parse()?, concurrency.parse()?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(soak(addr, deliveries, concurrency, pid))
}

async fn soak(
    addr: &str,
    deliveries: usize,
    concurrency: usize,
    pid: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    // Each worker takes the next ten requests at a time, so a replay follows its original.
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let rss = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, tally, rss) = (next.clone(), tally.clone(), rss.clone());
            let (addr, pid) = (addr.to_owned(), pid.to_owned());
            tokio::spawn(async move { worker(&addr, &pid, deliveries, &next, &tally, &rss).await })
        })
        .collect();
    for worker in workers {
        worker.await?.map_err(|err| err.to_string())?;
    }
    let elapsed = started.elapsed();
    let handled = handled(addr).await?;
    let tally = tally.lock().expect("not poisoned");
    let genuine = tally.sent.get(&Kind::Genuine).copied().unwrap_or(0);
    println!(
        "{deliveries} deliveries at concurrency {concurrency} in {:.1} s ({:.0} a second)",
        elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64()
    );
    println!("| kind | sent | expected answer |\n|---|---|---|");
    for (kind, sent) in &tally.sent {
        let (status, code) = kind.expected();
        println!(
            "| {} | {sent} | {} {} |",
            kind.name(),
            status.as_u16(),
            code.unwrap_or("-")
        );
    }
    println!("answers not as expected: {}", tally.wrong.len());
    println!("5xx answers: {}", tally.server_errors);
    println!("handler ran {handled} times for {genuine} genuine deliveries");
    let rss = rss.lock().expect("not poisoned");
    println!(
        "server RSS after each tenth, MiB: {}",
        rss.iter()
            .map(|kib: &u64| format!("{:.1}", *kib as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for example in tally.wrong.iter().take(5) {
        println!("  e.g. {example}");
    }
    if !tally.wrong.is_empty() || tally.server_errors > 0 || handled != genuine {
        return Err("the soak found answers that were not as expected".into());
    }
    Ok(())
}

async fn worker(
    addr: &str,
    pid: &str,
    deliveries: usize,
    next: &AtomicUsize,
    tally: &Mutex<Tally>,
    rss: &Mutex<Vec<u64>>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut sender = connect(addr).await?;
    let mut last_genuine = None;
    loop {
        let first = next.fetch_add(10, Ordering::Relaxed);
        if first >= deliveries {
            return Ok(());
        }
        for n in first..(first + 10).min(deliveries) {
            let kind = Kind::of(n);
            // Each block of ten starts with genuine deliveries, so a replay has one to repeat.
            let (body, signature) = match (kind, &last_genuine) {
                (Kind::Replay, Some(genuine)) => Clone::clone(genuine),
                _ => kind.request(n),
            };
            if kind == Kind::Genuine {
                last_genuine = Some((body.clone(), signature.clone()));
            }
            let (status, code) = match send(&mut sender, &body, signature.as_deref()).await {
                Ok(answer) => answer,
                // A refused body may close its connection: open another, and resend once.
                Err(_) => {
                    sender = connect(addr).await?;
                    send(&mut sender, &body, signature.as_deref()).await?
                }
            };
            let (want_status, want_code) = kind.expected();
            let mut tally = tally.lock().expect("not poisoned");
            *tally.sent.entry(kind).or_default() += 1;
            if status.is_server_error() {
                tally.server_errors += 1;
            }
            if status != want_status || code.as_deref() != want_code {
                tally
                    .wrong
                    .push(format!("#{n} {}: {status} {code:?}", kind.name()));
            }
            if (n + 1) % (deliveries / 10).max(1) == 0 {
                rss.lock().expect("not poisoned").push(resident_kib(pid));
            }
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> Result<Sender, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request; its status and the JSON error code, if any.
async fn send(
    sender: &mut Sender,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(StatusCode, Option<String>), Box<dyn std::error::Error + Send + Sync>> {
    sender.ready().await?;
    let mut request = Request::post(PATH)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    if let Some(signature) = signature {
        request = request.header("x-ringyo-signature", signature);
    }
    let request = request.body(Full::new(Bytes::copy_from_slice(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|json| json["error"].as_str().map(str::to_owned));
    Ok((status, code))
}

/// How many times the server's handler ran (`GET /stats`).
async fn handled(addr: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let mut sender = connect(addr).await.map_err(|err| err.to_string())?;
    let response = sender
        .send_request(
            Request::get("/stats")
                .header("host", "127.0.0.1")
                .body(Full::new(Bytes::new()))?,
        )
        .await?;
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    let handled = text
        .lines()
        .find_map(|line| line.strip_prefix("handled "))
        .ok_or("no handled count in /stats")?;
    Ok(handled.trim().parse()?)
}

/// The server's resident memory, in KiB.
fn resident_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
