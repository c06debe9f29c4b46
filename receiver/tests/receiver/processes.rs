//! The receiver's binary as real processes: killed with SIGKILL mid-stream and restarted on the
//! same inbox, and two of them on one Postgres. What each processed comes from its
//! `processed event` log lines.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::common::{
    process::{Log, Receiver},
    signed, SECRET,
};
use serde_json::json;

/// A receiver process on the inbox at `url`, taking `work_ms` per event, logging to `log`:
/// its `processed event` lines at the default level, and only warnings besides.
async fn start(url: &str, log: &Log, work_ms: u64) -> Receiver {
    let work_ms = work_ms.to_string();
    let env = [
        ("RINGYO_WEBHOOK_SECRET", SECRET),
        ("RINGYO_INBOX_URL", url),
        ("RINGYO_WORK_MS", &work_ms),
        // Each call has one event here: with the window, the first handlers would start only
        // after the stream ended, and the kill would find none running.
        ("RINGYO_REORDER_WINDOW_MS", "0"),
        ("RUST_LOG", "warn,ringyo_receiver=info"),
    ];
    Receiver::start(&env, log).await
}

/// Delivery `n`: a `call.completed` for `call_n`, the same bytes each time.
fn call(n: usize) -> (Vec<u8>, String) {
    signed("call.completed", json!({ "id": format!("call_{n}") }))
}

/// POSTs `delivery`; the status, or `None` if no answer came (the process died).
async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    (body, signature): &(Vec<u8>, String),
) -> Option<u16> {
    let response = client
        .post(format!("http://{addr}{}", ringyo_receiver::PATH))
        .header("x-ringyo-signature", signature)
        .body(body.clone())
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// How many times each call id was processed, from the receivers' `processed event` lines.
fn processed(log: &Log) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in log.lines() {
        if !line.contains("processed event") {
            continue;
        }
        let Some((_, subject)) = line.split_once("subject=") else {
            continue;
        };
        // A `&str` field, logged quoted: `"call:call_1"`, the call's id after its kind.
        let subject = subject.split_whitespace().next().unwrap_or_default();
        let subject = subject.trim_matches('"');
        let call = subject.split_once(':').map_or(subject, |(_, id)| id);
        *counts.entry(call.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Waits (bounded) until the log holds every id in `expected`.
async fn until_processed(
    log: &Log,
    expected: impl Iterator<Item = String>,
) -> HashMap<String, usize> {
    let expected: HashSet<String> = expected.collect();
    for _ in 0..600 {
        let counts = processed(log);
        if expected.iter().all(|id| counts.contains_key(id)) {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = processed(log);
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    panic!("never processed: {missing:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_killed_mid_stream_loses_no_acknowledged_delivery() {
    const DELIVERIES: usize = 300;
    const SENDERS: usize = 16;
    const KILL_AFTER: usize = 150;
    let database = ringyo_test_support::inbox::sqlite();
    let log = Log::default();
    // 30 ms of work per event against 16 senders: acknowledged deliveries pile up in the inbox.
    let first = start(&database.url, &log, 30).await;
    let addr = first.addr;

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(HashSet::new()));
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
                    if let Some(200..=299) = post(&client, addr, &call(n)).await {
                        acked.lock().unwrap().insert(n);
                    }
                    // Paced, as Ringyo's deliveries come: the worker gets under way before the
                    // stream ends, so the kill finds handlers running.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    for _ in 0..1000 {
        // Past the first round of handlers: the next round is running when the kill comes.
        if acked.lock().unwrap().len() >= KILL_AFTER && processed(&log).len() > 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().await;
    let acked_at_kill = acked.lock().unwrap().clone();
    let processed_at_kill = processed(&log).len();
    for sender in senders {
        sender.await.unwrap();
    }
    let acked_before_restart = acked.lock().unwrap().clone();
    assert!(acked_at_kill.len() >= KILL_AFTER && acked_before_restart.len() < DELIVERIES);
    assert!(
        processed_at_kill < acked_at_kill.len(),
        "the kill came while acknowledged deliveries waited in the inbox \
         ({processed_at_kill} processed of {} acknowledged)",
        acked_at_kill.len()
    );

    // Restarted on the same file; Ringyo retries what got no 2xx.
    let second = start(&database.url, &log, 0).await;
    let client = ringyo_test_support::client();
    for n in (0..DELIVERIES).filter(|n| !acked_before_restart.contains(n)) {
        let mut status = None;
        for _ in 0..50 {
            status = post(&client, second.addr, &call(n)).await;
            if let Some(200..=299) = status {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(matches!(status, Some(200..=299)), "call_{n}: {status:?}");
    }
    let counts = until_processed(&log, (0..DELIVERIES).map(|n| format!("call_{n}"))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = processed(&log)
        .into_iter()
        .chain(counts)
        .collect::<HashMap<_, _>>();
    second.kill().await;

    let twice: Vec<_> = counts.iter().filter(|(_, runs)| **runs > 1).collect();
    eprintln!(
        "killed with {} acknowledged and {processed_at_kill} processed; after the restart all \
         {DELIVERIES} processed, {} of them twice: {twice:?}",
        acked_at_kill.len(),
        twice.len()
    );
    assert_eq!(counts.len(), DELIVERIES);
    // Only a delivery in a handler at the kill may run again: at most the worker's concurrency.
    assert!(twice.len() <= 8, "{twice:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_receivers_on_one_postgres_store_and_process_each_delivery_once() {
    let Some(database) = ringyo_test_support::inbox::postgres().await else {
        return;
    };
    let log = Log::default();
    let (one, two) = tokio::join!(start(&database.url, &log, 0), start(&database.url, &log, 0));
    let client = ringyo_test_support::client();
    for n in 0..20 {
        // The same delivery to both at once, as a retry behind a load balancer can.
        let body = call(n);
        let (a, b) = tokio::join!(
            post(&client, one.addr, &body),
            post(&client, two.addr, &body)
        );
        let mut statuses = [a.unwrap(), b.unwrap()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 202], "call_{n}");
    }
    until_processed(&log, (0..20).map(|n| format!("call_{n}"))).await;
    // Long enough for a second run, were there one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counts = processed(&log);
    assert_eq!(counts.len(), 20);
    assert!(counts.values().all(|runs| *runs == 1), "{counts:?}");
    one.kill().await;
    two.kill().await;
}
