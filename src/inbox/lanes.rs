//! The lanes of ordered deliveries in SQL: one row per subject and tenant in
//! `ringyo_inbox_lanes`, which a claim locks, so that across every worker and replica one
//! delivery of a lane runs at a time, the lane's earliest first.
//!
//! A lane's row holds the delivery that has it (`holder`: running, or a suspect waiting to
//! run alone), when it is next due while free (`due_at`), and the `order_at` of its newest
//! handled delivery (`newest_done`). Every change to a lane's deliveries that matters to its
//! order (storing, claiming, settling, replaying) writes the lane's row in the same
//! transaction, so a claim that holds the row's lock sees them all:
//!
//! 1. lock free lanes that are due, and mark them with the claim's token (Postgres skips lanes
//!    another transaction holds, and re-checks `holder IS NULL` on the row's newest version);
//! 2. in a fresh statement (on Postgres, a fresh snapshot, taken after the locks), claim each
//!    marked lane's first pending delivery, if it is due and not a suspect;
//! 3. give each marked lane its holder (the delivery just claimed, or a suspect at its head)
//!    and its next due time.
//!
//! Settling a lane's holder frees the lane (a suspect given back keeps it), and a handled one
//! moves `newest_done` forward. `due_at` is a hint no later than the truth: storing only
//! lowers it, and each claim and settlement of the lane sets it to its head's due time.

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, AnyPool};

use super::{
    dialect::{Dialect, WriteTx},
    rows::{self, claimed_columns},
    store::{ClaimedDelivery, InboxError},
};
use crate::replay::ClaimToken;

/// The lane's first pending delivery, the one to run next: `$lane` is a column or parameter.
macro_rules! head {
    ($what:literal, $lane:literal) => {
        concat!(
            "(SELECT ",
            $what,
            " FROM ringyo_inbox h WHERE h.lane = ",
            $lane,
            " AND h.state = 'pending' ORDER BY h.order_at, h.received_at, h.delivery_id LIMIT 1)"
        )
    };
}

macro_rules! take_lanes {
    ($lock:literal) => {
        concat!(
            "UPDATE ringyo_inbox_lanes SET holder = $1 WHERE lane IN (SELECT lane FROM \
             ringyo_inbox_lanes WHERE holder IS NULL AND due_at <= $2 ORDER BY due_at LIMIT $3",
            $lock,
            ")"
        )
    };
}

macro_rules! prune {
    ($lock:literal) => {
        concat!(
            "DELETE FROM ringyo_inbox_lanes WHERE lane IN (SELECT lane FROM ringyo_inbox_lanes \
             WHERE holder IS NULL AND due_at IS NULL AND (newest_done IS NULL OR newest_done < $1)",
            $lock,
            ")"
        )
    };
}

/// Step 1 of a claim, `[SQLite, Postgres]`: binds `$1` the claim's mark, `$2` now, `$3` how
/// many lanes.
const TAKE_LANES: [&str; 2] = [take_lanes!(""), take_lanes!(" FOR UPDATE SKIP LOCKED")];

/// Step 2: binds `$1` the token, `$2` the end of the lease, `$3` the holder id of the inbox,
/// `$4` now, `$5` the claim's mark.
const CLAIM_HEADS: &str = concat!(
    "UPDATE ringyo_inbox SET state = 'running', attempts = attempts + 1, lease_token = $1, \
     available_at = $2, lease_holder = $3 \
     WHERE state = 'pending' AND NOT suspect AND available_at <= $4 AND delivery_id IN \
     (SELECT ",
    head!("h.delivery_id", "l.lane"),
    " FROM ringyo_inbox_lanes l WHERE l.holder = $5) RETURNING ",
    claimed_columns!()
);

/// Step 3: binds `$1` the claim's mark.
const HOLD_LANES: &str = concat!(
    "UPDATE ringyo_inbox_lanes SET holder = COALESCE(\
     (SELECT r.delivery_id FROM ringyo_inbox r WHERE r.lane = ringyo_inbox_lanes.lane \
       AND r.state = 'running' LIMIT 1), ",
    head!(
        "CASE WHEN h.suspect THEN h.delivery_id END",
        "ringyo_inbox_lanes.lane"
    ),
    "), due_at = ",
    head!("h.available_at", "ringyo_inbox_lanes.lane"),
    " WHERE holder = $1"
);

/// Frees lanes their holders settled, as the `SET` of an `UPDATE ringyo_inbox_lanes .. FROM
/// (VALUES ..) AS v` whose rows are the lane, its holder and the holder's `order_at` if it was
/// handled (run, not superseded), matched on the lane and its holder (a lane that holder no
/// longer holds is left as it is).
///
/// On Postgres the lanes' rows are first locked in a statement of their own: the release's
/// next due time reads the lane's deliveries, and a statement that waits for a lock still
/// reads them as they were when it began, so one that waited for a store of a new delivery
/// in the lane would miss it and leave the lane free with nothing due, that delivery waiting
/// for ever. Locked first, the release begins after the store committed, and sees it.
pub(super) const RELEASE: &str = concat!(
    "holder = NULL, \
     newest_done = CASE WHEN v.column3 IS NOT NULL AND (ringyo_inbox_lanes.newest_done IS NULL \
       OR ringyo_inbox_lanes.newest_done < v.column3) \
       THEN v.column3 ELSE ringyo_inbox_lanes.newest_done END, \
     due_at = ",
    head!("h.available_at", "v.column1")
);

/// After a replay: the newest handled is the newest still handled. Binds `$1` the lane.
const RECOUNT_NEWEST: &str = "UPDATE ringyo_inbox_lanes SET newest_done = \
     (SELECT MAX(d.order_at) FROM ringyo_inbox d WHERE d.lane = $1 AND d.state = 'done' \
       AND NOT d.superseded) WHERE lane = $1";

/// Deletes lanes with nothing left to order and no handled event newer than `$1`, `[SQLite,
/// Postgres]`. The conditions are on the lane's own row, which Postgres re-checks on its
/// newest version, so a lane a delivery was just stored in stays. `newest_done` is an event's
/// time, a little earlier than its handling, so a lane may go a little before the handled
/// deliveries it counted are pruned: a late arrival after that is no longer superseded, well
/// past the 12 minutes of Ringyo's retries and the layer's freshness window.
const PRUNE: [&str; 2] = [prune!(""), prune!(" FOR UPDATE SKIP LOCKED")];

/// The earliest a free lane is due, for [`next_due`](super::InboxStore::next_due).
pub(super) const NEXT_DUE: &str =
    "SELECT MIN(due_at) AS at FROM ringyo_inbox_lanes WHERE holder IS NULL";

/// Claims up to `limit` deliveries, the first of as many free lanes, in `tx`, and commits it:
/// after a read found a lane due.
pub(super) async fn claim(
    dialect: Dialect,
    mut tx: WriteTx,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
    token: ClaimToken,
    holder: &str,
) -> Result<Vec<ClaimedDelivery>, InboxError> {
    let now = now.timestamp_millis();
    // Not a delivery id (64 hex digits), so no lane's holder is mistaken for it.
    let mark = format!("claiming {token}");
    sqlx::query(dialect.pick(TAKE_LANES))
        .bind(mark.as_str())
        .bind(now)
        .bind(i64::from(limit))
        .execute(tx.conn())
        .await
        .map_err(InboxError::database)?;
    let claimed = sqlx::query(CLAIM_HEADS)
        .bind(token.to_string())
        .bind(lease_until.timestamp_millis())
        .bind(holder)
        .bind(now)
        .bind(mark.as_str())
        .fetch_all(tx.conn())
        .await
        .map_err(InboxError::database)?;
    sqlx::query(HOLD_LANES)
        .bind(mark.as_str())
        .execute(tx.conn())
        .await
        .map_err(InboxError::database)?;
    tx.commit().await?;
    claimed.iter().map(rows::claimed).collect()
}

/// Makes each of `lanes` (lane, when its new delivery is due) due no later than that: after
/// ordered deliveries are stored or replayed, in the same transaction. In one statement, each
/// lane once (Postgres refuses to change a row twice in one), in lane order, so transactions
/// that lock several lanes lock them in one order and never deadlock.
pub(super) async fn make_due(
    conn: &mut AnyConnection,
    lanes: &mut Vec<(String, i64)>,
) -> Result<(), InboxError> {
    lanes.sort_unstable();
    // Sorted, the earliest due of a lane comes first: keep that one.
    lanes.dedup_by(|later, first| later.0 == first.0);
    for chunk in lanes.chunks(MAX_LANES_PER_STATEMENT) {
        let values = (0..chunk.len())
            .map(|at| format!("(${}, ${})", 2 * at + 1, 2 * at + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO ringyo_inbox_lanes (lane, due_at) VALUES {values} \
             ON CONFLICT (lane) DO UPDATE SET due_at = CASE \
               WHEN ringyo_inbox_lanes.due_at IS NULL \
                 OR excluded.due_at < ringyo_inbox_lanes.due_at THEN excluded.due_at \
               ELSE ringyo_inbox_lanes.due_at END"
        );
        let mut query = sqlx::query(&sql);
        for (lane, due_at) in chunk {
            query = query.bind(lane.as_str()).bind(*due_at);
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(InboxError::database)?;
    }
    Ok(())
}

/// The most lanes one statement of [`make_due`] names (two parameters each: SQLite takes
/// 32,766, Postgres 65,535).
const MAX_LANES_PER_STATEMENT: usize = 1024;

/// After deliveries of `lane` were replayed: its newest handled is recounted from those still
/// handled.
pub(super) async fn recount_newest(conn: &mut AnyConnection, lane: &str) -> Result<(), InboxError> {
    sqlx::query(RECOUNT_NEWEST)
        .bind(lane)
        .execute(conn)
        .await
        .map_err(InboxError::database)?;
    Ok(())
}

/// Deletes lanes with nothing to order and no handled event newer than `before`; returns how
/// many.
pub(super) async fn prune(
    dialect: Dialect,
    pool: &AnyPool,
    before: DateTime<Utc>,
) -> Result<u64, InboxError> {
    let deleted = sqlx::query(dialect.pick(PRUNE))
        .bind(before.timestamp_millis())
        .execute(pool)
        .await
        .map_err(InboxError::database)?;
    Ok(deleted.rows_affected())
}
