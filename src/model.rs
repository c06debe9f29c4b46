//! Lenient models of what Ringyo sends in `data`.
//!
//! Ringyo documents its payloads only loosely (see the field notes on each model), so every
//! field is an `Option`, a field whose JSON type differs from the model's reads as `None`
//! instead of failing the event, and fields the model does not name are kept in `extra`. The
//! exact bytes stay available through [`VerifiedPayload`](crate::VerifiedPayload).

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
            $( $(#[$field_meta:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[non_exhaustive]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Every field this model does not name, as received.
            #[serde(flatten)]
            pub extra: Map<String, Value>,
        }
    };
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
    /// Fields follow Ringyo's call object; call results elsewhere in its API use `call_id`,
    /// `duration_seconds` and `outcome` instead, so those are read too.
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
        /// The call's id, e.g. `call_xyz789`.
        pub id: String,
        /// The call's id as call results name it.
        pub call_id: String,
        /// Where the call is in its lifecycle.
        pub status: CallStatus,
        /// The number called.
        pub phone_number: String,
        /// The number calling.
        pub from_number: String,
        /// The agent that handled the call.
        pub agent_id: String,
        /// Length in seconds.
        pub duration: f64,
        /// Length in seconds, as call results name it.
        pub duration_seconds: f64,
        /// The call's result, as call results name it.
        pub outcome: String,
        /// What was said, in order.
        pub transcript: Vec<TranscriptEntry>,
        /// Where the recording can be fetched.
        pub recording_url: String,
        /// Ringyo's analysis of the call; its shape is not documented.
        pub analysis: Value,
        /// Your own key-value pairs.
        pub metadata: Map<String, Value>,
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
        pub content: String,
        /// When it was said; Ringyo does not document the form (offset or date-time).
        pub timestamp: Value,
    }
}

model! {
    /// An appointment, the `data` of every `appointment.*` event.
    ///
    /// Ringyo does not document appointment fields; the ones here are those its resources
    /// share, and everything else is in `extra`.
    pub struct Appointment {
        /// The appointment's id.
        pub id: String,
        /// The call that booked it.
        pub call_id: String,
        /// Your own key-value pairs.
        pub metadata: Map<String, Value>,
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
        pub metadata: Map<String, Value>,
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
        pub phone_number: String,
        /// The agent it is assigned to.
        pub agent_id: String,
        /// Your own key-value pairs.
        pub metadata: Map<String, Value>,
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
}
