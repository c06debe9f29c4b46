//! `ringyo-receiver inbox ...`, the receiver's admin command, against a real inbox file.

use crate::common;

use std::time::Duration;

use axum::{routing::post_service, Router};
use ringyo_receiver::{inbox_command as admin, server, ServerLimits, PATH};
use ringyo_webhook::{
    inbox::{Inbox, Job, Worker},
    Event,
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
    tokio::spawn(server::serve(listener, app, limits, std::future::pending()));
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
    assert!(stats.contains("dead    1"), "{stats}");
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
    assert!(
        err.starts_with("the inbox database did not answer"),
        "{err}"
    );
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
