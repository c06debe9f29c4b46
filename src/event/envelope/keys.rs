//! The envelope's four keys, and the one rule about them: each comes at most once.
//!
//! Parsers disagree on a key given twice (most keep the last value, some the first), so a body
//! with a second `timestamp` would be checked for freshness on one value and handled on the
//! other. Every reading of the envelope therefore stops at the first key it meets again, with
//! the error [`Seen::once`] returns, whatever follows: the answer is the first fault in reading
//! order, as serde's derived structs report a duplicate field.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A key of the envelope object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Event,
    Timestamp,
    WebhookId,
    Data,
    /// A key the envelope does not name: read, and kept nowhere.
    Other,
}

impl Field {
    const NAMED: [Self; 4] = [Self::Event, Self::Timestamp, Self::WebhookId, Self::Data];

    fn name(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Timestamp => "timestamp",
            Self::WebhookId => "webhook_id",
            Self::Data => "data",
            Self::Other => "",
        }
    }

    /// The key whose repetition a message from [`Seen::once`] reports, once serde_json has
    /// carried it out of the reading (it keeps a message, its category and a position).
    ///
    /// Only a reading whose `data` cannot fail has no other data errors to confuse with it:
    /// a typed reading reads the body again as raw JSON to tell them apart.
    pub(super) fn repeated_in(message: &str) -> Option<&'static str> {
        let rest = message.strip_prefix(REPEATED)?;
        Self::NAMED.into_iter().map(Self::name).find(|name| {
            rest.strip_prefix(name)
                .is_some_and(|end| end.starts_with('`'))
        })
    }
}

/// How a message about a repeated key starts, the key and a backquote following.
const REPEATED: &str = "the envelope has more than one `";

/// Unescaped, as serde_json hands a key over: `"\u0065vent"` is `event`.
impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, key: &str) -> Result<Field, E> {
                Ok(Field::NAMED
                    .into_iter()
                    .find(|field| field.name() == key)
                    .unwrap_or(Field::Other))
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

/// The envelope's keys met so far.
#[derive(Debug, Default)]
pub(super) struct Seen([bool; Field::NAMED.len()]);

impl Seen {
    /// Notes `field`; a named key met before is the error the reading stops with.
    pub(super) fn once<E: de::Error>(&mut self, field: Field) -> Result<(), E> {
        let Some(index) = Field::NAMED.iter().position(|named| *named == field) else {
            return Ok(());
        };
        if std::mem::replace(&mut self.0[index], true) {
            return Err(E::custom(format_args!("{REPEATED}{}` field", field.name())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::event::envelope::{parse, EnvelopeError, Head};

    #[test]
    fn a_repeated_key_is_named_after_serde_json_carries_it_out() {
        for field in Field::NAMED {
            let mut seen = Seen::default();
            seen.once::<serde_json::Error>(field).unwrap();
            seen.once::<serde_json::Error>(Field::Other).unwrap();
            seen.once::<serde_json::Error>(Field::Other).unwrap();
            let err = seen.once::<serde_json::Error>(field).unwrap_err();
            assert!(err.is_data());
            assert_eq!(Field::repeated_in(&err.to_string()), Some(field.name()));
        }
        assert_eq!(Field::repeated_in("duplicate field `event`"), None);
        assert_eq!(
            Field::repeated_in(&format!("{REPEATED}events` field")),
            None
        );
    }

    #[test]
    fn escaped_keys_are_the_keys_they_spell() {
        let keys: Vec<Field> =
            serde_json::from_str(r#"["\u0065vent", "data", "Data", "webhook_id "]"#).unwrap();
        assert_eq!(
            keys,
            [Field::Event, Field::Data, Field::Other, Field::Other]
        );
    }

    #[test]
    fn head_refuses_a_field_it_meets_twice_as_the_full_parse_does() {
        let cases: [(&[u8], &str); 3] = [
            (
                br#"{"event":"credits.low","event":"call.failed","timestamp":"2024-01-15T10:30:00Z"}"#,
                "event",
            ),
            (
                br#"{"timestamp":"2024-01-15T10:30:00Z","timestamp":"2020-01-01T00:00:00Z","event":"x"}"#,
                "timestamp",
            ),
            // An escaped key is the same key.
            (
                br#"{"event":"credits.low","\u0065vent":"call.failed","timestamp":"2024-01-15T10:30:00Z"}"#,
                "event",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(
                Head::scan(body).unwrap_err(),
                EnvelopeError::Duplicate(field),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                parse::<Value>(body).unwrap_err(),
                EnvelopeError::Duplicate(field)
            );
        }
    }
}
