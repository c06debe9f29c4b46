//! [`Subject`]: what an event is about (a call, an appointment, an agent, a phone number), so
//! the events of one call can be told apart from another's and run in order.

use std::{fmt, str::FromStr};

use super::{Event, EventKind};

/// What an event is about: the call of a `call.*` event, the appointment of an
/// `appointment.*` event, the agent of an `agent.*` event, the phone number of a
/// `phone_number.*` event, named by the id in its `data`.
///
/// The durable inbox runs the deliveries of one subject one at a time, in the order of their
/// signed timestamps (see `Inbox::order_by_subject`). Events without one (`credits.low`, names
/// this version does not know, a `data` without an id) are not ordered. A call's id is `id`,
/// or `call_id` when there is no string `id`, as [`Call`](crate::model::Call) reads it; an id is at most
/// [`MAX_ID_LEN`](Self::MAX_ID_LEN) bytes, and an event with a longer or empty one has none.
///
/// Its text form, `call:call_xyz789`, is what the inbox stores, logs and filters replays by.
///
/// ```
/// use ringyo_webhook::{Event, EventKind, FromEventData, Subject, SubjectKind};
///
/// let data = serde_json::json!({"call_id": "call_9", "status": "ringing"});
/// let event = Event::from_event_data(&EventKind::CallRinging, data)?;
/// let subject = event.subject().unwrap();
/// assert_eq!((subject.kind(), subject.id()), (SubjectKind::Call, "call_9"));
/// assert_eq!(subject.to_string(), "call:call_9");
/// assert_eq!("call:call_9".parse::<Subject>().unwrap(), subject);
///
/// let credits = Event::from_event_data(&EventKind::CreditsLow, serde_json::json!({}))?;
/// assert_eq!(credits.subject(), None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject {
    kind: SubjectKind,
    id: String,
}

/// The kind of thing a [`Subject`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SubjectKind {
    /// A call (`call.*` events).
    Call,
    /// An appointment (`appointment.*` events).
    Appointment,
    /// An agent (`agent.*` events).
    Agent,
    /// A phone number (`phone_number.*` events).
    PhoneNumber,
}

impl SubjectKind {
    const ALL: [Self; 4] = [
        Self::Call,
        Self::Appointment,
        Self::Agent,
        Self::PhoneNumber,
    ];

    /// The prefix of its text form, which is also its events' prefix: `call`, `appointment`,
    /// `agent`, `phone_number`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Appointment => "appointment",
            Self::Agent => "agent",
            Self::PhoneNumber => "phone_number",
        }
    }

    /// The kind of subject a known event has; none for `credits.low` and for names this
    /// version does not know (whose `data` it cannot vouch for).
    pub fn of(event: &EventKind) -> Option<Self> {
        if matches!(event, EventKind::Unknown(_)) {
            return None;
        }
        let family = event.as_str().split_once('.')?.0;
        Self::ALL.into_iter().find(|kind| kind.as_str() == family)
    }
}

impl Subject {
    /// The longest id a subject has, in bytes: Ringyo's ids are short, and an event with a
    /// longer one is not ordered rather than ordered by a cut id.
    pub const MAX_ID_LEN: usize = 256;

    /// The subject of a `kind` with this `id`; `None` for an empty id or one over
    /// [`MAX_ID_LEN`](Self::MAX_ID_LEN) bytes.
    pub fn new(kind: SubjectKind, id: &str) -> Option<Self> {
        (!id.is_empty() && id.len() <= Self::MAX_ID_LEN).then(|| Self {
            kind,
            id: id.to_owned(),
        })
    }

    /// The subject of an event named `event` whose `data` has the string `id` and
    /// `call_id` given (each `None` when absent or not a string): the one reading of it, for
    /// the layer's scan and for [`Event::subject`] alike.
    pub(crate) fn from_ids(
        event: &EventKind,
        id: Option<&str>,
        call_id: Option<&str>,
    ) -> Option<Self> {
        let kind = SubjectKind::of(event)?;
        let id = match kind {
            SubjectKind::Call => id.or(call_id),
            _ => id,
        };
        Self::new(kind, id?)
    }

    /// What kind of thing it is.
    pub fn kind(&self) -> SubjectKind {
        self.kind
    }

    /// Its id, as the event's `data` gives it.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}

/// The text form is not a subject: `KIND:ID`, with a kind of `call`, `appointment`, `agent`
/// or `phone_number`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a subject: expected KIND:ID, KIND one of call, appointment, agent, phone_number")]
pub struct InvalidSubject;

impl FromStr for Subject {
    type Err = InvalidSubject;

    fn from_str(text: &str) -> Result<Self, InvalidSubject> {
        let (kind, id) = text.split_once(':').ok_or(InvalidSubject)?;
        let kind = SubjectKind::ALL
            .into_iter()
            .find(|known| known.as_str() == kind)
            .ok_or(InvalidSubject)?;
        Self::new(kind, id).ok_or(InvalidSubject)
    }
}

impl Event {
    /// What the event is about, if anything: see [`Subject`].
    pub fn subject(&self) -> Option<Subject> {
        // `Call` has read `call_id` into `id` already when there is no string `id`.
        let id = match self {
            Self::CallStarted(call)
            | Self::CallInitiated(call)
            | Self::CallRinging(call)
            | Self::CallAnswered(call)
            | Self::CallCompleted(call)
            | Self::CallFailed(call)
            | Self::CallTransferred(call)
            | Self::CallRecordingReady(call)
            | Self::CallTranscriptReady(call) => &call.id,
            Self::AppointmentCreated(appointment)
            | Self::AppointmentUpdated(appointment)
            | Self::AppointmentCancelled(appointment)
            | Self::AppointmentReminder(appointment) => &appointment.id,
            Self::AgentCreated(agent) | Self::AgentUpdated(agent) | Self::AgentDeleted(agent) => {
                &agent.id
            }
            Self::PhoneNumberAssigned(number) | Self::PhoneNumberReleased(number) => &number.id,
            Self::CreditsLow(_) | Self::Unknown { .. } => return None,
        };
        Subject::from_ids(&self.kind(), id.as_deref(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FromEventData;

    #[test]
    fn each_family_has_its_kind_of_subject_and_others_none() {
        assert_eq!(
            SubjectKind::of(&EventKind::CallTranscriptReady),
            Some(SubjectKind::Call)
        );
        assert_eq!(
            SubjectKind::of(&EventKind::PhoneNumberReleased),
            Some(SubjectKind::PhoneNumber)
        );
        assert_eq!(SubjectKind::of(&EventKind::CreditsLow), None);
        assert_eq!(SubjectKind::of(&"call.voicemail".into()), None);
        for name in EventKind::KNOWN {
            let kind = EventKind::from(*name);
            let expected = (kind != EventKind::CreditsLow).then_some(());
            assert_eq!(SubjectKind::of(&kind).map(|_| ()), expected, "{name}");
        }
    }

    #[test]
    fn a_call_falls_back_to_call_id_and_others_do_not() {
        let call = Subject::from_ids(&EventKind::CallAnswered, None, Some("call_9"));
        assert_eq!(call.unwrap().to_string(), "call:call_9");
        let both = Subject::from_ids(&EventKind::CallAnswered, Some("call_1"), Some("call_9"));
        assert_eq!(both.unwrap().id(), "call_1");
        assert_eq!(
            Subject::from_ids(&EventKind::AppointmentCreated, None, Some("call_9")),
            None
        );
    }

    #[test]
    fn empty_and_overlong_ids_make_no_subject() {
        assert_eq!(Subject::new(SubjectKind::Agent, ""), None);
        let long = "a".repeat(Subject::MAX_ID_LEN + 1);
        assert_eq!(Subject::new(SubjectKind::Agent, &long), None);
        assert!(Subject::new(SubjectKind::Agent, &long[1..]).is_some());
    }

    #[test]
    fn the_text_form_reads_back() {
        for text in ["call:call_1", "phone_number:pn:2", "agent:a b"] {
            assert_eq!(text.parse::<Subject>().unwrap().to_string(), text);
        }
        for text in ["call", "call:", "sms:1", ":1"] {
            assert_eq!(text.parse::<Subject>(), Err(InvalidSubject), "{text}");
        }
    }

    #[test]
    fn a_typed_event_names_the_subject_its_model_reads() {
        let event = |kind: EventKind, data| Event::from_event_data(&kind, data).unwrap();
        let appointment = event(
            EventKind::AppointmentUpdated,
            serde_json::json!({"id": "appt_1", "call_id": "call_2"}),
        );
        assert_eq!(
            appointment.subject().unwrap().to_string(),
            "appointment:appt_1"
        );
        let numeric = event(EventKind::CallCompleted, serde_json::json!({"id": 7}));
        assert_eq!(
            numeric.subject(),
            None,
            "an id that is not a string is none"
        );
    }
}
