//! Data errors: where `data` fails to fit the handler's type, and what was expected there,
//! without the values (a body may hold phone numbers and transcripts).

use super::EnvelopeError;
use crate::event::{EventKind, FromEventData};

/// `data` from its own text (absent, or raw because it came before `event`).
pub(super) fn data_from<T: FromEventData>(
    kind: &EventKind,
    data: &str,
) -> Result<T, EnvelopeError> {
    T::from_event_data(kind, &mut serde_json::Deserializer::from_str(data))
        .map_err(|_| data_error::<T>(kind, data))
}

/// Where `data` (its text) fails to fit `T`, and what was expected there, found by a pass that
/// tracks the path: only on this error path, so a delivery that fits pays nothing for it.
///
/// serde's messages quote the value they did not expect (`invalid type: string "+1555...",
/// expected u32`), so only the part from `expected` on is kept.
pub(super) fn data_error<T: FromEventData>(kind: &EventKind, data: &str) -> EnvelopeError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::envelope::parse;

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

    /// A type's own message may say anything, even what the envelope says of a key given
    /// twice: it is still a data error.
    #[test]
    fn a_data_error_is_never_taken_for_the_envelopes_own() {
        #[derive(Debug)]
        struct Odd;
        impl<'de> serde::Deserialize<'de> for Odd {
            fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                Err(serde::de::Error::custom(
                    "the envelope has more than one `event` field",
                ))
            }
        }
        let body = br#"{"event":"x","timestamp":"2024-01-15T10:30:00Z","data":{}}"#;
        assert!(matches!(
            parse::<Odd>(body).unwrap_err(),
            EnvelopeError::Data(_)
        ));
        let not_an_object = br#"["event","x"]"#;
        assert!(matches!(
            parse::<Odd>(not_an_object).unwrap_err(),
            EnvelopeError::Shape { .. }
        ));
    }
}
