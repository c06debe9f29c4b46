//! Reading the envelope `{"event", "timestamp", "webhook_id", "data"}` of verified bytes, in as
//! few passes as possible.
//!
//! The layer needs only `event` (for the span) and `timestamp` (for freshness), so [`Head`]
//! reads those two and skips every other value without building it; it still reads to the end,
//! so that a body whose bytes a full parse would read otherwise (a key given twice, bytes after
//! the object) never passes the layer. The extractor then parses the whole envelope once,
//! streaming `data` into the handler's type as soon as it knows the event's name ([`parse`]). A
//! body whose `data` comes before `event` costs one more pass over `data`, never a wrong answer.
//!
//! The layer is the door and the inbox's worker reads later what it let in, so the head scan
//! refuses every body the full parse into [`Event`](super::Event) cannot read: it reads every
//! value as serde_json reads it into a `Value` (its nesting limit, its range of numbers), and
//! checks the shape of `data`. Both read the text after lone surrogates are replaced
//! ([`surrogates`]).

use std::{borrow::Cow, fmt, marker::PhantomData};

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{surrogates, EventKind, FromEventData};
use crate::rejection::{Rejection, RejectionKind};

/// Why verified bytes are not a usable event.
///
/// Messages carry positions and field paths, never values: a body may hold phone numbers and
/// transcripts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvelopeError {
    #[error("line {line}, column {column}")]
    Syntax { line: usize, column: usize },
    /// Nested deeper than serde_json reads (its recursion limit), anywhere in the body.
    #[error("line {line}, column {column}")]
    TooDeep { line: usize, column: usize },
    /// A number that a 64-bit float cannot hold, such as `1e400`.
    #[error("line {line}, column {column}")]
    NumberOutOfRange { line: usize, column: usize },
    #[error("a JSON object is expected (line {line}, column {column})")]
    Shape { line: usize, column: usize },
    #[error("it has no string `event` field")]
    MissingEvent,
    #[error("it has none")]
    MissingTimestamp,
    #[error("it is not an RFC 3339 date-time")]
    InvalidTimestamp,
    #[error("it has more than one `{0}` field")]
    Duplicate(&'static str),
    #[error("its `data` is not an object")]
    DataNotObject,
    #[error("its `data` has a field given twice")]
    DataDuplicate,
    /// Where in `data`, and what was expected there.
    #[error("{0}")]
    Data(String),
}

impl EnvelopeError {
    /// Classifies a `serde_json` error about the envelope itself.
    ///
    /// Nesting past the limit and numbers out of range are valid JSON (RFC 8259 section 9 lets
    /// a parser limit both), so they get answers of their own. serde_json classifies them as
    /// syntax errors and keeps its error codes private; its messages are stable, and
    /// `serde_json_names_its_limits_as_we_read_them` guards them.
    fn from_json(err: &serde_json::Error) -> Self {
        let (line, column) = (err.line(), err.column());
        if err.is_data() {
            return Self::Shape { line, column };
        }
        let message = err.to_string();
        if message.starts_with("recursion limit exceeded") {
            Self::TooDeep { line, column }
        } else if message.starts_with("number out of range") {
            Self::NumberOutOfRange { line, column }
        } else {
            Self::Syntax { line, column }
        }
    }

    /// The rejection kind this error answers with: the one mapping from envelope errors to
    /// answers, used by the layer and the extractor alike.
    fn kind(&self) -> RejectionKind {
        match self {
            Self::Syntax { .. } => RejectionKind::InvalidJson,
            Self::TooDeep { .. } => RejectionKind::JsonTooDeep,
            Self::NumberOutOfRange { .. } => RejectionKind::NumberOutOfRange,
            Self::Shape { .. }
            | Self::MissingEvent
            | Self::Duplicate(_)
            | Self::DataNotObject
            | Self::DataDuplicate => RejectionKind::InvalidEnvelope,
            Self::MissingTimestamp | Self::InvalidTimestamp => RejectionKind::InvalidTimestamp,
            Self::Data(_) => RejectionKind::InvalidEventData,
        }
    }
}

impl From<EnvelopeError> for Rejection {
    fn from(err: EnvelopeError) -> Self {
        Rejection::new(err.kind()).with_detail(err.to_string())
    }
}

/// The two fields the layer needs.
#[derive(Debug, Default, Clone)]
pub(crate) struct Head {
    pub(crate) kind: Option<EventKind>,
    timestamp: Option<Result<DateTime<Utc>, EnvelopeError>>,
    /// What `data` is, as far as the models care.
    data: Walked,
    /// Whether this head came from a scan that passed (not `Default`, as the verifier leaves
    /// it for a body it could not scan with the timestamp check off).
    scanned: bool,
}

impl Head {
    /// Reads `event` and `timestamp`, and checks that the body is one JSON object, in UTF-8,
    /// whose envelope keys each appear once, and that every value in it is one the full parse
    /// can read.
    ///
    /// The whole body is read, `data` included (walked, not built), because what the layer
    /// checks must be what every full parse reads: parsers disagree on a key given twice (most
    /// keep the last, some the first), so a body with a second `timestamp` after the first
    /// would be freshness-checked on one value and handled on the other. Such a body, or bytes
    /// after the object, are refused here, as the extractor refuses them.
    ///
    /// And what the layer accepts, the inbox's worker must read later: a 2xx is Ringyo's last
    /// word on a delivery, so one the worker cannot read is lost. So every value is read as
    /// serde_json reads it into a `Value`, with the same parser's limits, rather than skipped:
    /// nesting past its recursion limit (127 levels; refused rather than parsed without the
    /// limit, which would let a body of brackets overflow the stack of whoever builds it) and
    /// numbers past the range of an `f64` (`1e400`: Ringyo's Node sender cannot write one, as
    /// `JSON.stringify` writes infinities as `null`, so only someone else's sender can) are
    /// refused with answers of their own. What `data` looks like is kept for
    /// [`readable`](Self::readable), which knows the event by then.
    pub(crate) fn scan(body: &[u8]) -> Result<Self, EnvelopeError> {
        let text = text(body)?;
        let mut head = Self::default();
        let mut duplicate = None;
        let mut deserializer = serde_json::Deserializer::from_str(&text);
        let result = deserializer
            .deserialize_map(HeadVisitor {
                head: &mut head,
                duplicate: &mut duplicate,
            })
            .and_then(|()| deserializer.end());
        // Reading stops at a duplicate, which serde_json then reports as an unfinished object.
        if let Some(field) = duplicate {
            return Err(EnvelopeError::Duplicate(field));
        }
        result.map_err(|err| EnvelopeError::from_json(&err))?;
        head.scanned = true;
        Ok(head)
    }

    /// The envelope's `timestamp`, or why there is none.
    pub(crate) fn timestamp(&self) -> Result<DateTime<Utc>, EnvelopeError> {
        self.timestamp
            .clone()
            .unwrap_or(Err(EnvelopeError::MissingTimestamp))
    }

    /// Whether the full parse into [`Event`](super::Event) reads the body this head was read
    /// from (`body`): the door's last check, after freshness, in the full parse's order
    /// (`timestamp`, `event`, then `data`). With the timestamp check off, which keeps no reason
    /// for a body it could not scan, the body is scanned again for that reason.
    ///
    /// A known event's model reads `data` as an object (or `null`) whose own fields each come
    /// once (serde refuses a second value for a field); an unknown event keeps any `data` as
    /// a `Value`, so nothing Ringyo adds is refused.
    pub(crate) fn readable(&self, body: &[u8]) -> Result<(), EnvelopeError> {
        let rescanned;
        let head = if self.scanned {
            self
        } else {
            rescanned = Self::scan(body)?;
            &rescanned
        };
        head.timestamp()?;
        let Some(kind) = &head.kind else {
            return Err(EnvelopeError::MissingEvent);
        };
        match (kind, head.data) {
            (EventKind::Unknown(_), _) | (_, Walked::Null | Walked::Object { repeats: false }) => {
                Ok(())
            }
            (_, Walked::Object { repeats: true }) => Err(EnvelopeError::DataDuplicate),
            (_, Walked::Other) => Err(EnvelopeError::DataNotObject),
        }
    }
}

/// The envelope's keys, each allowed once.
const ENVELOPE_KEYS: [&str; 4] = ["event", "timestamp", "webhook_id", "data"];

struct HeadVisitor<'a> {
    head: &'a mut Head,
    /// The first envelope key met twice.
    duplicate: &'a mut Option<&'static str>,
}

impl<'de> Visitor<'de> for HeadVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Ringyo event envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = [false; ENVELOPE_KEYS.len()];
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let Some(index) = ENVELOPE_KEYS.iter().position(|name| *name == key.0) else {
                map.next_value_seed(Walk::ANY)?;
                continue;
            };
            if std::mem::replace(&mut seen[index], true) {
                *self.duplicate = Some(ENVELOPE_KEYS[index]);
                return Ok(());
            }
            match index {
                0 => self.head.kind = map.next_value::<LenientStr<'de>>()?.kind(),
                1 => {
                    self.head.timestamp = Some(map.next_value::<LenientStr<'de>>()?.timestamp());
                }
                2 => {
                    map.next_value_seed(Walk::ANY)?;
                }
                _ => self.head.data = map.next_value_seed(Walk::OWN_KEYS)?,
            }
        }
        Ok(())
    }
}

/// What [`Walk`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Walked {
    /// `null`, or nothing (no `data`).
    #[default]
    Null,
    /// An object, and whether one of its own keys appears twice (when asked to check).
    Object {
        repeats: bool,
    },
    Other,
}

/// Any JSON value, read as serde_json reads it into a `Value` but not built: serde_json checks
/// its nesting limit on every array and object, parses every number (refusing one out of
/// range) and every string, as a `Value` would.
///
/// It recurses once per level of the JSON, which serde_json bounds (its recursion limit is
/// checked before a visitor is called), so the stack holds.
#[derive(Debug, Clone, Copy)]
struct Walk {
    /// Whether an object's own keys are checked for repeats (`data`'s, which the models read
    /// into fields that refuse a second value).
    own_keys: bool,
}

impl Walk {
    const ANY: Self = Self { own_keys: false };
    const OWN_KEYS: Self = Self { own_keys: true };
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Walked;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Walked, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = Walked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Walked, E> {
        Ok(Walked::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Walked, E> {
        Ok(Walked::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Walked, E> {
        Ok(Walked::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Walked, E> {
        Ok(Walked::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Walked, E> {
        Ok(Walked::Other)
    }
    fn visit_unit<E>(self) -> Result<Walked, E> {
        Ok(Walked::Null)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Walked, A::Error> {
        while seq.next_element_seed(Self::ANY)?.is_some() {}
        Ok(Walked::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Walked, A::Error> {
        if !self.own_keys {
            while map.next_entry_seed(Self::ANY, Self::ANY)?.is_some() {}
            return Ok(Walked::Object { repeats: false });
        }
        // Unescaped, as serde matches field names; sorted rather than hashed, one allocation.
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            map.next_value_seed(Self::ANY)?;
            keys.push(key.0);
        }
        keys.sort_unstable();
        Ok(Walked::Object {
            repeats: keys.windows(2).any(|pair| pair[0] == pair[1]),
        })
    }
}

/// A whole event, parsed in one pass.
#[derive(Debug)]
pub(crate) struct Parsed<T> {
    pub(crate) kind: EventKind,
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) webhook_id: Option<String>,
    pub(crate) data: T,
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

/// The text every reading of the envelope parses: the body as UTF-8, with lone surrogate
/// escapes read as U+FFFD (see [`surrogates`]), so the layer and the worker read one text.
fn text(body: &[u8]) -> Result<Cow<'_, str>, EnvelopeError> {
    utf8(body).map(surrogates::replace_lone)
}

/// Parses verified bytes into an event whose `data` is `T`.
pub(crate) fn parse<T: FromEventData>(body: &[u8]) -> Result<Parsed<T>, EnvelopeError> {
    let text = text(body)?;
    let body = &*text;
    let mut data_failed = None;
    let mut deserializer = serde_json::Deserializer::from_str(body);
    let result = deserializer
        .deserialize_map(EventVisitor::<T> {
            data_failed: &mut data_failed,
            marker: PhantomData,
        })
        .and_then(|parsed| deserializer.end().map(|()| parsed));
    match result {
        Ok(parsed) => parsed,
        // Broken JSON is a syntax error even inside `data`.
        Err(err) if err.is_syntax() || err.is_eof() => Err(EnvelopeError::from_json(&err)),
        Err(err) => match data_failed {
            Some(kind) => Err(data_error::<T>(&kind, raw_data(body))),
            None => Err(EnvelopeError::from_json(&err)),
        },
    }
}

/// The raw text of a body's `data` (`null` when absent or unreadable), to find where it fails.
fn raw_data(body: &str) -> &str {
    #[derive(serde::Deserialize)]
    struct DataOnly<'a> {
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    serde_json::from_str::<DataOnly<'_>>(body)
        .ok()
        .and_then(|envelope| envelope.data)
        .map_or("null", RawValue::get)
}

/// Where `data` fails to fit `T`, and what was expected there, found by a second pass that
/// tracks the path: only on this error path, so a delivery that fits pays nothing for it.
///
/// serde's messages quote the value they did not expect (`invalid type: string "+1555...",
/// expected u32`), so only the part from `expected` on is kept.
fn data_error<T: FromEventData>(kind: &EventKind, data: &str) -> EnvelopeError {
    let mut track = serde_path_to_error::Track::new();
    let mut json = serde_json::Deserializer::from_str(data);
    let tracked = serde_path_to_error::Deserializer::new(&mut json, &mut track);
    let message = T::from_event_data(kind, tracked)
        .err()
        .map(|err| err.to_string())
        .unwrap_or_default();
    let at = format!("`data{}`", redacted_path(&track.path()));
    // The position serde_json appends is no help once the path is known.
    let message = message.split(" at line ").next().unwrap_or_default();
    let reason = if let Some((_, expected)) = message.split_once(", expected ") {
        format!("expected {expected}")
    } else if message.starts_with("missing field") || message.starts_with("duplicate field") {
        // These name the type's own fields, never a value.
        message.to_owned()
    } else {
        "has a value of another shape than the type expects".to_owned()
    };
    EnvelopeError::Data(format!("at {at}: {reason}"))
}

struct EventVisitor<'a, T> {
    /// Set, to the event's name, when an error came from deserializing `data` as `T`.
    data_failed: &'a mut Option<EventKind>,
    marker: PhantomData<T>,
}

enum Data<'de, T> {
    Absent,
    Parsed(T),
    /// `data` came before `event`, so it waits as raw JSON until the name is known.
    Raw(&'de RawValue),
}

impl<'de, T: FromEventData> Visitor<'de> for EventVisitor<'_, T> {
    type Value = Result<Parsed<T>, EnvelopeError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Ringyo event envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kind: Option<Option<EventKind>> = None;
        let mut timestamp: Option<Result<DateTime<Utc>, EnvelopeError>> = None;
        let mut webhook_id: Option<Option<String>> = None;
        let mut data = Data::Absent;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let duplicate = match &*key.0 {
                "event" => kind
                    .replace(map.next_value::<LenientStr<'de>>()?.kind())
                    .map(|_| "event"),
                "timestamp" => timestamp
                    .replace(map.next_value::<LenientStr<'de>>()?.timestamp())
                    .map(|_| "timestamp"),
                "webhook_id" => webhook_id
                    .replace(map.next_value::<LenientStr<'de>>()?.0.map(Cow::into_owned))
                    .map(|_| "webhook_id"),
                "data" => {
                    let previous = std::mem::replace(&mut data, Data::Absent);
                    data = match &kind {
                        Some(Some(kind)) => {
                            let seed = DataSeed::<T> {
                                kind,
                                failed: &mut *self.data_failed,
                                marker: PhantomData,
                            };
                            Data::Parsed(map.next_value_seed(seed)?)
                        }
                        _ => Data::Raw(map.next_value::<&'de RawValue>()?),
                    };
                    (!matches!(previous, Data::Absent)).then_some("data")
                }
                _ => map.next_value::<IgnoredAny>().map(|_| None)?,
            };
            if let Some(field) = duplicate {
                // Read the rest, so serde_json's end-of-object check passes (and still checks
                // its syntax), then report the duplicate.
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(Err(EnvelopeError::Duplicate(field)));
            }
        }
        // The timestamp first, as the layer's freshness check reads it first: the same body
        // gets the same answer with the check on or off.
        let timestamp = match timestamp {
            Some(Ok(timestamp)) => timestamp,
            Some(Err(err)) => return Ok(Err(err)),
            None => return Ok(Err(EnvelopeError::MissingTimestamp)),
        };
        let Some(Some(kind)) = kind else {
            return Ok(Err(EnvelopeError::MissingEvent));
        };
        let data = match data {
            Data::Parsed(data) => Ok(data),
            Data::Absent => data_from(&kind, "null"),
            Data::Raw(raw) => data_from(&kind, raw.get()),
        };
        Ok(data.map(|data| Parsed {
            kind,
            timestamp,
            webhook_id: webhook_id.flatten(),
            data,
        }))
    }
}

/// A field path as `.field[2].other`. A struct's fields and a map's keys look the same to
/// serde, and a map may be keyed by personal data (a phone number, an address), so a key that
/// is not a plain identifier shows as `[…]`.
fn redacted_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let plain = |key: &str| {
        key.len() <= 64
            && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if plain(key) => out.push_str(&format!(".{key}")),
            Segment::Map { .. } => out.push_str("[…]"),
            Segment::Enum { variant } => out.push_str(&format!(".{variant}")),
            _ => out.push_str(".?"),
        }
    }
    out
}

/// `data` from its own text (absent, or raw because it came before `event`).
fn data_from<T: FromEventData>(kind: &EventKind, data: &str) -> Result<T, EnvelopeError> {
    T::from_event_data(kind, &mut serde_json::Deserializer::from_str(data))
        .map_err(|_| data_error::<T>(kind, data))
}

/// Deserializes `data` as `T`, remembering that an error from it is about `data`.
struct DataSeed<'a, T> {
    kind: &'a EventKind,
    failed: &'a mut Option<EventKind>,
    marker: PhantomData<T>,
}

impl<'de, T: FromEventData> DeserializeSeed<'de> for DataSeed<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::from_event_data(self.kind, deserializer)
            .inspect_err(|_| *self.failed = Some(self.kind.clone()))
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> de::Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        LenientStr::deserialize(deserializer).map(|key| Key(key.0.unwrap_or(Cow::Borrowed(""))))
    }
}

/// A string field that reads as `None` when it holds anything else, so one odd field does not
/// make the whole envelope unreadable; borrowed from the body when it has no escapes.
#[derive(Default)]
struct LenientStr<'a>(Option<Cow<'a, str>>);

impl LenientStr<'_> {
    fn kind(&self) -> Option<EventKind> {
        self.0.as_deref().map(EventKind::from)
    }

    fn timestamp(&self) -> Result<DateTime<Utc>, EnvelopeError> {
        let text = self.0.as_deref().ok_or(EnvelopeError::MissingTimestamp)?;
        DateTime::parse_from_rfc3339(text)
            .map(|timestamp| timestamp.with_timezone(&Utc))
            .map_err(|_| EnvelopeError::InvalidTimestamp)
    }
}

impl<'de: 'a, 'a> de::Deserialize<'de> for LenientStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenientVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for LenientVisitor<'a> {
            type Value = LenientStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LenientStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LenientStr(None))
            }
        }
        deserializer.deserialize_any(LenientVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::event::Event;

    const BODY: &[u8] = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00+02:00","webhook_id":"wh_abc123","data":{"id":"call_1"},"extra":1}"#;

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
            assert_eq!(head.kind, kind, "{shown}");
            assert_eq!(
                head.timestamp().unwrap(),
                DateTime::parse_from_rfc3339(&timestamp.unwrap()).unwrap(),
                "{shown}"
            );
            let parsed = parse::<Value>(&body).unwrap();
            assert_eq!(
                (Some(parsed.kind), Ok(parsed.timestamp)),
                (head.kind.clone(), head.timestamp())
            );
        }
    }

    #[test]
    fn head_reads_past_data_when_it_comes_first() {
        let body = br#"{"data":{"nested":[1,{"a":"}"}]},"timestamp":"2024-01-15T10:30:00Z","event":"call.failed"}"#;
        let head = Head::scan(body).unwrap();
        assert_eq!(head.kind, Some(EventKind::CallFailed));
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

    /// serde_json keeps its error codes private: the answers `json_too_deep` and
    /// `number_out_of_range` rest on its messages, which this holds to.
    #[test]
    fn serde_json_names_its_limits_as_we_read_them() {
        let read = |text: &str| {
            serde_json::from_str::<Value>(text).map_err(|err| EnvelopeError::from_json(&err))
        };
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert!(read(&nested(127)).is_ok());
        assert!(matches!(
            read(&nested(128)),
            Err(EnvelopeError::TooDeep { .. })
        ));
        assert!(matches!(
            read("1e400"),
            Err(EnvelopeError::NumberOutOfRange { .. })
        ));
        assert!(matches!(read("[1,]"), Err(EnvelopeError::Syntax { .. })));
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

    #[test]
    fn event_parses_in_one_pass_in_any_key_order() {
        let parsed = parse::<Event>(BODY).unwrap();
        assert_eq!(parsed.kind, EventKind::CallCompleted);
        assert_eq!(parsed.timestamp.to_rfc3339(), "2024-01-15T08:30:00+00:00");
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
    fn data_that_does_not_fit_is_a_data_error_without_values() {
        #[derive(Debug, serde::Deserialize)]
        struct Strict {
            #[allow(dead_code)]
            count: u32,
        }
        for body in [
            &br#"{"event":"x","timestamp":"2024-01-15T10:30:00Z","data":{"count":"+15551234567"}}"#
                [..],
            br#"{"data":{"count":"+15551234567"},"event":"x","timestamp":"2024-01-15T10:30:00Z"}"#,
        ] {
            let err = parse::<Strict>(body).unwrap_err();
            assert_eq!(
                err,
                EnvelopeError::Data("at `data.count`: expected u32".into())
            );
        }
    }

    #[test]
    fn data_errors_name_the_path_into_nested_data() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Turn {
            role: String,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Transcript {
            transcript: Vec<Turn>,
        }
        let cases: [(&[u8], &str); 3] = [
            (
                br#"{"event":"x","timestamp":"2024-01-15T10:30:00Z","data":{"transcript":[{"role":"a"},{"role":7}]}}"#,
                "at `data.transcript[1].role`: expected a string",
            ),
            (
                br#"{"event":"x","timestamp":"2024-01-15T10:30:00Z","data":{"transcript":[{}]}}"#,
                "at `data.transcript[0]`: missing field `role`",
            ),
            (
                br#"{"event":"x","timestamp":"2024-01-15T10:30:00Z"}"#,
                "at `data`: expected struct Transcript",
            ),
        ];
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct ByNumber {
            calls: std::collections::HashMap<String, u32>,
        }
        let keyed = br#"{"event":"x","timestamp":"2024-01-15T10:30:00Z","data":{"calls":{"+15551234567":"x"}}}"#;
        assert_eq!(
            parse::<ByNumber>(keyed).unwrap_err(),
            EnvelopeError::Data("at `data.calls[…]`: expected u32".into())
        );
        for (body, expected) in cases {
            assert_eq!(
                parse::<Transcript>(body).unwrap_err(),
                EnvelopeError::Data(expected.into())
            );
        }
    }

    #[test]
    fn each_envelope_error_answers_with_one_kind() {
        let cases = [
            (
                EnvelopeError::Syntax { line: 1, column: 1 },
                RejectionKind::InvalidJson,
            ),
            (
                EnvelopeError::TooDeep { line: 1, column: 1 },
                RejectionKind::JsonTooDeep,
            ),
            (
                EnvelopeError::NumberOutOfRange { line: 1, column: 1 },
                RejectionKind::NumberOutOfRange,
            ),
            (
                EnvelopeError::Shape { line: 1, column: 1 },
                RejectionKind::InvalidEnvelope,
            ),
            (EnvelopeError::DataNotObject, RejectionKind::InvalidEnvelope),
            (EnvelopeError::DataDuplicate, RejectionKind::InvalidEnvelope),
            (EnvelopeError::MissingEvent, RejectionKind::InvalidEnvelope),
            (
                EnvelopeError::Duplicate("event"),
                RejectionKind::InvalidEnvelope,
            ),
            (
                EnvelopeError::MissingTimestamp,
                RejectionKind::InvalidTimestamp,
            ),
            (
                EnvelopeError::InvalidTimestamp,
                RejectionKind::InvalidTimestamp,
            ),
            (
                EnvelopeError::Data("at `data`".into()),
                RejectionKind::InvalidEventData,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(Rejection::from(err).kind(), kind);
        }
    }

    #[test]
    fn odd_field_types_read_as_absent() {
        let body = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00Z","webhook_id":42,"data":{}}"#;
        assert_eq!(parse::<Value>(body).unwrap().webhook_id, None);
    }
}
