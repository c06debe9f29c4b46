//! [`Envelope`]: the one reading of `event`, `timestamp`, `webhook_id` and `data`, with `data`
//! read as the caller's [`ReadData`] says.

use std::{borrow::Cow, fmt, marker::PhantomData};

use chrono::{DateTime, Utc};
use serde::de::{Deserializer, MapAccess, Visitor};

use super::{
    keys::{Field, Seen},
    lenient::LenientStr,
    walk::Walk,
    EnvelopeError,
};
use crate::event::{surrogates, EventKind};

/// An envelope as read: each field as far as it could be read, and `data` as `D`.
///
/// Nothing is refused for a missing or odd field while reading, as the layer answers for the
/// timestamp before anything else (a stale delivery without an `event` is stale);
/// [`required`](Self::required) says what is missing.
#[derive(Debug, Clone)]
pub(crate) struct Envelope<D> {
    /// `event`, when it is a string.
    pub(crate) kind: Option<EventKind>,
    /// `timestamp`, or why there is none.
    pub(crate) timestamp: Result<DateTime<Utc>, EnvelopeError>,
    /// `webhook_id`, when it is a string.
    pub(crate) webhook_id: Option<String>,
    pub(crate) data: D,
}

impl<D> Envelope<D> {
    /// The event's name and time, or why there are none: the timestamp first, as the layer's
    /// freshness check reads it first, so the same body gets the same answer with the check on
    /// or off and from the layer or the extractor.
    pub(crate) fn required(&self) -> Result<(&EventKind, DateTime<Utc>), EnvelopeError> {
        let timestamp = self.timestamp.clone()?;
        let kind = self.kind.as_ref().ok_or(EnvelopeError::MissingEvent)?;
        Ok((kind, timestamp))
    }
}

/// What `data` becomes in an [`Envelope`]; its `Default` is what an envelope without `data`
/// has.
pub(super) trait ReadData<'de>: Default {
    /// Reads the value of `data`; `kind` is the event's name when `event` came first.
    fn read<A: MapAccess<'de>>(map: &mut A, kind: Option<&EventKind>) -> Result<Self, A::Error>;
}

/// Reads `text` as an envelope, to its end.
///
/// The whole body is read: what the layer checks must be what every later reading reads, so
/// a key given twice ([`keys`](super::keys)) or bytes after the object are refused here. Every
/// value the envelope does not keep is walked as a `Value` would read it ([`walk`](super::walk)).
pub(super) fn read<'de, D: ReadData<'de>>(text: &'de str) -> Result<Envelope<D>, EnvelopeError> {
    let mut json = serde_json::Deserializer::from_str(text);
    json.deserialize_map(EnvelopeVisitor(PhantomData))
        .and_then(|envelope| json.end().map(|()| envelope))
        .map_err(|err| EnvelopeError::from_json(&err))
}

struct EnvelopeVisitor<D>(PhantomData<D>);

impl<'de, D: ReadData<'de>> Visitor<'de> for EnvelopeVisitor<D> {
    type Value = Envelope<D>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Ringyo event envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<D>, A::Error> {
        let mut envelope = Envelope {
            kind: None,
            timestamp: Err(EnvelopeError::MissingTimestamp),
            webhook_id: None,
            data: D::default(),
        };
        let mut seen = Seen::default();
        while let Some(field) = map.next_key::<Field>()? {
            seen.once(field)?;
            match field {
                Field::Event => {
                    envelope.kind = LenientStr::kind(map.next_value_seed(LenientStr::REQUIRED)?);
                }
                Field::Timestamp => {
                    let text = map.next_value_seed(LenientStr::REQUIRED)?;
                    envelope.timestamp = LenientStr::timestamp(text);
                }
                Field::WebhookId => {
                    let text = map.next_value_seed(LenientStr::OPTIONAL)?;
                    envelope.webhook_id = text.map(Cow::into_owned);
                }
                Field::Data => envelope.data = D::read(&mut map, envelope.kind.as_ref())?,
                Field::Other => {
                    map.next_value_seed(Walk::ANY)?;
                }
            }
        }
        Ok(envelope)
    }
}

/// The text every reading of the envelope parses: the body as UTF-8, with lone surrogate
/// escapes read as U+FFFD (see [`surrogates`]), so the layer and the worker read one text.
pub(super) fn text(body: &[u8]) -> Result<Cow<'_, str>, EnvelopeError> {
    utf8(body).map(surrogates::replace_lone)
}

/// The body as text: JSON is UTF-8 (RFC 8259), checked at once for the whole body, so bytes in
/// a skipped field that some parsers refuse and others replace never pass.
fn utf8(body: &[u8]) -> Result<&str, EnvelopeError> {
    std::str::from_utf8(body).map_err(|err| {
        let valid = &body[..err.valid_up_to()];
        let line_start = valid
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        EnvelopeError::Syntax {
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
            column: 1 + valid.len() - line_start,
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::event::envelope::{parse, Head};

    /// What a plain full parse (serde_json's `Value`, which keeps the last of a duplicate key)
    /// reads as the event's name and timestamp.
    fn full_parse(body: &[u8]) -> Option<(Option<EventKind>, Option<String>)> {
        let value = serde_json::from_slice::<Value>(body).ok()?;
        let field = |name: &str| value.get(name)?.as_str().map(str::to_owned);
        Some((
            field("event").as_deref().map(EventKind::from),
            field("timestamp"),
        ))
    }

    /// What the head scan must do with a body.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Expect {
        /// Accept it, reading what a full parse reads.
        Agree,
        /// Refuse it.
        Refuse,
    }

    #[test]
    fn head_reads_what_a_full_parse_reads_or_refuses_the_body() {
        use Expect::{Agree, Refuse};
        let valid = r#""event":"credits.low","timestamp":"2024-01-15T10:30:00Z""#;
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let cases: Vec<(Vec<u8>, Expect)> = vec![
            (format!("{{{valid},\"data\":{{}}}}").into(), Agree),
            // A key met twice after both fields were read: a full parse keeps the second.
            (
                format!("{{{valid},\"timestamp\":\"2020-01-01T00:00:00Z\"}}").into(),
                Refuse,
            ),
            (
                format!("{{{valid},\"event\":\"call.failed\"}}").into(),
                Refuse,
            ),
            (
                format!("{{{valid},\"\\u0074imestamp\":\"2020-01-01T00:00:00Z\"}}").into(),
                Refuse,
            ),
            (
                format!("{{{valid},\"data\":{{}},\"data\":{{}}}}").into(),
                Refuse,
            ),
            (
                format!("{{{valid},\"webhook_id\":\"a\",\"webhook_id\":\"b\"}}").into(),
                Refuse,
            ),
            // Escaped key names are the keys they spell.
            (
                br#"{"\u0065vent":"call.failed","timestamp":"2024-01-15T10:30:00Z"}"#.to_vec(),
                Agree,
            ),
            // `event` and `timestamp` inside `data` are `data`'s own.
            (
                format!("{{{valid},\"data\":{{\"event\":\"call.failed\",\"timestamp\":\"x\"}}}}")
                    .into(),
                Agree,
            ),
            // Bytes after the object: whitespace only.
            (format!("{{{valid}}} \n").into(), Agree),
            (
                format!("{{{valid}}}{{\"event\":\"call.failed\"}}").into(),
                Refuse,
            ),
            (format!("{{{valid}}},").into(), Refuse),
            (format!("{{{valid}, \"data\": {{}}").into(), Refuse),
            // A byte-order mark: not JSON (RFC 8259 forbids sending one).
            (
                [
                    b"\xEF\xBB\xBF".as_slice(),
                    format!("{{{valid}}}").as_bytes(),
                ]
                .concat(),
                Refuse,
            ),
            // Nesting past serde_json's limit: refused here, as by every parse that builds it.
            (format!("{{{valid},\"data\":{deep}}}").into(), Refuse),
            // Bytes that are not UTF-8 after the fields, in a key or in a skipped value.
            (
                [format!("{{{valid},\"").as_bytes(), b"\xff\":1}"].concat(),
                Refuse,
            ),
            (
                [format!("{{{valid},\"x\":\"").as_bytes(), b"\x97\"}"].concat(),
                Refuse,
            ),
        ];
        for (body, expect) in cases {
            let shown = String::from_utf8_lossy(&body)
                .chars()
                .take(100)
                .collect::<String>();
            let Ok(head) = Head::scan(&body) else {
                assert_eq!(expect, Refuse, "refused: {shown}");
                assert!(parse::<Value>(&body).is_err(), "{shown}");
                continue;
            };
            assert_ne!(expect, Refuse, "accepted: {shown}");
            let (kind, timestamp) = full_parse(&body).expect(&shown);
            assert_eq!(head.kind(), kind.as_ref(), "{shown}");
            assert_eq!(
                head.timestamp().unwrap(),
                DateTime::parse_from_rfc3339(&timestamp.unwrap()).unwrap(),
                "{shown}"
            );
            let parsed = parse::<Value>(&body).unwrap();
            assert_eq!(
                (parsed.kind.as_ref(), parsed.timestamp.clone()),
                (head.kind(), head.timestamp())
            );
        }
    }
}
