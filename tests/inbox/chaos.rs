//! The delivery-chaos kit (`testing::Chaos`) on handlers that are wrong in the ways webhook
//! handlers usually are, and on their corrected versions: it must fail the first, naming the
//! fault and the delivery, and pass the second.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use axum::{extract::State, http::StatusCode, routing::post, Router};
use ringyo_webhook::{
    inbox::{
        sqlx::{self, Sqlite, Transaction},
        Job,
    },
    testing::{Chaos, ChaosFailure, ChaosFault, DEVELOPMENT_SECRET},
    Event, EventKind, RingyoEvent, RingyoWebhookLayer,
};

/// State a test handler keeps in memory, reset before each run and read after it.
type Shared<V> = Arc<Mutex<BTreeMap<String, V>>>;

/// `chaos` reading and resetting `state`.
fn on<V: Clone + std::fmt::Debug + PartialEq + 'static>(
    chaos: Chaos,
    state: &Shared<V>,
) -> Chaos<BTreeMap<String, V>> {
    let (reset, read) = (Arc::clone(state), Arc::clone(state));
    chaos
        .setup(move |_| {
            reset.lock().unwrap().clear();
            async {}
        })
        .snapshot(move |_| {
            let now = read.lock().unwrap().clone();
            async move { now }
        })
}

/// The call a job is about, or `-`.
fn call(job: &Job<Event>) -> String {
    job.subject
        .as_ref()
        .map_or_else(|| "-".to_owned(), |subject| subject.id().to_owned())
}

fn assert_names(failure: &ChaosFailure, fault: ChaosFault, words: &[&str]) {
    let text = failure.to_string();
    assert_eq!(failure.fault(), Some(fault), "{text}");
    assert!(failure.delivery_id().is_some(), "{text}");
    for word in words {
        assert!(text.contains(word), "{word:?} missing from:\n{text}");
    }
}

#[tokio::test]
async fn a_plain_handler_counting_every_run_fails_on_a_crash_before_the_commit() {
    let counts = Shared::<u32>::default();
    let seen = Arc::clone(&counts);
    let failure = on(Chaos::samples(), &counts)
        .check_handler(move |job: Job<Event>| {
            *seen.lock().unwrap().entry(call(&job)).or_default() += 1;
            async { Ok::<(), String>(()) }
        })
        .await
        .unwrap_err();
    // The inbox drops the duplicates; only a run that is not recorded repeats the effect.
    assert_names(
        &failure,
        ChaosFault::CrashBeforeCommit,
        &[
            "call.initiated about call:call_a",
            "-     \"call_a\": 6,",
            "+     \"call_a\": 7,",
        ],
    );
}

/// The user's table for the transactional cases: one count per call.
async fn counts_table(run: ringyo_webhook::testing::ChaosRun) {
    sqlx::query("CREATE TABLE counts (call_id TEXT PRIMARY KEY, handled INTEGER NOT NULL)")
        .execute(&run.sqlite_pool().await)
        .await
        .unwrap();
}

async fn read_counts(run: ringyo_webhook::testing::ChaosRun) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT call_id, handled FROM counts ORDER BY call_id")
        .fetch_all(&run.sqlite_pool().await)
        .await
        .unwrap()
}

fn count_in<'t>(
    job: &Job<Event>,
    tx: &'t mut Transaction<'static, Sqlite>,
) -> ringyo_webhook::inbox::TxFuture<'t, sqlx::Error> {
    let call = call(job);
    Box::pin(async move {
        sqlx::query(
            "INSERT INTO counts VALUES ($1, 1) \
             ON CONFLICT (call_id) DO UPDATE SET handled = handled + 1",
        )
        .bind(call)
        .execute(&mut **tx)
        .await?;
        Ok(())
    })
}

#[tokio::test]
async fn a_transactional_handler_counting_in_its_transaction_passes_every_fault() {
    Chaos::samples()
        .setup(counts_table)
        .snapshot(read_counts)
        .check_transactional(|job: Job<Event>, tx: &mut Transaction<'static, Sqlite>| {
            count_in(&job, tx)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_transactional_handler_counting_outside_its_transaction_fails() {
    let outside = Shared::<u32>::default();
    let seen = Arc::clone(&outside);
    let failure = on(Chaos::samples(), &outside)
        .check_transactional(
            move |job: Job<Event>, tx: &mut Transaction<'static, Sqlite>| {
                // Kept whether the transaction commits or not.
                *seen.lock().unwrap().entry(call(&job)).or_default() += 1;
                count_in(&job, tx)
            },
        )
        .await
        .unwrap_err();
    assert_names(&failure, ChaosFault::CrashBeforeCommit, &["call:call_a"]);
}

/// A handler keeping each call's last status, as the event kind that set it.
fn statuses(
    state: &Shared<String>,
    respect_superseded: bool,
) -> impl Fn(Job<Event>) -> std::future::Ready<Result<(), String>> + Send + Sync + 'static {
    let state = Arc::clone(state);
    move |job: Job<Event>| {
        let superseded = respect_superseded && job.superseded_by.is_some();
        if job.subject.is_some() && !superseded {
            let status = job.event.kind.as_str().to_owned();
            state.lock().unwrap().insert(call(&job), status);
        }
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn a_status_overwritten_by_an_older_late_event_fails_when_reordered() {
    let state = Shared::<String>::default();
    let failure = on(Chaos::samples(), &state)
        .check_handler(statuses(&state, false))
        .await
        .unwrap_err();
    assert_names(
        &failure,
        ChaosFault::Reordered,
        &[
            "arrived",
            "s late, after newer events",
            "call.transcript.ready",
        ],
    );
}

#[tokio::test]
async fn an_ordered_inbox_and_a_handler_that_heeds_superseded_pass() {
    let state = Shared::<String>::default();
    on(Chaos::samples(), &state)
        .order_by_subject(true)
        .check_handler(statuses(&state, true))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_ordered_inbox_skipping_superseded_kinds_passes() {
    let state = Shared::<String>::default();
    let every_call_event = [
        EventKind::CallInitiated,
        EventKind::CallRinging,
        EventKind::CallAnswered,
        EventKind::CallCompleted,
        EventKind::CallRecordingReady,
        EventKind::CallTranscriptReady,
    ];
    on(Chaos::samples(), &state)
        .order_by_subject(true)
        .skip_superseded(every_call_event)
        .check_handler(statuses(&state, false))
        .await
        .unwrap();
}

/// A route behind the layer that counts every request per call: a retry counts again.
fn counting_route(state: &Shared<u32>) -> Router {
    async fn handle(State(counts): State<Shared<u32>>, event: RingyoEvent) -> StatusCode {
        *counts.lock().unwrap().entry(call_of(&event)).or_default() += 1;
        StatusCode::NO_CONTENT
    }
    behind_the_layer(post(handle)).with_state(Arc::clone(state))
}

/// A route behind the layer that keeps each call's delivery ids: a retry is the same id.
fn keyed_route(state: &Shared<BTreeSet<String>>) -> Router {
    type Ids = Shared<BTreeSet<String>>;
    async fn handle(State(ids): State<Ids>, event: RingyoEvent) -> StatusCode {
        let id = event.delivery_id.to_string();
        ids.lock()
            .unwrap()
            .entry(call_of(&event))
            .or_default()
            .insert(id);
        StatusCode::NO_CONTENT
    }
    behind_the_layer(post(handle)).with_state(Arc::clone(state))
}

fn call_of(event: &RingyoEvent) -> String {
    event
        .data
        .subject()
        .map_or_else(|| "-".to_owned(), |subject| subject.id().to_owned())
}

fn behind_the_layer<S: Clone + Send + Sync + 'static>(
    handler: axum::routing::MethodRouter<S>,
) -> Router<S> {
    let layer = RingyoWebhookLayer::new(DEVELOPMENT_SECRET).unwrap();
    Router::new().route("/webhooks/ringyo", handler.route_layer(layer))
}

#[tokio::test]
async fn a_route_counting_every_request_fails_when_a_delivery_is_sent_twice() {
    let counts = Shared::<u32>::default();
    let failure = on(Chaos::samples(), &counts)
        .check_service(counting_route(&counts))
        .await
        .unwrap_err();
    assert_names(
        &failure,
        ChaosFault::SentTwice,
        &["call.initiated about call:call_a"],
    );
}

#[tokio::test]
async fn a_route_keyed_by_delivery_id_passes() {
    let ids = Shared::<BTreeSet<String>>::default();
    on(Chaos::samples(), &ids)
        .check_service(keyed_route(&ids))
        .await
        .unwrap();
}
