//! The test kit's jobs (`testing::TestJob`, issue 24, item 7): an inbox handler unit-tested
//! on jobs built from samples, with no database and no worker; and the proof that a built job
//! is the one a real worker hands over, and that a `data` it cannot read is refused with the
//! text the worker dead-letters it with.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use ringyo_test_support::{layer, SECRET, SENT_AT};
use ringyo_webhook::{
    chrono::{DateTime, TimeDelta, Utc},
    inbox::{Inbox, Job, Worker},
    testing::{TestDelivery, TestJob},
    Event, EventKind, SubjectKind,
};
use serde_json::json;
use tokio::sync::mpsc;
use tower::ServiceExt;

fn sent_at() -> DateTime<Utc> {
    SENT_AT.parse().unwrap()
}

/// A call's record as a user's handler keeps it: the latest status, and the handler refuses
/// a `data` without an `id`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct CallRow {
    id: String,
    status: Option<String>,
}

/// What a handler saw of a job, one line per call.
fn seen(job: &Job<Event>) -> String {
    let subject = job
        .subject
        .as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string);
    let tenant = job
        .event
        .tenant
        .as_ref()
        .map_or("-", |tenant| tenant.as_str());
    format!(
        "{} {subject} tenant={tenant} attempt={} superseded={}",
        job.event.kind,
        job.attempt,
        job.superseded_by.is_some()
    )
}

#[tokio::test]
async fn a_handler_with_state_sees_each_sample_as_a_worker_hands_it() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let log = Arc::clone(&log);
        move |job: Job<Event>| {
            log.lock().unwrap().push(seen(&job));
            async move {
                match job.event.data {
                    Event::Unknown { name, .. } => Err(format!("cannot handle {name}")),
                    _ => Ok(()),
                }
            }
        }
    };
    let later = sent_at() + TimeDelta::seconds(3);
    let jobs = [
        TestJob::new("call.completed"),
        TestJob::new("appointment.created")
            .tenant("acme-dental")
            .attempt(2),
        TestJob::new("phone_number.assigned").superseded_by(later),
        TestJob::new("credits.low"),
        TestJob::new("call.summarized"),
    ];
    let mut outcomes = Vec::new();
    for job in &jobs {
        let job = job.clone().timestamp(sent_at()).build::<Event>().unwrap();
        outcomes.push(handler(job).await);
    }
    assert_eq!(
        *log.lock().unwrap(),
        [
            "call.completed call:call_xyz789 tenant=- attempt=1 superseded=false",
            "appointment.created appointment:appt_7f3k2 tenant=acme-dental attempt=2 superseded=false",
            "phone_number.assigned phone_number:pn_2k9d tenant=- attempt=1 superseded=true",
            "credits.low - tenant=- attempt=1 superseded=false",
            "call.summarized - tenant=- attempt=1 superseded=false",
        ]
    );
    assert_eq!(
        outcomes,
        [
            Ok(()),
            Ok(()),
            Ok(()),
            Ok(()),
            Err("cannot handle call.summarized".to_owned())
        ]
    );
}

#[tokio::test]
async fn what_a_builder_sets_is_what_the_handler_reads() {
    async fn handle(job: Job<Event>) -> Result<(), String> {
        let Event::CallCompleted(call) = &job.event.data else {
            return Err(format!("unexpected {}", job.event.kind));
        };
        let expected = (
            job.attempt,
            job.event.tenant.as_ref().map(|tenant| tenant.as_str()),
            job.received_at - job.event.timestamp,
            job.superseded_by.map(|newer| newer - job.event.timestamp),
            call.duration,
            job.event.webhook_id.as_deref(),
        );
        let wanted = (
            4,
            Some("acme"),
            TimeDelta::seconds(1),
            Some(TimeDelta::seconds(9)),
            Some(187.0),
            Some("wh_endpoint"),
        );
        (expected == wanted)
            .then_some(())
            .ok_or_else(|| format!("{expected:?}"))
    }

    let delivery = TestDelivery::new("call.completed")
        .timestamp(sent_at())
        .webhook_id("wh_endpoint");
    let job = TestJob::from(delivery)
        .attempt(4)
        .tenant("acme")
        .received_at(sent_at() + TimeDelta::seconds(1))
        .superseded_by(sent_at() + TimeDelta::seconds(9));
    handle(job.build().unwrap()).await.unwrap();

    let subject = job.build::<Event>().unwrap().subject.unwrap();
    assert_eq!(
        (subject.kind(), subject.id()),
        (SubjectKind::Call, "call_xyz789")
    );
    // The same delivery at another tenant is another delivery, as through the layer.
    let other = job.clone().tenant("globex").build::<Event>().unwrap();
    assert_ne!(
        other.delivery_id(),
        job.build::<Event>().unwrap().delivery_id()
    );
}

#[test]
fn data_that_does_not_fit_the_handlers_type_is_refused_saying_where() {
    let call = TestJob::new("call.completed").build::<CallRow>().unwrap();
    assert_eq!(call.event.data.id, "call_xyz789");
    assert_eq!(call.event.data.status.as_deref(), Some("completed"));

    let credits = TestJob::new("credits.low").build::<CallRow>().unwrap_err();
    assert_eq!(
        (credits.status().as_u16(), credits.code()),
        (422, "invalid_event_data")
    );
    assert!(credits.to_string().contains("id"), "{credits}");

    let numeric = TestJob::new("call.ringing").data(json!({"id": 7}));
    let rejection = numeric.build::<CallRow>().unwrap_err();
    assert!(rejection.to_string().contains("data.id"), "{rejection}");
    // `Event` reads anything: the models are lenient.
    assert!(numeric.build::<Event>().is_ok());
}

/// Sends `delivery` through the layer into `inbox`, as Ringyo would.
async fn deliver(inbox: &Inbox, delivery: TestDelivery) {
    let app = axum::Router::new().route(
        "/webhooks/ringyo",
        axum::routing::post_service(inbox.clone()).route_layer(layer()),
    );
    let response = app.oneshot(delivery.into_request()).await.unwrap();
    assert_eq!(response.status(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_built_job_is_the_one_a_real_worker_hands_over() {
    let database = ringyo_test_support::inbox::sqlite();
    let inbox = Inbox::new(database.open());
    let (sent, mut handed) = mpsc::unbounded_channel();
    let worker = Worker::new(&inbox, move |job: Job<CallRow>| {
        let _ = sent.send(job);
        async { Ok::<_, String>(()) }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));

    let fits = TestDelivery::new("call.answered")
        .secret(SECRET)
        .timestamp(sent_at());
    let unfit = TestDelivery::new("credits.low")
        .secret(SECRET)
        .timestamp(sent_at());
    deliver(&inbox, fits.clone()).await;
    deliver(&inbox, unfit.clone()).await;

    let real = tokio::time::timeout(Duration::from_secs(10), handed.recv())
        .await
        .expect("the worker ran the handler")
        .unwrap();
    let built = TestJob::from(fits).build::<CallRow>().unwrap();
    assert_eq!(real.delivery_id(), built.delivery_id());
    assert_eq!(
        (real.event.kind, built.event.kind),
        (EventKind::CallAnswered, EventKind::CallAnswered)
    );
    assert_eq!(real.event.timestamp, built.event.timestamp);
    assert_eq!(real.event.webhook_id, built.event.webhook_id);
    assert_eq!(real.event.tenant, built.event.tenant);
    assert_eq!(real.event.data, built.event.data);
    assert_eq!(
        (real.attempt, real.subject, real.superseded_by),
        (built.attempt, built.subject, built.superseded_by)
    );

    let refused = TestJob::from(unfit).build::<CallRow>().unwrap_err();
    let mut dead = Vec::new();
    for _ in 0..400 {
        dead = inbox.dead(10).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let [letter] = dead.as_slice() else {
        panic!("one dead letter: {dead:?}")
    };
    assert_eq!(letter.event, "credits.low");
    assert_eq!(letter.error, refused.to_string());

    let _ = stop.send(());
    running.await.unwrap();
}
