//! Recording what became of claimed deliveries: one transaction for a batch of outcomes, and
//! the lanes their ordered deliveries free.

use chrono::{DateTime, Utc};

use super::{
    dialect::{Dialect, WriteTx},
    lanes,
    rows::{get, text_column, MAX_ERROR_LEN},
    store::{InboxError, Settle, Settlement},
};

/// Records `settlements` in `tx`, and says for each, in order, whether its token still held
/// the delivery.
pub(super) async fn settle(
    dialect: Dialect,
    tx: &mut WriteTx,
    settlements: &[Settlement],
) -> Result<Vec<bool>, InboxError> {
    // Deliveries in id order, then lanes in lane order: two transactions lock shared rows (a
    // lease that changed hands, a lane) in the same order and never deadlock.
    let mut order: Vec<usize> = (0..settlements.len()).collect();
    order.sort_by_key(|&at| settlements[at].id);
    let mut held = vec![false; settlements.len()];
    let mut released = Vec::new();
    for at in order {
        let (holds, lane) = settle_one(tx, &settlements[at]).await?;
        held[at] = holds;
        released.extend(lane);
    }
    released.sort_unstable();
    for lane in &released {
        lanes::release(
            dialect,
            tx.conn(),
            &lane.lane,
            &lane.holder,
            lane.handled_at,
        )
        .await?;
    }
    Ok(held)
}

/// Records one settlement in `tx`; whether its token still held the delivery. Frees the
/// lane of an ordered one, unless it keeps it (still running, or a suspect given back), and
/// returns that lane.
async fn settle_one(
    tx: &mut WriteTx,
    settlement: &Settlement,
) -> Result<(bool, Option<LaneRelease>), InboxError> {
    let Settlement { id, token, outcome } = settlement;
    let change = Change::from(outcome);
    let row = sqlx::query(
        "UPDATE ringyo_inbox SET \
               state = $3, \
               available_at = COALESCE($4, available_at), \
               attempts = attempts - $5, \
               finished_at = $6, \
               last_error = COALESCE($7, last_error), \
               lease_token = CASE WHEN $3 = 'running' THEN lease_token ELSE NULL END, \
               suspect = CASE WHEN $8 = 1 THEN FALSE ELSE suspect END, \
               crashes_alone = CASE WHEN $8 = 1 THEN 0 ELSE crashes_alone END, \
               superseded = CASE WHEN $9 = 1 THEN TRUE ELSE FALSE END \
             WHERE delivery_id = $1 AND lease_token = $2 AND state = 'running' \
             RETURNING lane, order_at, CASE WHEN suspect THEN 1 ELSE 0 END",
    )
    .bind(id.to_string())
    .bind(token.to_string())
    .bind(change.state)
    .bind(change.available_at.map(|at| at.timestamp_millis()))
    .bind(change.attempts_back)
    .bind(change.finished_at.map(|at| at.timestamp_millis()))
    .bind(change.error)
    .bind(i64::from(change.finished))
    .bind(i64::from(change.superseded))
    .fetch_optional(tx.conn())
    .await
    .map_err(InboxError::database)?;
    let Some(row) = row else {
        return Ok((false, None));
    };
    let Some(lane) = get::<Option<String>>(&row, 0)? else {
        return Ok((true, None));
    };
    let suspect = get::<i64>(&row, 2)? == 1;
    let frees = match outcome {
        Settle::Extend { .. } => false,
        Settle::Release { .. } => !suspect,
        _ => true,
    };
    let handled_at = match outcome {
        Settle::Done { .. } => get::<Option<i64>>(&row, 1)?,
        _ => None,
    };
    Ok((
        true,
        frees.then(|| LaneRelease {
            lane,
            holder: id.to_string(),
            handled_at,
        }),
    ))
}

/// A lane its holder settled, to free in the same transaction.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LaneRelease {
    lane: String,
    holder: String,
    /// The holder's `order_at`, if it was handled.
    handled_at: Option<i64>,
}

/// A [`Settle`] as the columns it writes.
struct Change {
    state: &'static str,
    available_at: Option<DateTime<Utc>>,
    attempts_back: i64,
    finished_at: Option<DateTime<Utc>>,
    error: Option<String>,
    /// The attempt finished (handled, failed, dead-lettered): a suspect is cleared.
    finished: bool,
    /// Recorded as handled without running: superseded.
    superseded: bool,
}

impl From<&Settle> for Change {
    fn from(outcome: &Settle) -> Self {
        let change = |state, available_at, finished_at, error| Self {
            state,
            available_at,
            attempts_back: 0,
            finished_at,
            error,
            finished: state != "running",
            superseded: false,
        };
        match *outcome {
            Settle::Extend { lease_until } => change("running", Some(lease_until), None, None),
            Settle::Done { at } => change("done", None, Some(at), None),
            Settle::Superseded { at } => Self {
                superseded: true,
                ..change("done", None, Some(at), None)
            },
            Settle::Retry { at, ref error } => change(
                "pending",
                Some(at),
                None,
                Some(text_column(error, MAX_ERROR_LEN)),
            ),
            Settle::Dead { at, ref error } => change(
                "dead",
                None,
                Some(at),
                Some(text_column(error, MAX_ERROR_LEN)),
            ),
            Settle::Release { at } => Self {
                attempts_back: 1,
                finished: false,
                ..change("pending", Some(at), None, None)
            },
        }
    }
}
