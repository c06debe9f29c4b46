//! Lenient models of what Ringyo sends in `data`.
//!
//! Ringyo documents its payloads only loosely (see the field notes on each model), so every
//! field is an `Option`, a field whose JSON type differs from the model's reads as `None`
//! instead of failing the event, and fields the model does not name are kept in `extra`. The
//! exact bytes stay available through [`VerifiedPayload`](crate::VerifiedPayload).
//!
//! ```
//! use ringyo_webhook::model::{Credits, PhoneNumber};
//!
//! let credits: Credits = serde_json::from_str(r#"{"balance":12.5,"threshold":"fifty"}"#)?;
//! assert_eq!((credits.balance, credits.threshold), (Some(12.5), None));
//!
//! let number: PhoneNumber = serde_json::from_str(r#"{"id":"pn_1","country":"US"}"#)?;
//! assert_eq!(number.extra["country"], "US");
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Reads a field as `Some` if it fits its type, and as `None` otherwise, never failing.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(T::deserialize(value).ok())
}

macro_rules! model {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: $ty:ty $([$redact:ident])? $({ or $alias:literal })?,
            )*
        }
    ) => {
        $(#[$meta])*
        ///
        /// `Debug` hides personal data (phone numbers, what was said, recordings, metadata and
        /// unknown fields' values), so logging an event with `?event` leaks none of it. See the
        /// [module docs](self) for an example.
        #[derive(Clone, Default, PartialEq, Serialize)]
        #[non_exhaustive]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Every field this model does not name, as received.
            #[serde(flatten)]
            pub extra: Map<String, Value>,
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                struct Wire {
                    $(
                        #[serde(default, deserialize_with = "lenient")]
                        $field: Option<$ty>,
                    )*
                    #[serde(flatten)]
                    extra: Map<String, Value>,
                }
                let wire = Wire::deserialize(deserializer)?;
                #[allow(unused_mut)] // mutated only by models with aliases
                let mut model = Self { $( $field: wire.$field, )* extra: wire.extra };
                // A fact some of Ringyo's pages name differently fills its one field; when both
                // names come, the other stays in `extra`.
                $($(
                    if model.$field.is_none() {
                        model.$field = model.extra.remove($alias).and_then(|value| {
                            <$ty as Deserialize>::deserialize(value).ok()
                        });
                    }
                )?)*
                Ok(model)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut debug = f.debug_struct(stringify!($name));
                $( debug_field!(debug, stringify!($field), &self.$field $(, $redact)?); )*
                debug.field("extra", &RedactedValues(&self.extra)).finish()
            }
        }
    };
}

macro_rules! debug_field {
    ($debug:ident, $name:expr, $value:expr) => {
        $debug.field($name, $value)
    };
    ($debug:ident, $name:expr, $value:expr, redact) => {
        $debug.field($name, &$value.as_ref().map(|_| Redacted))
    };
}

/// Shown in place of a value that may be personal data.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A map's keys, with its values hidden.
struct RedactedValues<'a>(&'a Map<String, Value>);

impl fmt::Debug for RedactedValues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|key| (key, Redacted)))
            .finish()
    }
}

string_enum! {
    /// A call's status. Ringyo documents these; others are kept in `Unknown`.
    pub enum CallStatus {
        /// `queued`
        Queued = "queued",
        /// `initiated`
        Initiated = "initiated",
        /// `ringing`
        Ringing = "ringing",
        /// `answered`
        Answered = "answered",
        /// `in_progress`
        InProgress = "in_progress",
        /// `completed`
        Completed = "completed",
        /// `transferred`
        Transferred = "transferred",
        /// `no_answer`
        NoAnswer = "no_answer",
        /// `busy`
        Busy = "busy",
        /// `failed`
        Failed = "failed",
    }
}

model! {
    /// A call, the `data` of every `call.*` event.
    ///
    /// Fields follow Ringyo's call object. Call results elsewhere in its API name two of them
    /// `call_id` and `duration_seconds`: those fill `id` and `duration` when the usual name is
    /// absent, so each fact has one field.
    ///
    /// ```
    /// use ringyo_webhook::model::{Call, CallStatus};
    ///
    /// let call: Call = serde_json::from_str(
    ///     r#"{"id":"call_1","status":"voicemail","duration":"n/a","new_field":true}"#,
    /// ).unwrap();
    /// assert_eq!(call.status, Some(CallStatus::Unknown("voicemail".into())));
    /// assert_eq!(call.duration, None); // not a number: None, not an error
    /// assert_eq!(call.extra["new_field"], true);
    /// ```
    pub struct Call {
        /// The call's id, e.g. `call_xyz789` (or `call_id`).
        pub id: String { or "call_id" },
        /// Where the call is in its lifecycle.
        pub status: CallStatus,
        /// The number called.
        pub phone_number: String [redact],
        /// The number calling.
        pub from_number: String [redact],
        /// The agent that handled the call.
        pub agent_id: String,
        /// Length in seconds (or `duration_seconds`).
        pub duration: f64 { or "duration_seconds" },
        /// The call's result, such as `appointment_booked`.
        pub outcome: String,
        /// What was said, in order.
        pub transcript: Vec<TranscriptEntry> [redact],
        /// Where the recording can be fetched.
        pub recording_url: String [redact],
        /// Ringyo's analysis of the call; its shape is not documented.
        pub analysis: Value [redact],
        /// Your own key-value pairs.
        pub metadata: Map<String, Value> [redact],
        /// When the call was created.
        pub created_at: DateTime<Utc>,
        /// When the call ended.
        pub ended_at: DateTime<Utc>,
    }
}

model! {
    /// One turn of a call's transcript.
    pub struct TranscriptEntry {
        /// Who spoke, e.g. `agent` or `user`.
        pub role: String,
        /// What was said.
        pub content: String [redact],
        /// When it was said; Ringyo does not document the form (offset or date-time).
        pub timestamp: Value,
    }
}

model! {
    /// An appointment, the `data` of every `appointment.*` event.
    ///
    /// Ringyo's pages describe appointments as booked by a call for a customer at a time, with a
    /// status; they do not list the fields, so these are the ones its other resources use, and
    /// everything else is in `extra`.
    ///
    /// ```
    /// use ringyo_webhook::model::Appointment;
    ///
    /// let appointment: Appointment = serde_json::from_str(
    ///     r#"{"id":"appt_1","status":"confirmed","scheduled_at":"2024-01-18T15:00:00Z"}"#,
    /// ).unwrap();
    /// assert_eq!(appointment.status.as_deref(), Some("confirmed"));
    /// assert!(appointment.scheduled_at.is_some());
    /// ```
    pub struct Appointment {
        /// The appointment's id.
        pub id: String,
        /// Where it stands, such as `confirmed` or `cancelled`.
        pub status: String,
        /// When it takes place.
        pub scheduled_at: DateTime<Utc>,
        /// Who it is for.
        pub customer_name: String [redact],
        /// The customer's phone number.
        pub customer_phone: String [redact],
        /// The call that booked it.
        pub call_id: String,
        /// The agent that booked it.
        pub agent_id: String,
        /// Your own key-value pairs.
        pub metadata: Map<String, Value> [redact],
        /// When it was created.
        pub created_at: DateTime<Utc>,
    }
}

model! {
    /// An agent, the `data` of every `agent.*` event. Fields beyond the shared ones are in
    /// `extra`.
    pub struct Agent {
        /// The agent's id.
        pub id: String,
        /// The agent's name.
        pub name: String,
        /// Your own key-value pairs.
        pub metadata: Map<String, Value> [redact],
        /// When it was created.
        pub created_at: DateTime<Utc>,
    }
}

model! {
    /// A phone number, the `data` of every `phone_number.*` event.
    pub struct PhoneNumber {
        /// The number's id.
        pub id: String,
        /// The number itself.
        pub phone_number: String [redact],
        /// The agent it is assigned to.
        pub agent_id: String,
        /// Your own key-value pairs.
        pub metadata: Map<String, Value> [redact],
        /// When it was created.
        pub created_at: DateTime<Utc>,
    }
}

model! {
    /// The account's credits, the `data` of `credits.low`.
    pub struct Credits {
        /// The balance now.
        pub balance: f64,
        /// The threshold it fell below.
        pub threshold: f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_call_fields_are_typed() {
        let call: Call = serde_json::from_str(
            r#"{"id":"call_xyz789","status":"no_answer","duration":12,
                "transcript":[{"role":"agent","content":"Hi","timestamp":0.5}],
                "metadata":{"crm":"42"},"created_at":"2024-01-15T10:30:00Z"}"#,
        )
        .unwrap();
        assert_eq!(call.id.as_deref(), Some("call_xyz789"));
        assert_eq!(call.status, Some(CallStatus::NoAnswer));
        assert_eq!(call.duration, Some(12.0));
        let transcript = call.transcript.unwrap();
        assert_eq!(transcript[0].content.as_deref(), Some("Hi"));
        assert_eq!(call.metadata.unwrap()["crm"], "42");
        assert!(call.created_at.is_some());
        assert!(call.extra.is_empty());
    }

    #[test]
    fn debug_hides_personal_data() {
        let call: Call = serde_json::from_str(
            r#"{"id":"call_1","phone_number":"+15555550123","from_number":"+15555550100",
                "transcript":[{"role":"user","content":"my secret words"}],
                "recording_url":"https://example.test/r.mp3","metadata":{"email":"a@b.c"},
                "analysis":{"summary":"private"},"customer_name":"Jordan Lee"}"#,
        )
        .unwrap();
        let debug = format!("{call:?}");
        for leaked in [
            "5555550123",
            "5555550100",
            "secret words",
            "r.mp3",
            "a@b.c",
            "private",
            "Jordan",
        ] {
            assert!(!debug.contains(leaked), "{leaked} in {debug}");
        }
        assert!(debug.contains("call_1"), "{debug}");
        assert!(debug.contains("customer_name"), "{debug}");
        let entry = &call.transcript.as_ref().unwrap()[0];
        assert!(!format!("{entry:?}").contains("secret"));
    }

    #[test]
    fn wrong_types_and_new_fields_never_fail() {
        let call: Call = serde_json::from_str(
            r#"{"id":7,"status":{"odd":1},"created_at":"yesterday","transcript":"none","brand_new":[1]}"#,
        )
        .unwrap();
        assert_eq!(call.id, None);
        assert_eq!(call.status, None);
        assert_eq!(call.created_at, None);
        assert_eq!(call.transcript, None);
        assert_eq!(call.extra["brand_new"], serde_json::json!([1]));
    }

    #[test]
    fn other_names_for_a_fact_fill_its_one_field() {
        let result: Call =
            serde_json::from_str(r#"{"call_id":"call_9","duration_seconds":61}"#).unwrap();
        assert_eq!(result.id.as_deref(), Some("call_9"));
        assert_eq!(result.duration, Some(61.0));
        assert!(result.extra.is_empty(), "{:?}", result.extra);

        let both: Call = serde_json::from_str(r#"{"id":"call_1","call_id":"call_9"}"#).unwrap();
        assert_eq!(both.id.as_deref(), Some("call_1"));
        assert_eq!(both.extra["call_id"], "call_9");

        let odd: Call = serde_json::from_str(r#"{"duration_seconds":"long"}"#).unwrap();
        assert_eq!(odd.duration, None);
    }

    #[test]
    fn appointment_debug_hides_the_customer() {
        let appointment: Appointment = serde_json::from_str(
            r#"{"id":"appt_1","customer_name":"Jordan Lee","customer_phone":"+15555550123"}"#,
        )
        .unwrap();
        let debug = format!("{appointment:?}");
        assert!(
            !debug.contains("Jordan") && !debug.contains("555"),
            "{debug}"
        );
        assert!(debug.contains("appt_1"), "{debug}");
    }
}
