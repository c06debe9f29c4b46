//! The receiver example as real processes: killed with SIGKILL mid-stream and restarted on the
//! same inbox, and two of them on one Postgres; and a worker whose handler aborts its process,
//! restarted as a supervisor would.
//!
//! The test binary starts copies of itself running `receiver_process` or `aborting_worker`
//! (ignored tests, run only as children), so the process killed is a real one, not a task.

mod common;

#[allow(dead_code)]
#[path = "../examples/receiver.rs"]
mod receiver;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    os::unix::process::ExitStatusExt,
    path::Path,
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{envelope, sign, stores::ids};
use ringyo_webhook::{
    inbox::{Inbox, InboxAdmin, InboxStats, InboxStore, Job, NewDelivery, Worker},
    Clock, Event, SystemClock,
};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
};

/// Set in a child process: the inbox URL it receives into.
const INBOX_URL: &str = "RINGYO_PROCESS_TEST_INBOX_URL";
/// Set in a child process: the file it appends `call_id` lines to as it finishes each event.
const PROCESSED_LOG: &str = "RINGYO_PROCESS_TEST_LOG";
/// Set in an `aborting_worker` child: the `call_id` whose handler aborts the process.
const CULPRIT: &str = "RINGYO_PROCESS_TEST_CULPRIT";

/// Appends `call_id` and a newline to `log`: one short O_APPEND write per event, so lines stay
/// whole even from two processes.
async fn log_processed(log: &str, call_id: &str) -> Result<(), String> {
    let line = format!("{call_id}\n");
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .await
        .map_err(|err| err.to_string())?;
    file.write_all(line.as_bytes())
        .await
        .map_err(|err| err.to_string())
}

/// Not a test of its own: the receiver process the tests below start, kill and restart.
#[test]
#[ignore = "started by the process tests, as a child"]
fn receiver_process() {
    let (Ok(url), Ok(log)) = (std::env::var(INBOX_URL), std::env::var(PROCESSED_LOG)) else {
        return;
    };
    let work = receiver::work_from(std::env::var("RINGYO_WORK_MS")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let (webhook, addr) = common::local_listener().await;
        let (admin, _) = common::local_listener().await;
        println!("listening {addr}");
        let inbox = receiver::inbox_from(Ok(url)).unwrap();
        let handler = move |job: Job<Event>| {
            let log = log.clone();
            async move {
                tokio::time::sleep(work).await;
                let Event::CallCompleted(call) = &job.event.data else {
                    return Err("unexpected event".to_owned());
                };
                log_processed(&log, call.id.as_deref().unwrap_or("-")).await
            }
        };
        receiver::run(
            receiver::Listeners { webhook, admin },
            common::layer(),
            inbox,
            handler,
            common::detached_metrics(),
            receiver::ServerLimits::default(),
            std::future::pending(),
        )
        .await
        .unwrap();
    });
}

/// A receiver process; killed when dropped, so a failing test leaves none behind.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    async fn start(url: &str, log: &Path, work_ms: u64) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["receiver_process", "--exact", "--ignored", "--nocapture"])
            .env(INBOX_URL, url)
            .env(PROCESSED_LOG, log)
            .env("RINGYO_WORK_MS", work_ms.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix("listening ") {
                    return addr.parse().unwrap();
                }
            }
            panic!("the receiver process exited before listening")
        })
        .await
        .expect("the receiver process did not start");
        Self { child, addr }
    }

    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

fn call(n: usize) -> Vec<u8> {
    envelope("call.completed", json!({ "id": format!("call_{n}") }))
}

/// POSTs a signed body; the status, or `None` if no answer came (the process died).
async fn post(client: &reqwest::Client, addr: SocketAddr, body: &[u8]) -> Option<u16> {
    let response = client
        .post(format!("http://{addr}{}", receiver::PATH))
        .header("x-ringyo-signature", sign(body))
        .body(body.to_vec())
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// How many times each call id was processed, from the log the processes append to.
fn processed(log: &Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts = HashMap::new();
    for line in text.lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Waits (bounded) until the log holds every id in `expected`.
async fn until_processed(
    log: &Path,
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
    let database = common::inbox::sqlite();
    let log = tempfile::NamedTempFile::new().unwrap();
    // 30 ms of work per event against 16 senders: acknowledged deliveries pile up in the inbox.
    let first = Process::start(&database.url, log.path(), 30).await;
    let addr = first.addr;

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (next, acked) = (Arc::clone(&next), Arc::clone(&acked));
            tokio::spawn(async move {
                let client = common::client();
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
        if acked.lock().unwrap().len() >= KILL_AFTER && processed(log.path()).len() > 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().await;
    let acked_at_kill = acked.lock().unwrap().clone();
    let processed_at_kill = processed(log.path()).len();
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
    let second = Process::start(&database.url, log.path(), 0).await;
    let client = common::client();
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
    let counts = until_processed(log.path(), (0..DELIVERIES).map(|n| format!("call_{n}"))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = processed(log.path())
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
    let Some(database) = common::inbox::postgres().await else {
        return;
    };
    let log = tempfile::NamedTempFile::new().unwrap();
    let (one, two) = tokio::join!(
        Process::start(&database.url, log.path(), 0),
        Process::start(&database.url, log.path(), 0)
    );
    let client = common::client();
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
    until_processed(log.path(), (0..20).map(|n| format!("call_{n}"))).await;
    // Long enough for a second run, were there one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counts = processed(log.path());
    assert_eq!(counts.len(), 20);
    assert!(counts.values().all(|runs| *runs == 1), "{counts:?}");
    one.kill().await;
    two.kill().await;
}

/// Not a test of its own: a worker whose handler aborts the process on the culprit's call
/// (standing in for a stack overflow or an OOM kill), as `aborting_worker_is_isolated` starts it.
/// Its handler takes 400 ms on every other call, so the first claim's eight are all running
/// when the culprit aborts, 100 ms in. A lease of 1 s keeps the restarts quick.
#[test]
#[ignore = "started by the process tests, as a child"]
fn aborting_worker() {
    let (Ok(url), Ok(log), Ok(culprit)) = (
        std::env::var(INBOX_URL),
        std::env::var(PROCESSED_LOG),
        std::env::var(CULPRIT),
    ) else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("ringyo_webhook=info"))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let handler = move |job: Job<Event>| {
            let (log, culprit) = (log.clone(), culprit.clone());
            async move {
                let Event::CallCompleted(call) = &job.event.data else {
                    return Err("unexpected event".to_owned());
                };
                let call_id = call.id.as_deref().unwrap_or("-");
                if call_id == culprit {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    std::process::abort();
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
                log_processed(&log, call_id).await
            }
        };
        Worker::new(&Inbox::open(&url).unwrap(), handler)
            .concurrency(8)
            .lease(Duration::from_secs(1))
            .max_attempts(3)
            .run(std::future::pending())
            .await;
    });
}

/// Eight deliveries claimed together, one of whose handler aborts the process, under a
/// supervisor that restarts the worker whenever it dies: the culprit alone is dead-lettered, as
/// the cause, and the seven taken down with it are handled.
#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_that_aborts_its_process_is_dead_lettered_alone_and_its_neighbours_run() {
    for database in common::inbox::databases().await {
        eprintln!("engine: {}", database.name);
        aborting_worker_is_isolated(&database).await;
    }
}

async fn aborting_worker_is_isolated(database: &common::inbox::Database) {
    const DELIVERIES: u32 = 8;
    const CULPRIT_AT: u32 = 3;
    /// The restarts a supervisor may make before the test gives up.
    const MAX_STARTS: usize = 8;
    let log = tempfile::NamedTempFile::new().unwrap();
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let store = database.open();
    let id = ids();
    let now = SystemClock.now();
    let deliveries: Vec<_> = (0..DELIVERIES)
        .map(|n| NewDelivery {
            id: id(n),
            event: "call.completed".to_owned(),
            timestamp: Some(now),
            received_at: now,
            payload: call(n as usize).into(),
            tenant: None,
        })
        .collect();
    store.store(&deliveries).await.unwrap();

    let start = || {
        Command::new(std::env::current_exe().unwrap())
            .args(["aborting_worker", "--exact", "--ignored", "--nocapture"])
            .env(INBOX_URL, &database.url)
            .env(PROCESSED_LOG, log.path())
            .env(CULPRIT, format!("call_{CULPRIT_AT}"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(stderr.path())
                    .unwrap(),
            )
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    // The supervisor: restarts the worker whenever it dies, until every delivery is settled.
    let started = std::time::Instant::now();
    let mut worker = start();
    let (mut starts, mut aborts) = (1, 0);
    let stats = loop {
        let stats: InboxStats = store.stats().await.unwrap();
        if stats.done + stats.dead == u64::from(DELIVERIES) {
            break stats;
        }
        if let Some(status) = worker.try_wait().unwrap() {
            assert_eq!(status.signal(), Some(6), "died of SIGABRT: {status}");
            aborts += 1;
            assert!(starts < MAX_STARTS, "{starts} starts and still {stats:?}");
            worker = start();
            starts += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still {stats:?} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    worker.kill().await.unwrap();
    let logs = std::fs::read_to_string(stderr.path()).unwrap();
    eprintln!(
        "{}: settled in {took:?}, {starts} starts, {aborts} aborts; {stats:?}; the workers \
         logged:\n{}",
        database.name,
        logs.lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let dead = store.dead(10).await.unwrap();
    let reasons: Vec<_> = dead.iter().map(|d| (d.id, d.error.as_str())).collect();
    assert_eq!(
        reasons,
        [(
            id(CULPRIT_AT),
            "the process died 2 times while this delivery ran alone"
        )],
        "only the culprit is dead-lettered, as the cause"
    );
    assert_eq!((stats.done, stats.dead), (7, 1));
    let counts = processed(log.path());
    let innocents: HashSet<_> = (0..DELIVERIES)
        .filter(|n| *n != CULPRIT_AT)
        .map(|n| format!("call_{n}"))
        .collect();
    assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), innocents);
    // Once beside the others, then twice alone; the next claim dead-letters it unrun.
    assert_eq!(aborts, 3, "{logs}");
    assert!(
        logs.contains("WARN")
            && logs.contains("suspects due: 8 (deliveries whose attempt ended with its process"),
        "{logs}"
    );
    assert!(
        logs.contains("ERROR") && logs.contains("dead-lettered as the cause"),
        "{logs}"
    );
    store.close().await;
}
