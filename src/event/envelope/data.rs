//! [`parse`]: the full reading of the envelope, `data` typed as the handler wants it.
//!
//! `data` streams straight into the handler's type as soon as the event's name is known: one
//! pass over the body. A body whose `data` comes before `event` keeps it raw until the name
//! comes, which costs one more pass over `data`, never a wrong answer.

use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, MapAccess};
use serde_json::value::RawValue;

use super::{
    data_error::{data_error, data_from},
    fields::{self, Envelope, ReadData},
    EnvelopeError,
};
use crate::event::{EventKind, FromEventData};

/// Parses verified bytes into an event whose `data` is `T`, its `kind` and `timestamp` present.
pub(crate) fn parse<T: FromEventData>(body: &[u8]) -> Result<Envelope<T>, EnvelopeError> {
    let text = fields::text(body)?;
    let envelope = match fields::read::<Typed<'_, T>>(&text) {
        Ok(envelope) => envelope,
        // A data error: the body is no object, a key came twice, or `data` does not fit `T`.
        Err(EnvelopeError::Shape { .. } | EnvelopeError::Duplicate(_)) => {
            return Err(stopped::<T>(&text));
        }
        Err(err) => return Err(err),
    };
    let kind = envelope.required()?.0.clone();
    let data = match envelope.data {
        Typed::Parsed(data) => data,
        Typed::Absent => data_from(&kind, "null")?,
        Typed::Raw(raw) => data_from(&kind, raw.get())?,
    };
    Ok(Envelope {
        kind: Some(kind),
        timestamp: envelope.timestamp,
        webhook_id: envelope.webhook_id,
        data,
    })
}

/// Why a typed reading stopped with a data error, found by reading `text` again with `data`
/// kept raw, which cannot fail: then only the envelope's own errors remain. Only on this error
/// path, so a delivery that fits pays nothing for it.
fn stopped<T: FromEventData>(text: &str) -> EnvelopeError {
    match fields::read::<Option<&RawValue>>(text) {
        Err(err) => err,
        // `data` streamed into `T`, so `event` came before it.
        Ok(Envelope {
            kind: Some(kind),
            data,
            ..
        }) => data_error::<T>(&kind, data.map_or("null", RawValue::get)),
        Ok(_) => EnvelopeError::MissingEvent,
    }
}

/// `data` on its way to `T`.
#[derive(Default)]
enum Typed<'de, T> {
    #[default]
    Absent,
    Parsed(T),
    /// `data` came before `event`, so it waits as raw JSON until the name is known.
    Raw(&'de RawValue),
}

impl<'de, T: FromEventData> ReadData<'de> for Typed<'de, T> {
    fn read<A: MapAccess<'de>>(map: &mut A, kind: Option<&EventKind>) -> Result<Self, A::Error> {
        match kind {
            Some(kind) => map
                .next_value_seed(TypedSeed::<T>(kind, PhantomData))
                .map(Self::Parsed),
            None => map.next_value().map(Self::Raw),
        }
    }
}

/// `data` as raw JSON: the reading that tells a typed reading's errors apart.
impl<'de> ReadData<'de> for Option<&'de RawValue> {
    fn read<A: MapAccess<'de>>(map: &mut A, _: Option<&EventKind>) -> Result<Self, A::Error> {
        map.next_value().map(Some)
    }
}

/// Deserializes `data` as `T` for the event named.
struct TypedSeed<'a, T>(&'a EventKind, PhantomData<T>);

impl<'de, T: FromEventData> DeserializeSeed<'de> for TypedSeed<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::from_event_data(self.0, deserializer)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::event::{envelope::Head, Event};

    const BODY: &[u8] = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00+02:00","webhook_id":"wh_abc123","data":{"id":"call_1"},"extra":1}"#;

    #[test]
    fn event_parses_in_one_pass_in_any_key_order() {
        let parsed = parse::<Event>(BODY).unwrap();
        assert_eq!(parsed.kind, Some(EventKind::CallCompleted));
        assert_eq!(
            parsed.timestamp.unwrap().to_rfc3339(),
            "2024-01-15T08:30:00+00:00"
        );
        assert_eq!(parsed.webhook_id.as_deref(), Some("wh_abc123"));
        let Event::CallCompleted(call) = parsed.data else {
            panic!()
        };
        assert_eq!(call.id.as_deref(), Some("call_1"));

        // `data` before `event`: kept raw, then typed once the name is known.
        let body =
            br#"{"data":{"id":"call_2"},"event":"call.failed","timestamp":"2024-01-15T10:30:00Z"}"#;
        let Event::CallFailed(call) = parse::<Event>(body).unwrap().data else {
            panic!()
        };
        assert_eq!(call.id.as_deref(), Some("call_2"));

        // No `data`: the empty model, or `null` for a `Value`.
        let body = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:00Z"}"#;
        assert!(matches!(
            parse::<Event>(body).unwrap().data,
            Event::CreditsLow(_)
        ));
        assert_eq!(parse::<Value>(body).unwrap().data, Value::Null);
    }

    #[test]
    fn broken_events_get_the_right_error() {
        let cases: [(&[u8], EnvelopeError); 6] = [
            (
                br#"{"event":"x","timestamp":"2024-01-15T10:30:00Z","data":{"a":}}"#,
                EnvelopeError::Syntax {
                    line: 1,
                    column: 61,
                },
            ),
            (
                br#"{"event":"x","timestamp":"2024-01-15T10:30:00Z"} trailing"#,
                EnvelopeError::Syntax {
                    line: 1,
                    column: 50,
                },
            ),
            (
                br#"{"timestamp":"2024-01-15T10:30:00Z"}"#,
                EnvelopeError::MissingEvent,
            ),
            (
                br#"{"event":7,"timestamp":"2024-01-15T10:30:00Z"}"#,
                EnvelopeError::MissingEvent,
            ),
            (
                br#"{"event":"x","event":"y","timestamp":"2024-01-15T10:30:00Z"}"#,
                EnvelopeError::Duplicate("event"),
            ),
            (
                br#"{"event":"x","timestamp":"yesterday"}"#,
                EnvelopeError::InvalidTimestamp,
            ),
        ];
        for (body, expected) in cases {
            let err = parse::<Value>(body).unwrap_err();
            assert_eq!(err, expected, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn odd_field_types_read_as_absent() {
        let body = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00Z","webhook_id":42,"data":{}}"#;
        assert_eq!(parse::<Value>(body).unwrap().webhook_id, None);
    }

    /// Ringyo's Node sender writes half an emoji as a lone surrogate escape when it cuts a
    /// string: read, with U+FFFD in its place, by the door and the worker alike.
    #[test]
    fn a_lone_surrogate_is_read_as_the_replacement_character() {
        let body = br#"{"event":"call.transcript.ready","timestamp":"2024-01-15T10:30:00Z","data":{"id":"call_1 \ud83d","transcript":[{"role":"user","content":"bye \ud83d\ude00 \ude00"}]}}"#;
        assert!(serde_json::from_slice::<Value>(body).is_err());
        Head::scan(body).unwrap().readable(body).unwrap();
        let Event::CallTranscriptReady(call) = parse::<Event>(body).unwrap().data else {
            panic!()
        };
        assert_eq!(call.id.as_deref(), Some("call_1 \u{FFFD}"));
        let data = parse::<Value>(body).unwrap().data;
        assert_eq!(data["transcript"][0]["content"], "bye \u{1F600} \u{FFFD}");
    }
}
