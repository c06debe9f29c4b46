//! Recording what became of claimed deliveries: one transaction for a batch of outcomes, and
//! the lanes their ordered deliveries free.

use chrono::{DateTime, Utc};

use super::{
    dialect::Dialect,
    lanes,
    rows::{text_column, MAX_ERROR_LEN},
    store::{InboxError, InboxFuture, Settle, Settlement},
};

/// Records `settlements` on `conn`, in its open transaction, and says for each, in order,
/// whether its token still held the delivery.
pub(super) async fn settle<C: SettleOn + ?Sized>(
    dialect: Dialect,
    conn: &mut C,
    settlements: &[Settlement],
) -> Result<Vec<bool>, InboxError> {
    // Deliveries in id order, then lanes in lane order: two transactions lock shared rows (a
    // lease that changed hands, a lane) in the same order and never deadlock.
    let mut order: Vec<usize> = (0..settlements.len()).collect();
    order.sort_by_key(|&at| settlements[at].id);
    let mut held = vec![false; settlements.len()];
    let mut released = Vec::new();
    for at in order {
        let (holds, lane) = conn.settle_one(&settlements[at]).await?;
        held[at] = holds;
        released.extend(lane);
    }
    released.sort_unstable();
    for lane in &released {
        conn.release(dialect, lane).await?;
    }
    Ok(held)
}

/// The statements of a settlement, on a connection of each of the inbox's drivers: sqlx's
/// `Any` for the worker's group commit, and SQLite's or Postgres's own in a transactional
/// handler's transaction, where the delivery is recorded handled in the handler's own
/// transaction. One body, instantiated per driver by `settles_on!`.
pub(super) trait SettleOn: Send {
    /// Records one settlement; whether its token still held the delivery. Returns the lane of
    /// an ordered one that it frees: not while still running, nor a suspect given back.
    fn settle_one<'c>(
        &'c mut self,
        settlement: &'c Settlement,
    ) -> InboxFuture<'c, (bool, Option<LaneRelease>)>;

    /// Frees a lane its holder settled; see [`lanes::RELEASE`].
    fn release<'c>(&'c mut self, dialect: Dialect, lane: &'c LaneRelease) -> InboxFuture<'c, ()>;
}

/// The settlement of one delivery: binds `$1` the delivery, `$2` its token, then a
/// [`Change`]'s columns.
const SETTLE: &str = "UPDATE ringyo_inbox SET \
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
     RETURNING lane, order_at, CAST(CASE WHEN suspect THEN 1 ELSE 0 END AS BIGINT)";

macro_rules! settles_on {
    ($connection:ty) => {
        impl SettleOn for $connection {
            fn settle_one<'c>(
                &'c mut self,
                settlement: &'c Settlement,
            ) -> InboxFuture<'c, (bool, Option<LaneRelease>)> {
                Box::pin(async move {
                    use sqlx::Row;
                    let Settlement { id, token, outcome } = settlement;
                    let change = Change::from(outcome);
                    let row = sqlx::query(SETTLE)
                        .bind(id.to_string())
                        .bind(token.to_string())
                        .bind(change.state)
                        .bind(change.available_at.map(|at| at.timestamp_millis()))
                        .bind(change.attempts_back)
                        .bind(change.finished_at.map(|at| at.timestamp_millis()))
                        .bind(change.error)
                        .bind(i64::from(change.finished))
                        .bind(i64::from(change.superseded))
                        .fetch_optional(&mut *self)
                        .await
                        .map_err(InboxError::database)?;
                    let Some(row) = row else {
                        return Ok((false, None));
                    };
                    let column = |at| {
                        row.try_get::<Option<i64>, _>(at)
                            .map_err(InboxError::database)
                    };
                    let lane = row
                        .try_get::<Option<String>, _>(0)
                        .map_err(InboxError::database)?;
                    let suspect = column(2)? == Some(1);
                    let handled_at = match outcome {
                        Settle::Done { .. } => column(1)?,
                        _ => None,
                    };
                    let frees = match outcome {
                        Settle::Extend { .. } => false,
                        Settle::Release { .. } => !suspect,
                        _ => true,
                    };
                    let release = lane.filter(|_| frees).map(|lane| LaneRelease {
                        lane,
                        holder: id.to_string(),
                        handled_at,
                    });
                    Ok((true, release))
                })
            }

            fn release<'c>(
                &'c mut self,
                dialect: Dialect,
                lane: &'c LaneRelease,
            ) -> InboxFuture<'c, ()> {
                Box::pin(async move {
                    // See `lanes::RELEASE`: on Postgres, locked in a statement of its own.
                    if dialect == Dialect::Postgres {
                        sqlx::query(lanes::LOCK)
                            .bind(lane.lane.as_str())
                            .execute(&mut *self)
                            .await
                            .map_err(InboxError::database)?;
                    }
                    sqlx::query(lanes::RELEASE)
                        .bind(lane.lane.as_str())
                        .bind(lane.holder.as_str())
                        .bind(lane.handled_at)
                        .execute(&mut *self)
                        .await
                        .map_err(InboxError::database)?;
                    Ok(())
                })
            }
        }
    };
}

settles_on!(sqlx::AnyConnection);
#[cfg(feature = "sqlite")]
settles_on!(sqlx::SqliteConnection);
#[cfg(feature = "postgres")]
settles_on!(sqlx::PgConnection);

/// A lane its holder settled, to free in the same transaction.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct LaneRelease {
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
