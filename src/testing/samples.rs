//! [`sample_data`]: realistic payloads for every event the crate knows.

use serde_json::{json, Value};

use crate::event::EventKind;

/// Realistic `data` for `kind`, built from what Ringyo documents of its objects.
///
/// Phone numbers use the fictional 555-01xx range. An event the crate does not know gets `{}`.
///
/// ```
/// use ringyo_webhook::{testing::sample_data, Event, EventKind, FromEventData};
///
/// let data = sample_data(&EventKind::CallTranscriptReady);
/// let Event::CallTranscriptReady(call) =
///     Event::from_event_data(&EventKind::CallTranscriptReady, data).unwrap()
/// else { unreachable!() };
/// assert!(call.transcript.unwrap().len() > 1);
/// ```
pub fn sample_data(kind: &EventKind) -> Value {
    match kind {
        EventKind::CallStarted
        | EventKind::CallInitiated
        | EventKind::CallRinging
        | EventKind::CallAnswered
        | EventKind::CallCompleted
        | EventKind::CallFailed
        | EventKind::CallTransferred
        | EventKind::CallRecordingReady
        | EventKind::CallTranscriptReady => call(kind),
        EventKind::AppointmentCreated | EventKind::AppointmentUpdated => appointment("confirmed"),
        EventKind::AppointmentCancelled => appointment("cancelled"),
        EventKind::AppointmentReminder => with(
            appointment("confirmed"),
            json!({"reminder_sent_at": "2024-01-17T15:00:00Z"}),
        ),
        EventKind::AgentCreated | EventKind::AgentUpdated | EventKind::AgentDeleted => json!({
            "id": "agent_abc123",
            "name": "Front Desk",
            "language": "en-US",
            "voice": "warm-female-1",
            "created_at": "2024-01-02T09:00:00Z",
            "metadata": {"team": "scheduling"},
        }),
        EventKind::PhoneNumberAssigned => phone_number(json!("agent_abc123")),
        EventKind::PhoneNumberReleased => phone_number(Value::Null),
        EventKind::CreditsLow => json!({"balance": 12.5, "threshold": 50, "currency": "USD"}),
        EventKind::Unknown(_) => json!({}),
    }
}

/// A call at the stage `kind` names.
fn call(kind: &EventKind) -> Value {
    let status = match kind {
        EventKind::CallStarted | EventKind::CallInitiated => "initiated",
        EventKind::CallRinging => "ringing",
        EventKind::CallAnswered => "in_progress",
        EventKind::CallFailed => "busy",
        EventKind::CallTransferred => "transferred",
        _ => "completed",
    };
    let base = json!({
        "id": "call_xyz789",
        "status": status,
        "phone_number": "+15555550123",
        "from_number": "+15555550100",
        "agent_id": "agent_abc123",
        "created_at": "2024-01-15T10:26:42Z",
        "metadata": {"crm_lead_id": "lead_4821"},
    });
    let ended = json!({
        "duration": 187,
        "ended_at": "2024-01-15T10:29:49Z",
        "outcome": "appointment_booked",
    });
    let recording = "https://api.ringyo.ai/v1/calls/call_xyz789/recording";
    match kind {
        EventKind::CallFailed => with(base, json!({"duration": 0, "outcome": "busy"})),
        EventKind::CallTransferred => with(
            base,
            json!({"duration": 64, "transferred_to": "+15555550199"}),
        ),
        EventKind::CallCompleted => with(
            with(base, ended),
            json!({
                "recording_url": recording,
                "analysis": {"sentiment": "positive", "summary": "Booked a cleaning for Thursday."},
                "transcript": transcript(),
            }),
        ),
        EventKind::CallRecordingReady => {
            with(with(base, ended), json!({"recording_url": recording}))
        }
        EventKind::CallTranscriptReady => {
            with(with(base, ended), json!({"transcript": transcript()}))
        }
        _ => base,
    }
}

/// What the seed pages show of a call's transcript: role, content and offset per turn.
fn transcript() -> Value {
    json!([
        {"role": "agent", "content": "Thanks for calling Bright Smile Dental, how can I help?", "timestamp": 0.4},
        {"role": "user", "content": "Hi, I'd like to book a cleaning.", "timestamp": 3.1},
        {"role": "agent", "content": "Thursday at 3 PM works. Shall I book it?", "timestamp": 7.8},
        {"role": "user", "content": "Yes please.", "timestamp": 11.2},
    ])
}

/// An appointment booked by the sample call, for its customer, at a time.
fn appointment(status: &str) -> Value {
    json!({
        "id": "appt_7f3k2",
        "status": status,
        "call_id": "call_xyz789",
        "agent_id": "agent_abc123",
        "scheduled_at": "2024-01-18T15:00:00Z",
        "customer_name": "Jordan Lee",
        "customer_phone": "+15555550123",
        "created_at": "2024-01-15T10:29:30Z",
        "metadata": {"crm_lead_id": "lead_4821"},
    })
}

fn phone_number(agent_id: Value) -> Value {
    json!({
        "id": "pn_2k9d",
        "phone_number": "+15555550100",
        "agent_id": agent_id,
        "country": "US",
        "created_at": "2024-01-02T09:05:00Z",
    })
}

/// `base` with the fields of `extra` added.
fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, FromEventData};

    #[test]
    fn every_known_event_has_sample_data_that_types_fully() {
        for name in EventKind::KNOWN {
            let kind = EventKind::from(*name);
            let data = sample_data(&kind);
            assert!(data.as_object().is_some_and(|o| !o.is_empty()), "{name}");
            let event = Event::from_event_data(&kind, data).unwrap();
            let id = match &event {
                Event::CreditsLow(credits) => credits.balance.map(|b| b.to_string()),
                Event::AppointmentCreated(a) | Event::AppointmentCancelled(a) => a.id.clone(),
                Event::AgentDeleted(a) => a.id.clone(),
                Event::PhoneNumberAssigned(p) => p.phone_number.clone(),
                Event::CallTranscriptReady(c) => c.transcript.as_ref().map(|t| t.len().to_string()),
                Event::CallCompleted(c) => c
                    .recording_url
                    .clone()
                    .and(c.transcript.clone())
                    .map(|t| t.len().to_string()),
                Event::AppointmentReminder(a) => a
                    .scheduled_at
                    .and(a.status.clone())
                    .and(a.customer_name.clone()),
                _ => Some(String::new()),
            };
            assert!(id.is_some(), "{name}: {event:?}");
        }
    }
}
