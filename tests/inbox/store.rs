//! The inbox's store behaviour, one suite run against every engine: a fresh SQLite file, and
//! a fresh Postgres database when `RINGYO_TEST_POSTGRES_URL` names a server.

use std::{collections::HashSet, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use ringyo_test_support::{inbox::databases, stores::ids};
use ringyo_webhook::{
    inbox::{
        ClaimedDelivery, InboxAdmin, InboxStore, NewDelivery, ReplayFilter, Settle, Settlement,
        SqlInbox, Stored,
    },
    secrets::Tenant,
    ClaimToken, Clock, DeliveryId, SystemClock,
};

fn delivery(id: DeliveryId, received_at: DateTime<Utc>, payload: &str) -> NewDelivery {
    NewDelivery {
        id,
        event: "call.completed".to_owned(),
        timestamp: Some(received_at),
        received_at,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        tenant: None,
        subject: None,
        ordered: false,
        due_at: received_at,
    }
}

fn ms(n: i64) -> TimeDelta {
    TimeDelta::milliseconds(n)
}

/// Claims what is due at `at` for `token`, leased a minute, as `(id, attempt)` pairs.
async fn due(store: &SqlInbox, at: DateTime<Utc>, token: ClaimToken) -> Vec<(DeliveryId, u32)> {
    let claimed = store.claim(at, at + ms(60_000), 10, token).await.unwrap();
    claimed.iter().map(|c| (c.id, c.attempt)).collect()
}

/// Settles one delivery on its own; whether `token` still held it.
async fn settle(store: &SqlInbox, id: DeliveryId, token: ClaimToken, outcome: Settle) -> bool {
    let held = store
        .settle(&[Settlement { id, token, outcome }])
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    held[0]
}

/// Replays the dead letter `id`; whether there was one.
async fn replay(store: &SqlInbox, id: DeliveryId, now: DateTime<Utc>) -> bool {
    let filter = ReplayFilter::dead().id(id);
    store.replay(&filter, now).await.unwrap() == 1
}

/// Runs `case` on every engine available, each on a database of its own.
async fn on_every_engine<F, Fut>(case: F)
where
    F: Fn(SqlInbox) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for database in databases().await {
        eprintln!("engine: {}", database.name);
        let store = database.open();
        case(store.clone()).await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_is_stored_once_and_its_bytes_come_back_exactly() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let odd = "{\"event\":\"call.completed\",  \"data\":{\"é\":\"\\u0000\"}}\n";
        let batch = [
            delivery(id(1), now, odd),
            delivery(id(2), now, "{}"),
            delivery(id(1), now, odd),
        ];
        let stored = store.store(&batch).await.unwrap();
        assert_eq!(stored, [Stored::New, Stored::New, Stored::Duplicate]);
        let for_acme = NewDelivery {
            tenant: Tenant::new("acme"),
            ..delivery(id(3), now, "{}")
        };
        assert_eq!(store.store(&[for_acme]).await.unwrap(), [Stored::New]);
        assert_eq!(store.store(&batch[..1]).await.unwrap(), [Stored::Duplicate]);

        let stats = store.stats().await.unwrap();
        assert_eq!(
            (stats.pending, stats.running, stats.done, stats.dead),
            (3, 0, 0, 0)
        );
        assert_eq!(
            stats.oldest_pending.map(|at| at.timestamp_millis()),
            Some(now.timestamp_millis())
        );

        let claimed = store
            .claim(now, now + ms(30_000), 10, ClaimToken::new())
            .await
            .unwrap();
        let first = claimed.iter().find(|c| c.id == id(1)).unwrap();
        assert_eq!(first.payload, odd.as_bytes());
        assert_eq!(first.attempt, 1);
        assert_eq!(first.received_at.timestamp_millis(), now.timestamp_millis());
        assert_eq!(first.tenant, None);
        let tenants = claimed
            .iter()
            .find(|c| c.id == id(3))
            .map(|c| c.tenant.clone());
        assert_eq!(tenants, Some(Tenant::new("acme")), "the tenant comes back");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_hides_a_delivery_until_it_runs_out_and_only_its_holder_settles() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        store.store(&[delivery(id(1), now, "{}")]).await.unwrap();
        let (first, second) = (ClaimToken::new(), ClaimToken::new());
        assert_eq!(
            store
                .claim(now, now + ms(1000), 10, first)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(store
            .claim(now + ms(999), now + ms(2000), 10, second)
            .await
            .unwrap()
            .is_empty());

        // Extended, it stays hidden past the first lease.
        let extend = Settle::Extend {
            lease_until: now + ms(5000),
        };
        assert!(settle(&store, id(1), first, extend).await);
        assert!(store
            .claim(now + ms(1001), now + ms(9000), 10, second)
            .await
            .unwrap()
            .is_empty());

        // Run out (the holder died): a suspect, taken again as one, as attempt 2; the old
        // holder cannot settle.
        assert!(store
            .claim(now + ms(5000), now + ms(9000), 10, second)
            .await
            .unwrap()
            .is_empty());
        let again = store
            .claim_suspect(now + ms(5000), now + ms(9000), second)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.attempt, 2);
        let done = Settle::Done { at: now };
        assert!(!settle(&store, id(1), first, done.clone()).await);
        assert!(settle(&store, id(1), second, done).await);
        assert_eq!(store.stats().await.unwrap().done, 1);
        assert!(store
            .claim(now + ms(99_000), now + ms(99_999), 10, first)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.store(&[delivery(id(1), now, "{}")]).await.unwrap(),
            [Stored::Duplicate]
        );
    })
    .await;
}

/// A claimed delivery's `(attempt, orphaned, crashes_alone)`.
fn counts(claimed: &ClaimedDelivery) -> (u32, u32, u32) {
    (claimed.attempt, claimed.orphaned, claimed.crashes_alone)
}

/// The counts of the suspect due at `at`, claimed for `token`.
async fn suspect(store: &SqlInbox, at: DateTime<Utc>, token: ClaimToken) -> (u32, u32, u32) {
    let claimed = store.claim_suspect(at, at + ms(1000), token).await.unwrap();
    counts(&claimed.expect("a suspect is due"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_that_never_finished_makes_a_suspect_until_one_finishes() {
    for database in databases().await {
        eprintln!("engine: {}", database.name);
        let store = database.open();
        // The process after a restart: another holder of leases on the same database.
        let restarted = database.open();
        let id = ids();
        let now = SystemClock.now();
        store.store(&[delivery(id(1), now, "{}")]).await.unwrap();
        let token = ClaimToken::new();
        let claimed = store.claim(now, now + ms(1000), 10, token).await.unwrap();
        assert_eq!(counts(&claimed[0]), (1, 0, 0));
        assert_eq!(store.suspects(now + ms(999)).await.unwrap(), 0, "leased");

        // Its process died beside others: one attempt orphaned, no death alone.
        assert_eq!(store.suspects(now + ms(1000)).await.unwrap(), 1);
        assert!(due(&store, now + ms(1000), token).await.is_empty());
        assert_eq!(suspect(&store, now + ms(1000), token).await, (2, 1, 0));
        assert_eq!(store.suspects(now + ms(1000)).await.unwrap(), 0, "leased");
        // It ran alone and its lease ran out, but the same holder takes it again: that process
        // is alive (its outcome could not be recorded), so no death alone.
        assert_eq!(suspect(&store, now + ms(2000), token).await, (3, 2, 0));
        // It ran alone and the process died: the restarted one counts a death alone.
        assert_eq!(suspect(&restarted, now + ms(3000), token).await, (4, 3, 1));
        assert_eq!(
            restarted.suspects(now + ms(3000)).await.unwrap(),
            0,
            "leased"
        );
        let store = restarted;

        // Given back unfinished at a shutdown: still a suspect, nothing more counted.
        assert!(settle(&store, id(1), token, Settle::Release { at: now }).await);
        assert!(due(&store, now + ms(3000), token).await.is_empty());
        assert_eq!(suspect(&store, now + ms(3000), token).await, (4, 3, 1));

        // Finished (the handler failed): cleared; the orphaned attempts stay counted.
        let retry = Settle::Retry {
            at: now,
            error: "down".into(),
        };
        assert!(settle(&store, id(1), token, retry).await);
        assert_eq!(store.suspects(now + ms(9000)).await.unwrap(), 0);
        let claimed = store.claim(now, now + ms(1000), 10, token).await.unwrap();
        assert_eq!(counts(&claimed[0]), (5, 3, 0));

        // Replayed from the dead letter: from the first attempt, nothing orphaned.
        let dead = Settle::Dead {
            at: now,
            error: "x".into(),
        };
        assert!(settle(&store, id(1), token, dead).await);
        assert!(replay(&store, id(1), now).await);
        let claimed = store.claim(now, now + ms(1000), 10, token).await.unwrap();
        assert_eq!(counts(&claimed[0]), (1, 0, 0));
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_comes_due_at_its_time_and_a_release_does_not_count_an_attempt() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let batch = [delivery(id(1), now, "{}"), delivery(id(2), now, "{}")];
        store.store(&batch).await.unwrap();
        let token = ClaimToken::new();
        assert_eq!(due(&store, now, token).await.len(), 2);

        let retry = Settle::Retry {
            at: now + ms(10_000),
            error: "down".into(),
        };
        assert!(settle(&store, id(1), token, retry).await);
        assert!(settle(&store, id(2), token, Settle::Release { at: now }).await);
        let next_due = || async {
            store
                .next_due()
                .await
                .unwrap()
                .map(|at| at.timestamp_millis())
        };
        assert_eq!(next_due().await, Some(now.timestamp_millis()));

        assert_eq!(due(&store, now, token).await, [(id(2), 1)], "not counted");
        assert!(settle(&store, id(2), token, Settle::Done { at: now }).await);
        assert_eq!(
            next_due().await,
            Some((now + ms(10_000)).timestamp_millis())
        );
        assert!(due(&store, now + ms(9_999), token).await.is_empty());
        assert_eq!(due(&store, now + ms(10_000), token).await, [(id(1), 2)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_is_listed_with_its_error_and_replays_from_the_first_attempt() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let for_acme = NewDelivery {
            tenant: Tenant::new("acme"),
            ..delivery(id(1), now, "{}")
        };
        store.store(&[for_acme]).await.unwrap();
        let token = ClaimToken::new();
        due(&store, now, token).await;
        let dead = Settle::Dead {
            at: now + ms(5),
            error: "the handler panicked: boom".into(),
        };
        assert!(settle(&store, id(1), token, dead).await);
        assert!(due(&store, now + ms(99_000), token).await.is_empty());

        let listed = store.dead(10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].id, listed[0].attempts), (id(1), 1));
        assert_eq!(listed[0].event, "call.completed");
        assert_eq!(listed[0].error, "the handler panicked: boom");
        assert_eq!(listed[0].tenant, Tenant::new("acme"));
        assert_eq!(store.stats().await.unwrap().dead, 1);

        assert!(!replay(&store, id(2), now).await);
        assert!(replay(&store, id(1), now).await);
        assert!(!replay(&store, id(1), now).await, "no longer dead");
        assert_eq!(due(&store, now, token).await, [(id(1), 1)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pruning_deletes_only_deliveries_handled_before_the_cut() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let batch: Vec<_> = (1..=4).map(|n| delivery(id(n), now, "{}")).collect();
        store.store(&batch).await.unwrap();
        let token = ClaimToken::new();
        let claimed = due(&store, now, token).await;
        let [old, new, dead, _] = [0, 1, 2, 3].map(|at| claimed[at].0);
        let long_ago = now - ms(10_000);
        let settlements = [
            (old, Settle::Done { at: long_ago }),
            (new, Settle::Done { at: now }),
            (
                dead,
                Settle::Dead {
                    at: long_ago,
                    error: "x".into(),
                },
            ),
        ]
        .map(|(id, outcome)| Settlement { id, token, outcome });
        assert_eq!(store.settle(&settlements).await.unwrap(), [true; 3]);

        assert_eq!(store.prune(now - ms(1)).await.unwrap(), 1);
        let after = store.stats().await.unwrap();
        assert_eq!(
            (after.running, after.done, after.dead),
            (1, 1, 1),
            "only the old handled one is gone; dead letters are never pruned"
        );
        assert_eq!(store.prune(now - ms(1)).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn settlements_in_one_call_apply_each_only_where_its_token_holds() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let batch: Vec<_> = (1..=3).map(|n| delivery(id(n), now, "{}")).collect();
        store.store(&batch).await.unwrap();
        let (mine, stranger) = (ClaimToken::new(), ClaimToken::new());
        assert_eq!(due(&store, now, mine).await.len(), 3);

        let done = Settle::Done { at: now };
        let settlements = [
            (id(3), mine, done.clone()),
            (id(1), stranger, done.clone()),
            (id(2), mine, done),
            (id(1), mine, Settle::Release { at: now }),
        ]
        .map(|(id, token, outcome)| Settlement { id, token, outcome });
        assert_eq!(
            store.settle(&settlements).await.unwrap(),
            [true, false, true, true],
            "answers in the order asked"
        );
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.pending, stats.running, stats.done), (1, 0, 2));
        assert_eq!(
            due(&store, now, mine).await,
            [(id(1), 1)],
            "released, not done"
        );
        assert!(store.settle(&[]).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_claimers_never_share_a_delivery() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let batch: Vec<_> = (0..60).map(|n| delivery(id(n), now, "{}")).collect();
        store.store(&batch).await.unwrap();
        let claimers = (0..4).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..40 {
                    let token = ClaimToken::new();
                    let claimed = store.claim(now, now + ms(60_000), 3, token).await.unwrap();
                    if claimed.is_empty() {
                        break;
                    }
                    mine.extend(claimed.into_iter().map(|c| c.id));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                mine
            })
        });
        let mut all = Vec::new();
        for claimer in claimers.collect::<Vec<_>>() {
            all.extend(claimer.await.unwrap());
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!((all.len(), unique.len()), (60, 60));
    })
    .await;
}

#[test]
fn urls_that_cannot_hold_an_inbox_are_refused_without_repeating_them() {
    for url in [
        "sqlite::memory:",
        "sqlite://x.db?mode=memory",
        "mysql://u:hunter2@db/x",
        "x",
    ] {
        let err = SqlInbox::open(url).unwrap_err().to_string();
        assert!(err.starts_with("unsupported inbox URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
