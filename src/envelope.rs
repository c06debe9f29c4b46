//! One parse of a verified body's envelope: `event`, `timestamp`, `webhook_id` and where
//! `data` lies.
//!
//! The layer parses verified bytes once, so the span can name the event; the extractor then
//! deserializes only the `data` slice instead of scanning the whole body again.

use std::{borrow::Cow, ops::Range};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::EventKind;

/// The envelope fields of a verified delivery.
///
/// `event` and `timestamp` are checked separately, so the layer can judge freshness by the
/// timestamp even when `event` is missing (the extractor then refuses the event).
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) kind: Result<EventKind, EnvelopeError>,
    pub(crate) timestamp: Result<DateTime<Utc>, EnvelopeError>,
    pub(crate) webhook_id: Option<String>,
    /// Byte range of `data`'s JSON text in the body; `None` when `data` is absent or `null`.
    pub(crate) data: Option<Range<usize>>,
}

/// Why a verified body is not a usable envelope.
///
/// Messages carry positions, never values: a body may hold phone numbers and transcripts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvelopeError {
    #[error("the body is not valid JSON (line {line}, column {column})")]
    Syntax { line: usize, column: usize },
    #[error(
        "the body is not a Ringyo event envelope, a JSON object (line {line}, column {column})"
    )]
    Shape { line: usize, column: usize },
    #[error("the envelope has no string `event` field")]
    MissingEvent,
    #[error("the envelope has no string `timestamp` field")]
    MissingTimestamp,
    #[error("the envelope's `timestamp` is not an RFC 3339 date-time")]
    InvalidTimestamp,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    event: LenientStr<'a>,
    #[serde(borrow, default)]
    timestamp: LenientStr<'a>,
    #[serde(borrow, default)]
    webhook_id: LenientStr<'a>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// A string field that reads as `None` when it holds anything else, so one odd field does not
/// make the whole envelope unreadable; borrowed from the body when it has no escapes.
#[derive(Default)]
struct LenientStr<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for LenientStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = LenientStr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(LenientStr(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(LenientStr(None))
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

impl Envelope {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        let raw: Raw<'_> = serde_json::from_slice(body).map_err(|err| {
            let (line, column) = (err.line(), err.column());
            if err.is_data() {
                EnvelopeError::Shape { line, column }
            } else {
                EnvelopeError::Syntax { line, column }
            }
        })?;
        let kind = raw
            .event
            .0
            .map(|name| EventKind::from(&*name))
            .ok_or(EnvelopeError::MissingEvent);
        let timestamp = raw
            .timestamp
            .0
            .ok_or(EnvelopeError::MissingTimestamp)
            .and_then(|timestamp| {
                DateTime::parse_from_rfc3339(&timestamp)
                    .map_err(|_| EnvelopeError::InvalidTimestamp)
            })
            .map(|timestamp| timestamp.with_timezone(&Utc));
        // `RawValue` borrows from `body`, so its offset in `body` is a pointer difference.
        let data = raw.data.map(|data| {
            let start = data.get().as_ptr() as usize - body.as_ptr() as usize;
            start..start + data.get().len()
        });
        Ok(Self {
            kind,
            timestamp,
            webhook_id: raw.webhook_id.0.map(Cow::into_owned),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_fields_and_data_range_are_found() {
        let body = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00+02:00","webhook_id":"wh_abc123","data":{"id":"call_1"},"extra":1}"#;
        let env = Envelope::parse(body).unwrap();
        assert_eq!(env.kind, Ok(EventKind::CallCompleted));
        assert_eq!(
            env.timestamp.unwrap().to_rfc3339(),
            "2024-01-15T08:30:00+00:00"
        );
        assert_eq!(env.webhook_id.as_deref(), Some("wh_abc123"));
        assert_eq!(&body[env.data.unwrap()], br#"{"id":"call_1"}"#);
    }

    #[test]
    fn escaped_event_name_and_absent_data_are_fine() {
        let body =
            br#"{"data":null,"timestamp":"2024-01-15T10:30:00Z","event":"call\u002ecompleted"}"#;
        let env = Envelope::parse(body).unwrap();
        assert_eq!(env.kind, Ok(EventKind::CallCompleted));
        assert_eq!(env.data, None);
        assert_eq!(env.webhook_id, None);
    }

    #[test]
    fn broken_envelopes_say_why_without_values() {
        let cases: [(&[u8], EnvelopeError); 3] = [
            (b"{\"event\":", EnvelopeError::Syntax { line: 1, column: 9 }),
            (b"not json", EnvelopeError::Syntax { line: 1, column: 2 }),
            (
                b"\"a string\"",
                EnvelopeError::Shape {
                    line: 1,
                    column: 10,
                },
            ),
        ];
        for (body, expected) in cases {
            let err = Envelope::parse(body).unwrap_err();
            assert_eq!(err, expected, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn event_and_timestamp_fail_independently() {
        let no_event = Envelope::parse(br#"{"timestamp":"2024-01-15T10:30:00Z"}"#).unwrap();
        assert_eq!(no_event.kind, Err(EnvelopeError::MissingEvent));
        assert!(no_event.timestamp.is_ok());

        let no_time = Envelope::parse(br#"{"event":"credits.low"}"#).unwrap();
        assert_eq!(no_time.timestamp, Err(EnvelopeError::MissingTimestamp));
        assert!(no_time.kind.is_ok());

        let bad_time =
            Envelope::parse(br#"{"event":"credits.low","timestamp":"+15551234567"}"#).unwrap();
        let err = bad_time.timestamp.unwrap_err();
        assert_eq!(err, EnvelopeError::InvalidTimestamp);
        assert!(!err.to_string().contains("1555"));

        // Fields of another JSON type read as absent instead of failing the whole envelope.
        let odd = Envelope::parse(
            br#"{"event":7,"timestamp":{"at":[1,2]},"webhook_id":42,"data":{"id":"c"}}"#,
        )
        .unwrap();
        assert_eq!(odd.kind, Err(EnvelopeError::MissingEvent));
        assert_eq!(odd.timestamp, Err(EnvelopeError::MissingTimestamp));
        assert_eq!(odd.webhook_id, None);
        assert!(odd.data.is_some());
    }
}
