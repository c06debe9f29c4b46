//! Exactly-once effects (issue 22) through real HTTP and a real receiver process, SIGKILLed
//! again and again: its demo effect counts each handled `call.*` delivery in `call_counts`,
//! inside the delivery's own transaction, so at the end each call's count equals the distinct
//! deliveries of it that were acknowledged, neither more nor fewer, on SQLite and on Postgres.
//!
//! A sender delivers thousands of events of a few dozen calls from 16 tasks, retrying what got
//! no 2xx (Ringyo does); the receiver is killed ten times while it handles them, each time
//! restarted on the same port. A kill comes only while no suspect runs alone: a death then
//! would count against that delivery (two dead-letter it as the cause, see `Worker`), which is
//! the crash isolation's business, not this test's.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use ringyo_webhook::{
    chrono::TimeDelta,
    inbox::{sqlx, Inbox},
    testing::{TestDelivery, DEVELOPMENT_SECRET},
    Clock, SystemClock,
};
use serde_json::json;
use tokio::time::Instant;

use crate::common::process::{Log, Receiver};

const CALLS: usize = 40;
const DELIVERIES: usize = 3000;
const KILLS: usize = 10;
const SENDERS: usize = 16;
/// Between two sends of one sender: the sending spans the kills, so each finds deliveries
/// arriving, waiting and in handlers.
const PACE: Duration = Duration::from_millis(60);
/// How long the whole run may take.
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_on_sqlite_killed_ten_times_counts_each_acknowledged_delivery_once() {
    let database = ringyo_test_support::inbox::sqlite();
    prove(&database.url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_on_postgres_killed_ten_times_counts_each_acknowledged_delivery_once() {
    let Some(database) = ringyo_test_support::inbox::postgres().await else {
        return;
    };
    prove(&database.url).await;
}

/// Delivery `n`: a `call.completed` of call `n % CALLS`, its own bytes.
fn delivery(n: usize) -> (Vec<u8>, String) {
    let (body, signature) = TestDelivery::new("call.completed")
        .data(json!({ "id": format!("call_{}", n % CALLS), "seq": n }))
        .timestamp(SystemClock.now() - TimeDelta::seconds(1))
        .secret(DEVELOPMENT_SECRET)
        .body_and_signature();
    (body.into_bytes(), signature.unwrap())
}

async fn start(url: &str, bind: Option<SocketAddr>, log: &Log) -> Receiver {
    let bind = bind.map_or_else(|| "127.0.0.1:0".to_owned(), |addr| addr.to_string());
    let env = [
        ("RINGYO_WEBHOOK_SECRET", DEVELOPMENT_SECRET),
        ("RINGYO_INBOX_URL", url),
        ("RINGYO_BIND", &bind),
        ("RINGYO_WORK_MS", "1-5"),
        ("RINGYO_CONCURRENCY", "16"),
        // The deliveries a killed receiver held run again a second later, not 30.
        ("RINGYO_LEASE_MS", "1000"),
        ("RINGYO_REORDER_WINDOW_MS", "0"),
        ("RUST_LOG", "warn,ringyo_receiver=info"),
    ];
    Receiver::start(&env, log).await
}

async fn prove(url: &str) {
    let started = Instant::now();
    let log = Log::default();
    let mut receiver = start(url, None, &log).await;
    let addr = receiver.addr;
    sqlx::any::install_default_drivers();
    let database = sqlx::AnyPool::connect(url).await.unwrap();

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (next, acked) = (Arc::clone(&next), Arc::clone(&acked));
            tokio::spawn(async move {
                let client = ringyo_test_support::client();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= DELIVERIES {
                        return;
                    }
                    send(&client, addr, n).await;
                    acked.lock().unwrap().insert(n);
                    tokio::time::sleep(PACE).await;
                }
            })
        })
        .collect();

    for kill in 1..=KILLS {
        // Spread over the sending, each once no suspect is running alone.
        let due = kill * DELIVERIES / (KILLS + 2);
        loop {
            let sent = acked.lock().unwrap().len();
            if sent >= due && suspects(&database).await == 0 {
                break;
            }
            assert!(started.elapsed() < PATIENCE, "kill {kill} never came");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        receiver.kill().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        receiver = start(url, Some(addr), &log).await;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let inbox = Inbox::open(url).unwrap();
    let stats = loop {
        let stats = inbox.stats().await.unwrap();
        if stats.pending == 0 && stats.running == 0 {
            break stats;
        }
        assert!(started.elapsed() < PATIENCE, "not settled: {stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(receiver);

    let counted: HashMap<String, i64> =
        sqlx::query_as("SELECT call_id, CAST(handled AS BIGINT) FROM call_counts")
            .fetch_all(&database)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut expected: HashMap<String, i64> = HashMap::new();
    for n in &acked {
        *expected.entry(format!("call_{}", n % CALLS)).or_default() += 1;
    }
    let ran_twice = ran_twice(&log);
    eprintln!(
        "{} acknowledged of {DELIVERIES}, {KILLS} kills, settled in {:.1?}; {ran_twice} \
         handlers finished twice (their first commit undone by the kill); {stats:?}",
        acked.len(),
        started.elapsed(),
    );
    assert_eq!(acked.len(), DELIVERIES);
    assert_eq!(stats.dead, 0, "{stats:?}");
    assert_eq!(stats.done, DELIVERIES as u64, "{stats:?}");
    assert_eq!(
        counted, expected,
        "each acknowledged delivery counted exactly once"
    );
}

/// Posts delivery `n` until it is answered 2xx (the receiver may be down for a moment).
async fn send(client: &reqwest::Client, addr: SocketAddr, n: usize) {
    let (body, signature) = delivery(n);
    let give_up = Instant::now() + PATIENCE;
    loop {
        let answer = client
            .post(format!("http://{addr}{}", ringyo_receiver::PATH))
            .header("x-ringyo-signature", &signature)
            .body(body.clone())
            .send()
            .await;
        if answer.is_ok_and(|answer| answer.status().is_success()) {
            return;
        }
        assert!(Instant::now() < give_up, "delivery {n} never answered 2xx");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deliveries marked suspect (their last attempt ended with its process), waiting or running.
async fn suspects(database: &sqlx::AnyPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM ringyo_inbox WHERE suspect")
        .fetch_one(database)
        .await
        .unwrap_or(0)
}

/// How many deliveries' handlers logged `processed event` more than once: those whose
/// transaction a kill undid after the handler finished, and which ran again.
fn ran_twice(log: &Log) -> usize {
    let mut seen = HashMap::<String, usize>::new();
    for line in log.lines() {
        if !line.contains("processed event") {
            continue;
        }
        if let Some((_, rest)) = line.split_once("delivery_id=") {
            let id = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            *seen.entry(id).or_default() += 1;
        }
    }
    seen.values().filter(|runs| **runs > 1).count()
}
