//! Per-subject ordering: in the store, on every engine (one delivery of a subject at a time,
//! earliest timestamp first, across claimers; late arrivals superseded; head of line per
//! subject only), and through real HTTP (superseded events skipped, the reorder window).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::store::{ms, on_every_engine, settle};
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use ringyo_test_support::{
    self as support,
    inbox::{serve, PATH},
    stores::ids,
};
use ringyo_webhook::{
    inbox::{
        ClaimedDelivery, Inbox, InboxAdmin, InboxStats, InboxStore, Job, NewDelivery, Settle,
        Settlement, SqlInbox, Stored, Worker,
    },
    secrets::Tenant,
    testing::TestDelivery,
    ClaimToken, Clock, DeliveryId, Event, EventKind, SystemClock,
};
use serde_json::json;

/// A delivery of `subject` (`call:ID`) whose event happened at `base + at` ms, received and
/// due at `received`, ordered.
fn ordered(
    id: DeliveryId,
    subject: &str,
    event_at: DateTime<Utc>,
    received: DateTime<Utc>,
) -> NewDelivery {
    NewDelivery {
        id,
        event: "call.answered".to_owned(),
        timestamp: Some(event_at),
        received_at: received,
        payload: Bytes::from_static(b"{}"),
        tenant: None,
        subject: Some(subject.parse().unwrap()),
        ordered: true,
        due_at: received,
    }
}

/// Claims up to 10 due at `at`, leased until `lease_until`.
async fn claim_until(
    store: &SqlInbox,
    at: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    token: ClaimToken,
) -> Vec<ClaimedDelivery> {
    store.claim(at, lease_until, 10, token).await.unwrap()
}

/// The ids claimed at `at` (leased a minute), sorted.
async fn claim(store: &SqlInbox, at: DateTime<Utc>, token: ClaimToken) -> Vec<DeliveryId> {
    let mut claimed: Vec<_> = claim_until(store, at, at + ms(60_000), token)
        .await
        .iter()
        .map(|delivery| delivery.id)
        .collect();
    claimed.sort_unstable();
    claimed
}

fn sorted(mut ids: Vec<DeliveryId>) -> Vec<DeliveryId> {
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subjects_deliveries_are_claimed_one_at_a_time_earliest_timestamp_first() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let t = |n: i64| now - ms(60_000) + ms(n * 1000);
        // Received in the order 3, 1, 2; another call beside them.
        let batch = [
            ordered(id(3), "call:a", t(3), now),
            ordered(id(1), "call:a", t(1), now),
            ordered(id(2), "call:a", t(2), now),
            ordered(id(4), "call:b", t(1), now),
        ];
        store.store(&batch).await.unwrap();
        let token = ClaimToken::new();

        assert_eq!(claim(&store, now, token).await, sorted(vec![id(1), id(4)]));
        assert!(claim(&store, now, token).await.is_empty(), "call:a is held");
        for next in [2, 3] {
            assert!(settle(&store, id(next - 1), token, Settle::Done { at: now }).await);
            let claimed = claim_until(&store, now, now + ms(60_000), token).await;
            assert_eq!(claimed.len(), 1);
            assert_eq!(claimed[0].id, id(next));
            assert_eq!(claimed[0].subject.as_ref().unwrap().to_string(), "call:a");
            assert_eq!(claimed[0].superseded_by, None);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_arrival_older_than_the_newest_handled_is_superseded() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let t = |n: i64| now - ms(60_000) + ms(n * 1000);
        let token = ClaimToken::new();
        store
            .store(&[ordered(id(2), "call:a", t(2), now)])
            .await
            .unwrap();
        assert_eq!(claim(&store, now, token).await, [id(2)]);
        assert!(settle(&store, id(2), token, Settle::Done { at: now }).await);

        // call.ringing's retry, after call.completed was handled.
        store
            .store(&[ordered(id(1), "call:a", t(1), now)])
            .await
            .unwrap();
        let claimed = claim_until(&store, now, now + ms(60_000), token).await;
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            claimed[0].superseded_by.map(|at| at.timestamp_millis()),
            Some(t(2).timestamp_millis())
        );
        assert!(settle(&store, id(1), token, Settle::Superseded { at: now }).await);
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.done, stats.superseded), (1, 1));

        // A skipped one moves nothing forward: a newer event is not superseded.
        store
            .store(&[ordered(id(3), "call:a", t(3), now)])
            .await
            .unwrap();
        let claimed = claim_until(&store, now, now + ms(60_000), token).await;
        assert_eq!(claimed[0].superseded_by, None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_holds_back_only_its_subject_and_an_earlier_event_still_goes_first() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let t = |n: i64| now - ms(60_000) + ms(n * 1000);
        let batch = [
            ordered(id(1), "call:a", t(1), now),
            ordered(id(2), "call:a", t(2), now),
            ordered(id(3), "call:b", t(1), now),
        ];
        store.store(&batch).await.unwrap();
        let token = ClaimToken::new();
        assert_eq!(claim(&store, now, token).await, sorted(vec![id(1), id(3)]));
        let retry = Settle::Retry {
            at: now + ms(10_000),
            error: "down".into(),
        };
        assert!(settle(&store, id(1), token, retry).await);
        assert!(settle(&store, id(3), token, Settle::Done { at: now }).await);
        store
            .store(&[ordered(id(5), "call:b", t(2), now)])
            .await
            .unwrap();
        assert_eq!(claim(&store, now, token).await, [id(5)], "call:b goes on");
        assert!(settle(&store, id(5), token, Settle::Done { at: now }).await);

        // call:a's later delivery waits for the retry, and the worker is not woken for it.
        assert!(claim(&store, now, token).await.is_empty());
        let next_due = store.next_due().await.unwrap().unwrap();
        assert_eq!(
            next_due.timestamp_millis(),
            (now + ms(10_000)).timestamp_millis()
        );

        // An earlier event arriving during the back-off runs before the retry.
        store
            .store(&[ordered(id(0), "call:a", t(0), now)])
            .await
            .unwrap();
        assert_eq!(claim(&store, now, token).await, [id(0)]);
        assert!(settle(&store, id(0), token, Settle::Done { at: now }).await);
        assert!(claim(&store, now + ms(9_999), token).await.is_empty());

        // The retry, then dead-lettered: the subject goes on.
        assert_eq!(claim(&store, now + ms(10_000), token).await, [id(1)]);
        let dead = Settle::Dead {
            at: now,
            error: "down".into(),
        };
        assert!(settle(&store, id(1), token, dead).await);
        assert_eq!(claim(&store, now + ms(10_000), token).await, [id(2)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_and_unordered_deliveries_do_not_share_a_subjects_turn() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let at = now - ms(1000);
        let unordered = |n| NewDelivery {
            ordered: false,
            ..ordered(id(n), "call:a", at, now)
        };
        let batch = [
            ordered(id(1), "call:a", at, now),
            NewDelivery {
                tenant: Tenant::new("acme"),
                ..ordered(id(2), "call:a", at, now)
            },
            unordered(3),
            unordered(4),
        ];
        store.store(&batch).await.unwrap();
        let claimed = claim(&store, now, ClaimToken::new()).await;
        assert_eq!(claimed, sorted(vec![id(1), id(2), id(3), id(4)]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ordered_delivery_waits_until_its_due_time() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let windowed = NewDelivery {
            due_at: now + ms(1000),
            ..ordered(id(1), "call:a", now, now)
        };
        store.store(&[windowed]).await.unwrap();
        let token = ClaimToken::new();
        assert!(claim(&store, now + ms(999), token).await.is_empty());
        let next_due = store.next_due().await.unwrap().unwrap();
        assert_eq!(
            next_due.timestamp_millis(),
            (now + ms(1000)).timestamp_millis()
        );
        assert_eq!(claim(&store, now + ms(1000), token).await, [id(1)]);
    })
    .await;
}

/// A delivery whose process died holds its subject until it has run again, alone, as a
/// suspect; given back unfinished, it still holds it.
#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_delivery_holds_its_subject_until_it_runs_again_as_a_suspect() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let t = |n: i64| now - ms(60_000) + ms(n * 1000);
        let batch = [
            ordered(id(1), "call:a", t(1), now),
            ordered(id(2), "call:a", t(2), now),
        ];
        store.store(&batch).await.unwrap();
        let dead_worker = ClaimToken::new();
        let claimed = claim_until(&store, now, now + ms(1000), dead_worker).await;
        assert_eq!(claimed.len(), 1);

        let later = now + ms(2000);
        let token = ClaimToken::new();
        assert!(claim(&store, later, token).await.is_empty(), "id 2 waits");
        assert_eq!(store.suspects(later).await.unwrap(), 1);
        let lease = later + ms(60_000);
        let suspect = store.claim_suspect(later, lease, token).await.unwrap();
        assert_eq!(suspect.map(|suspect| suspect.id), Some(id(1)));
        assert!(settle(&store, id(1), token, Settle::Release { at: later }).await);
        assert!(claim(&store, later, token).await.is_empty(), "still held");

        let suspect = store.claim_suspect(later, lease, token).await.unwrap();
        assert_eq!(suspect.map(|suspect| suspect.id), Some(id(1)));
        assert!(settle(&store, id(1), token, Settle::Done { at: later }).await);
        assert_eq!(claim(&store, later, token).await, [id(2)]);
    })
    .await;
}

/// Claimers racing on one database (on Postgres, each claim its own transaction with
/// `SKIP LOCKED`) never have two deliveries of one subject at once, and each subject's run in
/// timestamp order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claimers_never_run_two_deliveries_of_one_subject() {
    const SUBJECTS: u32 = 12;
    const EVENTS: u32 = 8;
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let mut batch = Vec::new();
        for event in (0..EVENTS).rev() {
            for subject in 0..SUBJECTS {
                let at = now - ms(60_000) + ms(i64::from(event) * 1000);
                let subject_name = format!("call:c{subject}");
                batch.push(ordered(id(subject * 100 + event), &subject_name, at, now));
            }
        }
        store.store(&batch).await.unwrap();

        // Per subject: how many run now, and the events run so far, in order.
        let running = Arc::new(Mutex::new(HashMap::<String, (u32, Vec<DeliveryId>)>::new()));
        let mut claimers = Vec::new();
        for _ in 0..6 {
            let (store, running) = (store.clone(), Arc::clone(&running));
            claimers.push(tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                let token = ClaimToken::new();
                while tokio::time::Instant::now() < deadline {
                    let claimed = claim_until(&store, now, now + ms(60_000), token).await;
                    if claimed.is_empty() {
                        if store.stats().await.unwrap().pending == 0 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    for delivery in &claimed {
                        let subject = delivery.subject.as_ref().unwrap().to_string();
                        let mut running = running.lock().unwrap();
                        let (now_running, ran) = running.entry(subject.clone()).or_default();
                        assert_eq!(*now_running, 0, "two of {subject} at once");
                        *now_running += 1;
                        ran.push(delivery.id);
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    let mut settlements = Vec::new();
                    for delivery in &claimed {
                        let subject = delivery.subject.as_ref().unwrap().to_string();
                        running.lock().unwrap().get_mut(&subject).unwrap().0 -= 1;
                        settlements.push(Settlement {
                            id: delivery.id,
                            token,
                            outcome: Settle::Done { at: now },
                        });
                    }
                    let held = store.settle(&settlements).await.unwrap();
                    assert!(held.iter().all(|held| *held));
                }
            }));
        }
        for claimer in claimers {
            claimer.await.unwrap();
        }
        let ran: HashMap<_, _> = running
            .lock()
            .unwrap()
            .iter()
            .map(|(subject, (_, ran))| (subject.clone(), ran.clone()))
            .collect();
        assert_eq!(ran.len(), SUBJECTS as usize);
        for subject in 0..SUBJECTS {
            let expected: Vec<_> = (0..EVENTS).map(|event| id(subject * 100 + event)).collect();
            assert_eq!(
                ran[&format!("call:c{subject}")],
                expected,
                "call:c{subject}"
            );
        }
        assert_eq!(
            store.stats().await.unwrap().done,
            u64::from(SUBJECTS * EVENTS)
        );
    })
    .await;
}

/// An event of `kind` about call `call`, `seconds` after the test vectors' time, signed.
pub(crate) fn call_event(kind: &str, call: &str, seconds: i64) -> Vec<u8> {
    let sent_at: DateTime<Utc> = support::SENT_AT.parse().unwrap();
    TestDelivery::new(kind)
        .data(json!({ "id": call }))
        .timestamp(sent_at + TimeDelta::seconds(seconds))
        .body_and_signature()
        .0
        .into_bytes()
}

pub(crate) async fn send(addr: std::net::SocketAddr, body: &[u8]) -> u16 {
    support::deliver(addr, PATH, body.to_vec(), Some(&support::sign(body)))
        .await
        .0
}

/// What the handler saw of each job: the event's name, and whether it was superseded.
type Seen = Arc<Mutex<Vec<(String, bool)>>>;

/// An ordered inbox with `window` on a fresh SQLite file, served, with a worker that skips
/// superseded `call.ringing` and reports every job it runs.
async fn ordered_receiver(
    window: Duration,
) -> (support::inbox::Database, Inbox, std::net::SocketAddr, Seen) {
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open())
        .order_by_subject(true)
        .reorder_window(window);
    let addr = serve(&inbox).await;
    let seen = Seen::default();
    let report = Arc::clone(&seen);
    let worker = Worker::new(&inbox, move |job: Job<Event>| {
        let report = Arc::clone(&report);
        async move {
            let entry = (job.event.kind.to_string(), job.superseded_by.is_some());
            report.lock().unwrap().push(entry);
            Ok::<(), String>(())
        }
    })
    .skip_superseded([EventKind::CallRinging]);
    tokio::spawn(worker.run(std::future::pending()));
    (database, inbox, addr, seen)
}

/// Polls (bounded) until the inbox has `finished` deliveries handled or superseded.
async fn until_finished(inbox: &Inbox, finished: u64) -> InboxStats {
    for _ in 0..400 {
        let stats = inbox.stats().await.unwrap();
        if stats.done + stats.superseded == finished {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not finished: {:?}", inbox.stats().await.unwrap());
}

/// A late `call.ringing` (a retry) after `call.completed` was handled is skipped and recorded
/// as superseded; a late `call.recording.ready` still runs, told it is superseded.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_status_event_is_skipped_as_superseded_and_others_still_run() {
    let (_database, inbox, addr, seen) = ordered_receiver(Duration::ZERO).await;
    assert_eq!(
        send(addr, &call_event("call.completed", "call_1", 30)).await,
        202
    );
    until_finished(&inbox, 1).await;
    assert_eq!(
        send(addr, &call_event("call.ringing", "call_1", 10)).await,
        202
    );
    let recording = call_event("call.recording.ready", "call_1", 20);
    assert_eq!(send(addr, &recording).await, 202);
    let stats = until_finished(&inbox, 3).await;
    assert_eq!((stats.done, stats.superseded), (2, 1));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("call.completed".to_owned(), false),
            ("call.recording.ready".to_owned(), true)
        ]
    );
}

/// Events sent close together, in the wrong order, are sorted by the reorder window before
/// any runs: none is superseded. (With no window, `call.completed` would run at once, and the
/// two after it would be superseded.)
#[tokio::test(flavor = "multi_thread")]
async fn events_arriving_within_the_reorder_window_run_in_timestamp_order() {
    let (_database, inbox, addr, seen) = ordered_receiver(Duration::from_secs(2)).await;
    for (kind, at) in [
        ("call.completed", 30),
        ("call.answered", 20),
        ("call.ringing", 10),
    ] {
        assert_eq!(send(addr, &call_event(kind, "call_1", at)).await, 202);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let stats = until_finished(&inbox, 3).await;
    assert_eq!((stats.done, stats.superseded), (3, 0));
    let seen: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(kind, _)| kind.clone())
        .collect();
    assert_eq!(seen, ["call.ringing", "call.answered", "call.completed"]);
}

/// On Postgres, where replicas claim at the same moment, a claim skips a subject whose lane
/// another transaction holds (a replica storing one of its deliveries, say) rather than wait
/// for it, and takes it once free.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_a_claim_skips_a_subject_another_transaction_holds_without_waiting() {
    use ringyo_webhook::inbox::sqlx::{self, Connection};

    let Some(database) = support::inbox::postgres().await else {
        return;
    };
    let store = database.open();
    let id = ids();
    let now = SystemClock.now();
    let batch = [
        ordered(id(1), "call:a", now, now),
        ordered(id(2), "call:b", now, now),
    ];
    store.store(&batch).await.unwrap();
    let mut other = sqlx::postgres::PgConnection::connect(&database.url)
        .await
        .unwrap();
    let mut holding = other.begin().await.unwrap();
    sqlx::query("SELECT lane FROM ringyo_inbox_lanes WHERE lane = 'call:a' FOR UPDATE")
        .execute(&mut *holding)
        .await
        .unwrap();

    let token = ClaimToken::new();
    let claimed = tokio::time::timeout(Duration::from_secs(2), claim(&store, now, token))
        .await
        .expect("the claim waited for the held subject");
    assert_eq!(claimed, [id(2)]);
    holding.rollback().await.unwrap();
    assert_eq!(claim(&store, now, token).await, [id(1)]);
    store.close().await;
}

/// On Postgres, a subject's holder settling while another replica stores a new delivery of the
/// subject (the settlement waits for the store's lock on the subject) leaves the new delivery
/// due, not waiting for ever: the settlement reads the subject's deliveries after the store
/// committed.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_a_delivery_stored_while_its_subject_is_released_still_runs() {
    use ringyo_webhook::inbox::sqlx::{self, Connection};

    let Some(database) = support::inbox::postgres().await else {
        return;
    };
    let store = database.open();
    let id = ids();
    let now = SystemClock.now();
    let t = |n: i64| now - ms(60_000) + ms(n * 1000);
    store
        .store(&[ordered(id(2), "call:a", t(2), now)])
        .await
        .unwrap();
    let token = ClaimToken::new();
    assert_eq!(claim(&store, now, token).await, [id(2)]);

    // Another replica stores call:a's next event, as `store` does, and has not committed yet.
    let mut other = sqlx::postgres::PgConnection::connect(&database.url)
        .await
        .unwrap();
    let mut storing = other.begin().await.unwrap();
    let at = now.timestamp_millis();
    sqlx::query(
        "INSERT INTO ringyo_inbox (delivery_id, event, event_at, received_at, payload, state, \
         attempts, available_at, subject, lane, order_at) \
         VALUES ($1, 'call.completed', $2, $3, '\\x00', 'pending', 0, $3, 'call:a', 'call:a', $2)",
    )
    .bind(id(3).to_string())
    .bind(t(3).timestamp_millis())
    .bind(at)
    .execute(&mut *storing)
    .await
    .unwrap();
    sqlx::query("UPDATE ringyo_inbox_lanes SET due_at = $1 WHERE lane = 'call:a'")
        .bind(at)
        .execute(&mut *storing)
        .await
        .unwrap();

    let settling = tokio::spawn({
        let (store, holder) = (store.clone(), id(2));
        async move { assert!(settle(&store, holder, token, Settle::Done { at: now }).await) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !settling.is_finished(),
        "the settlement waits for the subject"
    );
    storing.commit().await.unwrap();
    settling.await.unwrap();
    assert_eq!(claim(&store, now, token).await, [id(3)]);
    store.close().await;
}

/// Two replicas storing the same deliveries at once, in opposite orders (a burst of retries
/// behind a load balancer), both commit: each stores in delivery-id order, so neither waits
/// for a key the other holds while holding one it wants (a deadlock, which Postgres would end
/// by failing one batch with 503).
#[tokio::test(flavor = "multi_thread")]
async fn replicas_storing_the_same_deliveries_in_opposite_orders_both_commit() {
    on_every_engine(|store| async move {
        let other = store.clone();
        let id = ids();
        let now = SystemClock.now();
        for round in 0..10 {
            let batch: Vec<_> = (0..40)
                .map(|n| ordered(id(round * 100 + n), &format!("call:r{n}"), now, now))
                .collect();
            let reversed: Vec<_> = batch.iter().rev().cloned().collect();
            let (one, two) = tokio::join!(store.store(&batch), other.store(&reversed));
            let (one, two) = (one.unwrap(), two.unwrap());
            let new = one
                .iter()
                .chain(&two)
                .filter(|s| **s == Stored::New)
                .count();
            assert_eq!(new, 40, "each stored once");
        }
    })
    .await;
}
