//! The inbox through real HTTP on 127.0.0.1: what is acknowledged, when, and what workers do
//! with it: retries, dead letters, leases, wake-ups, shutdown and group commit.

use ringyo_test_support as support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use ringyo_test_support::{envelope, sign};
use ringyo_webhook::{
    inbox::{
        sqlx, Backoff, ClaimedDelivery, DeadDelivery, Handler, Inbox, InboxAdmin, InboxError,
        InboxFuture, InboxStats, InboxStore, Job, NewDelivery, ReplayFilter, Settlement, SqlInbox,
        Stored, Worker,
    },
    ClaimToken, Event,
};
use serde_json::json;
use tokio::sync::mpsc;

use ringyo_test_support::inbox::{serve, PATH};

async fn send(
    addr: SocketAddr,
    body: &[u8],
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    support::deliver(addr, PATH, body.to_vec(), Some(&sign(body))).await
}

fn credits(n: usize) -> Vec<u8> {
    envelope("credits.low", json!({ "balance": n }))
}

/// A handler that reports `(balance, attempt)` of each job it runs, then returns `result`.
fn reporting(
    result: fn(u32) -> Result<(), String>,
) -> (impl Handler<Event>, mpsc::UnboundedReceiver<(i64, u32)>) {
    let (report, reports) = mpsc::unbounded_channel();
    let handler = move |job: Job<Event>| {
        let report = report.clone();
        async move {
            let Event::CreditsLow(credits) = &job.event.data else {
                return Err("unexpected event".to_owned());
            };
            #[allow(clippy::cast_possible_truncation)]
            let balance = credits.balance.map_or(-1, |b| b as i64);
            let _ = report.send((balance, job.attempt));
            result(job.attempt)
        }
    };
    (handler, reports)
}

async fn next(reports: &mut mpsc::UnboundedReceiver<(i64, u32)>) -> (i64, u32) {
    tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("the handler did not run")
        .unwrap()
}

/// Polls `stats` (bounded) until `done` says it is what the test waits for.
async fn until(inbox: &Inbox, done: impl Fn(&InboxStats) -> bool) -> InboxStats {
    for _ in 0..200 {
        let stats = inbox.stats().await.unwrap();
        if done(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "inbox never reached the state: {:?}",
        inbox.stats().await.unwrap()
    );
}

fn quick_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(20), Duration::from_millis(50))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_or_panicking_handler_is_retried_then_dead_lettered_and_can_be_replayed() {
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open());
    let addr = serve(&inbox).await;
    let (handler, mut reports) = reporting(|attempt| match attempt {
        1 => Err("downstream is down".to_owned()),
        2 => panic!("boom"),
        _ => Err("still down".to_owned()),
    });
    let worker = Worker::new(&inbox, handler)
        .backoff(quick_backoff())
        .max_attempts(3);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));

    assert_eq!(send(addr, &credits(7)).await.0, 202);
    for attempt in 1..=3 {
        assert_eq!(next(&mut reports).await, (7, attempt));
    }
    let stats = until(&inbox, |stats| stats.dead == 1).await;
    assert_eq!((stats.pending, stats.running, stats.done), (0, 0, 0));
    let dead = inbox.dead(10).await.unwrap();
    assert_eq!(
        (dead[0].attempts, dead[0].error.as_str()),
        (3, "still down")
    );
    assert_eq!(dead[0].event, "credits.low");

    // Replayed: from attempt 1 again (which fails again: the handler is still broken).
    assert!(inbox.replay(dead[0].id).await.unwrap());
    assert_eq!(next(&mut reports).await, (7, 1));
    stop.send(()).unwrap();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_is_recorded_with_its_message() {
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open());
    let addr = serve(&inbox).await;
    let (handler, _reports) = reporting(|_| panic!("boom at the bank"));
    let running = tokio::spawn(
        Worker::new(&inbox, handler)
            .max_attempts(1)
            .run(std::future::pending()),
    );
    assert_eq!(send(addr, &credits(1)).await.0, 202);
    until(&inbox, |stats| stats.dead == 1).await;
    let dead = inbox.dead(10).await.unwrap();
    assert_eq!(dead[0].error, "the handler panicked: boom at the bank");
    running.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_delivery_the_handlers_type_cannot_read_is_dead_lettered_with_the_reason() {
    #[derive(Debug, serde::Deserialize)]
    struct Strict {
        #[allow(dead_code)]
        balance: String,
    }
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open());
    let addr = serve(&inbox).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let worker = Worker::new(&inbox, move |_: Job<Strict>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<(), String>(()) }
    });
    let running = tokio::spawn(worker.backoff(quick_backoff()).run(std::future::pending()));
    // Verified and stored: the bytes are Ringyo's; only this build's type does not fit them.
    assert_eq!(send(addr, &credits(3)).await.0, 202);
    until(&inbox, |stats| stats.dead == 1).await;
    let dead = inbox.dead(10).await.unwrap();
    assert_eq!(dead[0].attempts, 1, "not retried");
    assert!(dead[0].error.contains("data.balance"), "{}", dead[0].error);
    assert!(
        !dead[0].error.contains('3'),
        "no body value in the reason: {}",
        dead[0].error
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    running.abort();
}

/// Sends through `front` while `back`'s worker idles with a 60 s poll: the delivery must run
/// in well under that. A first delivery gets the worker (and on Postgres its listener) going.
async fn a_delivery_wakes_the_idle_worker(front: &Inbox, back: &Inbox) {
    let addr = serve(front).await;
    let (handler, mut reports) = reporting(|_| Ok(()));
    let worker = Worker::new(back, handler).poll_interval(Duration::from_secs(60));
    let running = tokio::spawn(worker.run(std::future::pending()));
    assert_eq!(send(addr, &credits(0)).await.0, 202);
    assert_eq!(next(&mut reports).await, (0, 1));
    tokio::time::sleep(Duration::from_millis(200)).await; // idle, waiting

    let sent = Instant::now();
    assert_eq!(send(addr, &credits(9)).await.0, 202);
    assert_eq!(next(&mut reports).await, (9, 1));
    let waited = sent.elapsed();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    running.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_delivery_wakes_an_idle_worker_at_once_not_at_its_next_poll() {
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open());
    a_delivery_wakes_the_idle_worker(&inbox, &inbox).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_a_delivery_stored_by_one_replica_wakes_another_replicas_worker() {
    let Some(database) = support::inbox::postgres().await else {
        return;
    };
    // Two pools on one database: two replicas, as far as the database can tell.
    let (front, back) = (Inbox::new(database.open()), Inbox::new(database.open()));
    a_delivery_wakes_the_idle_worker(&front, &back).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_the_first_wait_for_other_replicas_ends_once_listening_so_nothing_stored_before_waits_for_a_poll(
) {
    let Some(database) = support::inbox::postgres().await else {
        return;
    };
    let back = database.open();
    // A delivery stored after the worker's last claim but before its `LISTEN` sent a
    // notification no one heard: the first wait ends as soon as the listener is up, and the
    // worker claims once then.
    tokio::time::timeout(Duration::from_secs(10), back.changed_elsewhere())
        .await
        .expect("the first wait ends once listening")
        .unwrap();

    // From then on it waits for another replica's store.
    let wait = back.changed_elsewhere();
    tokio::pin!(wait);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut wait)
            .await
            .is_err(),
        "nothing stored: it waits"
    );
    let front = Inbox::new(database.open());
    let addr = serve(&front).await;
    assert_eq!(send(addr, &credits(1)).await.0, 202);
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a store by another replica ends the wait")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_handler_keeps_its_lease_so_a_second_worker_does_not_run_it_again() {
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open());
    let addr = serve(&inbox).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let slow = |runs: Arc<AtomicUsize>| {
        move |_: Job<Event>| {
            runs.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<(), String>(())
            }
        }
    };
    let lease = Duration::from_millis(300);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let worker = Worker::new(&inbox, slow(Arc::clone(&runs)))
                .lease(lease)
                .poll_interval(Duration::from_millis(50));
            tokio::spawn(worker.run(std::future::pending()))
        })
        .collect();
    assert_eq!(send(addr, &credits(1)).await.0, 202);
    until(&inbox, |stats| stats.done == 1).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "five leases long, run once");
    for worker in workers {
        worker.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_handlers_finish_within_the_grace_then_gives_the_rest_back() {
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open());
    let addr = serve(&inbox).await;
    for n in 0..2 {
        assert_eq!(send(addr, &credits(n)).await.0, 202);
    }
    let (started, mut starts) = mpsc::unbounded_channel();
    let worker = Worker::new(&inbox, move |job: Job<Event>| {
        let started = started.clone();
        async move {
            let _ = started.send(());
            // One quick, one that outlives the grace period.
            let Event::CreditsLow(credits) = &job.event.data else {
                unreachable!()
            };
            let slow = credits.balance == Some(1.0);
            let work = if slow { 10_000 } else { 50 };
            tokio::time::sleep(Duration::from_millis(work)).await;
            Ok::<(), String>(())
        }
    })
    .shutdown_grace(Duration::from_millis(300));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), starts.recv())
            .await
            .unwrap();
    }
    let stopping = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the worker overran its grace period")
        .unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(2));

    let stats = inbox.stats().await.unwrap();
    assert_eq!((stats.done, stats.pending, stats.running), (1, 1, 0));
    // Given back without using up an attempt.
    let (handler, mut reports) = reporting(|_| Ok(()));
    let running = tokio::spawn(Worker::new(&inbox, handler).run(std::future::pending()));
    assert_eq!(next(&mut reports).await, (1, 1));
    running.abort();
}

/// A store in front of a real one that can be made to fail, and counts transactions.
struct Flaky {
    inner: SqlInbox,
    failing: AtomicBool,
    transactions: AtomicUsize,
    /// Calls to `settle`, and the settlements they carried.
    settle_calls: AtomicUsize,
    settlements: AtomicUsize,
}

impl InboxStore for Flaky {
    fn store<'a>(&'a self, deliveries: &'a [NewDelivery]) -> InboxFuture<'a, Vec<Stored>> {
        self.transactions.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Box::pin(async { Err(InboxError::database("disk I/O error")) });
        }
        self.inner.store(deliveries)
    }
    fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        token: ClaimToken,
    ) -> InboxFuture<'_, Vec<ClaimedDelivery>> {
        self.inner.claim(now, lease_until, limit, token)
    }
    fn settle<'a>(&'a self, settlements: &'a [Settlement]) -> InboxFuture<'a, Vec<bool>> {
        self.settle_calls.fetch_add(1, Ordering::SeqCst);
        self.settlements
            .fetch_add(settlements.len(), Ordering::SeqCst);
        self.inner.settle(settlements)
    }
    fn next_due(&self) -> InboxFuture<'_, Option<DateTime<Utc>>> {
        self.inner.next_due()
    }
}

impl InboxAdmin for Flaky {
    fn stats(&self) -> InboxFuture<'_, InboxStats> {
        self.inner.stats()
    }
    fn dead(&self, limit: u32) -> InboxFuture<'_, Vec<DeadDelivery>> {
        self.inner.dead(limit)
    }
    fn replay<'a>(&'a self, filter: &'a ReplayFilter, now: DateTime<Utc>) -> InboxFuture<'a, u64> {
        self.inner.replay(filter, now)
    }
    fn prune(&self, before: DateTime<Utc>) -> InboxFuture<'_, u64> {
        self.inner.prune(before)
    }
    fn ping(&self) -> InboxFuture<'_, ()> {
        self.inner.ping()
    }
}

fn flaky(database: &support::inbox::Database) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: database.open(),
        failing: AtomicBool::new(false),
        transactions: AtomicUsize::new(0),
        settle_calls: AtomicUsize::new(0),
        settlements: AtomicUsize::new(0),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_commit_is_503_with_retry_after_and_the_retry_is_stored_once_it_heals() {
    let database = support::inbox::sqlite();
    let store = flaky(&database);
    let inbox = Inbox::from_arc(store.clone());
    let addr = serve(&inbox).await;
    store.failing.store(true, Ordering::SeqCst);
    let (status, json, headers) = send(addr, &credits(1)).await;
    assert_eq!(status, 503);
    assert_eq!(json["error"], "inbox_unavailable");
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(
        inbox.stats().await.unwrap(),
        InboxStats::default(),
        "nothing stored"
    );

    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(send(addr, &credits(1)).await.0, 202);
    assert_eq!(inbox.stats().await.unwrap().pending, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_arriving_together_share_commits_and_each_is_answered_after_its_own() {
    for (max_batch, shared) in [(Inbox::DEFAULT_MAX_BATCH, true), (1, false)] {
        let database = support::inbox::sqlite();
        let store = flaky(&database);
        let inbox = Inbox::from_arc(store.clone()).max_batch(max_batch);
        let addr = serve(&inbox).await;
        let sends: Vec<_> = (0..64)
            .map(|n| tokio::spawn(async move { send(addr, &credits(n)).await.0 }))
            .collect();
        for sent in sends {
            assert_eq!(sent.await.unwrap(), 202);
        }
        assert_eq!(
            inbox.stats().await.unwrap().pending,
            64,
            "each row durable before its 202"
        );
        let transactions = store.transactions.load(Ordering::SeqCst);
        if shared {
            assert!(
                transactions < 64,
                "{transactions} transactions for 64 deliveries"
            );
        } else {
            assert_eq!(transactions, 64);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn handlers_finishing_together_share_the_commit_of_their_outcomes() {
    let database = support::inbox::sqlite();
    let store = flaky(&database);
    let inbox = Inbox::from_arc(store.clone());
    let addr = serve(&inbox).await;
    for n in 0..64 {
        assert_eq!(send(addr, &credits(n)).await.0, 202);
    }
    // Sixteen at a time, released together.
    let together = Arc::new(tokio::sync::Barrier::new(16));
    let worker = Worker::new(&inbox, move |_: Job<Event>| {
        let together = Arc::clone(&together);
        async move {
            together.wait().await;
            Ok::<(), String>(())
        }
    })
    .concurrency(16);
    let running = tokio::spawn(worker.run(std::future::pending()));
    let stats = until(&inbox, |stats| stats.done == 64).await;
    running.abort();
    assert_eq!((stats.pending, stats.running, stats.dead), (0, 0, 0));
    let (calls, settlements) = (
        store.settle_calls.load(Ordering::SeqCst),
        store.settlements.load(Ordering::SeqCst),
    );
    assert!(settlements >= 64, "{settlements}");
    assert!(
        calls <= settlements / 2,
        "{calls} transactions for {settlements} outcomes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_database_is_503_and_acknowledges_nothing() {
    let database = support::inbox::sqlite();
    database.open().ping().await.unwrap(); // created and migrated
    let read_only = Inbox::new(SqlInbox::open(&format!("{}?mode=ro", database.url)).unwrap());
    let addr = serve(&read_only).await;
    let (status, json, _) = send(addr, &credits(1)).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (503, Some("inbox_unavailable"))
    );
    assert_eq!(read_only.stats().await.unwrap(), InboxStats::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_503_then_2xx_again_within_seconds_once_there_is_room_without_a_restart() {
    use sqlx::Row;
    let database = support::inbox::sqlite();
    let setup = database.open();
    setup.ping().await.unwrap();
    let pages: i64 = sqlx::query("PRAGMA page_count")
        .fetch_one(&sqlx::AnyPool::connect(&database.url).await.unwrap())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    setup.close().await;
    let limit = Arc::new(AtomicI64::new(pages + 8));
    let pool = support::inbox::capped_pool(&database, &limit).await;
    let inbox = Inbox::new(SqlInbox::with_pool(pool.clone()).unwrap());
    let addr = serve(&inbox).await;
    let big = |n: usize| {
        envelope(
            "credits.low",
            json!({ "balance": n, "note": "x".repeat(16 * 1024) }),
        )
    };
    let mut acknowledged = 0;
    let mut refused = 0;
    for n in 0..20 {
        match send(addr, &big(n)).await {
            (202, _, _) => acknowledged += 1,
            (503, json, _) => {
                assert_eq!(json["error"], "inbox_unavailable");
                refused += 1;
            }
            (status, json, _) => panic!("{status} {json}"),
        }
    }
    assert!(refused > 0, "the disk never filled");
    assert_eq!(
        inbox.stats().await.unwrap().pending,
        acknowledged,
        "every 202 is a stored row"
    );

    support::inbox::give_room(&pool, &limit).await;
    let freed = Instant::now();
    let mut n = 100;
    loop {
        n += 1;
        match send(addr, &big(n)).await {
            (202, _, _) => break,
            (503, _, _) if freed.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (status, json, _) => panic!("still {status} {json} 10 s after room came back"),
        }
    }
    acknowledged += 1;
    eprintln!("2xx again {:?} after room came back", freed.elapsed());
    // Not one lucky connection: every pooled connection commits again.
    for _ in 0..12 {
        n += 1;
        let (status, json, _) = send(addr, &big(n)).await;
        assert_eq!(status, 202, "{json}");
        acknowledged += 1;
    }
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handled);
    let worker = Worker::new(&inbox, move |_: Job<Event>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<(), String>(()) }
    });
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::clone(&stop);
    let running = tokio::spawn(worker.run(async move { stopped.notified().await }));
    let stats = until(&inbox, |stats| stats.done == acknowledged).await;
    assert_eq!((stats.pending, stats.running, stats.dead), (0, 0, 0));
    stop.notify_one();
    running.await.unwrap();
    assert_eq!(
        handled.load(Ordering::SeqCst) as u64,
        acknowledged,
        "every 2xx ended handled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_bytes_are_read_afresh_by_whatever_type_the_worker_of_the_day_uses() {
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open());
    let addr = serve(&inbox).await;
    // Stored by one release; no worker ran.
    let body = envelope("credits.low", json!({ "balance": 4, "currency": "EUR" }));
    assert_eq!(send(addr, &body).await.0, 202);

    // Handled by a later one, whose type reads a field the first never knew.
    #[derive(Debug, serde::Deserialize)]
    struct CreditsV2 {
        currency: String,
    }
    let (seen, mut seen_by) = mpsc::unbounded_channel();
    let worker = Worker::new(&Inbox::new(database.open()), move |job: Job<CreditsV2>| {
        let seen = seen.clone();
        async move {
            let _ = seen.send((job.event.data.currency, job.event.timestamp));
            Ok::<(), String>(())
        }
    });
    let running = tokio::spawn(worker.run(std::future::pending()));
    let (currency, timestamp) = tokio::time::timeout(Duration::from_secs(10), seen_by.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(currency, "EUR");
    assert_eq!(
        timestamp,
        support::SENT_AT.parse::<DateTime<Utc>>().unwrap()
    );
    running.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_error_with_nul_characters_is_dead_lettered_on_every_engine() {
    for database in support::inbox::databases().await {
        let inbox = Inbox::new(database.open());
        let addr = serve(&inbox).await;
        assert_eq!(send(addr, &credits(1)).await.0, 202);
        // Postgres refuses NUL in text: unstripped, the outcome could never be recorded.
        let worker = Worker::new(&inbox, |_: Job<Event>| async {
            Err::<(), _>("bad\0news".to_owned())
        })
        .max_attempts(1)
        .poll_interval(Duration::from_millis(50));
        let running = tokio::spawn(worker.run(std::future::pending()));
        until(&inbox, |stats| stats.dead == 1).await;
        running.abort();
        let dead = inbox.dead(10).await.unwrap();
        assert_eq!(dead[0].error, "badnews", "{}", database.name);
    }
}

/// The inbox and its workers read the inbox's clock: a test moves it past the retention
/// rather than waiting a week, and the next worker deletes what was handled.
#[tokio::test(flavor = "multi_thread")]
async fn handled_deliveries_are_pruned_once_the_inbox_clock_passes_the_retention() {
    let clock = ringyo_webhook::testing::ManualClock::new(support::test_now());
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open()).clock(clock.clone());
    let addr = serve(&inbox).await;
    assert_eq!(send(addr, &credits(1)).await.0, 202);
    let run = |inbox: &Inbox| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = Worker::new(inbox, |_: Job<Event>| async { Ok::<(), String>(()) });
        let running = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        (stop, running)
    };
    let (stop, running) = run(&inbox);
    until(&inbox, |stats| stats.done == 1).await;
    let _ = stop.send(());
    running.await.unwrap();

    clock.advance(Duration::from_secs(6 * 24 * 60 * 60));
    let (stop, running) = run(&inbox);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        inbox.stats().await.unwrap().done,
        1,
        "kept within the retention"
    );
    let _ = stop.send(());
    running.await.unwrap();

    clock.advance(Duration::from_secs(2 * 24 * 60 * 60));
    let (stop, running) = run(&inbox);
    until(&inbox, |stats| stats.done == 0).await;
    let _ = stop.send(());
    running.await.unwrap();
}
