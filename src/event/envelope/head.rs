//! [`Head`]: what the layer (the door) reads of the envelope: `event` and `timestamp` to
//! answer for, and whether the inbox's worker can read the rest.

use chrono::{DateTime, Utc};
use serde::de::MapAccess;

use super::{
    fields::{self, Envelope, ReadData},
    walk::{Walk, Walked},
    EnvelopeError,
};
use crate::event::{EventKind, Subject};

/// The envelope as the layer read it, `data` walked rather than built; empty for a body the
/// verifier could not read with its timestamp check off, which lets such a body on to
/// [`readable`](Self::readable).
#[derive(Debug, Default, Clone)]
pub(crate) struct Head(Option<Envelope<Walked>>);

/// The door walks `data`, and keeps what it is for [`Head::readable`], which knows the event
/// by then.
impl<'de> ReadData<'de> for Walked {
    fn read<A: MapAccess<'de>>(map: &mut A, _: Option<&EventKind>) -> Result<Self, A::Error> {
        map.next_value_seed(Walk::OWN_KEYS)
    }
}

impl Head {
    /// Reads `event` and `timestamp`, and checks that the body is one JSON object, in UTF-8,
    /// whose envelope keys each appear once, and that every value in it is one the full parse
    /// can read (see [`fields::read`]).
    pub(crate) fn scan(body: &[u8]) -> Result<Self, EnvelopeError> {
        walk(body).map(|envelope| Self(Some(envelope)))
    }

    /// The event's name, if the envelope has a string `event`.
    pub(crate) fn kind(&self) -> Option<&EventKind> {
        self.0.as_ref()?.kind.as_ref()
    }

    /// The envelope's `timestamp`, or why there is none.
    pub(crate) fn timestamp(&self) -> Result<DateTime<Utc>, EnvelopeError> {
        self.0
            .as_ref()
            .map_or(Err(EnvelopeError::MissingTimestamp), |envelope| {
                envelope.timestamp.clone()
            })
    }

    /// What the event is about, read from `data`'s own `id` and `call_id` as the typed
    /// models read them (see [`Subject`]).
    pub(crate) fn subject(&self) -> Option<Subject> {
        let envelope = self.0.as_ref()?;
        let Walked::Object { ids, .. } = &envelope.data else {
            return None;
        };
        Subject::from_ids(
            envelope.kind.as_ref()?,
            ids.id.as_deref(),
            ids.call_id.as_deref(),
        )
    }

    /// Whether the full parse into [`Event`](crate::Event) reads the body this head was read
    /// from (`body`): the door's last check, after freshness, in the full parse's order
    /// (`timestamp`, `event`, then `data`). An empty head (the timestamp check off) scans the
    /// body again for the reason.
    ///
    /// A known event's model reads `data` as an object (or `null`) whose own fields each come
    /// once (serde refuses a second value for a field); an unknown event keeps any `data` as
    /// a `Value`, so nothing Ringyo adds is refused.
    pub(crate) fn readable(&self, body: &[u8]) -> Result<(), EnvelopeError> {
        let rescanned;
        let envelope = match &self.0 {
            Some(envelope) => envelope,
            None => {
                rescanned = walk(body)?;
                &rescanned
            }
        };
        match (envelope.required()?.0, &envelope.data) {
            (EventKind::Unknown(_), _)
            | (_, Walked::Null | Walked::Object { repeats: false, .. }) => Ok(()),
            (_, Walked::Object { repeats: true, .. }) => Err(EnvelopeError::DataDuplicate),
            (_, Walked::Other) => Err(EnvelopeError::DataNotObject),
        }
    }
}

/// The envelope of `body`, `data` walked.
fn walk(body: &[u8]) -> Result<Envelope<Walked>, EnvelopeError> {
    fields::read(&fields::text(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{envelope::parse, Event};

    #[test]
    fn head_reads_past_data_when_it_comes_first() {
        let body = br#"{"data":{"nested":[1,{"a":"}"}]},"timestamp":"2024-01-15T10:30:00Z","event":"call.failed"}"#;
        let head = Head::scan(body).unwrap();
        assert_eq!(head.kind(), Some(&EventKind::CallFailed));
        assert!(head.timestamp().is_ok());
    }

    /// Every body the head scan lets through, the full parse into `Event` (the inbox worker's)
    /// reads; the rest are refused with why.
    #[test]
    fn the_door_refuses_what_the_worker_cannot_read_and_says_why() {
        let valid = r#""event":"call.completed","timestamp":"2024-01-15T10:30:00Z""#;
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        let too_deep = |column| Err(EnvelopeError::TooDeep { line: 1, column });
        let out_of_range = |column| Err(EnvelopeError::NumberOutOfRange { line: 1, column });
        let cases: Vec<(String, Result<(), EnvelopeError>)> = vec![
            // serde_json reads 127 levels, the envelope's object included.
            (
                format!("{{{valid},\"data\":{{\"a\":{}}}}}", nested(125)),
                Ok(()),
            ),
            (
                format!("{{{valid},\"data\":{{\"a\":{}}}}}", nested(126)),
                too_deep(199),
            ),
            // Anywhere in the body, not only in `data`.
            (format!("{{{valid},\"x\":{}}}", nested(200)), too_deep(192)),
            (
                format!("{{{valid},\"data\":{{\"a\":1.7976931348623157e308}}}}"),
                Ok(()),
            ),
            (
                format!("{{{valid},\"data\":{{\"a\":[1e400]}}}}"),
                out_of_range(79),
            ),
            (
                format!("{{{valid},\"webhook_id\":-1e400}}"),
                out_of_range(80),
            ),
            // Below the range is zero, which serde_json reads.
            (format!("{{{valid},\"data\":{{\"a\":1e-400}}}}"), Ok(())),
            (format!("{{{valid},\"data\":null}}"), Ok(())),
            (
                format!("{{{valid},\"data\":[]}}"),
                Err(EnvelopeError::DataNotObject),
            ),
            (
                format!("{{{valid},\"data\":\"x\"}}"),
                Err(EnvelopeError::DataNotObject),
            ),
            // An unknown event keeps any `data` as a `Value`.
            (
                r#"{"event":"sms.received","timestamp":"2024-01-15T10:30:00Z","data":[1]}"#.into(),
                Ok(()),
            ),
            (
                r#"{"event":"sms.received","timestamp":"2024-01-15T10:30:00Z","data":{"a":1,"a":2}}"#.into(),
                Ok(()),
            ),
            // The models refuse a second value for a field; deeper, the last one is read.
            (
                format!("{{{valid},\"data\":{{\"id\":\"a\",\"\\u0069d\":\"b\"}}}}"),
                Err(EnvelopeError::DataDuplicate),
            ),
            (
                format!("{{{valid},\"data\":{{\"metadata\":{{\"a\":1,\"a\":2}}}}}}"),
                Ok(()),
            ),
            (
                r#"{"timestamp":"2024-01-15T10:30:00Z","data":{}}"#.into(),
                Err(EnvelopeError::MissingEvent),
            ),
            (
                r#"{"event":["call.completed"],"timestamp":"2024-01-15T10:30:00Z"}"#.into(),
                Err(EnvelopeError::MissingEvent),
            ),
            // The timestamp first, as the full parse reports it first.
            (
                r#"{"data":{}}"#.into(),
                Err(EnvelopeError::MissingTimestamp),
            ),
        ];
        for (body, expected) in cases {
            let shown = body.chars().take(100).collect::<String>();
            let door = Head::scan(body.as_bytes()).and_then(|head| head.readable(body.as_bytes()));
            assert_eq!(door, expected, "{shown}");
            if door.is_ok() {
                parse::<Event>(body.as_bytes()).expect(&shown);
            }
        }
        // With the timestamp check off, the verifier keeps no head for a body it could not
        // scan: `readable` finds the reason again.
        let deep = format!("{{{valid},\"data\":{}}}", nested(300));
        assert!(matches!(
            Head::default().readable(deep.as_bytes()),
            Err(EnvelopeError::TooDeep { .. })
        ));
    }

    /// The subject the inbox stores (read by the door) is the one the handler's typed event
    /// names.
    #[test]
    fn the_door_names_the_subject_the_typed_event_names() {
        let bodies = [
            r#"{"event":"call.ringing","timestamp":"2024-01-15T10:30:00Z","data":{"id":"call_1"}}"#,
            r#"{"data":{"call_id":"call_2","x":{"id":"no"}},"event":"call.completed","timestamp":"2024-01-15T10:30:00Z"}"#,
            r#"{"event":"call.answered","timestamp":"2024-01-15T10:30:00Z","data":{"id":5,"call_id":"call_3"}}"#,
            r#"{"event":"appointment.created","timestamp":"2024-01-15T10:30:00Z","data":{"call_id":"call_4"}}"#,
            r#"{"event":"agent.updated","timestamp":"2024-01-15T10:30:00Z","data":{"\u0069d":"ag_1"}}"#,
            r#"{"event":"phone_number.assigned","timestamp":"2024-01-15T10:30:00Z","data":{"id":""}}"#,
            r#"{"event":"credits.low","timestamp":"2024-01-15T10:30:00Z","data":{"id":"acct"}}"#,
            r#"{"event":"call.voicemail","timestamp":"2024-01-15T10:30:00Z","data":{"id":"call_5"}}"#,
            r#"{"event":"call.failed","timestamp":"2024-01-15T10:30:00Z","data":null}"#,
            r#"{"event":"call.failed","timestamp":"2024-01-15T10:30:00Z"}"#,
        ];
        let mut named = 0;
        for body in bodies {
            let head = Head::scan(body.as_bytes()).unwrap();
            let event = parse::<Event>(body.as_bytes()).unwrap().data;
            assert_eq!(head.subject(), event.subject(), "{body}");
            named += usize::from(head.subject().is_some());
        }
        assert_eq!(named, 4);
    }

    #[test]
    fn head_says_why_there_is_no_timestamp() {
        let cases: [(&[u8], EnvelopeError); 5] = [
            (b"{\"event\":", EnvelopeError::Syntax { line: 1, column: 9 }),
            (
                b"{\n\"event\":\"\xff\"}",
                EnvelopeError::Syntax {
                    line: 2,
                    column: 10,
                },
            ),
            (
                b"\"a string\"",
                EnvelopeError::Shape {
                    line: 1,
                    column: 10,
                },
            ),
            (br#"{"event":"x"}"#, EnvelopeError::MissingTimestamp),
            (
                br#"{"event":"x","timestamp":"+15551234567"}"#,
                EnvelopeError::InvalidTimestamp,
            ),
        ];
        for (body, expected) in cases {
            let err = Head::scan(body)
                .and_then(|head| head.timestamp())
                .unwrap_err();
            assert_eq!(err, expected, "{}", String::from_utf8_lossy(body));
            assert!(!err.to_string().contains("1555"));
        }
    }
}
