//! Reading the inbox's rows back: the columns a claim returns, and the conversions of stored
//! values, one reading for every statement of [`SqlInbox`](super::SqlInbox).

use chrono::{DateTime, Utc};
use sqlx::{any::AnyRow, Row};

use super::{
    health,
    store::{ClaimedDelivery, InboxError},
};
use crate::{event::Subject, secrets::Tenant, verify::DeliveryId};

/// The columns every claim returns, as [`claimed`] reads them: the row's own, and the newest
/// handled `order_at` of its lane (none outside a lane).
macro_rules! claimed_columns {
    () => {
        "delivery_id, attempts, received_at, payload, tenant, orphaned, crashes_alone, subject, \
         order_at, (SELECT newest_done FROM ringyo_inbox_lanes n WHERE n.lane = ringyo_inbox.lane)"
    };
}
pub(super) use claimed_columns;

/// A claimed row, from the [`claimed_columns`].
pub(super) fn claimed(row: &AnyRow) -> Result<ClaimedDelivery, InboxError> {
    let order_at = get::<Option<i64>>(row, 8)?;
    let newest_done = get::<Option<i64>>(row, 9)?;
    let superseded_by = match (order_at, newest_done) {
        (Some(order_at), Some(newest)) if newest > order_at => Some(millis(newest)?),
        _ => None,
    };
    Ok(ClaimedDelivery {
        id: delivery_id(row)?,
        attempt: attempts(row, 1)?,
        orphaned: attempts(row, 5)?,
        crashes_alone: attempts(row, 6)?,
        received_at: millis(get(row, 2)?)?,
        payload: get::<Vec<u8>>(row, 3)?.into(),
        // Written from a `Tenant` and a `Subject`, so they read back as one; anything else
        // names none.
        tenant: get::<Option<String>>(row, 4)?
            .as_deref()
            .and_then(Tenant::new),
        subject: get::<Option<String>>(row, 7)?.and_then(|text| text.parse().ok()),
        superseded_by,
    })
}

/// The lane of a subject for a tenant: what ordered deliveries are ordered within. A tenant's
/// name has no `/` or `:`, and a subject's text starts with its kind and a `:`, so two lanes
/// are the same only for the same tenant and subject.
pub(super) fn lane(tenant: Option<&Tenant>, subject: &Subject) -> String {
    match tenant {
        Some(tenant) => format!("{tenant}/{subject}"),
        None => subject.to_string(),
    }
}

pub(super) fn get<T>(row: &AnyRow, column: usize) -> Result<T, InboxError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).map_err(InboxError::database)
}

pub(super) fn delivery_id(row: &AnyRow) -> Result<DeliveryId, InboxError> {
    get::<String>(row, 0)?.parse().map_err(InboxError::database)
}

pub(super) fn attempts(row: &AnyRow, column: usize) -> Result<u32, InboxError> {
    u32::try_from(get::<i64>(row, column)?).map_err(InboxError::database)
}

pub(super) fn millis(value: i64) -> Result<DateTime<Utc>, InboxError> {
    DateTime::from_timestamp_millis(value)
        .ok_or_else(|| InboxError::database(format!("{value} ms is not a time")))
}

/// How much of an event's name and of a handler's error the inbox keeps.
pub(super) const MAX_EVENT_LEN: usize = 256;
pub(super) const MAX_ERROR_LEN: usize = 4096;

/// `text` as a text column takes it on every engine: without NUL characters (Postgres refuses
/// them, and one refused row would fail every delivery or outcome sharing its transaction),
/// cut to at most `max` bytes on a character boundary.
pub(super) fn text_column(text: &str, max: usize) -> String {
    let mut kept: String = text.chars().filter(|&c| c != '\0').collect();
    health::cut(&mut kept, max);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SubjectKind;

    #[test]
    fn text_columns_lose_nul_characters_and_stop_at_a_character_boundary() {
        assert_eq!(text_column("panicked: \0boom\0", 100), "panicked: boom");
        assert_eq!(text_column("ééé", 5), "éé");
        assert_eq!(text_column("abc", 3), "abc");
        assert_eq!(text_column("", 3), "");
    }

    #[test]
    fn lanes_of_different_tenants_or_subjects_differ() {
        let call = |id| Subject::new(SubjectKind::Call, id).unwrap();
        let acme = Tenant::new("acme").unwrap();
        let lanes = [
            lane(None, &call("1")),
            lane(Some(&acme), &call("1")),
            lane(None, &call("acme/call:1")),
            lane(Some(&Tenant::new("acme.eu").unwrap()), &call("1")),
        ];
        assert_eq!(lanes[1], "acme/call:1");
        for (at, one) in lanes.iter().enumerate() {
            assert!(!lanes[at + 1..].contains(one), "{lanes:?}");
        }
    }
}
