//! The events a [`Chaos`](super::Chaos) plays, each known as the failure will name it.

use std::{fmt, time::SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::{
    event::{EventKind, Subject},
    testing::{sample_data, TestDelivery},
    verify::DeliveryId,
};

/// A delivery as a failure names it: its event, its subject and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Described {
    pub(super) event: String,
    pub(super) subject: Option<Subject>,
    pub(super) id: DeliveryId,
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.event)?;
        if let Some(subject) = &self.subject {
            write!(f, " about {subject}")?;
        }
        write!(f, " (delivery {})", self.id)
    }
}

/// One of the events, with what the layer will read of it.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub(super) delivery: TestDelivery,
    /// Its signed timestamp: when it is sent on time.
    pub(super) at: DateTime<Utc>,
    pub(super) described: Described,
}

impl Planned {
    /// # Panics
    ///
    /// If the delivery's secret is one the layer would refuse.
    pub(super) fn new(delivery: TestDelivery) -> Self {
        let (body, _) = delivery.body_and_signature();
        let reads = delivery.layer_reads(&body, None);
        Self {
            at: delivery.signed_at(),
            described: Described {
                event: delivery.event().to_owned(),
                subject: reads.subject,
                id: reads.id,
            },
            delivery,
        }
    }
}

/// Two calls from start to transcript, their events interleaved 200 ms apart, then a
/// `credits.low` (no subject): what [`Chaos::samples`](super::Chaos::samples) plays.
pub(super) fn samples() -> Vec<TestDelivery> {
    const STAGES: [EventKind; 6] = [
        EventKind::CallInitiated,
        EventKind::CallRinging,
        EventKind::CallAnswered,
        EventKind::CallCompleted,
        EventKind::CallRecordingReady,
        EventKind::CallTranscriptReady,
    ];
    let start = DateTime::<Utc>::from(SystemTime::now());
    let kinds = STAGES
        .iter()
        .flat_map(|kind| [(kind, Some("call_a")), (kind, Some("call_b"))])
        .chain([(&EventKind::CreditsLow, None)]);
    kinds
        .zip(0..)
        .map(|((kind, call), step)| {
            let mut data = sample_data(kind);
            if let (Some(call), Value::Object(fields)) = (call, &mut data) {
                fields.insert("id".to_owned(), Value::from(call));
            }
            TestDelivery::new(kind.as_str())
                .data(data)
                .timestamp(start + TimeDelta::milliseconds(200 * step))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Verifier;

    #[test]
    fn a_delivery_is_named_by_its_event_subject_and_the_layers_id() {
        let delivery = TestDelivery::new("call.completed");
        let planned = Planned::new(delivery.clone());
        let (body, signature) = delivery.body_and_signature();
        let verifier = Verifier::new(crate::testing::DEVELOPMENT_SECRET).unwrap();
        let signature = crate::verify::Signature::parse(signature.unwrap()).unwrap();
        let id = verifier
            .verify(body.as_bytes(), &signature)
            .unwrap()
            .delivery_id();
        assert_eq!(
            planned.described.to_string(),
            format!("call.completed about call:call_xyz789 (delivery {id})")
        );
    }

    #[test]
    fn the_samples_are_two_calls_in_timestamp_order() {
        let samples = samples();
        assert_eq!(samples.len(), 13);
        assert!(samples
            .windows(2)
            .all(|pair| pair[0].signed_at() < pair[1].signed_at()));
        let subjects: Vec<_> = samples
            .iter()
            .map(|delivery| Planned::new(delivery.clone()).described.subject)
            .map(|subject| subject.map(|subject| subject.to_string()))
            .collect();
        assert_eq!(
            subjects[..2],
            [Some("call:call_a".into()), Some("call:call_b".into())]
        );
        assert_eq!(subjects[12], None);
    }
}
