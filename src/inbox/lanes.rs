//! The lanes of ordered deliveries in SQL: one row per subject and tenant in
//! `ringyo_inbox_lanes`, which a claim locks, so that across every worker and replica one
//! delivery of a lane runs at a time, the lane's earliest first.
//!
//! A lane's row holds the delivery that has it (`holder`: running, or a suspect waiting to
//! run alone), when it is next due while free (`due_at`), and the `order_at` of its newest
//! handled delivery (`newest_done`). Every change to a free lane's deliveries (storing,
//! claiming, settling its holder, replaying) writes or locks the lane's row in the same
//! transaction, so a claim that holds the row's lock sees them all. (What changes a delivery
//! without it, a suspect's claim, a lease extended, a suspect given back, touches only a held
//! lane's, which no claim takes.)
//!
//! 1. take free lanes that are due (Postgres locks them, skipping lanes another transaction
//!    holds, and re-checks `holder IS NULL` on each row's newest version; on SQLite the write
//!    lock excludes every other writer);
//! 2. read each lane's running delivery and first pending one, once (on Postgres in a
//!    statement of its own, whose snapshot is taken after the locks);
//! 3. claim each lane's first pending delivery, if it is due, not a suspect, and nothing of
//!    the lane runs;
//! 4. give each lane it holds its holder (the delivery just claimed, or a suspect at its head),
//!    and each lane it leaves free its head's due time.
//!
//! On Postgres steps 2 to 4 are decided by [`Taken`]'s plain functions, and step 4 is two
//! statements. On SQLite, whose write lock keeps every other writer out for the whole
//! transaction, steps 1, 2 and 4 are one statement that decides in SQL (`next_holder!`) and
//! returns the lanes, and step 3 claims the holders it gave them ([`claim_holders_sql`]):
//! two statements, where reading the heads into Rust and writing the lanes back took four.
//!
//! Settling a lane's holder frees the lane (a suspect given back keeps it), and a handled one
//! moves `newest_done` forward. `due_at` is a hint no later than the truth while the lane is
//! free: storing only lowers it, and a claim that leaves the lane free and each settlement
//! that frees it set it to its head's due time. A held lane's is read by nothing.
//!
//! On SQLite a settlement that frees lanes hands them over itself, in its own transaction
//! ([`release_and_hand_over`]): one statement frees each lane to its next holder, as a claim
//! on SQLite does, and another claims those that are due; then slots left empty take free
//! lanes as a claim does ([`take_and_claim`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{any::AnyRow, AnyConnection, AnyPool};

use super::{
    dialect::{Dialect, WriteTx},
    rows::{self, claimed_columns, get},
    store::{ClaimedDelivery, HandOver, InboxError},
};
use crate::verify::DeliveryId;

/// The lane's first pending delivery, the one to run next: `$lane` is a column or parameter.
macro_rules! head {
    ($what:expr, $lane:literal) => {
        concat!(
            "(SELECT ",
            $what,
            " FROM ringyo_inbox h WHERE h.lane = ",
            $lane,
            " AND h.state = 'pending' ORDER BY h.order_at, h.received_at, h.delivery_id LIMIT 1)"
        )
    };
}

/// Who holds lane `$lane` once handed over at `$now` (both columns or parameters): a delivery
/// of it still running, or else its head if that is due or a suspect (which holds its lane to
/// run alone); none leaves it free. As [`Taken::after`] decides it for a head claimed
/// whenever it is due and not a suspect, as it is under SQLite's write lock.
macro_rules! next_holder {
    ($lane:literal, $now:literal) => {
        concat!(
            "COALESCE((SELECT r.delivery_id FROM ringyo_inbox r WHERE r.lane = ",
            $lane,
            " AND r.state = 'running' LIMIT 1), ",
            head!(
                concat!(
                    "CASE WHEN h.suspect OR h.available_at <= ",
                    $now,
                    " THEN h.delivery_id END"
                ),
                $lane
            ),
            ")"
        )
    };
}

/// What step 2 reads of each lane `l` and its head `f`, as [`Taken::read`] reads it: the
/// lane, a delivery of it that is running if any, then the head's id, whether it is a suspect
/// and when it is due.
macro_rules! heads_columns {
    () => {
        "SELECT l.lane, (SELECT r.delivery_id FROM ringyo_inbox r WHERE r.lane = l.lane \
           AND r.state = 'running' LIMIT 1), \
         f.delivery_id, CAST(CASE WHEN f.suspect THEN 1 ELSE 0 END AS BIGINT), f.available_at"
    };
}

/// The `SET` of a release of lanes, `VALUES` `(lane, holder, handled_at, ..)` matched on the
/// lane and its holder: `holder` becomes `$holder`, `newest_done` moves to a handled
/// holder's `order_at`, `due_at` is the head's due time.
macro_rules! release {
    ($holder:expr) => {
        concat!(
            "holder = ",
            $holder,
            ", newest_done = CASE WHEN v.column3 IS NOT NULL \
               AND (ringyo_inbox_lanes.newest_done IS NULL \
                 OR ringyo_inbox_lanes.newest_done < v.column3) \
               THEN v.column3 ELSE ringyo_inbox_lanes.newest_done END, \
             due_at = ",
            head!("h.available_at", "v.column1")
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

/// A claim's steps 1, 2 and 4 on SQLite, in one statement: the claim's transaction holds the
/// file's write lock, which keeps every other writer out, so each free lane due at `?1` (up
/// to `?2` of them, the earliest first) is given its next holder (`next_holder!`) and its
/// head's due time, decided in SQL; [`claim_holders_sql`] is step 3. Returns each lane.
const TAKE_SQLITE: &str = concat!(
    "UPDATE OR FAIL ringyo_inbox_lanes SET holder = ",
    next_holder!("ringyo_inbox_lanes.lane", "?1"),
    ", due_at = ",
    head!("h.available_at", "ringyo_inbox_lanes.lane"),
    " WHERE lane IN (SELECT lane FROM ringyo_inbox_lanes WHERE holder IS NULL AND due_at <= ?1 \
       ORDER BY due_at LIMIT ?2) RETURNING lane"
);

/// Step 1 on Postgres: locks free lanes that are due, the earliest first, skipping lanes
/// another transaction holds (and re-checking `holder IS NULL` on the newest version of each
/// row it locks). Binds `$1` now, `$2` how many lanes.
const TAKE_LANES_POSTGRES: &str = "SELECT lane FROM ringyo_inbox_lanes \
     WHERE holder IS NULL AND due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED";

/// Step 2 on Postgres for `lanes` free lanes this transaction locked: binds the lanes. In a
/// statement of its own, whose snapshot, taken after the locks, holds every change to these
/// lanes' deliveries, each committed with a write to the lane's row; a `LATERAL` subquery
/// keeps the planner on the head's index, lane by lane (joined on a subquery's result, it
/// read the whole table at times).
fn heads_postgres(lanes: usize) -> String {
    format!(
        concat!(
            heads_columns!(),
            " FROM ringyo_inbox_lanes l LEFT JOIN LATERAL ",
            head!("h.delivery_id, h.suspect, h.available_at", "l.lane"),
            " AS f ON TRUE WHERE l.holder IS NULL AND l.lane IN ({})"
        ),
        Dialect::Postgres.list(1, lanes)
    )
}

/// Runs `sql`, [`TAKE_SQLITE`] or [`TAKE_LANES_POSTGRES`], for up to `limit` free lanes due at
/// `now`; returns the lanes it took.
async fn take_lanes(
    conn: &mut AnyConnection,
    sql: &str,
    now: i64,
    limit: u32,
) -> Result<Vec<String>, InboxError> {
    sqlx::query(sql)
        .bind(now)
        .bind(i64::from(limit.min(MAX_LANES_PER_CLAIM)))
        .fetch_all(&mut *conn)
        .await
        .map_err(InboxError::database)?
        .iter()
        .map(|lane| get::<String>(lane, 0))
        .collect()
}

/// Steps 1 and 2 on Postgres: takes up to `limit` free lanes due at `now` and reads what
/// each holds.
async fn take_postgres(
    conn: &mut AnyConnection,
    now: i64,
    limit: u32,
) -> Result<Vec<Taken>, InboxError> {
    let lanes = take_lanes(conn, TAKE_LANES_POSTGRES, now, limit).await?;
    if lanes.is_empty() {
        return Ok(Vec::new());
    }
    let sql = heads_postgres(lanes.len());
    let mut query = sqlx::query(&sql);
    for lane in &lanes {
        query = query.bind(lane.as_str());
    }
    query
        .fetch_all(&mut *conn)
        .await
        .map_err(InboxError::database)?
        .iter()
        .map(Taken::read)
        .collect()
}

/// A claim of the deliveries whose id is in `ids` (a list, or a subquery, of parameters
/// numbered from `$4`) that are still pending and not suspects (a suspect holds its lane to
/// run alone, claimed by `claim_suspect_sql`), leased: binds `$1` the token, `$2` the end of
/// the lease, `$3` the holder id of the inbox (see [`claim_rows`]). Each row is the
/// [`claimed_columns`], then `more`.
fn claim_pending_sql(dialect: Dialect, ids: &str, more: &str) -> String {
    let param = |at| dialect.list(at, 1);
    format!(
        concat!(
            "{} ringyo_inbox SET state = 'running', attempts = attempts + 1, \
             lease_token = {}, available_at = {}, lease_holder = {} \
             WHERE state = 'pending' AND NOT suspect AND delivery_id IN ({}) RETURNING ",
            claimed_columns!(),
            "{}"
        ),
        dialect.update(),
        param(1),
        param(2),
        param(3),
        ids,
        more
    )
}

/// Runs `sql`, a [`claim_pending_sql`], leased as `lease` says to the inbox `holder`, with
/// `keys` its parameters from `$4`; returns its rows.
async fn claim_rows(
    conn: &mut AnyConnection,
    sql: &str,
    lease: &HandOver,
    holder: &str,
    keys: impl IntoIterator<Item = String>,
) -> Result<Vec<AnyRow>, InboxError> {
    let mut query = sqlx::query(sql)
        .bind(lease.token.to_string())
        .bind(lease.lease_until.timestamp_millis())
        .bind(holder);
    for key in keys {
        query = query.bind(key);
    }
    query
        .fetch_all(&mut *conn)
        .await
        .map_err(InboxError::database)
}

/// Step 4: sets `column` of each of `lanes` (the lane, the value) in one statement: `holder`
/// of the lanes held (their due time stays as it was, see [`After::Held`], and so does their
/// index entry), `due_at` of those left free.
async fn set_lanes<T>(
    dialect: Dialect,
    conn: &mut AnyConnection,
    column: &str,
    lanes: Vec<(String, T)>,
) -> Result<(), InboxError>
where
    T: 'static + Send + for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    if lanes.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "{} ringyo_inbox_lanes SET {column} = v.column2 \
         FROM (VALUES {}) AS v WHERE ringyo_inbox_lanes.lane = v.column1",
        dialect.update(),
        dialect.values(lanes.len(), 2)
    );
    let mut query = sqlx::query(&sql);
    for (lane, value) in lanes {
        query = query.bind(lane).bind(value);
    }
    query.execute(conn).await.map_err(InboxError::database)?;
    Ok(())
}

/// The most lanes one claim takes: its statements stay well inside every engine's limit on
/// parameters (at most two a lane), and a worker asks again for more.
const MAX_LANES_PER_CLAIM: u32 = 1024;

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
pub(super) const RELEASE: &str = release!("NULL");

/// The `SET` of [`release_and_hand_over`]'s statement: [`RELEASE`]'s, the lane held then by
/// a delivery of it still running (none while its holder was the one settled, but a lane
/// never runs two), or else its first pending delivery if that is due at `v.column4` or a
/// suspect (which holds its lane to run alone).
const HAND_OVER: &str = release!(next_holder!("v.column1", "v.column4"));

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
    lease: &HandOver,
    limit: u32,
    holder: &str,
) -> Result<Vec<ClaimedDelivery>, InboxError> {
    let claimed = take_and_claim(dialect, tx.conn(), lease, limit, holder).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Claims up to `limit` deliveries, the first of as many free lanes due at `lease.now`, in
/// the open transaction on `conn`: a claim's, or on SQLite a settlement's that has slots its
/// own lanes left empty.
pub(super) async fn take_and_claim(
    dialect: Dialect,
    conn: &mut AnyConnection,
    lease: &HandOver,
    limit: u32,
    holder: &str,
) -> Result<Vec<ClaimedDelivery>, InboxError> {
    let now = lease.now.timestamp_millis();
    let claimed = match dialect {
        Dialect::Sqlite => {
            let lanes = take_lanes(conn, TAKE_SQLITE, now, limit).await?;
            claim_holders(dialect, conn, lanes, lease, holder).await?
        }
        Dialect::Postgres => {
            let taken = take_postgres(conn, now, limit).await?;
            claim_taken(dialect, conn, &taken, lease, holder).await?
        }
    };
    Ok(claimed.into_iter().map(|(_, delivery)| delivery).collect())
}

/// A lane its holder settled, to free in the same transaction.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct LaneRelease {
    pub(super) lane: String,
    pub(super) holder: String,
    /// The holder's `order_at`, if it was handled.
    pub(super) handled_at: Option<i64>,
    /// Whether the holder's attempt ended ([`Settle::ends_attempt`]): only then is its lane
    /// handed over, with its worker's task free (a delivery given back is its lane's head
    /// again, and runs when a claim takes it).
    ///
    /// [`Settle::ends_attempt`]: super::store::Settle::ends_attempt
    pub(super) ended_attempt: bool,
}

/// Frees the lanes `released` (no lane twice) and claims each one's next delivery, if due at
/// `lease.now`, in the open transaction on `conn` of the settlement that freed them: on
/// SQLite, whose write lock keeps every other writer out meanwhile. Returns each delivery
/// claimed with its lane.
///
/// Two statements for the batch: the release gives each lane its next holder, decided in
/// SQL ([`HAND_OVER`]); then the holders that are pending and not suspects are claimed
/// ([`claim_holders_sql`]). Released first, so the claim reads each lane's newest handled with the
/// settlement's in it, and a late arrival handed over is seen as superseded.
pub(super) async fn release_and_hand_over(
    dialect: Dialect,
    conn: &mut AnyConnection,
    released: &[&LaneRelease],
    lease: &HandOver,
    holder: &str,
) -> Result<Vec<(String, ClaimedDelivery)>, InboxError> {
    let now = lease.now.timestamp_millis();
    let mut claimed = Vec::new();
    for chunk in released.chunks(MAX_LANES_PER_CLAIM as usize) {
        let sql = format!(
            "{} ringyo_inbox_lanes SET {HAND_OVER} FROM (VALUES {}) AS v \
             WHERE ringyo_inbox_lanes.lane = v.column1 AND ringyo_inbox_lanes.holder = v.column2",
            dialect.update(),
            dialect.values(chunk.len(), 4)
        );
        let mut query = sqlx::query(&sql);
        for release in chunk {
            query = query
                .bind(release.lane.as_str())
                .bind(release.holder.as_str())
                .bind(release.handled_at)
                .bind(now);
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(InboxError::database)?;
        let lanes = chunk.iter().map(|release| release.lane.clone()).collect();
        claimed.extend(claim_holders(dialect, conn, lanes, lease, holder).await?);
    }
    Ok(claimed)
}

/// Claims the holders of `lanes` (at most [`MAX_LANES_PER_CLAIM`]) that are pending and not
/// suspects, each just given its lane by [`HAND_OVER`] or [`TAKE_SQLITE`], leased as `lease`
/// says to the inbox `holder`; returns each claimed with its lane.
async fn claim_holders(
    dialect: Dialect,
    conn: &mut AnyConnection,
    lanes: Vec<String>,
    lease: &HandOver,
    holder: &str,
) -> Result<Vec<(String, ClaimedDelivery)>, InboxError> {
    if lanes.is_empty() {
        return Ok(Vec::new());
    }
    let sql = claim_holders_sql(dialect, lanes.len());
    claim_rows(conn, &sql, lease, holder, lanes)
        .await?
        .iter()
        .map(|row| Ok((get::<String>(row, CLAIMED_LANE)?, rows::claimed(row)?)))
        .collect()
}

/// The claim ([`claim_pending_sql`]) of the holders of `lanes` lanes that are pending and not
/// suspects (a holder running already is left to run; a suspect holds its lane to run
/// alone). A lane's holder is pending and not a suspect only between [`HAND_OVER`] or
/// [`TAKE_SQLITE`] giving it the lane and this claim, in one transaction, so this claims
/// exactly those. Binds the lanes from `$4`; each row is the [`claimed_columns`], then its
/// lane ([`CLAIMED_LANE`]).
fn claim_holders_sql(dialect: Dialect, lanes: usize) -> String {
    claim_pending_sql(
        dialect,
        &format!(
            "SELECT holder FROM ringyo_inbox_lanes WHERE lane IN ({})",
            dialect.list(4, lanes)
        ),
        ", lane",
    )
}

/// Where [`claim_holders_sql`]'s rows have their lane: after the [`claimed_columns`].
const CLAIMED_LANE: usize = 10;

/// The id of a lane's head, as a delivery's.
fn parse_head(id: &str) -> Result<DeliveryId, InboxError> {
    id.parse()
        .map_err(|_| InboxError::database(format!("a lane's first delivery has a bad id: {id:?}")))
}

/// Claims `heads` (each delivery by id, with its lane) that are still pending and not
/// suspects, leased as `lease` says to the inbox `holder`; returns each claimed by its lane.
async fn claim_heads<'l>(
    dialect: Dialect,
    conn: &mut AnyConnection,
    heads: &HashMap<DeliveryId, &'l str>,
    lease: &HandOver,
    holder: &str,
) -> Result<HashMap<&'l str, ClaimedDelivery>, InboxError> {
    if heads.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = claim_pending_sql(dialect, &dialect.list(4, heads.len()), "");
    let ids = heads.keys().map(DeliveryId::to_string);
    claim_rows(conn, &sql, lease, holder, ids)
        .await?
        .iter()
        .map(rows::claimed)
        .filter_map(|delivery| match delivery {
            Ok(delivery) => Some(Ok((*heads.get(&delivery.id)?, delivery))),
            Err(err) => Some(Err(err)),
        })
        .collect()
}

/// Steps 3 and 4 for the lanes `taken`: claims each one's head if [`Taken::to_claim`] says
/// so, leased as `lease` says to the inbox `holder`, and writes the lanes; returns the
/// deliveries claimed, each with its lane.
async fn claim_taken(
    dialect: Dialect,
    conn: &mut AnyConnection,
    taken: &[Taken],
    lease: &HandOver,
    holder: &str,
) -> Result<Vec<(String, ClaimedDelivery)>, InboxError> {
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    let now = lease.now.timestamp_millis();
    // Each head to claim, by id, with its lane.
    let heads = taken
        .iter()
        .filter_map(|lane| Some((lane.to_claim(now)?, lane.lane.as_str())))
        .map(|(head, lane)| Ok((parse_head(head)?, lane)))
        .collect::<Result<HashMap<_, _>, InboxError>>()?;
    let claimed = claim_heads(dialect, conn, &heads, lease, holder).await?;
    let (mut held, mut free) = (Vec::new(), Vec::new());
    for lane in taken {
        let head_claimed = claimed.contains_key(lane.lane.as_str());
        match lane.after(head_claimed) {
            After::Held(holder) => held.push((lane.lane.clone(), holder.to_owned())),
            After::Free(due_at) => free.push((lane.lane.clone(), due_at)),
        }
    }
    set_lanes(dialect, &mut *conn, "holder", held).await?;
    set_lanes(dialect, &mut *conn, "due_at", free).await?;
    Ok(claimed
        .into_iter()
        .map(|(lane, delivery)| (lane.to_owned(), delivery))
        .collect())
}

/// A lane a claim took, as step 2 read it.
#[derive(Debug)]
struct Taken {
    lane: String,
    /// A delivery of the lane already running (none while the lane is free, but a lane never
    /// runs two: if one is found, it holds the lane and nothing else is claimed).
    running: Option<String>,
    /// The lane's first pending delivery.
    head: Option<Head>,
}

/// A lane's first pending delivery.
#[derive(Debug)]
struct Head {
    id: String,
    /// Given back after crashes and waiting to run alone: it holds its lane meanwhile.
    suspect: bool,
    available_at: i64,
}

impl Taken {
    fn read(row: &AnyRow) -> Result<Self, InboxError> {
        let head = match get::<Option<String>>(row, 2)? {
            Some(id) => Some(Head {
                id,
                suspect: get::<i64>(row, 3)? == 1,
                available_at: get::<i64>(row, 4)?,
            }),
            None => None,
        };
        Ok(Self {
            lane: get(row, 0)?,
            running: get(row, 1)?,
            head,
        })
    }

    /// The delivery to claim at `now`: the head, if it is due, not a suspect, and nothing of
    /// the lane runs.
    fn to_claim(&self, now: i64) -> Option<&str> {
        self.head
            .as_ref()
            .filter(|head| self.running.is_none() && !head.suspect && head.available_at <= now)
            .map(|head| head.id.as_str())
    }

    /// What the claim leaves the lane as, `head_claimed` saying whether its head was claimed.
    fn after(&self, head_claimed: bool) -> After<'_> {
        let head = self.head.as_ref();
        let holder = self.running.as_deref().or_else(|| {
            head.filter(|head| head_claimed || head.suspect)
                .map(|head| head.id.as_str())
        });
        match holder {
            Some(holder) => After::Held(holder),
            None => After::Free(head.map(|head| head.available_at)),
        }
    }
}

/// What a claim leaves a lane it took as.
#[derive(Debug, PartialEq, Eq)]
enum After<'a> {
    /// Held by this delivery: running (just claimed, or already), or a suspect at its head
    /// waiting to run alone. On Postgres its due time is left as it was: nothing reads a held
    /// lane's, and its release sets it afresh. (SQLite's one statement sets it to the head's
    /// even for a lane it holds: one more entry of `ringyo_inbox_lanes_by_due` written a
    /// claim, on the index's few pages, which storing and settling write in most commits.)
    Held(&'a str),
    /// Free, next due then: its head's due time (a claim taking a lane whose head is not yet
    /// due, a hint that was early), or none without a pending delivery.
    Free(Option<i64>),
}

/// Makes each of `lanes` (lane, when its new delivery is due) due no later than that: after
/// ordered deliveries are stored or replayed, in the same transaction. In one statement, each
/// lane once (Postgres refuses to change a row twice in one), in lane order, so transactions
/// that lock several lanes lock them in one order and never deadlock. A lane due as early
/// already is not written at all, though on Postgres still locked (as `ON CONFLICT DO UPDATE`
/// locks every row it meets), which is what orders a store against a release (see
/// [`RELEASE`]).
pub(super) async fn make_due(
    dialect: Dialect,
    conn: &mut AnyConnection,
    lanes: &mut Vec<(String, i64)>,
) -> Result<(), InboxError> {
    lanes.sort_unstable();
    // Sorted, the earliest due of a lane comes first: keep that one.
    lanes.dedup_by(|later, first| later.0 == first.0);
    for chunk in lanes.chunks(MAX_LANES_PER_STATEMENT) {
        let sql = format!(
            "{} ringyo_inbox_lanes (lane, due_at) VALUES {} \
             ON CONFLICT (lane) DO UPDATE SET due_at = excluded.due_at \
             WHERE ringyo_inbox_lanes.due_at IS NULL \
               OR excluded.due_at < ringyo_inbox_lanes.due_at",
            dialect.insert(),
            dialect.values(chunk.len(), 2)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(running: Option<&str>, head: Option<(&str, bool, i64)>) -> Taken {
        Taken {
            lane: "call:1".into(),
            running: running.map(str::to_owned),
            head: head.map(|(id, suspect, available_at)| Head {
                id: id.into(),
                suspect,
                available_at,
            }),
        }
    }

    #[test]
    fn a_due_head_is_claimed_and_then_holds_its_lane() {
        let taken = lane(None, Some(("a", false, 10)));
        assert_eq!(taken.to_claim(10), Some("a"));
        assert_eq!(taken.after(true), After::Held("a"));
    }

    #[test]
    fn a_head_not_yet_due_leaves_its_lane_free_and_due_when_it_is() {
        let taken = lane(None, Some(("a", false, 11)));
        assert_eq!(taken.to_claim(10), None);
        assert_eq!(taken.after(false), After::Free(Some(11)));
    }

    #[test]
    fn a_suspect_head_is_not_claimed_but_holds_its_lane_to_run_alone() {
        let taken = lane(None, Some(("a", true, 10)));
        assert_eq!(taken.to_claim(10), None);
        assert_eq!(taken.after(false), After::Held("a"));
    }

    #[test]
    fn a_lane_with_a_running_delivery_claims_nothing_and_is_held_by_it() {
        let taken = lane(Some("r"), Some(("a", false, 10)));
        assert_eq!(taken.to_claim(10), None);
        assert_eq!(taken.after(false), After::Held("r"));
    }

    #[test]
    fn a_lane_with_nothing_pending_is_left_free_with_nothing_due() {
        let taken = lane(None, None);
        assert_eq!(taken.to_claim(10), None);
        assert_eq!(taken.after(false), After::Free(None));
    }

    #[test]
    fn a_head_the_claim_did_not_get_does_not_hold_its_lane() {
        let taken = lane(None, Some(("a", false, 10)));
        assert_eq!(taken.after(false), After::Free(Some(10)));
    }
}
