//! The background work the worker runs for each stored delivery.

use std::time::Duration;

use ringyo_webhook::{
    inbox::{Handler, Job},
    Event,
};

/// The background work: `work` of simulated downstream calls, then a `processed event` log
/// line without payload values ([`log_event`]).
pub fn process(work: Duration) -> impl Handler<Event> {
    move |job: Job<Event>| async move {
        if !work.is_zero() {
            tokio::time::sleep(work).await;
        }
        log_event(&job);
        Ok::<(), std::convert::Infallible>(())
    }
}

/// The `processed event` line for a finished delivery: its event, delivery id, timestamp,
/// attempt and subject (a call's or an appointment's id, else `-`).
pub fn log_event(job: &Job<Event>) {
    let event = &job.event;
    let subject = match &event.data {
        Event::CallCompleted(call) | Event::CallFailed(call) => call.id.clone(),
        Event::AppointmentCreated(appointment) => appointment.id.clone(),
        _ => None,
    };
    // Signed strings as `&str` fields, which log escaped: an event name may hold a newline or
    // a terminal's escape codes.
    tracing::info!(
        event = event.kind.as_str(),
        delivery_id = %event.delivery_id,
        timestamp = %event.timestamp,
        attempt = job.attempt,
        subject = subject.as_deref().unwrap_or("-"),
        "processed event"
    );
}
