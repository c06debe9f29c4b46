//! The door agrees with the worker: through real HTTP on 127.0.0.1, in front of a SQLite inbox,
//! a delivery answered 2xx is one the worker reads with the default `Event`, and one it could
//! never read is refused at the door with a 4xx that says why (issue 20, item 6).

use ringyo_test_support as support;

use std::time::Duration;

use ringyo_test_support::{
    inbox::{serve, PATH},
    sign, SENT_AT,
};
use ringyo_webhook::{
    inbox::{Inbox, InboxStats, Job, Worker},
    Event,
};
use tokio::sync::mpsc;

/// An envelope of `event` around `data`, as raw text: some of these bodies no JSON library
/// would write.
fn raw_envelope(event: &str, data: &str) -> Vec<u8> {
    format!(r#"{{"event":"{event}","timestamp":"{SENT_AT}","webhook_id":"wh_1","data":{data}}}"#)
        .into_bytes()
}

/// Polls the inbox (bounded) until nothing is pending or running.
async fn settled(inbox: &Inbox) -> InboxStats {
    for _ in 0..400 {
        let stats = inbox.stats().await.unwrap();
        if stats.pending == 0 && stats.running == 0 {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the inbox never settled: {:?}",
        inbox.stats().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_door_accepts_the_worker_reads_and_the_rest_is_refused_with_why() {
    let database = support::inbox::sqlite();
    let inbox = Inbox::new(database.open());
    let addr = serve(&inbox).await;
    let (seen, mut handled) = mpsc::unbounded_channel();
    let worker = Worker::new(&inbox, move |job: Job<Event>| {
        let seen = seen.clone();
        async move {
            let Event::CallTranscriptReady(call) = job.event.data else {
                return Err(format!("unexpected {}", job.event.kind));
            };
            let _ = seen.send(call.id);
            Ok::<_, String>(())
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));

    let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    let cases: [(Vec<u8>, u16, &str); 6] = [
        // Node's JSON.stringify of a string cut mid-emoji: read, with U+FFFD for the half.
        (
            raw_envelope("call.transcript.ready", r#"{"id":"call_1 \ud83d"}"#),
            202,
            "",
        ),
        (
            raw_envelope("call.completed", &format!(r#"{{"a":{}}}"#, nested(200))),
            422,
            "json_too_deep",
        ),
        (
            raw_envelope("call.completed", r#"{"duration":1e400}"#),
            422,
            "number_out_of_range",
        ),
        (
            format!(r#"{{"timestamp":"{SENT_AT}","data":{{}}}}"#).into_bytes(),
            422,
            "invalid_envelope",
        ),
        // `data` the models cannot read: not an object, or a field given twice.
        (
            raw_envelope("call.completed", "[1]"),
            422,
            "invalid_envelope",
        ),
        (
            raw_envelope("call.completed", r#"{"id":"a","id":"b"}"#),
            422,
            "invalid_envelope",
        ),
    ];
    for (body, status, code) in cases {
        let (answered, json, _) =
            support::deliver(addr, PATH, body.clone(), Some(&sign(&body))).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(90)]).into_owned();
        assert_eq!(answered, status, "{shown}: {json}");
        if status >= 400 {
            assert_eq!(json["error"], code, "{shown}");
            assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    let id = tokio::time::timeout(Duration::from_secs(10), handled.recv())
        .await
        .expect("the worker never handled the delivery it was given")
        .unwrap();
    assert_eq!(id.as_deref(), Some("call_1 \u{FFFD}"));
    let stats = settled(&inbox).await;
    assert_eq!((stats.done, stats.dead), (1, 0), "{stats:?}");
    let _ = stop.send(());
    running.await.unwrap();
}
