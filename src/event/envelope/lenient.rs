//! [`LenientStr`]: the envelope's string fields, read so that one odd value does not make the
//! whole envelope unreadable.
//!
//! `event`, `timestamp` and `webhook_id` are strings. Anything else in their place reads as
//! absent, and what becomes of the body then depends on the field:
//!
//! - without a string `event` or `timestamp` the body is refused whatever the value holds, and
//!   the answer names the field ("no string `event` field"); so the value is skipped unread,
//!   and nothing deep inside it changes that answer;
//! - `webhook_id` is optional, so a body with another value there passes, and that value is read
//!   as a `Value` would read it ([`Walk`]), as the door reads everything it lets in.

use std::{borrow::Cow, fmt};

use chrono::{DateTime, Utc};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{walk::Walk, EnvelopeError};
use crate::event::EventKind;

/// Reads a string field leniently: a string (borrowed from the body when it has no escapes),
/// or `None` for any other value.
#[derive(Debug, Clone, Copy)]
pub(super) struct LenientStr {
    /// Whether another value is walked ([`Walk`]) rather than skipped unread.
    walk: bool,
}

impl LenientStr {
    /// For `event` and `timestamp`, without which the body is refused.
    pub(super) const REQUIRED: Self = Self { walk: false };
    /// For `webhook_id`, which the body may lack and pass.
    pub(super) const OPTIONAL: Self = Self { walk: true };

    /// The event's name.
    pub(super) fn kind(text: Option<Cow<'_, str>>) -> Option<EventKind> {
        text.as_deref().map(EventKind::from)
    }

    /// The envelope's time, or why it has none.
    pub(super) fn timestamp(text: Option<Cow<'_, str>>) -> Result<DateTime<Utc>, EnvelopeError> {
        let text = text.ok_or(EnvelopeError::MissingTimestamp)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|timestamp| timestamp.with_timezone(&Utc))
            .map_err(|_| EnvelopeError::InvalidTimestamp)
    }
}

impl<'de> DeserializeSeed<'de> for LenientStr {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LenientStr {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if self.walk {
            Walk::ANY.visit_seq(seq)?;
        } else {
            skip_seq(seq)?;
        }
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        if self.walk {
            Walk::ANY.visit_map(map)?;
        } else {
            skip_map(map)?;
        }
        Ok(None)
    }
}

/// serde_json skips an ignored value without recursion, so without its nesting limit.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, seed: LenientStr) -> Result<Option<String>, String> {
        seed.deserialize(&mut serde_json::Deserializer::from_str(text))
            .map(|text| text.map(Cow::into_owned))
            .map_err(|err| err.to_string())
    }

    #[test]
    fn anything_but_a_string_reads_as_absent() {
        for seed in [LenientStr::REQUIRED, LenientStr::OPTIONAL] {
            assert_eq!(read(r#""wh_\u0031""#, seed), Ok(Some("wh_1".into())));
            for text in ["42", "true", "null", "[\"a\"]", r#"{"a":"b"}"#, "-1.5"] {
                assert_eq!(read(text, seed), Ok(None), "{text}");
            }
        }
    }

    /// A required field's answer is "no string field" whatever is inside; an optional one's
    /// value passes the door, so it holds to a `Value`'s limits.
    #[test]
    fn only_an_optional_field_holds_to_what_a_value_reads() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for text in [deep.as_str(), "[1e400]"] {
            assert_eq!(read(text, LenientStr::REQUIRED), Ok(None), "{text}");
            assert!(read(text, LenientStr::OPTIONAL).is_err(), "{text}");
        }
    }

    #[test]
    fn timestamps_are_rfc_3339_or_say_why_not() {
        let at = |text: &str| LenientStr::timestamp(Some(text.into()));
        assert_eq!(
            at("2024-01-15T10:30:00+02:00").unwrap().to_rfc3339(),
            "2024-01-15T08:30:00+00:00"
        );
        assert_eq!(at("+15551234567"), Err(EnvelopeError::InvalidTimestamp));
        assert_eq!(
            LenientStr::timestamp(None),
            Err(EnvelopeError::MissingTimestamp)
        );
    }
}
