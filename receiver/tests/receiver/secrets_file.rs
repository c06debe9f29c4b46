//! The receiver's secrets file (`RINGYO_SECRETS_FILE`) through real HTTP: what a file that an
//! editor, a copy-paste or a writer cut short leaves behind does at start and on SIGHUP.
//!
//! Each test serves the layer the receiver builds from its file (`layer_from_file`, SIGHUP
//! handler included) in front of a handler that answers 202; the inbox behind it is
//! `serving`'s. SIGHUP goes to this whole process (`serving` sends one too): every test's file
//! is re-read on each, which the tests allow for.

use crate::common;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use crate::common::{
    process::{Log, Receiver},
    Logs,
};
use axum::{http::StatusCode, routing::post, Router};
use ringyo_receiver::{config::layer_from_file, PATH};
use ringyo_webhook::{
    serve::{serve, ServerLimits},
    testing::TestDelivery,
};
use serde_json::json;

const OLD: &str = "whsec_old_endpoint";
const NEW: &str = "whsec_new_endpoint";

/// The receiver's webhook route, on secrets read from a file of this test's own.
struct Endpoint {
    addr: SocketAddr,
    path: PathBuf,
    sent: AtomicUsize,
    _dir: tempfile::TempDir,
}

impl Endpoint {
    /// Writes `contents` to a new file and serves the layer the receiver builds from it.
    async fn start(contents: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        std::fs::write(&path, contents).unwrap();
        common::recorder();
        let layer = layer_from_file(&path).unwrap();
        let accept = post(|| async { StatusCode::ACCEPTED }).route_layer(layer);
        let (listener, addr) = ringyo_test_support::local_listener().await;
        let app = Router::new().route(PATH, accept);
        let limits = ServerLimits::default();
        tokio::spawn(serve(listener, app, limits, std::future::pending()));
        Self {
            addr,
            path,
            sent: AtomicUsize::new(0),
            _dir: dir,
        }
    }

    /// The status of a distinct delivery signed with `secret`.
    async fn send_with(&self, secret: &str) -> u16 {
        let n = self.sent.fetch_add(1, Ordering::SeqCst);
        let (body, signature) = TestDelivery::new("call.completed")
            .data(json!({ "id": format!("call_{n}") }))
            .secret(secret)
            .body_and_signature();
        common::post(self.addr, body.into_bytes(), signature.as_deref())
            .await
            .0
    }

    /// Whether deliveries signed with `secret` come to get `status` within 5 s.
    async fn comes_to(&self, secret: &str, status: u16) -> bool {
        for _ in 0..250 {
            if self.send_with(secret).await == status {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Writes `contents` over the file, in place, and sends this process SIGHUP.
    #[cfg(unix)]
    async fn rewrite(&self, contents: &str) {
        std::fs::write(&self.path, contents).unwrap();
        common::hang_up().await;
    }
}

/// What the receiver says when it cannot start on a file holding `contents`.
fn refused_at_start(contents: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets");
    std::fs::write(&path, contents).unwrap();
    layer_from_file(&path).unwrap_err()
}

/// Item 8 of issue 20: a Windows editor's byte-order mark used to become part of the first
/// secret, and every genuine delivery got 401.
#[cfg(unix)]
#[tokio::test]
async fn a_byte_order_mark_is_skipped_at_start_and_on_sighup() {
    let endpoint = Endpoint::start(&format!("\u{feff}{OLD}\n")).await;
    assert_eq!(endpoint.send_with(OLD).await, 202);

    endpoint.rewrite(&format!("\u{feff}{NEW}\n{OLD}\n")).await;
    assert!(
        endpoint.comes_to(NEW, 202).await,
        "the new secret never passed"
    );
    assert_eq!(endpoint.send_with(OLD).await, 202);
}

/// Item 8: a line that would hash an invisible character or an inline comment into the key is
/// refused at start, naming the line and never the secret.
#[test]
fn a_secret_line_with_an_invisible_character_or_text_after_it_stops_the_start() {
    for (line, why) in [
        ("whsec_hunter2\u{200b}", "invisible"), // a zero-width space
        ("whsec_hunter2\u{a0}", "invisible"),   // a non-breaking space
        ("\u{200b}whsec_hunter2", "invisible"), // hides a comment's `#`, too
        ("whsec_hun\u{7}ter2", "invisible"),    // a control character
        ("whsec_hunter2\r\r", "invisible"),     // a stray carriage return
        ("whsec_hunter2 # the old one", "text after the secret"),
        ("whsec_hunter2\t# rotated in May", "text after the secret"),
        ("whsec_hunter2 whsec_other", "text after the secret"),
    ] {
        let contents = format!("# the current secret first\n{line}\n{OLD}\n");
        let problem = refused_at_start(contents.as_bytes());
        assert!(
            problem.contains(", line 2: ") && problem.contains(why),
            "{line:?}: {problem}"
        );
        assert!(!problem.contains("hunter"), "{line:?}: {problem}");
    }
}

/// What stays allowed: comments are whole lines and may say anything, and spaces, tabs and a
/// Windows line ending around a secret are layout.
#[tokio::test]
async fn comments_and_the_layout_around_a_secret_are_not_part_of_it() {
    let contents = format!("  # café, rotated by Zoë\n\t{OLD}  \r\n\n");
    let endpoint = Endpoint::start(&contents).await;
    assert_eq!(endpoint.send_with(OLD).await, 202);
}

/// Item 8: on SIGHUP, such a file changes nothing (it used to replace the secrets with ones no
/// delivery is signed with), and the log says which line is wrong.
#[cfg(unix)]
#[tokio::test]
async fn a_sighup_on_a_file_with_an_inline_comment_keeps_the_secrets_and_logs_the_line() {
    let (logs, _guard) = Logs::capture();
    let endpoint = Endpoint::start(&format!("{OLD}\n")).await;
    endpoint
        .rewrite(&format!("{NEW} # the new endpoint\n{OLD}\n"))
        .await;
    assert!(
        logs.comes_to_hold("line 1: text after the secret").await,
        "never refused:\n{}",
        logs.text()
    );
    assert_eq!(endpoint.send_with(OLD).await, 202, "the old secrets stay");
    assert_eq!(endpoint.send_with(NEW).await, 401);
    assert!(!logs.text().contains("new_endpoint"), "{}", logs.text());
}

/// Item 9: a file caught half written (rewritten in place while SIGHUP arrived) used to load
/// half a secret, and genuine deliveries were refused. Its missing final newline gives it away:
/// the secrets stay as they were until the whole file is read.
#[cfg(unix)]
#[tokio::test]
async fn a_sighup_on_a_half_written_file_keeps_the_secrets_until_it_is_whole() {
    let (logs, _guard) = Logs::capture();
    let endpoint = Endpoint::start(&format!("{OLD}\n")).await;
    let whole = format!("{NEW}\n{OLD}\n");
    endpoint.rewrite(&whole[..whole.len() - 8]).await;
    assert!(
        logs.comes_to_hold("does not end with a newline, so it may be half written")
            .await,
        "never refused:\n{}",
        logs.text()
    );
    assert_eq!(endpoint.send_with(OLD).await, 202, "the old secrets stay");
    assert_eq!(endpoint.send_with(NEW).await, 401);

    endpoint.rewrite(&whole).await;
    assert!(
        endpoint.comes_to(NEW, 202).await,
        "the whole file never applied"
    );
    assert_eq!(endpoint.send_with(OLD).await, 202);
    // Item 10: every reload says how many secrets it read, and from which file.
    let read = format!(
        "read 2 secret(s) from {} on SIGHUP",
        endpoint.path.display()
    );
    assert!(logs.text().contains(&read), "{}", logs.text());
    // At start, too, a file cut short inside its last line is refused, and an emptied one
    // (truncated by a rewrite in place) holds no secret.
    let problem = refused_at_start(format!("{OLD}\nwhsec_hunt").as_bytes());
    assert!(
        problem.contains("half written") && !problem.contains("hunt"),
        "{problem}"
    );
    assert!(refused_at_start(b"").contains("holds no secret"));
}

/// A temporary file holding `contents`.
fn write_temp(contents: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), contents).unwrap();
    file
}

/// Item 10: every receiver start on a file of valid `whsec_` secrets used to warn that a
/// secret "does not start with `whsec_`" (the layer's own stand-in secrets did not), and said
/// nothing of what it read. The receiver's binary, in a fresh process: the stand-in secrets a
/// layer built `from_source` holds are made once per process, so only a fresh one shows what a
/// start logs.
#[tokio::test]
async fn a_start_on_a_secrets_file_logs_the_count_and_no_prefix_warning() {
    let file = write_temp(&format!("# current first\n{NEW}\n{OLD}\n"));
    let database = ringyo_test_support::inbox::sqlite();
    let path = file.path().to_str().unwrap();
    let env = [
        ("RINGYO_SECRETS_FILE", path),
        ("RINGYO_INBOX_URL", &database.url),
    ];
    let log = Log::default();
    Receiver::start(&env, &log).await.kill().await;
    let log = log.lines().join("\n");
    let read = format!("read 2 secret(s) from {} at start", file.path().display());
    assert!(log.contains(&read), "{log}");
    assert!(!log.contains("WARN"), "{log}");
    assert!(!log.contains("endpoint"), "a secret in the log: {log}");
}
