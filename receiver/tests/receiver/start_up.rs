//! What the receiver's binary says at start and in its log, as real processes: a Postgres
//! database that does not exist, TLS asked of a build without it, deliveries a killed run left
//! leased, events failed on purpose (`RINGYO_FAIL_EVENTS`), the span's outcome in the
//! metrics' words, an unknown event's debug line; and the sentences of mistakes: an empty
//! variable, an `inbox` command on a file that is not there.

use std::{path::Path, process::Output, time::Duration};

use ringyo_webhook::{
    chrono::{DateTime, Utc},
    inbox::sqlx,
    ClaimToken, Clock, SystemClock,
};
use serde_json::json;
use tokio::process::Command;

use crate::common::{
    self,
    process::{Log, Receiver},
    signed, SECRET,
};

const BINARY: &str = env!("CARGO_BIN_EXE_ringyo-receiver");

/// The binary run to its end with `args` and `env` (and none of the receiver's variables
/// besides), in `dir`: for a start refused, or an `inbox` command.
async fn run_to_end(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Output {
    let mut command = Command::new(BINARY);
    for (variable, _) in std::env::vars() {
        if variable.starts_with("RINGYO_") || variable == "RUST_LOG" {
            command.env_remove(variable);
        }
    }
    let run = command
        .args(args)
        .env("RINGYO_BIND", "127.0.0.1:0")
        .env("RINGYO_ADMIN_BIND", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .current_dir(dir)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the receiver did not stop by itself")
        .unwrap()
}

/// The first line of `log` that holds `text`, waiting up to 20 s for it.
async fn logged(log: &Log, text: &str) -> String {
    for _ in 0..400 {
        if let Some(line) = log.lines().into_iter().find(|line| line.contains(text)) {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never logged {text:?}:\n{}", log.lines().join("\n"));
}

/// A receiver on the inbox at `url`, with `env` besides, verifying with the tests' secret and
/// running each event at once (no reorder window).
async fn start(url: &str, env: &[(&str, &str)], log: &Log) -> Receiver {
    let mut all = vec![
        ("RINGYO_WEBHOOK_SECRET", SECRET),
        ("RINGYO_INBOX_URL", url),
        ("RINGYO_REORDER_WINDOW_MS", "0"),
    ];
    all.extend_from_slice(env);
    Receiver::start(&all, log).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_database_that_does_not_exist_is_named_with_how_to_create_it() {
    let Some(server) = ringyo_test_support::inbox::postgres_url() else {
        return;
    };
    let name = format!("inbox_{}", ClaimToken::new());
    let (base, _) = server.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let log = Log::default();
    let receiver = start(&url, &[], &log).await;

    let line = logged(&log, "does not exist").await;
    let options: sqlx::postgres::PgConnectOptions = server.parse().unwrap();
    let createdb = format!(
        "`createdb -h {} -p {} -U {} {name}`",
        options.get_host(),
        options.get_port(),
        options.get_username()
    );
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!("the inbox database {name:?}")),
        "{line}"
    );
    assert!(line.contains(&createdb), "{line}");
    assert!(line.contains("CREATE DATABASE"), "{line}");
    // It stays up, answering 503 so Ringyo retries.
    assert_eq!(common::send(receiver.addr, "call.completed").await.0, 503);

    // Creating the database is the whole fix: no restart.
    ringyo_test_support::inbox::create_database(&server, &name).await;
    let mut status = 0;
    for _ in 0..100 {
        status = common::send(receiver.addr, "call.completed").await.0;
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 202);
    receiver.kill().await;
}

#[tokio::test]
async fn sslmode_require_without_the_tls_feature_is_refused_at_start_naming_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = format!("postgres://ringyo:hunter2@db.internal/ringyo?sslmode={mode}");
        let env = [("RINGYO_INBOX_URL", url.as_str())];
        let out = run_to_end(&[], &env, dir.path()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mode}: {stderr}");
        assert!(
            stderr.starts_with("error: RINGYO_INBOX_URL cannot be used"),
            "{stderr}"
        );
        assert!(
            stderr.contains("ringyo-webhook's `postgres-tls` feature"),
            "{stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_a_killed_run_left_leased_are_counted_at_the_next_start_with_their_end() {
    let database = ringyo_test_support::inbox::sqlite();
    let log = Log::default();
    // A handler that runs for a minute, under a lease of two.
    let slow = [("RINGYO_WORK_MS", "60000"), ("RINGYO_LEASE_MS", "120000")];
    let first = start(&database.url, &slow, &log).await;
    let (body, signature) = signed("call.completed", json!({ "id": "call_leased" }));
    assert_eq!(
        common::post(first.addr, body, Some(&signature)).await.0,
        202
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    first.kill().await;

    let again = Log::default();
    let second = start(&database.url, &slow, &again).await;
    let line = logged(&again, "running when this receiver started").await;
    assert!(line.contains("1 delivery was running"), "{line}");
    // About two minutes from the first run's claims: the lease it took them with.
    let until = line.split("leased until ").nth(1).unwrap();
    let until = until.split(';').next().unwrap();
    let until: DateTime<Utc> = until.parse().unwrap();
    let left = until - SystemClock.now();
    assert!(
        (90..=121).contains(&left.num_seconds()),
        "{left} left: {line}"
    );
    second.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_named_in_fail_events_fail_are_dead_lettered_and_can_be_replayed() {
    let database = ringyo_test_support::inbox::sqlite();
    let log = Log::default();
    let env = [
        ("RINGYO_FAIL_EVENTS", "credits.low, call.complete"),
        ("RINGYO_MAX_ATTEMPTS", "2"),
    ];
    let receiver = start(&database.url, &env, &log).await;
    let warning = logged(&log, "RINGYO_FAIL_EVENTS is set").await;
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("credits.low, call.complete fails on purpose"),
        "{warning}"
    );
    assert!(warning.contains("after 2 attempts"), "{warning}");
    let typo = logged(&log, "names events this version does not know").await;
    assert!(typo.contains("(call.complete)"), "{typo}");

    assert_eq!(common::send(receiver.addr, "credits.low").await.0, 202);
    assert_eq!(common::send(receiver.addr, "call.completed").await.0, 202);
    logged(&log, "processed event").await;

    let dir = tempfile::tempdir().unwrap();
    let url = [("RINGYO_INBOX_URL", database.url.as_str())];
    let mut dead = String::new();
    for _ in 0..100 {
        let out = run_to_end(&["inbox", "dead"], &url, dir.path()).await;
        assert!(out.status.success(), "{out:?}");
        dead = String::from_utf8(out.stdout).unwrap();
        if dead.contains("credits.low") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        dead.contains("credits.low  2 attempts")
            && dead.contains("failed on purpose: credits.low is in RINGYO_FAIL_EVENTS"),
        "{dead}"
    );
    assert!(!dead.contains("call.completed"), "{dead}");

    let out = run_to_end(&["inbox", "replay", "--dead"], &url, dir.path()).await;
    let replayed = String::from_utf8(out.stdout).unwrap();
    assert!(replayed.starts_with("replayed 1 delivery"), "{replayed}");
    receiver.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_says_accepted_and_duplicate_as_the_metrics_do_and_notes_unknown_events() {
    let database = ringyo_test_support::inbox::sqlite();
    let log = Log::default();
    let env = [(
        "RUST_LOG",
        "info,ringyo_webhook=debug,ringyo_receiver=debug",
    )];
    let receiver = start(&database.url, &env, &log).await;
    let (body, signature) = signed("call.voicemail_left", json!({ "id": "call_vm" }));
    let first = common::post(receiver.addr, body.clone(), Some(&signature)).await;
    let again = common::post(receiver.addr, body, Some(&signature)).await;
    assert_eq!((first.0, again.0), (202, 200));

    let accepted = logged(&log, "verified delivery: accepted").await;
    assert!(accepted.contains("outcome=\"accepted\""), "{accepted}");
    let duplicate = logged(&log, "verified delivery: duplicate").await;
    assert!(duplicate.contains("outcome=\"duplicate\""), "{duplicate}");
    assert!(
        !log.lines().iter().any(|line| line.contains("\"handled\"")),
        "{:#?}",
        log.lines()
    );
    let unknown = logged(&log, "event name unknown to this version").await;
    assert!(
        unknown.contains("DEBUG") && unknown.contains("call.voicemail_left"),
        "{unknown}"
    );
    logged(&log, "processed event").await;
    receiver.kill().await;
}

#[tokio::test]
async fn an_empty_variable_is_named_in_the_sentence_that_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    for variable in [
        "RINGYO_WEBHOOK_SECRET",
        "RINGYO_SECRETS_FILE",
        "RINGYO_INBOX_URL",
        "RINGYO_WORK_MS",
        "RINGYO_CONCURRENCY",
        "RINGYO_LEASE_MS",
        "RINGYO_MAX_ATTEMPTS",
        "RINGYO_REORDER_WINDOW_MS",
        "RINGYO_FAIL_EVENTS",
        "RINGYO_BIND",
        "RINGYO_ADMIN_BIND",
    ] {
        let out = run_to_end(&[], &[(variable, "")], dir.path()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{variable}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {variable} ")),
            "{variable}: {stderr}"
        );
    }
    let out = run_to_end(&["inbox", "stats"], &[("RINGYO_INBOX_URL", "")], dir.path()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: RINGYO_INBOX_URL is empty"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_inbox_command_on_a_file_that_is_not_there_names_it_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_to_end(&["inbox", "stats"], &[], dir.path()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = std::path::absolute(dir.path().join("ringyo-inbox.db")).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "error: no inbox at {}: start the receiver once",
            file.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("RINGYO_INBOX_URL"), "{stderr}");
    assert!(!stderr.contains("code: 14"), "{stderr}");
    assert!(!file.exists());
}
