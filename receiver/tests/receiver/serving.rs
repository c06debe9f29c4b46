//! The receiver, driven through real HTTP: store, acknowledge, process, health, and graceful
//! shutdown that leaves unprocessed deliveries in the inbox for the next start.

use crate::common;

use std::{net::SocketAddr, time::Duration};

use crate::common::{post, send, signed, Logs};
use ringyo_receiver::{
    check_inbox,
    config::{
        self, bind_from, concurrency_from, inbox_from, layer_from, layer_from_file, lease_from,
        reorder_window_from, work_from,
    },
    process, run, Listeners, Settings, Work, PATH,
};
use ringyo_webhook::{
    inbox::{Job, Worker},
    serve::ServerLimits,
    testing::TestDelivery,
    Event,
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

struct Receiver {
    addr: SocketAddr,
    admin: SocketAddr,
    stop: oneshot::Sender<()>,
    done: JoinHandle<std::io::Result<()>>,
}

/// Starts the receiver's `run` on the inbox at `url`, with a handler that reports each event
/// it starts and finishes, taking `work` in between.
async fn start(url: &str, work: Duration) -> (Receiver, mpsc::UnboundedReceiver<String>) {
    start_limited(url, work, ServerLimits::default()).await
}

/// [`start`], with the servers' `limits`.
async fn start_limited(
    url: &str,
    work: Duration,
    limits: ServerLimits,
) -> (Receiver, mpsc::UnboundedReceiver<String>) {
    start_with(url, work, limits, common::layer()).await
}

/// [`start_limited`], with `layer`.
async fn start_with(
    url: &str,
    work: Duration,
    limits: ServerLimits,
    layer: ringyo_webhook::RingyoWebhookLayer,
) -> (Receiver, mpsc::UnboundedReceiver<String>) {
    let (webhook, addr) = ringyo_test_support::local_listener().await;
    let (admin_listener, admin) = ringyo_test_support::local_listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let (report, reports) = mpsc::unbounded_channel();
    let handler = move |job: Job<Event>| {
        let report = report.clone();
        async move {
            let _ = report.send(format!("started {}", job.event.kind));
            tokio::time::sleep(work).await;
            let _ = report.send(format!("done {} attempt {}", job.event.kind, job.attempt));
            Ok::<(), String>(())
        }
    };
    let inbox = inbox_from(Ok(url.to_owned())).unwrap();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let listeners = Listeners {
        webhook,
        admin: admin_listener,
    };
    let done = tokio::spawn(run(
        listeners,
        layer,
        inbox.clone(),
        Worker::new(&inbox, handler),
        common::recorder(),
        Settings {
            limits,
            ..Settings::default()
        },
        shutdown,
    ));
    let receiver = Receiver {
        addr,
        admin,
        stop,
        done,
    };
    (receiver, reports)
}

impl Receiver {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .expect("receiver did not stop")
            .unwrap()
            .unwrap();
    }
}

/// A connection that sent the headers of a signed delivery and the first 10 bytes of its
/// body, asking for the connection to close after the answer; and the rest of the body.
async fn begin_request(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let (body, signature) = signed("agent.created", json!({"name": "late"}));
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\
         x-ringyo-signature: {signature}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    (stream, body[10..].to_vec())
}

/// `/readyz` on the admin listener.
async fn ready(receiver: &Receiver) -> u16 {
    ringyo_test_support::get_status(receiver.admin, "/readyz").await
}

#[tokio::test]
async fn verified_event_is_stored_acknowledged_then_processed_in_background() {
    let database = ringyo_test_support::inbox::sqlite();
    let (receiver, mut reports) = start(&database.url, Duration::ZERO).await;
    let (status, _, _) = send(receiver.addr, "call.completed").await;
    assert_eq!(status, 202);
    assert_eq!(reports.recv().await.unwrap(), "started call.completed");
    assert_eq!(
        reports.recv().await.unwrap(),
        "done call.completed attempt 1"
    );

    let (status, json, _) = post(receiver.addr, b"{}".to_vec(), None).await;
    assert_eq!(status, 401);
    assert_eq!(json["error"], "missing_signature");
    assert_eq!(ready(&receiver).await, 200);
    receiver.stop().await;
}

#[tokio::test]
async fn a_retry_of_a_stored_delivery_is_a_duplicate_and_runs_once() {
    let database = ringyo_test_support::inbox::sqlite();
    let (receiver, mut reports) = start(&database.url, Duration::ZERO).await;
    let (body, signature) = signed("appointment.created", json!({"id": "apt_1"}));
    let (first, _, _) = post(receiver.addr, body.clone(), Some(&signature)).await;
    let (again, _, headers) = post(receiver.addr, body, Some(&signature)).await;
    assert_eq!((first, again), (202, 200));
    assert_eq!(headers["x-webhook-duplicate"], "true");
    // Ordered, the appointment's event runs once the reorder window has passed.
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        while !reports.recv().await.unwrap().starts_with("done") {}
    });
    done.await.expect("the delivery was not handled");
    receiver.stop().await;
    let mut runs = 1;
    while let Ok(report) = reports.try_recv() {
        runs += usize::from(report.starts_with("done"));
    }
    assert_eq!(runs, 1);
}

#[tokio::test]
async fn the_webhook_port_serves_only_the_webhook_and_the_admin_port_health_and_metrics() {
    let database = ringyo_test_support::inbox::sqlite();
    let (receiver, mut reports) = start(&database.url, Duration::ZERO).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            ringyo_test_support::get_status(receiver.addr, path).await,
            404,
            "{path}"
        );
    }
    assert_eq!(send(receiver.addr, "call.completed").await.0, 202);
    assert_eq!(reports.recv().await.unwrap(), "started call.completed");
    assert_eq!(
        ringyo_test_support::get_status(receiver.admin, "/healthz").await,
        200
    );
    assert_eq!(ready(&receiver).await, 200);
    let metrics = ringyo_test_support::client()
        .get(format!("http://{}/metrics", receiver.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("ringyo_webhook_deliveries_total{outcome=\"accepted\"}"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE ringyo_webhook_verify_duration_seconds histogram"),
        "{text}"
    );
    receiver.stop().await;
}

#[tokio::test]
async fn an_unreachable_database_is_503_for_deliveries_and_readiness() {
    // Nothing listens on port 1: the database is down from the start.
    let (receiver, _reports) =
        start("postgres://postgres@127.0.0.1:1/ringyo", Duration::ZERO).await;
    let (status, json, headers) = send(receiver.addr, "call.completed").await;
    assert_eq!(status, 503);
    assert_eq!(json["error"], "inbox_unavailable");
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(ready(&receiver).await, 503);
    assert_eq!(
        ringyo_test_support::get_status(receiver.admin, "/healthz").await,
        200,
        "alive, only not ready"
    );
    receiver.stop().await;
}

#[tokio::test]
async fn a_corrupt_inbox_file_stops_the_start_with_a_sentence_naming_it() {
    let database = ringyo_test_support::inbox::sqlite();
    let file = database.url.strip_prefix("sqlite://").unwrap().to_owned();
    std::fs::write(&file, vec![0x5A_u8; 64 * 1024]).unwrap();
    let inbox = inbox_from(Ok(database.url.clone())).unwrap();
    let problem = check_inbox(&inbox, None).await.unwrap_err();
    assert!(problem.contains(&file), "{problem}");
    assert!(problem.contains("is corrupt"), "{problem}");

    // A database that is only down is no reason to stop: it may come up.
    let down = inbox_from(Ok("postgres://postgres@127.0.0.1:1/ringyo".into())).unwrap();
    assert!(!check_inbox(&down, None).await.unwrap());
}

#[tokio::test]
async fn readiness_is_503_when_the_inbox_file_cannot_be_written() {
    let database = ringyo_test_support::inbox::sqlite();
    ringyo_webhook::inbox::Inbox::open(&database.url)
        .unwrap()
        .ping()
        .await
        .unwrap();
    let (writable, _reports) = start(&database.url, Duration::ZERO).await;
    assert_eq!(ready(&writable).await, 200);
    writable.stop().await;
    // What a file system turned read-only leaves: reads work, commits do not.
    let (read_only, _reports) = start(&format!("{}?mode=ro", database.url), Duration::ZERO).await;
    assert_eq!(ready(&read_only).await, 503);
    assert_eq!(send(read_only.addr, "call.completed").await.0, 503);
    read_only.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_requests_and_handlers_and_leaves_the_rest_for_the_next_start() {
    let database = ringyo_test_support::inbox::sqlite();
    let (receiver, mut reports) = start(&database.url, Duration::from_millis(300)).await;
    for n in 0..12 {
        let (body, signature) = signed("credits.low", json!({ "balance": n }));
        assert_eq!(post(receiver.addr, body, Some(&signature)).await.0, 202);
    }

    // A request whose body is still arriving when the shutdown begins.
    let (mut stream, rest) = begin_request(receiver.addr).await;

    receiver.stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !receiver.done.is_finished(),
        "stopped before the in-flight request ended"
    );
    // Draining: out of rotation, still scraped.
    assert_eq!(
        ringyo_test_support::get_status(receiver.admin, "/readyz").await,
        503
    );
    assert_eq!(
        ringyo_test_support::get_status(receiver.admin, "/metrics").await,
        200
    );
    stream.write_all(&rest).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 202 "), "{response}");
    drop(stream);
    tokio::time::timeout(Duration::from_secs(30), receiver.done)
        .await
        .expect("receiver did not stop")
        .unwrap()
        .unwrap();
    let (mut started, mut done) = (0, 0);
    while let Ok(report) = reports.try_recv() {
        started += usize::from(report.starts_with("started"));
        done += usize::from(report.starts_with("done"));
    }
    assert_eq!(started, done, "a handler that started was let finish");
    assert!(
        done < 13,
        "the worker stopped claiming; some wait in the inbox"
    );

    // The next start processes exactly what was left: 13 accepted in all, each once.
    let (receiver, mut reports) = start(&database.url, Duration::ZERO).await;
    let mut more = 0;
    while done + more < 13 {
        let report = tokio::time::timeout(Duration::from_secs(10), reports.recv())
            .await
            .expect("a stored delivery was not processed after the restart")
            .unwrap();
        more += usize::from(report.starts_with("done"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    receiver.stop().await;
    while let Ok(report) = reports.try_recv() {
        assert!(!report.starts_with("done"), "processed twice: {report}");
    }
}

#[test]
fn configuration_problems_are_sentences_that_say_what_to_do() {
    let problem = |secret: &str| layer_from(Ok(secret.into())).unwrap_err();
    assert_eq!(
        problem("whsec_abc\n"),
        "RINGYO_WEBHOOK_SECRET has whitespace at its start or end (a trailing newline?); \
         Ringyo's secrets have none"
    );
    assert!(problem("").starts_with("RINGYO_WEBHOOK_SECRET is empty;"));
    assert!(layer_from(Err(std::env::VarError::NotPresent)).is_ok());
    assert_eq!(
        inbox_from(Ok("mysql://user:hunter2@db/x".into())).unwrap_err(),
        "RINGYO_INBOX_URL cannot be used: unsupported inbox URL \"mysql\": use sqlite://PATH \
         or postgres://USER@HOST/DATABASE"
    );
    assert_eq!(
        work_from(Ok("soon".into())).unwrap_err(),
        "RINGYO_WORK_MS is \"soon\", which is not a whole number of milliseconds nor a range \
         of them such as 5-20"
    );
    assert!(work_from(Ok("5-".into())).is_err());
    assert_eq!(
        work_from(Err(std::env::VarError::NotPresent)).unwrap(),
        Work::NONE
    );
    let ms = Duration::from_millis;
    assert_eq!(
        work_from(Ok(" 20 ".into())).unwrap(),
        Work::between(ms(20), ms(20))
    );
    assert_eq!(
        work_from(Ok("5-20".into())).unwrap(),
        Work::between(ms(5), ms(20))
    );
    assert_eq!(
        concurrency_from(Ok("0".into())).unwrap_err(),
        "RINGYO_CONCURRENCY is \"0\", which is not a number of handlers to run at once such as 16"
    );
    assert!(concurrency_from(Ok("-1".into())).is_err());
    assert_eq!(concurrency_from(Ok(" 16 ".into())).unwrap(), Some(16));
    assert_eq!(
        concurrency_from(Err(std::env::VarError::NotPresent)).unwrap(),
        None,
        "the worker's default"
    );
    assert_eq!(
        lease_from(Ok("2s".into())).unwrap_err(),
        "RINGYO_LEASE_MS is \"2s\", which is not a whole number of milliseconds above zero \
         such as 30000"
    );
    assert!(lease_from(Ok("0".into())).is_err());
    assert_eq!(lease_from(Ok("3000".into())).unwrap(), Some(ms(3000)));
    assert_eq!(
        lease_from(Err(std::env::VarError::NotPresent)).unwrap(),
        None,
        "the worker's default"
    );
    assert_eq!(
        reorder_window_from(Ok("1s".into())).unwrap_err(),
        "RINGYO_REORDER_WINDOW_MS is \"1s\", which is not a whole number of milliseconds such \
         as 1000"
    );
    assert_eq!(reorder_window_from(Ok("0".into())).unwrap(), Some(ms(0)));
    assert_eq!(
        reorder_window_from(Err(std::env::VarError::NotPresent)).unwrap(),
        None,
        "the inbox's default"
    );

    let bind = |variable, value: Option<&str>, default| {
        bind_from(variable, value.map(str::to_owned), default)
    };
    assert_eq!(
        bind("RINGYO_BIND", None, config::DEFAULT_BIND)
            .unwrap()
            .to_string(),
        "127.0.0.1:3000"
    );
    assert_eq!(
        bind("RINGYO_ADMIN_BIND", None, config::DEFAULT_ADMIN_BIND)
            .unwrap()
            .to_string(),
        "127.0.0.1:9090",
        "health and metrics apart from the webhook, on loopback"
    );
    assert_eq!(
        bind(
            "RINGYO_ADMIN_BIND",
            Some("localhost"),
            config::DEFAULT_ADMIN_BIND
        )
        .unwrap_err(),
        "RINGYO_ADMIN_BIND is \"localhost\", which is not an address and port such as \
         127.0.0.1:9090"
    );
}

#[tokio::test]
async fn address_in_use_is_a_sentence_that_names_the_fix() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = TcpListener::bind(addr).await.unwrap_err();
    assert_eq!(
        config::cannot_listen("RINGYO_BIND", addr, &err),
        format!("cannot listen on {addr}: address in use; set RINGYO_BIND to another address")
    );
}

/// With no secret set, the receiver accepts what the crate's test kit (and so the `send`
/// example) signs by default, at the path it posts to by default.
#[tokio::test]
async fn development_secret_is_the_one_the_test_kit_and_sender_use() {
    let database = ringyo_test_support::inbox::sqlite();
    let layer = layer_from(Err(std::env::VarError::NotPresent)).unwrap();
    let limits = ServerLimits::default();
    let (receiver, _reports) = start_with(&database.url, Duration::ZERO, limits, layer).await;
    let (body, signature) = TestDelivery::new("call.completed").body_and_signature();
    let (status, _, _) = post(receiver.addr, body.into_bytes(), signature.as_deref()).await;
    assert_eq!(status, 202);
    receiver.stop().await;
}

/// Signed strings reach the log escaped: a newline in an event's name does not start a forged
/// log line, and a terminal's escape codes are not sent to the terminal.
#[tokio::test]
async fn signed_strings_in_log_lines_are_escaped() {
    let (logs, _guard) = Logs::capture();
    let database = ringyo_test_support::inbox::sqlite();
    let inbox = inbox_from(Ok(database.url.clone())).unwrap();
    let (webhook, addr) = ringyo_test_support::local_listener().await;
    let (admin, _) = ringyo_test_support::local_listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(run(
        Listeners { webhook, admin },
        common::layer(),
        inbox.clone(),
        Worker::new(&inbox, process(Work::NONE)),
        common::recorder(),
        Settings::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let hostile = "call.completed\nINFO forged: all is well \u{1b}[2J";
    let (body, signature) = signed(hostile, json!({ "id": "call_1\r\nforged" }));
    assert_eq!(post(addr, body, Some(&signature)).await.0, 202);
    logs.comes_to_hold("processed event").await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    let text = logs.text();
    let line = text
        .lines()
        .find(|line| line.contains("processed event"))
        .unwrap_or_else(|| panic!("no processed event in {text}"));
    assert!(line.contains(r"call.completed\nINFO forged"), "{line}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(
        !text.lines().any(|line| line.starts_with("INFO forged")),
        "{text}"
    );
}

/// A client stalled mid-body cannot keep the receiver from stopping: past the shutdown
/// deadline its connection is closed and the process goes on to stop.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_client_does_not_hold_the_shutdown_past_its_deadline() {
    let database = ringyo_test_support::inbox::sqlite();
    let limits = ServerLimits::default().shutdown_deadline(Duration::from_millis(500));
    let (receiver, _reports) = start_limited(&database.url, Duration::ZERO, limits).await;
    let (stalled, _) = begin_request(receiver.addr).await;

    let started = std::time::Instant::now();
    receiver.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), receiver.done)
        .await
        .expect("the stalled client held the shutdown")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "it waited for the request"
    );
    assert!(ringyo_test_support::closed_within(stalled, Duration::from_secs(1)).await);
}

/// The secrets file is re-read on SIGHUP: a secret added is accepted from then on, one
/// removed is refused, and a file that holds no secret changes nothing.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_secrets_file_is_re_read_on_sighup_and_a_broken_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets");
    std::fs::write(&path, "# the current secret first\nwhsec_old\n").unwrap();
    let layer = layer_from_file(&path).unwrap();
    let database = ringyo_test_support::inbox::sqlite();
    let limits = ServerLimits::default();
    let (receiver, _reports) = start_with(&database.url, Duration::ZERO, limits, layer).await;
    let addr = receiver.addr;
    let sent = std::sync::atomic::AtomicUsize::new(0);
    // A distinct delivery signed with `secret`: its status.
    let send_with = |secret: &'static str| {
        let n = sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (body, signature) = TestDelivery::new("call.completed")
            .data(json!({ "id": format!("call_{n}") }))
            .secret(secret)
            .body_and_signature();
        async move { post(addr, body.into_bytes(), signature.as_deref()).await.0 }
    };
    // Writes the file and sends this process SIGHUP.
    let rewrite = async |contents: &str| {
        std::fs::write(&path, contents).unwrap();
        common::hang_up().await;
    };
    // Whether deliveries signed with `secret` come to get `status` within 5 s.
    let comes_to = async |secret: &'static str, status: u16| {
        for _ in 0..250 {
            if send_with(secret).await == status {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    assert_eq!(send_with("whsec_old").await, 202);
    assert_eq!(send_with("whsec_new").await, 401);

    rewrite("whsec_new\nwhsec_old\n").await;
    assert!(
        comes_to("whsec_new", 202).await,
        "the new secret was never accepted"
    );
    assert_eq!(send_with("whsec_old").await, 202);

    rewrite("# emptied by mistake\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        send_with("whsec_old").await,
        202,
        "an empty file changed nothing"
    );
    assert_eq!(send_with("whsec_new").await, 202);

    rewrite("whsec_new\n").await;
    assert!(
        comes_to("whsec_old", 401).await,
        "the retired secret was still accepted"
    );
    assert_eq!(send_with("whsec_new").await, 202);
    receiver.stop().await;
}

/// What the receiver says about a secrets file it cannot use: the file and the fix, never
/// the file's contents.
#[test]
fn secrets_file_problems_name_the_file_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets");
    let problem = |contents: &[u8]| {
        std::fs::write(&path, contents).unwrap();
        layer_from_file(&path).unwrap_err()
    };
    let garbled = problem(b"whsec_hunter2\xff\n");
    assert!(
        garbled.contains("is not UTF-8") && !garbled.contains("hunter2"),
        "{garbled}"
    );
    let empty = problem(b"# nothing yet\n\n");
    assert!(empty.contains("holds no secret"), "{empty}");
    let missing = layer_from_file(dir.path().join("absent")).unwrap_err();
    assert!(missing.starts_with("cannot read"), "{missing}");
}
