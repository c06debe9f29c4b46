//! A worker whose handler aborts its process, restarted as a supervisor would. (The receiver's
//! own process tests, killed mid-stream and two on one Postgres, are the receiver package's,
//! `receiver/tests/receiver/processes.rs`.)
//!
//! The test binary starts copies of itself running `aborting_worker` (an ignored test, run only
//! as a child), so the process that dies is a real one, not a task.

use ringyo_test_support as support;

use std::{
    collections::{HashMap, HashSet},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::Stdio,
    time::Duration,
};

use ringyo_test_support::{envelope, stores::ids};
use ringyo_webhook::{
    inbox::{Inbox, InboxAdmin, InboxStats, InboxStore, Job, NewDelivery, Worker},
    Clock, DeliveryId, Event, SystemClock,
};
use serde_json::json;
use tokio::{io::AsyncWriteExt, process::Command};

/// Set in a child process: the inbox URL it works on.
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

fn call(n: usize) -> Vec<u8> {
    envelope("call.completed", json!({ "id": format!("call_{n}") }))
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

/// The child's test name, [`aborting_worker`] by its path in this binary
/// (`processes::aborting_worker`): the module path without the crate's name.
fn child_test() -> String {
    let (_, module) = module_path!().split_once("::").unwrap();
    format!("{module}::aborting_worker")
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
    for database in support::inbox::databases().await {
        eprintln!("engine: {}", database.name);
        aborting_worker_is_isolated(&database).await;
    }
}

/// Call `call_{n}`'s `call.completed`, stored now, unordered.
fn completed(id: DeliveryId, n: u32) -> NewDelivery {
    let now = SystemClock.now();
    NewDelivery {
        id,
        event: "call.completed".to_owned(),
        timestamp: Some(now),
        received_at: now,
        payload: call(n as usize).into(),
        tenant: None,
        subject: None,
        ordered: false,
        due_at: now,
    }
}

async fn aborting_worker_is_isolated(database: &support::inbox::Database) {
    const DELIVERIES: u32 = 8;
    const CULPRIT_AT: u32 = 3;
    /// The restarts a supervisor may make before the test gives up.
    const MAX_STARTS: usize = 8;
    let log = tempfile::NamedTempFile::new().unwrap();
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let store = database.open();
    let id = ids();
    let deliveries: Vec<_> = (0..DELIVERIES).map(|n| completed(id(n), n)).collect();
    store.store(&deliveries).await.unwrap();

    let start = || {
        Command::new(std::env::current_exe().unwrap())
            .args([&child_test(), "--exact", "--ignored", "--nocapture"])
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
