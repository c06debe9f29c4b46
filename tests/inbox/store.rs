//! The inbox's store behaviour, one suite run against every engine: a fresh SQLite file, and
//! a fresh Postgres database when `RINGYO_TEST_POSTGRES_URL` names a server.

use std::{collections::HashSet, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use ringyo_test_support::{inbox::databases, stores::ids};
use ringyo_webhook::{
    inbox::{
        ClaimedDelivery, HandOver, InboxAdmin, InboxStore, NewDelivery, ReplayFilter, Settle,
        Settlement, SqlInbox, Stored,
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

pub(crate) fn ms(n: i64) -> TimeDelta {
    TimeDelta::milliseconds(n)
}

/// Claims what is due at `at` for `token`, leased a minute, as `(id, attempt)` pairs.
async fn due(store: &SqlInbox, at: DateTime<Utc>, token: ClaimToken) -> Vec<(DeliveryId, u32)> {
    let claimed = store.claim(at, at + ms(60_000), 10, token).await.unwrap();
    claimed.iter().map(|c| (c.id, c.attempt)).collect()
}

/// Settles one delivery on its own; whether `token` still held it.
pub(crate) async fn settle(
    store: &SqlInbox,
    id: DeliveryId,
    token: ClaimToken,
    outcome: Settle,
) -> bool {
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
pub(crate) async fn on_every_engine<F, Fut>(case: F)
where
    F: Fn(SqlInbox) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    on_every_engine_handing_over(|store, _| case(store)).await;
}

/// [`on_every_engine`], telling the case whether a settlement on the engine also takes free
/// lanes for the slots its own lanes left empty (SQLite; on Postgres a settlement hands over
/// only the lanes it frees, and the claim loop takes the rest, see
/// `Dialect::takes_lanes_when_settling`).
async fn on_every_engine_handing_over<F, Fut>(case: F)
where
    F: Fn(SqlInbox, bool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for database in databases().await {
        eprintln!("engine: {}", database.name);
        let store = database.open();
        case(store.clone(), database.name == "sqlite").await;
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

// ---------------------------------------------------------------------------------------------
// Replay by filter (issue 21): which finished deliveries a `ReplayFilter` matches, and how
// replayed ordered deliveries go through their subject's order again. Kept together at the end
// of the suite; add other cases above this section.
// ---------------------------------------------------------------------------------------------

/// A delivery of `event` about `subject` (`call:1`, or `""` for none), for `tenant` (`""` for
/// none), received at `received_at`.
fn about(
    id: DeliveryId,
    event: &str,
    subject: &str,
    tenant: &str,
    received_at: DateTime<Utc>,
) -> NewDelivery {
    NewDelivery {
        event: event.to_owned(),
        subject: (!subject.is_empty()).then(|| subject.parse().unwrap()),
        tenant: Tenant::new(tenant),
        ..delivery(id, received_at, "{}")
    }
}

/// A delivery of `subject` stored with ordering on, signed at `timestamp`, received (and due)
/// at `received_at`.
fn ordered(
    id: DeliveryId,
    subject: &str,
    timestamp: DateTime<Utc>,
    received_at: DateTime<Utc>,
) -> NewDelivery {
    NewDelivery {
        timestamp: Some(timestamp),
        ordered: true,
        ..about(id, "call.ringing", subject, "", received_at)
    }
}

/// Settles each of `ids` with `outcome`, all held by `token`.
async fn settle_all(store: &SqlInbox, ids: &[DeliveryId], token: ClaimToken, outcome: Settle) {
    let settlements: Vec<_> = ids
        .iter()
        .map(|&id| Settlement {
            id,
            token,
            outcome: outcome.clone(),
        })
        .collect();
    let held = store.settle(&settlements).await.unwrap();
    assert!(held.iter().all(|&held| held), "{held:?}");
}

/// Replays what `filter` matches at `now`, claims what that made due and handles it again
/// (`Done`), and returns the ids: what the replay ran again.
async fn replayed(
    store: &SqlInbox,
    filter: &ReplayFilter,
    now: DateTime<Utc>,
) -> HashSet<DeliveryId> {
    let count = store.replay(filter, now).await.unwrap();
    let token = ClaimToken::new();
    let ran: Vec<DeliveryId> = due(store, now, token)
        .await
        .into_iter()
        .map(|(id, attempt)| {
            assert_eq!(attempt, 1, "a replay starts from the first attempt");
            id
        })
        .collect();
    assert_eq!(u64::try_from(ran.len()).unwrap(), count, "{filter:?}");
    settle_all(store, &ran, token, Settle::Done { at: now }).await;
    ran.into_iter().collect()
}

/// The time now, to the millisecond the store keeps: a `superseded_by` compares equal.
fn now_in_millis() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(SystemClock.now().timestamp_millis()).unwrap()
}

/// Claims the one delivery of a lane due at `now`: its id and `superseded_by`.
async fn next_in_lane(
    store: &SqlInbox,
    now: DateTime<Utc>,
    token: ClaimToken,
) -> (DeliveryId, Option<DateTime<Utc>>) {
    let claimed = store.claim(now, now + ms(60_000), 10, token).await.unwrap();
    assert_eq!(claimed.len(), 1, "one at a time: {claimed:?}");
    (claimed[0].id, claimed[0].superseded_by)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_filter_matches_only_finished_deliveries_of_the_states_it_names() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let [handled, skipped, dead, waiting, running] = [1, 2, 3, 4, 5].map(id);
        let later = NewDelivery {
            due_at: now + ms(3_600_000),
            ..delivery(waiting, now, "{}")
        };
        let batch = [
            delivery(handled, now, "{}"),
            delivery(skipped, now, "{}"),
            delivery(dead, now, "{}"),
            later,
            delivery(running, now, "{}"),
        ];
        store.store(&batch).await.unwrap();
        let token = ClaimToken::new();
        assert_eq!(
            due(&store, now, token).await.len(),
            4,
            "all but the waiting one"
        );
        settle_all(&store, &[handled], token, Settle::Done { at: now }).await;
        settle_all(&store, &[skipped], token, Settle::Superseded { at: now }).await;
        let failed = Settle::Dead {
            at: now,
            error: "the CRM is down".into(),
        };
        settle_all(&store, &[dead], token, failed.clone()).await;
        let stats = store.stats().await.unwrap();
        assert_eq!(
            (
                stats.pending,
                stats.running,
                stats.done,
                stats.superseded,
                stats.dead
            ),
            (1, 1, 1, 1, 1)
        );

        assert_eq!(
            replayed(&store, &ReplayFilter::dead(), now).await,
            HashSet::from([dead])
        );
        assert_eq!(
            replayed(&store, &ReplayFilter::handled(), now).await,
            HashSet::from([handled, skipped, dead]),
            "handled includes the superseded one (and the dead one, handled by the last replay)"
        );
        assert_eq!(
            store.stats().await.unwrap().superseded,
            0,
            "run, not skipped"
        );

        // Back to one of each finished state.
        store.replay(&ReplayFilter::finished(), now).await.unwrap();
        let token = ClaimToken::new();
        assert_eq!(due(&store, now, token).await.len(), 3);
        settle_all(&store, &[handled], token, Settle::Done { at: now }).await;
        settle_all(&store, &[skipped], token, Settle::Superseded { at: now }).await;
        settle_all(&store, &[dead], token, failed).await;
        assert_eq!(
            replayed(&store, &ReplayFilter::finished(), now).await,
            HashSet::from([handled, skipped, dead])
        );

        for id in [waiting, running] {
            assert_eq!(
                store
                    .replay(&ReplayFilter::finished().id(id), now)
                    .await
                    .unwrap(),
                0,
                "waiting and running deliveries are never replayed"
            );
        }
        assert_eq!(
            store
                .replay(&ReplayFilter::dead().id(handled), now)
                .await
                .unwrap(),
            0,
            "a handled delivery is not a dead letter"
        );
        let stats = store.stats().await.unwrap();
        assert_eq!(
            (stats.pending, stats.running, stats.done),
            (1, 1, 3),
            "the waiting one still waits, the running one still runs"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_filter_narrows_by_id_time_received_event_subject_and_tenant() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = SystemClock.now();
        let at = |seconds: i64| now - ms(60_000) + ms(seconds * 1000);
        let [completed, ringing, appointment, credits] = [1, 2, 3, 4].map(id);
        let batch = [
            about(completed, "call.completed", "call:call_1", "", at(0)),
            about(ringing, "call.ringing", "call:call_2", "acme", at(1)),
            about(
                appointment,
                "appointment.created",
                "appointment:apt_1",
                "acme",
                at(2),
            ),
            about(credits, "credits.low", "", "beta", at(3)),
        ];
        store.store(&batch).await.unwrap();
        let token = ClaimToken::new();
        let all: Vec<_> = due(&store, now, token).await.iter().map(|c| c.0).collect();
        settle_all(&store, &all, token, Settle::Done { at: now }).await;

        let handled = ReplayFilter::handled;
        let call_1 = "call:call_1".parse().unwrap();
        let acme = || Tenant::new("acme").unwrap();
        let cases = [
            (handled().id(ringing), vec![ringing]),
            (
                handled().received_since(at(1)),
                vec![ringing, appointment, credits],
            ),
            (handled().received_before(at(2)), vec![completed, ringing]),
            (
                handled().received_since(at(1)).received_before(at(3)),
                vec![ringing, appointment],
            ),
            (handled().event("call.ringing"), vec![ringing]),
            (handled().event("call"), vec![]),
            (handled().subject(call_1), vec![completed]),
            (
                handled().subject("appointment:apt_1".parse().unwrap()),
                vec![appointment],
            ),
            (handled().tenant(acme()), vec![ringing, appointment]),
            (
                handled().tenant(Tenant::new("beta").unwrap()),
                vec![credits],
            ),
            (
                handled().tenant(acme()).event("call.ringing"),
                vec![ringing],
            ),
            (handled().tenant(acme()).event("credits.low"), vec![]),
            (
                handled().received_since(at(3)).received_before(at(3)),
                vec![],
            ),
            (handled().tenant(Tenant::new("nobody").unwrap()), vec![]),
        ];
        for (filter, expected) in cases {
            let expected: HashSet<_> = expected.into_iter().collect();
            assert_eq!(replayed(&store, &filter, now).await, expected, "{filter:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_subject_runs_again_one_at_a_time_in_timestamp_order_not_superseded_by_itself() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = now_in_millis();
        let signed = |seconds: i64| now - ms(60_000) + ms(seconds * 1000);
        let [first, second, third] = [1, 2, 3].map(id);
        // Received newest first, as retries scramble them.
        let batch = [
            ordered(third, "call:call_1", signed(3), now),
            ordered(first, "call:call_1", signed(1), now + ms(1)),
            ordered(second, "call:call_1", signed(2), now + ms(2)),
        ];
        store.store(&batch).await.unwrap();
        let at = now + ms(10);
        for expected in [first, second, third] {
            let token = ClaimToken::new();
            assert_eq!(next_in_lane(&store, at, token).await, (expected, None));
            assert!(due(&store, at, ClaimToken::new()).await.is_empty(), "held");
            settle_all(&store, &[expected], token, Settle::Done { at }).await;
        }

        let filter = ReplayFilter::handled().subject("call:call_1".parse().unwrap());
        assert_eq!(store.replay(&filter, at).await.unwrap(), 3);
        for expected in [first, second, third] {
            let token = ClaimToken::new();
            assert_eq!(
                next_in_lane(&store, at, token).await,
                (expected, None),
                "in timestamp order, and the subject's earlier handling supersedes none"
            );
            assert!(due(&store, at, ClaimToken::new()).await.is_empty(), "held");
            settle_all(&store, &[expected], token, Settle::Done { at }).await;
        }
        assert!(due(&store, at, ClaimToken::new()).await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_delivery_older_than_one_still_handled_of_its_subject_is_superseded() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = now_in_millis();
        let signed = |seconds: i64| now - ms(60_000) + ms(seconds * 1000);
        let [ringing, completed, failed] = [1, 2, 3].map(id);
        let batch = [
            ordered(ringing, "call:call_1", signed(1), now),
            ordered(completed, "call:call_1", signed(2), now),
            ordered(failed, "call:call_1", signed(3), now),
        ];
        store.store(&batch).await.unwrap();
        let token = ClaimToken::new();
        assert_eq!(next_in_lane(&store, now, token).await, (ringing, None));
        settle_all(&store, &[ringing], token, Settle::Done { at: now }).await;
        assert_eq!(next_in_lane(&store, now, token).await, (completed, None));
        settle_all(&store, &[completed], token, Settle::Done { at: now }).await;
        assert_eq!(next_in_lane(&store, now, token).await, (failed, None));
        let dead = Settle::Dead {
            at: now,
            error: "x".into(),
        };
        settle_all(&store, &[failed], token, dead).await;

        // Only the older one: the newer stays handled, and supersedes it.
        let token = ClaimToken::new();
        assert_eq!(
            store
                .replay(&ReplayFilter::handled().id(ringing), now)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            next_in_lane(&store, now, token).await,
            (ringing, Some(signed(2)))
        );
        settle_all(&store, &[ringing], token, Settle::Superseded { at: now }).await;

        // The dead letter is newer than everything handled: it runs as it would have.
        assert!(replay(&store, failed, now).await);
        assert_eq!(next_in_lane(&store, now, token).await, (failed, None));
        settle_all(&store, &[failed], token, Settle::Done { at: now }).await;

        // Now the newest handled is the one that was dead: `completed`, replayed, is older.
        assert_eq!(
            store
                .replay(&ReplayFilter::handled().id(completed), now)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            next_in_lane(&store, now, token).await,
            (completed, Some(signed(3)))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_deliveries_take_their_place_among_a_subjects_new_ones_by_timestamp() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = now_in_millis();
        let signed = |seconds: i64| now - ms(60_000) + ms(seconds * 1000);
        let [first, third, second] = [1, 3, 2].map(id);
        store
            .store(&[
                ordered(first, "call:call_1", signed(1), now),
                ordered(third, "call:call_1", signed(3), now),
            ])
            .await
            .unwrap();
        let token = ClaimToken::new();
        for expected in [first, third] {
            assert_eq!(next_in_lane(&store, now, token).await, (expected, None));
            settle_all(&store, &[expected], token, Settle::Done { at: now }).await;
        }
        // A late arrival between them: superseded by `third` as things stand...
        store
            .store(&[ordered(second, "call:call_1", signed(2), now)])
            .await
            .unwrap();
        // ...but the subject is replayed before it runs: all three run, in timestamp order.
        let filter = ReplayFilter::handled().subject("call:call_1".parse().unwrap());
        assert_eq!(store.replay(&filter, now).await.unwrap(), 2);
        for expected in [first, second, third] {
            assert_eq!(next_in_lane(&store, now, token).await, (expected, None));
            settle_all(&store, &[expected], token, Settle::Done { at: now }).await;
        }
    })
    .await;
}

/// Settles `settlements` and hands over what they free at `at`, leased to `token`: for each,
/// whether it held, and the id and `superseded_by` of the delivery handed over after it.
async fn settle_handing_over(
    store: &SqlInbox,
    settlements: &[Settlement],
    at: DateTime<Utc>,
    token: ClaimToken,
) -> Vec<(bool, Option<(DeliveryId, Option<DateTime<Utc>>)>)> {
    let hand_over = HandOver::new(at, at + ms(60_000), token);
    let settled = store
        .settle_and_hand_over(settlements, &hand_over)
        .await
        .unwrap();
    assert_eq!(settled.len(), settlements.len());
    settled
        .into_iter()
        .map(|(held, next)| (held, next.map(|next| (next.id, next.superseded_by))))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_settlement_hands_its_lane_the_next_due_delivery_and_a_free_slot_the_oldest_outside_lanes(
) {
    on_every_engine_handing_over(|store, takes_lanes| async move {
        let id = ids();
        let now = now_in_millis();
        let signed = |seconds: i64| now - ms(60_000) + ms(seconds * 1000);
        let [first, second, other, later, unordered, waiting, newer] =
            [1, 2, 3, 4, 5, 6, 7].map(id);
        let not_yet = NewDelivery {
            due_at: now + ms(3_600_000),
            ..ordered(later, "call:call_2", signed(2), now)
        };
        let batch = [
            ordered(second, "call:call_1", signed(2), now),
            ordered(first, "call:call_1", signed(1), now + ms(1)),
            ordered(other, "call:call_2", signed(1), now),
            not_yet,
            delivery(unordered, now, "{}"),
        ];
        store.store(&batch).await.unwrap();
        let at = now + ms(10);
        let token = ClaimToken::new();
        let mut claimed: Vec<DeliveryId> = due(&store, at, token)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        claimed.sort_unstable();
        let mut expected = vec![first, other, unordered];
        expected.sort_unstable();
        assert_eq!(
            claimed, expected,
            "each lane's first and the one outside lanes"
        );
        store
            .store(&[
                delivery(waiting, now + ms(2), "{}"),
                delivery(newer, now + ms(3), "{}"),
            ])
            .await
            .unwrap();

        let done = |id| Settlement {
            id,
            token,
            outcome: Settle::Done { at },
        };
        let handed = ClaimToken::new();
        let settled = settle_handing_over(
            &store,
            &[done(first), done(other), done(unordered)],
            at,
            handed,
        )
        .await;
        assert_eq!(settled[0], (true, Some((second, None))), "call_1's next");
        let mut outside = vec![settled[1], settled[2]];
        outside.sort_unstable();
        let mut expected = if takes_lanes {
            vec![(true, Some((waiting, None))), (true, Some((newer, None)))]
        } else {
            vec![(true, None), (true, Some((waiting, None)))]
        };
        expected.sort_unstable();
        assert_eq!(
            outside, expected,
            "call_2's next is not due yet, so its slot (on SQLite) takes from outside lanes, \
             as the delivery outside lanes does: the oldest two"
        );
        let mut left: Vec<(DeliveryId, u32)> = due(&store, at, handed).await;
        left.sort_unstable();
        let mut expected = Vec::new();
        if !takes_lanes {
            expected = vec![(newer, 1)];
        }
        assert_eq!(
            left, expected,
            "what was handed over is leased: only the rest is left"
        );
        assert!(
            settle(&store, second, handed, Settle::Done { at }).await,
            "a delivery handed over is leased to the hand-over's token"
        );
        assert!(!settle(&store, waiting, token, Settle::Done { at }).await);
        assert!(settle(&store, waiting, handed, Settle::Done { at }).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_arrival_handed_over_after_a_newer_one_is_handled_is_superseded_by_it() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = now_in_millis();
        let signed = |seconds: i64| now - ms(60_000) + ms(seconds * 1000);
        let [completed, ringing] = [1, 2].map(id);
        store
            .store(&[ordered(completed, "call:call_1", signed(2), now)])
            .await
            .unwrap();
        let at = now + ms(10);
        let token = ClaimToken::new();
        assert_eq!(next_in_lane(&store, at, token).await, (completed, None));
        // Older than the one running: it waits for it, then is older than the newest handled.
        store
            .store(&[ordered(ringing, "call:call_1", signed(1), now)])
            .await
            .unwrap();
        let done = Settlement {
            id: completed,
            token,
            outcome: Settle::Done { at },
        };
        let handed = ClaimToken::new();
        let settled = settle_handing_over(&store, &[done], at, handed).await;
        assert_eq!(settled, [(true, Some((ringing, Some(signed(2)))))]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_settlement_whose_lane_has_nothing_next_takes_the_first_of_another_due_lane() {
    on_every_engine_handing_over(|store, takes_lanes| async move {
        let id = ids();
        let now = now_in_millis();
        let signed = |seconds: i64| now - ms(60_000) + ms(seconds * 1000);
        let [alone, next, after, not_yet] = [1, 2, 3, 4].map(id);
        let later = |id, subject, by: i64| NewDelivery {
            due_at: now + ms(by),
            ..ordered(id, subject, signed(1), now)
        };
        store
            .store(&[
                later(alone, "call:call_1", 0),
                later(next, "call:call_2", 1),
                later(after, "call:call_3", 2),
                later(not_yet, "call:call_4", 3_600_000),
            ])
            .await
            .unwrap();
        let at = now + ms(10);
        let token = ClaimToken::new();
        let claimed = store.claim(at, at + ms(60_000), 1, token).await.unwrap();
        assert_eq!(
            claimed.iter().map(|claimed| claimed.id).collect::<Vec<_>>(),
            [alone],
            "the lane due first"
        );
        let handed = ClaimToken::new();
        let done = Settlement {
            id: alone,
            token,
            outcome: Settle::Done { at },
        };
        let settled = settle_handing_over(&store, &[done], at, handed).await;
        let expected = takes_lanes.then_some((next, None));
        assert_eq!(
            settled,
            [(true, expected)],
            "call_1 has nothing next: the free lane due first (SQLite)"
        );
        let mut left: Vec<(DeliveryId, u32)> = due(&store, at, handed).await;
        left.sort_unstable();
        let mut expected = vec![(after, 1)];
        if !takes_lanes {
            expected.push((next, 1));
            expected.sort_unstable();
        }
        assert_eq!(left, expected, "the lane not yet due stays pending");
        if takes_lanes {
            assert!(
                settle(&store, next, handed, Settle::Done { at }).await,
                "the delivery taken is leased to the hand-over's token"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_given_back_or_settled_by_a_stale_token_hands_nothing_over() {
    on_every_engine(|store| async move {
        let id = ids();
        let now = now_in_millis();
        let signed = |seconds: i64| now - ms(60_000) + ms(seconds * 1000);
        let [first, second, unordered, waiting] = [1, 2, 3, 4].map(id);
        store
            .store(&[
                ordered(first, "call:call_1", signed(1), now),
                ordered(second, "call:call_1", signed(2), now),
                delivery(unordered, now, "{}"),
            ])
            .await
            .unwrap();
        let at = now + ms(10);
        let token = ClaimToken::new();
        assert_eq!(due(&store, at, token).await.len(), 2);
        store
            .store(&[delivery(waiting, now + ms(1), "{}")])
            .await
            .unwrap();

        let settled = settle_handing_over(
            &store,
            &[
                Settlement {
                    id: first,
                    token,
                    outcome: Settle::Release { at },
                },
                Settlement {
                    id: unordered,
                    token: ClaimToken::new(),
                    outcome: Settle::Done { at },
                },
            ],
            at,
            ClaimToken::new(),
        )
        .await;
        assert_eq!(
            settled,
            [(true, None), (false, None)],
            "given back: its lane's next waits for it; stale: nothing changed"
        );
        let mut left: Vec<DeliveryId> = due(&store, at, ClaimToken::new())
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        left.sort_unstable();
        let mut expected = vec![first, waiting];
        expected.sort_unstable();
        assert_eq!(
            left, expected,
            "the lane's first again, and the one still waiting"
        );
    })
    .await;
}
