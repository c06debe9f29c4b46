//! The receiver against a Postgres that is down at start-up and goes down mid-run:
//! 503s while it is away, then deliveries stored and processed again, with no restart.
//!
//! Its own test binary: it stops the shared test server, which no other test may see. It signs
//! with `ringyo-test-support`'s secret and fixed time, and its receiver's layer has the clock
//! that goes with them.

use std::{net::SocketAddr, time::Duration};

use ringyo_receiver::{config::inbox_from, run, Listeners, Settings, PATH};
use ringyo_test_support as support;
use ringyo_webhook::{
    inbox::{Job, Worker},
    Event,
};
use serde_json::json;
use tokio::sync::mpsc;

/// Runs one of the command lines `.ci/with-postgres` exports to stop or start its server.
fn server(command: &str) {
    let line = std::env::var(command)
        .unwrap_or_else(|_| panic!("{command} is not set; run under .ci/with-postgres"));
    let status = std::process::Command::new("sh")
        .args(["-c", &line])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{command} failed");
}

async fn send(addr: SocketAddr, n: u32) -> u16 {
    let body = support::envelope("credits.low", json!({ "balance": n }));
    let signature = support::sign(&body);
    support::deliver(addr, PATH, body, Some(&signature)).await.0
}

async fn ready(admin: SocketAddr) -> u16 {
    support::get_status(admin, "/readyz").await
}

/// Sends delivery `n` until it is acknowledged (2xx), as Ringyo retries (bounded).
async fn until_acknowledged(addr: SocketAddr, n: u32) {
    for _ in 0..100 {
        // 200 too: a commit that outlived its request's time-out stored the first copy.
        if let 200 | 202 = send(addr, n).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("delivery {n} never acknowledged after the database came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_at_start_and_mid_run_is_503_then_recovers_without_a_restart() {
    let Some(database) = support::inbox::postgres().await else {
        return;
    };
    server("RINGYO_TEST_POSTGRES_STOP");
    let (webhook, addr) = support::local_listener().await;
    let (admin, admin_addr) = support::local_listener().await;
    let (report, mut reports) = mpsc::unbounded_channel();
    let handler = move |job: Job<Event>| {
        let report = report.clone();
        async move {
            let _ = report.send(job.event.delivery_id);
            Ok::<(), String>(())
        }
    };
    let inbox = inbox_from(Ok(database.url.clone())).unwrap();
    let running = tokio::spawn(run(
        Listeners { webhook, admin },
        support::layer(),
        inbox.clone(),
        Worker::new(&inbox, handler),
        support::detached_metrics(),
        Settings::default(),
        std::future::pending(),
    ));

    // Down from the start (delivery 1), then down mid-run (delivery 2).
    for n in 1..=2 {
        if n == 2 {
            server("RINGYO_TEST_POSTGRES_STOP");
        }
        assert_eq!(
            send(addr, n).await,
            503,
            "nothing acknowledged while it is down"
        );
        assert_eq!(ready(admin_addr).await, 503);
        server("RINGYO_TEST_POSTGRES_START");
        until_acknowledged(addr, n).await;
        assert_eq!(ready(admin_addr).await, 200);
        tokio::time::timeout(Duration::from_secs(20), reports.recv())
            .await
            .expect("the worker did not recover")
            .unwrap();
    }
    running.abort();
}
