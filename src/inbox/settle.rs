//! Recording what became of claimed deliveries: one transaction for a batch of outcomes, and
//! the lanes their ordered deliveries free.

use chrono::{DateTime, Utc};

use super::{
    dialect::{json_param, Dialect},
    lanes::{self, LaneRelease},
    rows::{text_column, MAX_ERROR_LEN},
    store::{InboxError, InboxFuture, Settle, Settlement},
};

/// Records `settlements` on `conn`, in its open transaction, and frees the lanes they free:
/// [`record`], then [`release`].
pub(super) async fn settle<C: SettleOn + ?Sized>(
    dialect: Dialect,
    conn: &mut C,
    settlements: &[Settlement],
) -> Result<(Vec<bool>, Vec<Finished>), InboxError> {
    let recorded = record(dialect, conn, settlements).await?;
    release(dialect, conn, &recorded.released).await?;
    Ok((recorded.held, recorded.finished))
}

/// What [`record`] did with a batch of settlements.
pub(super) struct Recorded {
    /// For each settlement, in order, whether its token still held the delivery.
    pub(super) held: Vec<bool>,
    /// The settlements that ended an attempt.
    pub(super) finished: Vec<Finished>,
    /// The lanes they free, sorted: to [`release`] in the same transaction.
    pub(super) released: Vec<LaneRelease>,
}

/// Records `settlements` on `conn`, in its open transaction: which held, which ended an
/// attempt (see [`Finished`]) and which lanes they free, left to the caller to free.
///
/// A few statements for the whole batch, not a few per delivery: on Postgres every statement
/// is a round trip, and the group commit gathers dozens of outcomes at a time. The
/// deliveries' rows are written in one statement (on Postgres preceded by one that locks the
/// rows in order, so two transactions that share rows, a lease that changed hands, lock them
/// in one order and never deadlock).
pub(super) async fn record<C: SettleOn + ?Sized>(
    dialect: Dialect,
    conn: &mut C,
    settlements: &[Settlement],
) -> Result<Recorded, InboxError> {
    let mut order: Vec<usize> = (0..settlements.len()).collect();
    // Stable: two outcomes of one delivery (a lease extended, then the result) keep their order.
    order.sort_by_key(|&at| settlements[at].id);
    let mut held = vec![false; settlements.len()];
    let (mut released, mut finished) = (Vec::new(), Vec::new());
    for wave in waves(&order, |&a, &b| settlements[a].id == settlements[b].id) {
        let batch: Vec<&Settlement> = wave.iter().map(|&&at| &settlements[at]).collect();
        let mut rows = conn.settle_rows(dialect, &batch).await?;
        rows.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        for (&&at, settlement) in wave.iter().zip(&batch) {
            let id = settlement.id.to_string();
            let Ok(found) = rows.binary_search_by(|row| row.id.as_str().cmp(&id)) else {
                continue;
            };
            held[at] = true;
            released.extend(rows[found].release(settlement));
            if settlement.outcome.ends_attempt() {
                finished.push(Finished {
                    by: at,
                    lane: rows[found].lane.clone(),
                });
            }
        }
    }
    released.sort_unstable();
    Ok(Recorded {
        held,
        finished,
        released,
    })
}

/// Frees the lanes `released` (sorted), in waves in which no lane comes twice, in one
/// statement a wave (on Postgres preceded by one that locks the lanes in order); see
/// [`lanes::RELEASE`].
pub(super) async fn release<C: SettleOn + ?Sized>(
    dialect: Dialect,
    conn: &mut C,
    released: &[LaneRelease],
) -> Result<(), InboxError> {
    for wave in lane_waves(released) {
        conn.release_lanes(dialect, &wave).await?;
    }
    Ok(())
}

/// `released` (sorted) in waves in which no lane comes twice: one statement writes a row
/// once.
pub(super) fn lane_waves(released: &[LaneRelease]) -> Vec<Vec<&LaneRelease>> {
    waves(released, |a, b| a.lane == b.lane)
}

/// A settlement that ended its delivery's attempt ([`Settle::ends_attempt`]), so its worker's
/// task is free.
pub(super) struct Finished {
    /// The settlement's place in the batch.
    pub(super) by: usize,
    /// The delivery's lane, if it is ordered: the settlement freed it, if the delivery held
    /// it (as a delivery settled by its own token does).
    pub(super) lane: Option<String>,
}

/// Splits `items`, sorted so that equal ones (by `same`) are neighbours, into waves in which
/// no two are the same: the first of each, then the second, and so on, each wave in the
/// items' order. One statement can write a row only once (Postgres refuses a second change,
/// SQLite picks one), and writing a row's items wave by wave keeps their order.
fn waves<T>(items: &[T], same: impl Fn(&T, &T) -> bool) -> Vec<Vec<&T>> {
    let mut waves: Vec<Vec<&T>> = Vec::new();
    let mut repeat = 0;
    for (at, item) in items.iter().enumerate() {
        let again = at > 0 && same(&items[at - 1], item);
        repeat = if again { repeat + 1 } else { 0 };
        if waves.len() <= repeat {
            waves.push(Vec::new());
        }
        waves[repeat].push(item);
    }
    waves
}

/// The most rows one statement writes: 9 parameters each, well inside SQLite's 32,766 and
/// Postgres's 65,535.
const MAX_ROWS_PER_STATEMENT: usize = 1024;

/// The statements of a settlement, on a connection of each of the inbox's drivers: sqlx's
/// `Any` for the worker's group commit, and SQLite's or Postgres's own in a transactional
/// handler's transaction, where the delivery is recorded handled in the handler's own
/// transaction. One body, instantiated per driver by `settles_on!`; the statements are built
/// by the plain functions below it.
pub(super) trait SettleOn: Send {
    /// Records `batch` (no delivery twice); returns the rows whose token still held them.
    fn settle_rows<'c>(
        &'c mut self,
        dialect: Dialect,
        batch: &'c [&'c Settlement],
    ) -> InboxFuture<'c, Vec<Settled>>;

    /// Frees lanes their holders settled (no lane twice); see [`lanes::RELEASE`].
    fn release_lanes<'c>(
        &'c mut self,
        dialect: Dialect,
        lanes: &'c [&'c LaneRelease],
    ) -> InboxFuture<'c, ()>;
}

/// The settlement of `rows` deliveries: binds for each its id, its token, then a
/// [`Change`]'s columns; `VALUES`' columns are `column1`.. on both engines. A row whose token
/// no longer holds it is left as it is, and not returned.
fn settle_sql(dialect: Dialect, rows: usize) -> String {
    format!(
        "{} ringyo_inbox SET \
           state = v.column3, \
           available_at = COALESCE(v.column4, ringyo_inbox.available_at), \
           attempts = ringyo_inbox.attempts - v.column5, \
           finished_at = v.column6, \
           last_error = COALESCE(v.column7, ringyo_inbox.last_error), \
           lease_token = CASE WHEN v.column3 = 'running' THEN ringyo_inbox.lease_token END, \
           suspect = CASE WHEN v.column8 = 1 THEN FALSE ELSE ringyo_inbox.suspect END, \
           crashes_alone = CASE WHEN v.column8 = 1 THEN 0 ELSE ringyo_inbox.crashes_alone END, \
           superseded = CASE WHEN v.column9 = 1 THEN TRUE ELSE FALSE END \
         FROM (VALUES {}) AS v \
         WHERE ringyo_inbox.delivery_id = v.column1 AND ringyo_inbox.lease_token = v.column2 \
           AND ringyo_inbox.state = 'running' \
         RETURNING ringyo_inbox.delivery_id, ringyo_inbox.lane, ringyo_inbox.order_at, \
           CAST(CASE WHEN ringyo_inbox.suspect THEN 1 ELSE 0 END AS BIGINT)",
        dialect.update(),
        dialect.values(rows, 9)
    )
}

/// Postgres: locks `rows` deliveries, in id order, before [`settle_sql`] writes them: only
/// running ones, the only ones it writes (a stale outcome's delivery may since be a free
/// lane's pending head, which a claim holding that lane is about to take: locking it would
/// wait for the claim, which may be waiting for a lane this settlement frees).
fn lock_deliveries_sql(rows: usize) -> String {
    format!(
        "SELECT delivery_id FROM ringyo_inbox WHERE delivery_id IN ({}) \
         AND state = 'running' ORDER BY delivery_id FOR UPDATE",
        Dialect::Postgres.list(1, rows)
    )
}

/// Postgres: locks lanes, their names a JSON list ([`Dialect::json_any`]), in lane order,
/// before [`release_sql`] writes them, so that a release and a store that share lanes (each
/// store locks its lanes in lane order, see `lanes::make_due`) never deadlock.
fn lock_lanes_sql() -> String {
    format!(
        "SELECT lane FROM ringyo_inbox_lanes WHERE lane = {} ORDER BY lane FOR UPDATE",
        Dialect::json_any(1, false)
    )
}

/// [`lanes::RELEASE`] for `rows` lanes: binds for each the lane, its holder and the holder's
/// `order_at` if it was handled, on SQLite as a `VALUES` list, on Postgres as one JSON
/// parameter ([`Dialect::json_rows`]), whose text is the same for any number of lanes.
fn release_sql(dialect: Dialect, rows: usize) -> String {
    let (lanes, by_key) = match dialect {
        Dialect::Sqlite => (
            format!("(VALUES {})", dialect.values(rows, 3)),
            String::new(),
        ),
        Dialect::Postgres => (
            Dialect::json_rows(1, &["text", "text", "bigint"]),
            format!(
                " AND ringyo_inbox_lanes.lane = {}",
                Dialect::json_any(1, true)
            ),
        ),
    };
    format!(
        "{} ringyo_inbox_lanes SET {} FROM {lanes} AS v \
         WHERE ringyo_inbox_lanes.lane = v.column1 AND ringyo_inbox_lanes.holder = v.column2\
         {by_key}",
        dialect.update(),
        dialect.pick(lanes::RELEASE),
    )
}

macro_rules! settles_on {
    ($connection:ty) => {
        impl SettleOn for $connection {
            fn settle_rows<'c>(
                &'c mut self,
                dialect: Dialect,
                batch: &'c [&'c Settlement],
            ) -> InboxFuture<'c, Vec<Settled>> {
                Box::pin(async move {
                    use sqlx::Row;
                    let mut settled = Vec::with_capacity(batch.len());
                    for chunk in batch.chunks(MAX_ROWS_PER_STATEMENT) {
                        let ids: Vec<String> = chunk
                            .iter()
                            .map(|settlement| settlement.id.to_string())
                            .collect();
                        // One row cannot be locked out of order: no statement for it (a
                        // transactional handler's own settlement, which holds its row).
                        if dialect == Dialect::Postgres && chunk.len() > 1 {
                            let sql = lock_deliveries_sql(chunk.len());
                            let mut lock = sqlx::query(&sql);
                            for id in &ids {
                                lock = lock.bind(id.as_str());
                            }
                            lock.execute(&mut *self)
                                .await
                                .map_err(InboxError::database)?;
                        }
                        let sql = settle_sql(dialect, chunk.len());
                        let mut query = sqlx::query(&sql);
                        for (settlement, id) in chunk.iter().zip(&ids) {
                            let change = Change::from(&settlement.outcome);
                            query = query
                                .bind(id.as_str())
                                .bind(settlement.token.to_string())
                                .bind(change.state)
                                .bind(change.available_at.map(|at| at.timestamp_millis()))
                                .bind(change.attempts_back)
                                .bind(change.finished_at.map(|at| at.timestamp_millis()))
                                .bind(change.error)
                                .bind(i64::from(change.finished))
                                .bind(i64::from(change.superseded));
                        }
                        let rows = query
                            .fetch_all(&mut *self)
                            .await
                            .map_err(InboxError::database)?;
                        for row in &rows {
                            let read = |at| {
                                row.try_get::<Option<i64>, _>(at)
                                    .map_err(InboxError::database)
                            };
                            settled.push(Settled {
                                id: row.try_get(0).map_err(InboxError::database)?,
                                lane: row.try_get(1).map_err(InboxError::database)?,
                                order_at: read(2)?,
                                suspect: read(3)? == Some(1),
                            });
                        }
                    }
                    Ok(settled)
                })
            }

            fn release_lanes<'c>(
                &'c mut self,
                dialect: Dialect,
                lanes: &'c [&'c LaneRelease],
            ) -> InboxFuture<'c, ()> {
                Box::pin(async move {
                    for chunk in lanes.chunks(MAX_ROWS_PER_STATEMENT) {
                        let rows = chunk.iter().map(|release| {
                            (
                                release.lane.as_str(),
                                release.holder.as_str(),
                                release.handled_at,
                            )
                        });
                        let sql = release_sql(dialect, chunk.len());
                        let mut query = sqlx::query(&sql);
                        if dialect == Dialect::Postgres {
                            let lanes: Vec<&str> = chunk.iter().map(|r| r.lane.as_str()).collect();
                            sqlx::query(&lock_lanes_sql())
                                .bind(json_param(&lanes)?)
                                .execute(&mut *self)
                                .await
                                .map_err(InboxError::database)?;
                            query = query.bind(json_param(&rows.collect::<Vec<_>>())?);
                        } else {
                            for (lane, holder, handled_at) in rows {
                                query = query.bind(lane).bind(holder).bind(handled_at);
                            }
                        }
                        query
                            .execute(&mut *self)
                            .await
                            .map_err(InboxError::database)?;
                    }
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

/// A delivery row a settlement wrote, as it is after.
pub(super) struct Settled {
    id: String,
    lane: Option<String>,
    order_at: Option<i64>,
    suspect: bool,
}

impl Settled {
    /// The lane this settlement frees: an ordered delivery's, unless it still runs (a lease
    /// extended) or is a suspect given back, which keeps its lane to run alone.
    fn release(&self, settlement: &Settlement) -> Option<LaneRelease> {
        let frees = match settlement.outcome {
            Settle::Extend { .. } => false,
            Settle::Release { .. } => !self.suspect,
            _ => true,
        };
        let handled_at = match settlement.outcome {
            Settle::Done { .. } => self.order_at,
            _ => None,
        };
        self.lane.clone().filter(|_| frees).map(|lane| LaneRelease {
            lane,
            holder: self.id.clone(),
            handled_at,
            ended_attempt: settlement.outcome.ends_attempt(),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_seen_twice_goes_in_the_next_wave_and_keeps_its_order() {
        let items = [(1, 'a'), (1, 'b'), (1, 'c'), (2, 'd'), (3, 'e'), (3, 'f')];
        let waves = waves(&items, |a, b| a.0 == b.0);
        let names: Vec<String> = waves
            .iter()
            .map(|wave| wave.iter().map(|(_, name)| name).collect())
            .collect();
        assert_eq!(names, ["ade", "bf", "c"]);
    }
}
