//! [`EnvelopeError`]: why verified bytes are not a usable event, and the answer each reason gets.

use super::keys::Field;
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
    /// Classifies a `serde_json` error from reading the envelope.
    ///
    /// Nesting past the limit and numbers out of range are valid JSON (RFC 8259 section 9 lets
    /// a parser limit both), so they get answers of their own. serde_json classifies them as
    /// syntax errors and keeps its error codes private; its messages are stable, and
    /// `serde_json_names_its_limits_as_we_read_them` guards them. Its data errors are a body
    /// that is no object, or a key given twice ([`Field::repeated_in`]).
    pub(super) fn from_json(err: &serde_json::Error) -> Self {
        let (line, column) = (err.line(), err.column());
        let message = err.to_string();
        if err.is_data() {
            return Field::repeated_in(&message)
                .map_or(Self::Shape { line, column }, Self::Duplicate);
        }
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

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
    fn each_envelope_error_answers_with_one_kind() {
        let at = (1, 1);
        let cases = [
            (
                EnvelopeError::Syntax {
                    line: at.0,
                    column: at.1,
                },
                RejectionKind::InvalidJson,
            ),
            (
                EnvelopeError::TooDeep {
                    line: at.0,
                    column: at.1,
                },
                RejectionKind::JsonTooDeep,
            ),
            (
                EnvelopeError::NumberOutOfRange {
                    line: at.0,
                    column: at.1,
                },
                RejectionKind::NumberOutOfRange,
            ),
            (
                EnvelopeError::Shape {
                    line: at.0,
                    column: at.1,
                },
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
}
