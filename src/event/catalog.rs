//! The events Ringyo sends: their names ([`EventKind`]) and typed payloads ([`Event`]).
//!
//! The names are those of both Ringyo pages together (they list different sets). Ringyo adds
//! events over time, so both enums keep a name they do not know in an `Unknown` variant instead
//! of failing.

use serde::{
    de::{DeserializeOwned, Deserializer},
    Deserialize,
};

use super::model::{Agent, Appointment, Call, Credits, PhoneNumber};

/// How the `data` of an event is typed in [`RingyoEvent<T>`](crate::RingyoEvent).
///
/// Every `serde` type implements it by deserializing `data` (so `serde_json::Value` and your
/// own structs work as they are). [`Event`] implements it by choosing its variant from the
/// event's name. Implement it yourself for a type that needs the name and is not `Deserialize`.
///
/// It receives a deserializer, not bytes, so the extractor can stream `data` straight into the
/// type while it parses the envelope: one pass over the body.
pub trait FromEventData: Sized {
    /// Builds the value from the event's name and a deserializer of its `data` (which reads
    /// `null` when the envelope has none).
    ///
    /// # Errors
    ///
    /// The deserializer's error if `data` does not fit the type.
    fn from_event_data<'de, D: Deserializer<'de>>(
        kind: &EventKind,
        data: D,
    ) -> Result<Self, D::Error>;
}

impl<T: DeserializeOwned> FromEventData for T {
    fn from_event_data<'de, D: Deserializer<'de>>(
        _kind: &EventKind,
        data: D,
    ) -> Result<Self, D::Error> {
        T::deserialize(data)
    }
}

macro_rules! events {
    ($( $(#[$doc:meta])* $variant:ident($data:ty) = $wire:literal, )*) => {
        string_enum! {
            /// The name of an event, the envelope's `event` field.
            ///
            /// ```
            /// use ringyo_webhook::EventKind;
            ///
            /// assert_eq!(EventKind::from("call.completed"), EventKind::CallCompleted);
            /// assert_eq!(EventKind::CallCompleted.as_str(), "call.completed");
            /// assert_eq!(
            ///     EventKind::from("call.voicemail"),
            ///     EventKind::Unknown("call.voicemail".into())
            /// );
            /// ```
            pub enum EventKind {
                $( $(#[$doc])* $variant = $wire, )*
            }
        }

        /// A typed event: its name chooses the variant, its `data` the payload.
        ///
        /// Use it as `RingyoEvent<Event>` (the default). Payload models are lenient: every
        /// field is optional and unknown fields are kept, so a verified event never fails to
        /// parse because Ringyo added something.
        ///
        /// ```
        /// use ringyo_webhook::{Event, EventKind, FromEventData};
        ///
        /// let data = r#"{"id":"call_xyz789","status":"completed","duration":42}"#;
        /// let mut json = serde_json::Deserializer::from_str(data);
        /// let event = Event::from_event_data(&EventKind::CallCompleted, &mut json).unwrap();
        /// match event {
        ///     Event::CallCompleted(call) => assert_eq!(call.duration, Some(42.0)),
        ///     other => panic!("unexpected {other:?}"),
        /// }
        ///
        /// let new = Event::from_event_data(&"call.voicemail".into(), serde_json::json!({})).unwrap();
        /// assert_eq!(new.kind().as_str(), "call.voicemail");
        /// ```
        ///
        /// `Debug` hides personal data, as the models' does: an unknown event's data shows
        /// as `<redacted>`.
        #[derive(Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Event {
            $( $(#[$doc])* $variant($data), )*
            /// An event this version of the crate does not know, with its name and raw `data`.
            Unknown {
                /// The event's name.
                name: String,
                /// Its `data`, as received (`Null` when absent).
                data: serde_json::Value,
            },
        }

        impl Event {
            /// The event's name.
            pub fn kind(&self) -> EventKind {
                match self {
                    $( Self::$variant(_) => EventKind::$variant, )*
                    Self::Unknown { name, .. } => EventKind::Unknown(name.clone()),
                }
            }
        }

        impl std::fmt::Debug for Event {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $( Self::$variant(data) => f.debug_tuple(stringify!($variant)).field(data).finish(), )*
                    Self::Unknown { name, .. } => f
                        .debug_struct("Unknown")
                        .field("name", name)
                        .field("data", &format_args!("<redacted>"))
                        .finish(),
                }
            }
        }

        impl FromEventData for Event {
            fn from_event_data<'de, D: Deserializer<'de>>(
                kind: &EventKind,
                data: D,
            ) -> Result<Self, D::Error> {
                Ok(match kind {
                    // An absent or `null` `data` is the empty model.
                    $( EventKind::$variant => {
                        Self::$variant(Option::<$data>::deserialize(data)?.unwrap_or_default())
                    } )*
                    EventKind::Unknown(name) => Self::Unknown {
                        name: name.clone(),
                        data: serde_json::Value::deserialize(data)?,
                    },
                })
            }
        }
    };
}

events! {
    /// `call.started`: a call has been initiated.
    CallStarted(Call) = "call.started",
    /// `call.initiated`: an outbound call started dialing.
    CallInitiated(Call) = "call.initiated",
    /// `call.ringing`: the call is ringing.
    CallRinging(Call) = "call.ringing",
    /// `call.answered`: the call was answered.
    CallAnswered(Call) = "call.answered",
    /// `call.completed`: the call ended successfully.
    CallCompleted(Call) = "call.completed",
    /// `call.failed`: the call failed (error, busy, no answer).
    CallFailed(Call) = "call.failed",
    /// `call.transferred`: the call was transferred to a human.
    CallTransferred(Call) = "call.transferred",
    /// `call.recording.ready`: the recording is available.
    CallRecordingReady(Call) = "call.recording.ready",
    /// `call.transcript.ready`: the transcript is available.
    CallTranscriptReady(Call) = "call.transcript.ready",
    /// `appointment.created`: a new appointment was booked.
    AppointmentCreated(Appointment) = "appointment.created",
    /// `appointment.updated`: an appointment was modified.
    AppointmentUpdated(Appointment) = "appointment.updated",
    /// `appointment.cancelled`: an appointment was cancelled.
    AppointmentCancelled(Appointment) = "appointment.cancelled",
    /// `appointment.reminder`: a reminder was sent.
    AppointmentReminder(Appointment) = "appointment.reminder",
    /// `agent.created`: a new agent was created.
    AgentCreated(Agent) = "agent.created",
    /// `agent.updated`: an agent's configuration changed.
    AgentUpdated(Agent) = "agent.updated",
    /// `agent.deleted`: an agent was deleted.
    AgentDeleted(Agent) = "agent.deleted",
    /// `phone_number.assigned`: a new number was provisioned.
    PhoneNumberAssigned(PhoneNumber) = "phone_number.assigned",
    /// `phone_number.released`: a number was released.
    PhoneNumberReleased(PhoneNumber) = "phone_number.released",
    /// `credits.low`: the credit balance fell below the threshold.
    CreditsLow(Credits) = "credits.low",
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> serde_json::Deserializer<serde_json::de::StrRead<'_>> {
        serde_json::Deserializer::from_str(text)
    }

    #[test]
    fn every_known_name_round_trips() {
        assert_eq!(EventKind::KNOWN.len(), 19);
        for name in EventKind::KNOWN {
            let kind = EventKind::from(*name);
            assert!(!matches!(kind, EventKind::Unknown(_)), "{name}");
            assert_eq!(kind.as_str(), *name);
            let event = Event::from_event_data(&kind, &mut json(r#"null"#)).unwrap();
            assert_eq!(event.kind(), kind);
        }
    }

    #[test]
    fn unknown_event_keeps_name_and_data() {
        let kind = EventKind::from("call.voicemail");
        let event = Event::from_event_data(&kind, &mut json(r#"{"seconds":3}"#)).unwrap();
        assert_eq!(
            event,
            Event::Unknown {
                name: "call.voicemail".into(),
                data: serde_json::json!({"seconds": 3}),
            }
        );
    }

    #[test]
    fn unknown_event_debug_hides_its_data() {
        let event =
            Event::from_event_data(&"sms.received".into(), &mut json(r#"{"text":"hi mum"}"#));
        let debug = format!("{:?}", event.unwrap());
        assert!(
            debug.contains("sms.received") && !debug.contains("hi mum"),
            "{debug}"
        );
    }

    #[test]
    fn any_serde_type_can_be_the_data() {
        #[derive(serde::Deserialize)]
        struct Mine {
            id: String,
        }
        let mine =
            Mine::from_event_data(&EventKind::CallCompleted, &mut json(r#"{"id":"c1","x":1}"#));
        assert_eq!(mine.unwrap().id, "c1");
        assert!(Mine::from_event_data(&EventKind::CallCompleted, &mut json(r#"{}"#)).is_err());
    }
}
