//! `ringyo-receiver inbox ...`, the receiver's admin command, against a real inbox file.

use crate::common;

use std::{collections::HashSet, time::Duration};

use axum::{routing::post_service, Router};
use ringyo_receiver::{inbox_command as admin, PATH};
use ringyo_test_support::stores::ids;
use ringyo_webhook::{
    bytes::Bytes,
    chrono::{DateTime, FixedOffset, SecondsFormat, TimeDelta, Utc},
    inbox::{Inbox, Job, NewDelivery, Settle, Settlement, Worker},
    secrets::Tenant,
    serve::{serve, ServerLimits},
    ClaimToken, Clock, DeliveryId, Event, SystemClock,
};
use serde_json::json;

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_dead_and_replay_work_against_the_receivers_database() {
    let database = ringyo_test_support::inbox::sqlite();
    let inbox = Inbox::open(&database.url).unwrap();
    common::recorder();
    let app = Router::new().route(
        PATH,
        post_service(inbox.clone()).route_layer(common::layer()),
    );
    let (listener, addr) = ringyo_test_support::local_listener().await;
    let limits = ServerLimits::default();
    tokio::spawn(serve(listener, app, limits, std::future::pending()));
    let (body, signature) = common::signed("call.completed", json!({"id": "call_1"}));
    let sent = common::post(addr, body, Some(&signature)).await;
    assert_eq!(sent.0, 202);
    let worker = Worker::new(&inbox, |_: Job<Event>| async {
        Err::<(), _>("the CRM is down")
    })
    .max_attempts(1);
    let running = tokio::spawn(worker.run(std::future::pending()));
    for _ in 0..200 {
        if inbox.stats().await.unwrap().dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    running.abort();

    let stats = admin::run(&args("stats"), &database.url).await.unwrap();
    assert!(stats.contains("\ndead       1\n"), "{stats}");
    let dead = admin::run(&args("dead"), &database.url).await.unwrap();
    assert!(
        dead.contains("call.completed  1 attempts") && dead.ends_with("the CRM is down"),
        "{dead}"
    );
    let id = dead.split_whitespace().next().unwrap();

    let replayed = admin::run(&args(&format!("replay {id}")), &database.url)
        .await
        .unwrap();
    assert_eq!(
        replayed,
        format!("{id} will run again, from its first attempt")
    );
    assert_eq!(inbox.stats().await.unwrap().pending, 1);
    let again = admin::run(&args(&format!("replay {id}")), &database.url).await;
    assert_eq!(
        again.unwrap_err(),
        format!("{id} is not a dead-lettered delivery")
    );
}

#[tokio::test]
async fn mistakes_are_sentences_and_looking_creates_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let err = admin::run(&args("stats"), &missing).await.unwrap_err();
    let expected = format!(
        "no inbox at {}: start the receiver once",
        dir.path().join("nope.db").display()
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(!dir.path().join("nope.db").exists());

    let database = ringyo_test_support::inbox::sqlite();
    let usage = admin::run(&args("frobnicate"), &database.url)
        .await
        .unwrap_err();
    assert!(
        usage.starts_with("usage: ringyo-receiver inbox stats | dead | replay"),
        "{usage}"
    );
    let bad_id = admin::run(&args("replay 12"), &database.url)
        .await
        .unwrap_err();
    assert!(bad_id.contains("is not a delivery id"), "{bad_id}");
}

/// A delivery of `event` about `subject` (`""`: none) for `tenant` (`""`: none), received at
/// `received_at`, stored as the receiver stores it (ordered when it has a subject).
fn delivery(
    id: DeliveryId,
    event: &str,
    subject: &str,
    tenant: &str,
    received_at: DateTime<Utc>,
) -> NewDelivery {
    let subject = (!subject.is_empty()).then(|| subject.parse().unwrap());
    NewDelivery {
        id,
        event: event.to_owned(),
        timestamp: Some(received_at),
        received_at,
        payload: Bytes::from_static(b"{}"),
        tenant: Tenant::new(tenant),
        ordered: subject.is_some(),
        subject,
        due_at: received_at,
    }
}

/// The time now, to the second, so a test can name the times it stored in RFC 3339.
fn this_second() -> DateTime<Utc> {
    DateTime::from_timestamp(SystemClock.now().timestamp(), 0).unwrap()
}

/// Claims what is due by `at`: the ids and the token holding them.
async fn claim(inbox: &Inbox, at: DateTime<Utc>) -> (Vec<DeliveryId>, ClaimToken) {
    let token = ClaimToken::new();
    let lease = at + TimeDelta::minutes(1);
    let claimed = inbox.store().claim(at, lease, 100, token).await.unwrap();
    (claimed.iter().map(|c| c.id).collect(), token)
}

/// Settles each of `ids`, held by `token`, as `outcome` says.
async fn settle(
    inbox: &Inbox,
    ids: &[DeliveryId],
    token: ClaimToken,
    outcome: impl Fn(DeliveryId) -> Settle,
) {
    let settlements: Vec<_> = ids
        .iter()
        .map(|&id| Settlement {
            id,
            token,
            outcome: outcome(id),
        })
        .collect();
    let held = inbox.store().settle(&settlements).await.unwrap();
    assert!(held.iter().all(|&held| held), "{held:?}");
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_counts_superseded_deliveries_apart_from_handled_ones() {
    let database = ringyo_test_support::inbox::sqlite();
    let inbox = Inbox::open(&database.url).unwrap();
    let id = ids();
    let now = this_second();
    let batch: Vec<_> = (1..=4)
        .map(|n| delivery(id(n), "credits.low", "", "", now))
        .collect();
    inbox.store().store(&batch).await.unwrap();
    let (claimed, token) = claim(&inbox, now).await;
    assert_eq!(claimed.len(), 4);
    settle(&inbox, &claimed[..3], token, |at| match at {
        at if at == claimed[0] => Settle::Superseded { at: now },
        at if at == claimed[1] => Settle::Done { at: now },
        _ => Settle::Dead {
            at: now,
            error: "x".into(),
        },
    })
    .await;

    let stats = admin::run(&args("stats"), &database.url).await.unwrap();
    assert_eq!(
        stats,
        "pending    0\nrunning    1\ndone       1\nsuperseded 1\ndead       1\n\
         oldest pending received -"
    );
}

/// Runs `inbox replay FLAGS` and checks that it says how many it replayed and that exactly
/// `expected` became due; then claims them and settles each as `outcome` says, so that the
/// next replay starts from the same inbox.
async fn replays(
    inbox: &Inbox,
    url: &str,
    flags: &str,
    expected: &[DeliveryId],
    outcome: impl Fn(DeliveryId) -> Settle,
) {
    let said = admin::run(&args(&format!("replay {flags}")), url)
        .await
        .unwrap();
    let (ran, token) = claim(inbox, SystemClock.now()).await;
    let count = match ran.len() {
        0 => "replayed 0 deliveries: no ".to_owned(),
        1 => "replayed 1 delivery: it runs again".to_owned(),
        n => format!("replayed {n} deliveries: they run again"),
    };
    assert!(said.starts_with(&count), "{flags}: {said}");
    let expected: HashSet<_> = expected.iter().copied().collect();
    assert_eq!(
        ran.iter().copied().collect::<HashSet<_>>(),
        expected,
        "{flags}"
    );
    settle(inbox, &ran, token, outcome).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_with_filters_runs_again_only_the_finished_deliveries_that_match_them_all() {
    let database = ringyo_test_support::inbox::sqlite();
    let inbox = Inbox::open(&database.url).unwrap();
    let id = ids();
    let now = this_second();
    let minute = |n: i64| now - TimeDelta::hours(1) + TimeDelta::minutes(n);
    let [completed, ringing, appointment, credits, waiting, running] = [1, 2, 3, 4, 5, 6].map(id);
    let batch = [
        delivery(completed, "call.completed", "call:call_1", "", minute(0)),
        delivery(ringing, "call.ringing", "call:call_2", "acme", minute(1)),
        delivery(
            appointment,
            "appointment.created",
            "appointment:apt_1",
            "acme",
            minute(2),
        ),
        delivery(credits, "credits.low", "", "beta", minute(3)),
        delivery(running, "credits.low", "", "beta", minute(4)),
        NewDelivery {
            due_at: now + TimeDelta::hours(1),
            ..delivery(waiting, "credits.low", "", "beta", minute(5))
        },
    ];
    inbox.store().store(&batch).await.unwrap();
    // How each ends, and ends again after each replay: handled, superseded, dead-lettered.
    let outcome = |of: DeliveryId| match of {
        of if of == appointment => Settle::Dead {
            at: now,
            error: "the CRM is down".into(),
        },
        of if of == credits => Settle::Superseded { at: now },
        _ => Settle::Done { at: now },
    };
    let (claimed, token) = claim(&inbox, now).await;
    assert_eq!(claimed.len(), 5, "all but the waiting one");
    let finished: Vec<_> = claimed.into_iter().filter(|&c| c != running).collect();
    settle(&inbox, &finished, token, outcome).await;

    let at = |n: i64| rfc3339(minute(n));
    // The same instant as minute 1, written in another zone.
    let minute_1_in_paris = minute(1)
        .with_timezone(&FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339();
    let cases = [
        ("--dead".to_owned(), vec![appointment]),
        ("--handled".to_owned(), vec![completed, ringing, credits]),
        (
            "--dead --handled".to_owned(),
            vec![completed, ringing, appointment, credits],
        ),
        (format!("--handled --id {ringing}"), vec![ringing]),
        (format!("--dead --id={ringing}"), vec![]),
        (
            format!("--handled --since {minute_1_in_paris}"),
            vec![ringing, credits],
        ),
        (
            format!("--dead --handled --before {}", at(1)),
            vec![completed],
        ),
        (
            format!("--handled --dead --since={} --before={}", at(1), at(3)),
            vec![ringing, appointment],
        ),
        ("--handled --event call.ringing".to_owned(), vec![ringing]),
        ("--handled --event call.ringin".to_owned(), vec![]),
        (
            "--handled --dead --subject appointment:apt_1".to_owned(),
            vec![appointment],
        ),
        (
            "--handled --subject call:call_1".to_owned(),
            vec![completed],
        ),
        (
            "--dead --handled --tenant acme".to_owned(),
            vec![ringing, appointment],
        ),
        ("--handled --tenant acme".to_owned(), vec![ringing]),
        ("--handled --tenant beta".to_owned(), vec![credits]),
        (
            "--handled --tenant acme --event call.completed".to_owned(),
            vec![],
        ),
    ];
    for (flags, expected) in cases {
        replays(&inbox, &database.url, &flags, &expected, outcome).await;
    }

    let stats = inbox.stats().await.unwrap();
    assert_eq!(
        (
            stats.pending,
            stats.running,
            stats.done,
            stats.superseded,
            stats.dead
        ),
        (1, 1, 2, 1, 1),
        "the waiting one still waits and the running one still runs: neither is replayed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subject_replayed_by_the_command_runs_one_at_a_time_in_timestamp_order() {
    let database = ringyo_test_support::inbox::sqlite();
    let inbox = Inbox::open(&database.url).unwrap();
    let id = ids();
    let now = this_second();
    let signed = |n: i64| now - TimeDelta::minutes(10) + TimeDelta::seconds(n);
    let events = [
        (id(3), "call.completed", signed(3)),
        (id(1), "call.ringing", signed(1)),
        (id(2), "call.answered", signed(2)),
    ];
    let batch: Vec<_> = events
        .iter()
        .map(|&(id, event, timestamp)| NewDelivery {
            timestamp: Some(timestamp),
            ..delivery(id, event, "call:call_1", "", now)
        })
        .collect();
    inbox.store().store(&batch).await.unwrap();
    let one_at_a_time = || async {
        let mut ran = Vec::new();
        loop {
            let at = SystemClock.now();
            let token = ClaimToken::new();
            let lease = at + TimeDelta::minutes(1);
            let claimed = inbox.store().claim(at, lease, 100, token).await.unwrap();
            let Some(first) = claimed.first() else {
                return ran;
            };
            assert_eq!(claimed.len(), 1, "one of a subject at a time");
            assert_eq!(first.superseded_by, None, "{ran:?}");
            ran.push(first.id);
            settle(&inbox, &[first.id], token, |_| Settle::Done { at }).await;
        }
    };
    assert_eq!(one_at_a_time().await, [id(1), id(2), id(3)]);

    let said = admin::run(
        &args("replay --handled --subject call:call_1"),
        &database.url,
    )
    .await
    .unwrap();
    assert!(said.starts_with("replayed 3 deliveries"), "{said}");
    assert_eq!(
        one_at_a_time().await,
        [id(1), id(2), id(3)],
        "in timestamp order again, none superseded by its own earlier run"
    );
}

#[tokio::test]
async fn bad_replay_arguments_get_a_sentence_naming_the_option_before_any_database_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let no_state = "replay needs --dead, --handled or both";
    let cases = [
        ("replay", no_state),
        ("replay --since 2026-12-06T09:00:00Z", no_state),
        (
            "replay --dead --since yesterday",
            "--since needs a time in RFC 3339 with an offset, like 2026-12-06T09:00:00Z; got \
             \"yesterday\"",
        ),
        (
            "replay --dead --since 2026-12-06T09:00:00",
            "--since needs a time in RFC 3339 with an offset",
        ),
        (
            "replay --dead --before",
            "--before needs a value: a time in RFC 3339",
        ),
        (
            "replay --dead --event --handled",
            "--event needs a value: an event name, like call.completed",
        ),
        ("replay --dead --event=", "--event needs a value"),
        (
            "replay --handled --subject call_123",
            "--subject needs a subject KIND:ID, KIND one of call, appointment, agent, \
             phone_number, like call:call_123; got \"call_123\"",
        ),
        (
            "replay --handled --subject robot:r2",
            "--subject needs a subject KIND:ID",
        ),
        (
            "replay --handled --tenant ../etc",
            "--tenant needs a tenant name (1 to 128 ASCII letters, digits, -, _, . or ~), like \
             acme-dental; got \"../etc\"",
        ),
        (
            "replay --dead --id 12",
            "--id needs a delivery id (64 hex digits, as `inbox dead` lists them); got \"12\"",
        ),
        (
            "replay --dead --event call.ringing --event call.answered",
            "--event is given twice; give each filter once",
        ),
        (
            "replay --all",
            "\"--all\" is not an option of replay; replay takes --dead, --handled and the \
             filters --id, --since, --before, --event, --subject, --tenant",
        ),
        ("replay --dead=yes", "--dead takes no value; got \"yes\""),
        (
            "replay --handled call.completed",
            "\"call.completed\" is not an option of replay (a delivery id goes alone",
        ),
        (
            "replay --handled --since 2026-12-06T10:00:00Z --before 2026-12-06T09:00:00Z",
            "--since (2026-12-06T10:00:00+00:00) must be earlier than --before \
             (2026-12-06T09:00:00+00:00)",
        ),
        ("replay 12", "\"12\" is not a delivery id"),
    ];
    for (line, expected) in cases {
        let err = admin::run(&args(line), &missing).await.unwrap_err();
        assert!(err.starts_with(expected), "{line}: {err}");
        assert!(
            !err.contains("Some(") && !err.contains("Error"),
            "{line}: {err}"
        );
    }
    assert!(!dir.path().join("nope.db").exists());

    for line in ["--help", "replay --dead --help"] {
        let help = admin::run(&args(line), &missing).await.unwrap();
        assert!(
            help.starts_with("usage: ringyo-receiver inbox COMMAND"),
            "{help}"
        );
        assert!(help.contains("--subject KIND:ID"), "{help}");
    }
}
