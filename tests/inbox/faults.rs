//! The inbox when its storage goes wrong: a corrupt SQLite file is refused at start and, met
//! while running, turns answers to 503; readiness is a real commit, so it fails on a full
//! disk, a read-only file and a corrupt file, and passes again once commits do.

use ringyo_test_support as support;

use std::{
    io::{Seek, SeekFrom, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{atomic::AtomicI64, Arc},
    time::Duration,
};

use bytes::Bytes;
use chrono::TimeDelta;
use ringyo_test_support::{envelope, sign};
use ringyo_webhook::{
    inbox::{
        sqlx, Inbox, InboxAdmin, InboxError, InboxStore, NewDelivery, Settle, Settlement, SqlInbox,
    },
    ClaimToken, Clock, SystemClock,
};
use serde_json::json;

use ringyo_test_support::inbox::{serve, PATH};

async fn send(addr: SocketAddr, n: usize) -> (u16, serde_json::Value) {
    let body = envelope("credits.low", json!({ "balance": n }));
    let (status, json, _) = support::deliver(addr, PATH, body.clone(), Some(&sign(&body))).await;
    (status, json)
}

/// The SQLite file behind `database`.
fn file_of(database: &support::inbox::Database) -> PathBuf {
    PathBuf::from(database.url.strip_prefix("sqlite://").unwrap())
}

/// Stores `count` deliveries of 4 KiB each through `store`, so the file spans hundreds of
/// pages, and moves them from the WAL into the file itself.
async fn fill(database: &support::inbox::Database, store: &SqlInbox, count: u32) {
    let id = support::stores::ids();
    let now = SystemClock.now();
    let deliveries: Vec<NewDelivery> = (0..count)
        .map(|n| NewDelivery {
            id: id(n),
            event: "credits.low".to_owned(),
            timestamp: Some(now),
            received_at: now,
            payload: Bytes::from(vec![b'x'; 4096]),
            tenant: None,
            subject: None,
            ordered: false,
            due_at: now,
        })
        .collect();
    store.store(&deliveries).await.unwrap();
    let pool = sqlx::AnyPool::connect(&database.url).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// Overwrites every page of the file after the first (the header) with a pattern SQLite
/// cannot read as a page: what a disk or a copy gone wrong leaves.
fn overwrite_pages(file: &Path) {
    let len = std::fs::metadata(file).unwrap().len();
    let mut handle = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    handle.seek(SeekFrom::Start(4096)).unwrap();
    let garbage = vec![0xA5_u8; usize::try_from(len - 4096).unwrap()];
    handle.write_all(&garbage).unwrap();
    handle.sync_all().unwrap();
}

fn assert_corrupt(result: Result<(), InboxError>, file: &Path) {
    let err = result.expect_err("a corrupt file passed");
    assert!(matches!(err, InboxError::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&file.display().to_string()),
        "names the file: {message}"
    );
    assert!(
        message.contains("restore a backup"),
        "says what to do: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_cut_in_half_while_stopped_is_refused_at_start_naming_the_file() {
    let database = support::inbox::sqlite();
    let store = database.open();
    fill(&database, &store, 200).await;
    store.close().await;
    let file = file_of(&database);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let inbox = Inbox::new(database.open());
    assert_corrupt(inbox.ping().await, &file);
    // And it acknowledges nothing.
    let addr = serve(&inbox).await;
    let (status, json) = send(addr, 1).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (503, Some("inbox_unavailable"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_with_pages_overwritten_while_stopped_is_refused_at_start() {
    let database = support::inbox::sqlite();
    let store = database.open();
    fill(&database, &store, 200).await;
    store.close().await;
    let file = file_of(&database);
    overwrite_pages(&file);

    assert_corrupt(database.open().ping().await, &file);
}

#[tokio::test(flavor = "multi_thread")]
async fn corruption_met_while_running_turns_answers_and_readiness_to_503() {
    let database = support::inbox::sqlite();
    let store = database.open();
    let inbox = Inbox::new(store.clone());
    let addr = serve(&inbox).await;
    assert_eq!(send(addr, 0).await.0, 202);
    inbox.ping().await.unwrap();
    fill(&database, &store, 400).await;

    overwrite_pages(&file_of(&database));
    // Deliveries go into the delivery id's index at random places: the first few meet a
    // page that is not one.
    let mut refused = 0;
    for n in 1..=20 {
        match send(addr, n).await {
            (202, _) => assert_eq!(refused, 0, "a 202 after corruption was met"),
            (503, json) => {
                assert_eq!(json["error"], "inbox_unavailable");
                refused += 1;
            }
            (status, json) => panic!("{status} {json}"),
        }
    }
    assert!(refused > 0, "the corruption was never met");
    assert_corrupt(inbox.ping().await, &file_of(&database));
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_on_a_full_disk_and_passes_again_once_there_is_room() {
    let database = support::inbox::sqlite();
    let setup = database.open();
    setup.ping().await.unwrap();
    setup.close().await;
    let pages = {
        use sqlx::Row;
        let pool = sqlx::AnyPool::connect(&database.url).await.unwrap();
        let pages: i64 = sqlx::query("PRAGMA page_count")
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        pool.close().await;
        pages
    };
    let limit = Arc::new(AtomicI64::new(pages));
    let pool = support::inbox::capped_pool(&database, &limit).await;
    let inbox = Inbox::new(SqlInbox::with_pool(pool.clone()).unwrap());
    let err = inbox.ping().await.expect_err("ready on a full disk");
    assert!(err.to_string().contains("full"), "{err}");

    support::inbox::give_room(&pool, &limit).await;
    inbox.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_on_a_file_that_cannot_be_written() {
    let database = support::inbox::sqlite();
    database.open().ping().await.unwrap();
    let read_only = Inbox::new(SqlInbox::open(&format!("{}?mode=ro", database.url)).unwrap());
    let err = read_only
        .ping()
        .await
        .expect_err("ready on a read-only file");
    assert!(err.to_string().contains("readonly"), "{err}");
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |meta| meta.len())
}

fn wal_of(file: &Path) -> PathBuf {
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Polls (bounded) until `done`; how long it took.
async fn within(limit: Duration, done: impl Fn() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wal_is_truncated_after_a_burst_and_pruning_gives_the_space_back() {
    let database = support::inbox::sqlite();
    let store = database.open();
    let file = file_of(&database);
    let wal = wal_of(&file);
    // A burst: 96 MiB of 256 KiB deliveries, committed 16 at a time as under load.
    let id = support::stores::ids();
    let now = SystemClock.now();
    for batch in 0..24_u32 {
        let deliveries: Vec<NewDelivery> = (0..16)
            .map(|n| NewDelivery {
                id: id(batch * 16 + n),
                event: "call.completed".to_owned(),
                timestamp: Some(now),
                received_at: now,
                payload: Bytes::from(vec![b'x'; 256 * 1024]),
                tenant: None,
                subject: None,
                ordered: false,
                due_at: now,
            })
            .collect();
        store.store(&deliveries).await.unwrap();
    }
    let (file_after_burst, wal_after_burst) = (size(&file), size(&wal));
    assert!(wal_after_burst > 0, "the burst went through the WAL");
    let quiet = within(Duration::from_secs(10), || size(&wal) == 0).await;
    eprintln!(
        "after the burst: file {file_after_burst} B, WAL {wal_after_burst} B; \
         WAL empty {quiet:?} after it ended"
    );
    assert!(
        quiet.is_some(),
        "WAL still {} B after the burst",
        size(&wal)
    );

    // Handled, then pruned: the file gives the space back.
    let token = ClaimToken::new();
    let claimed = store
        .claim(now, now + TimeDelta::minutes(1), 1000, token)
        .await
        .unwrap();
    let done: Vec<Settlement> = claimed
        .iter()
        .map(|delivery| Settlement {
            id: delivery.id,
            token,
            outcome: Settle::Done { at: now },
        })
        .collect();
    store.settle(&done).await.unwrap();
    let file_before_prune = size(&file);
    let pruned = store.prune(now + TimeDelta::minutes(1)).await.unwrap();
    assert_eq!(pruned, 384);
    let (file_after_prune, wal_after_prune) = (size(&file), size(&wal));
    eprintln!(
        "pruning {pruned}: file {file_before_prune} B before, {file_after_prune} B after, \
         WAL {wal_after_prune} B"
    );
    assert!(
        file_after_prune < file_before_prune / 10,
        "the file kept {file_after_prune} of {file_before_prune} B"
    );
    assert_eq!(wal_after_prune, 0);
}
