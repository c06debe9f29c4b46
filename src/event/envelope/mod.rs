//! Reading the envelope `{"event", "timestamp", "webhook_id", "data"}` of verified bytes: one
//! reader, in one pass, for the layer and the extractor alike.
//!
//! One visitor reads the four keys, in any order, into an [`Envelope<D>`](Envelope); `D` is what
//! `data` becomes:
//!
//! - for the layer, which needs only `event` (for the span) and `timestamp` (for freshness),
//!   `data` is walked: read as serde_json reads it into a `Value`, built into nothing but what
//!   the typed models will make of it ([`Head`]);
//! - for the extractor and the inbox's worker, `data` streams straight into the handler's type
//!   as soon as the event's name is known ([`parse`]).
//!
//! The layer is the door, and the worker reads later what it let in, so the door refuses every
//! body the full parse into [`Event`](crate::Event) cannot read, and both read by the same rules:
//!
//! - the body is UTF-8, one JSON object and nothing after it but whitespace, with lone
//!   surrogate escapes read as U+FFFD (`fields`, and `event/surrogates.rs`);
//! - each envelope key at most once: met again, the reading stops there (`keys`);
//! - `event`, `timestamp` and `webhook_id` are read leniently, anything but a string as absent
//!   (`lenient`);
//! - every value not kept is walked with serde_json's limits on nesting and numbers (`walk`);
//! - `data` that does not fit the handler's type is reported with a path, never a value
//!   (`data_error`).
//!
//! Every error is an [`EnvelopeError`], with one answer per kind.

mod data;
mod data_error;
mod error;
mod fields;
mod head;
mod keys;
mod lenient;
mod walk;

pub(crate) use data::parse;
pub(crate) use error::EnvelopeError;
pub(crate) use head::Head;
