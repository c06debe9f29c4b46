//! What Ringyo sends: event names ([`EventKind`]), typed events ([`Event`]), the payload
//! [`model`]s, and the reading of the envelope
//! `{"event", "timestamp", "webhook_id", "data"}` around them.
//!
//! Ringyo adds events and fields over time, and its two pages list different event names, so
//! everything here is forward compatible: a name this version does not know is kept in an
//! `Unknown` variant, a model field of an unexpected type reads as `None`, and fields no model
//! names are kept in `extra`. Nothing Ringyo may add ever fails a delivery.
//!
//! The envelope is read in as few passes as possible: the layer reads `event` and `timestamp`
//! and skips the rest without building it (while refusing a key given twice or bytes after the
//! object, which parsers read differently), and the extractor streams `data` straight into the
//! handler's type.
//!
//! ```
//! use ringyo_webhook::{Event, EventKind, FromEventData};
//!
//! let data = serde_json::json!({"id": "call_1", "duration": 42, "brand_new": true});
//! let Event::CallCompleted(call) = Event::from_event_data(&EventKind::CallCompleted, data)?
//! else { unreachable!() };
//! assert_eq!(call.duration, Some(42.0));
//! assert_eq!(call.extra["brand_new"], true);
//! # Ok::<(), serde_json::Error>(())
//! ```

#[macro_use]
mod string_enum;

mod catalog;
pub(crate) mod envelope;
pub mod model;
mod subject;
mod surrogates;

pub use catalog::{Event, EventKind, FromEventData};
pub use subject::{InvalidSubject, Subject, SubjectKind};
