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
//!    statement after the one that locks, whose snapshot is taken after the locks);
//! 3. claim each lane's first pending delivery, if it is due, not a suspect, and nothing of
//!    the lane runs;
//! 4. give each lane it holds its holder (the delivery just claimed, or a suspect at its head),
//!    and each lane it leaves free its head's due time.
//!
//! Two statements either way, each deciding in SQL. On Postgres step 1 is one, and steps 2
//! to 4 are the other ([`claim_taken_postgres_sql`]), whose data-modifying parts share the
//! snapshot taken after the locks. On SQLite, whose write lock keeps every other writer out
//! for the whole transaction, steps 1, 2 and 4 are one statement (`next_holder!`) that
//! returns the lanes, and step 3 claims the holders it gave them ([`claim_holders_sql`]).
//! (Reading the heads into Rust, deciding there and writing the lanes back took five round
//! trips on Postgres, with the lanes locked throughout, and four statements on SQLite.)
//!
//! Settling a lane's holder frees the lane (a suspect given back keeps it), and a handled one
//! moves `newest_done` forward. `due_at` is a hint no later than the truth while the lane is
//! free: storing only lowers it, and a claim that leaves the lane free and each settlement
//! that frees it set it to its head's due time. A held lane's is read only by its release:
//! on Postgres a claim clears it and a store sets it, so the release knows of a delivery
//! stored while the lane was held even where its own snapshot does not (see [`RELEASE`]).
//!
//! A settlement that frees lanes hands them over itself, in its own transaction. On SQLite
//! ([`release_and_hand_over`]) one statement frees each lane to its next holder, as a claim
//! on SQLite does, and another claims those that are due; then slots left empty take free
//! lanes as a claim does ([`take_and_claim`]). On Postgres the release frees them, still
//! locked by the settlement, and the claim's statement claims their next deliveries
//! ([`claim_locked_postgres`]).

use chrono::{DateTime, Utc};
use sqlx::{any::AnyRow, AnyConnection, AnyPool};

use super::{
    dialect::{json_param, Dialect, WriteTx},
    rows::{self, claimed_columns, get},
    store::{ClaimedDelivery, HandOver, InboxError},
};

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
/// run alone); none leaves it free. On SQLite, whose write lock keeps every other writer out,
/// a head that is due and not a suspect is always claimed next, so this is the holder
/// [`claim_taken_postgres_sql`] gives a lane after its claim.
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

/// The `SET` of a release of lanes, rows `v` `(lane, holder, handled_at, ..)` (a `VALUES`
/// list, or on Postgres a JSON parameter's rows) matched on the lane and its holder:
/// `holder` becomes `$holder`, `newest_done` moves to a handled holder's `order_at`, `due_at`
/// becomes `$due`.
macro_rules! release {
    ($holder:expr, $due:expr) => {
        concat!(
            "holder = ",
            $holder,
            ", newest_done = CASE WHEN v.column3 IS NOT NULL \
               AND (ringyo_inbox_lanes.newest_done IS NULL \
                 OR ringyo_inbox_lanes.newest_done < v.column3) \
               THEN v.column3 ELSE ringyo_inbox_lanes.newest_done END, \
             due_at = ",
            $due
        )
    };
}

/// The due time of the head of a lane being released, `v.column1`.
macro_rules! released_head_due {
    () => {
        head!("h.available_at", "v.column1")
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

/// Steps 2 to 4 on Postgres for `lanes` free lanes this transaction locked, in one
/// statement whose snapshot, taken after the locks, holds every change to these lanes'
/// deliveries (each committed with a write to the lane's row):
///
/// - `t` reads each lane's running delivery and its head, through a `LATERAL` subquery that
///   keeps the planner on the head's index, lane by lane (joined on a subquery's result, it
///   read the whole table at times);
/// - `c` claims each head that is due at `$4`, not a suspect, and whose lane runs nothing
///   ([`claim_pending_sql`]);
/// - `d` decides each lane's holder: the delivery running, else its head if just claimed or
///   a suspect (which holds its lane to run alone), else none. It asks whether `c` claimed
///   the lane with `IN`, which Postgres runs as a hashed subplan: a join of the two CTEs,
///   each estimated at one row, became a nested loop reading all of `c` once per lane (64
///   lanes, 4,032 rows compared: half the statement's time);
/// - `w` writes it: a lane left free is due when its head is, and a held lane's `due_at`
///   is cleared, so that a store while it is held sets it ([`DUE_NO_LATER`]) and its
///   release ([`RELEASE`]) need not read what was stored meanwhile. (Left as it was, the
///   update was heap-only, but every held lane stayed at the front of
///   `ringyo_inbox_lanes_by_due`, where each take read past them, and the release was right
///   only because it read the heads after a statement of its own had locked the lanes; that
///   statement stays, for the order of the locks.)
///
/// Binds `$1` to `$3` as [`claim_pending_sql`] does, `$4` now, then `$5` the lanes, a JSON
/// list (one text for any number of lanes, see [`Dialect::json_rows`]). Each row is the
/// [`claimed_columns`], then its lane ([`CLAIMED_LANE`]).
fn claim_taken_postgres_sql() -> String {
    let claim = claim_pending_sql(
        Dialect::Postgres,
        "SELECT head FROM t WHERE running IS NULL AND NOT suspect AND available_at <= $4",
        ", lane",
    );
    format!(
        concat!(
            "WITH t AS (SELECT l.lane, (SELECT r.delivery_id FROM ringyo_inbox r \
               WHERE r.lane = l.lane AND r.state = 'running' LIMIT 1) AS running, \
               f.delivery_id AS head, f.suspect, f.available_at \
             FROM ringyo_inbox_lanes l LEFT JOIN LATERAL ",
            head!("h.delivery_id, h.suspect, h.available_at", "l.lane"),
            " AS f ON TRUE WHERE l.holder IS NULL AND l.lane = {lanes}), \
             c AS ({claim}), \
             d AS (SELECT t.lane, COALESCE(t.running, CASE WHEN t.suspect \
               OR t.lane IN (SELECT lane FROM c) THEN t.head END) AS holder, t.available_at FROM t), \
             w AS (UPDATE ringyo_inbox_lanes SET holder = d.holder, \
               due_at = CASE WHEN d.holder IS NULL THEN d.available_at END \
               FROM d WHERE ringyo_inbox_lanes.lane = d.lane) \
             SELECT * FROM c"
        ),
        lanes = Dialect::json_any(5, false),
        claim = claim,
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

/// A claim on Postgres: takes up to `limit` free lanes due at `lease.now` (step 1), then
/// reads, claims and writes them in one statement ([`claim_taken_postgres_sql`]), leased as
/// `lease` says to the inbox `holder`.
async fn claim_postgres(
    conn: &mut AnyConnection,
    lease: &HandOver,
    limit: u32,
    holder: &str,
) -> Result<Vec<ClaimedDelivery>, InboxError> {
    let now = lease.now.timestamp_millis();
    let lanes = take_lanes(conn, TAKE_LANES_POSTGRES, now, limit).await?;
    claim_locked_postgres(conn, lanes, lease, holder)
        .await
        .map(|claimed| claimed.into_iter().map(|(_, delivery)| delivery).collect())
}

/// Steps 2 to 4 on Postgres ([`claim_taken_postgres_sql`]) for `lanes` (no lane twice), free
/// lanes this transaction has locked: a claim's, or a settlement's that has just released
/// them, which so hands each over to its next delivery, if due, without a claim transaction
/// of its own. Returns each delivery claimed with its lane.
pub(super) async fn claim_locked_postgres(
    conn: &mut AnyConnection,
    lanes: Vec<String>,
    lease: &HandOver,
    holder: &str,
) -> Result<Vec<(String, ClaimedDelivery)>, InboxError> {
    if lanes.is_empty() {
        return Ok(Vec::new());
    }
    let sql = claim_taken_postgres_sql();
    bind_lease(sqlx::query(&sql), lease, holder)
        .bind(lease.now.timestamp_millis())
        .bind(json_param(&lanes)?)
        .fetch_all(&mut *conn)
        .await
        .map_err(InboxError::database)?
        .iter()
        .map(claimed_with_lane)
        .collect()
}

/// A claim of the deliveries whose id is in `ids` (a list or a subquery, whose parameters, if
/// any, are numbered from `$4`) that are still pending and not suspects (a suspect holds its
/// lane to run alone, claimed by `claim_suspect_sql`), leased: binds `$1` the token, `$2` the
/// end of the lease, `$3` the holder id of the inbox (see [`claim_rows`]). Each row is the
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
    let mut query = bind_lease(sqlx::query(sql), lease, holder);
    for key in keys {
        query = query.bind(key);
    }
    query
        .fetch_all(&mut *conn)
        .await
        .map_err(InboxError::database)
}

/// Binds the lease of a [`claim_pending_sql`], its `$1` to `$3`: the token, the end of the
/// lease, and the inbox `holder`.
fn bind_lease<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    lease: &HandOver,
    holder: &'q str,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(lease.token.to_string())
        .bind(lease.lease_until.timestamp_millis())
        .bind(holder)
}

/// The most lanes one claim takes: its statements stay well inside every engine's limit on
/// parameters (at most two a lane), and a worker asks again for more.
const MAX_LANES_PER_CLAIM: u32 = 1024;

/// Frees lanes their holders settled, as the `SET` of an `UPDATE ringyo_inbox_lanes .. FROM
/// .. AS v` (see `settle::release_sql`) whose rows are the lane, its holder and the holder's
/// `order_at` if it was handled (run, not superseded), matched on the lane and its holder (a
/// lane that holder no longer holds is left as it is). `[SQLite, Postgres]`.
///
/// The lane is due when its head is. On SQLite, whose write lock keeps every other writer
/// out, the head read is the truth. On Postgres the statement reads the deliveries as they
/// were when it began, which misses one stored by a transaction that committed while the
/// release waited for the lane's row: so a claim clears a held lane's `due_at`, a store
/// while it is held sets it (each store locks the lane's row), and the release keeps the
/// earlier of that and its head's. Whatever the release does not see was stored by a
/// transaction that wrote the lane's row before it (whose newest version the update reads),
/// or that will after it.
pub(super) const RELEASE: [&str; 2] = [
    release!("NULL", released_head_due!()),
    release!(
        "NULL",
        concat!(
            "LEAST(ringyo_inbox_lanes.due_at, ",
            released_head_due!(),
            ")"
        )
    ),
];

/// The `SET` of [`release_and_hand_over`]'s statement: [`RELEASE`]'s, the lane held then by
/// a delivery of it still running (none while its holder was the one settled, but a lane
/// never runs two), or else its first pending delivery if that is due at `v.column4` or a
/// suspect (which holds its lane to run alone).
const HAND_OVER: &str = release!(next_holder!("v.column1", "v.column4"), released_head_due!());

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
    match dialect {
        Dialect::Sqlite => {
            let now = lease.now.timestamp_millis();
            let lanes = take_lanes(conn, TAKE_SQLITE, now, limit).await?;
            claim_holders(conn, lanes, lease, holder).await
        }
        Dialect::Postgres => claim_postgres(conn, lease, limit, holder).await,
    }
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
/// Two statements for the batch, sent as one query (SQLite runs a query's statements in
/// turn; the worker's transaction holds the writer's turn while each round trip waits for
/// the server's busy core): the release gives each lane its next holder, decided in SQL
/// ([`HAND_OVER`]); then the holders that are pending and not suspects are claimed
/// ([`claim_holders_sql`]). Released first, so the claim reads each lane's newest handled
/// with the settlement's in it, and a late arrival handed over is seen as superseded. Only
/// the claim returns rows: `fetch_all` returns every statement's. SQLite's alone, as
/// [`Dialect::takes_lanes_when_settling`] says, where a query may hold several statements
/// ([`Dialect::runs_many_statements`]).
pub(super) async fn release_and_hand_over(
    conn: &mut AnyConnection,
    released: &[&LaneRelease],
    lease: &HandOver,
    holder: &str,
) -> Result<Vec<(String, ClaimedDelivery)>, InboxError> {
    let dialect = Dialect::Sqlite;
    let now = lease.now.timestamp_millis();
    let mut claimed = Vec::new();
    for chunk in released.chunks(MAX_LANES_PER_CLAIM as usize) {
        let sql = format!(
            "{} ringyo_inbox_lanes SET {HAND_OVER} FROM (VALUES {}) AS v \
             WHERE ringyo_inbox_lanes.lane = v.column1 AND ringyo_inbox_lanes.holder = v.column2; \
             {}",
            dialect.update(),
            dialect.values(chunk.len(), 4),
            claim_holders_sql(chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for release in chunk {
            query = query
                .bind(release.lane.as_str())
                .bind(release.holder.as_str())
                .bind(release.handled_at)
                .bind(now);
        }
        // The claim's own parameters follow the release's (sqlx numbers each statement's
        // anonymous ones on from the last).
        query = bind_lease(query, lease, holder);
        for release in chunk {
            query = query.bind(release.lane.as_str());
        }
        let rows = query
            .fetch_all(&mut *conn)
            .await
            .map_err(InboxError::database)?;
        for row in &rows {
            claimed.push(claimed_with_lane(row)?);
        }
    }
    Ok(claimed)
}

/// On SQLite, claims the holders of `lanes` (at most [`MAX_LANES_PER_CLAIM`]) that are
/// pending and not suspects, each just given its lane by [`TAKE_SQLITE`], leased as `lease`
/// says to the inbox `holder`.
async fn claim_holders(
    conn: &mut AnyConnection,
    lanes: Vec<String>,
    lease: &HandOver,
    holder: &str,
) -> Result<Vec<ClaimedDelivery>, InboxError> {
    if lanes.is_empty() {
        return Ok(Vec::new());
    }
    let sql = claim_holders_sql(lanes.len());
    claim_rows(conn, &sql, lease, holder, lanes)
        .await?
        .iter()
        .map(rows::claimed)
        .collect()
}

/// The claim ([`claim_pending_sql`]) of the holders of `lanes` lanes that are pending and not
/// suspects (a holder running already is left to run; a suspect holds its lane to run
/// alone). A lane's holder is pending and not a suspect only between [`HAND_OVER`] or
/// [`TAKE_SQLITE`] giving it the lane and this claim, in one transaction, so this claims
/// exactly those. SQLite's: on Postgres the claim's one statement decides and claims
/// ([`claim_taken_postgres_sql`]). Binds the lanes from `$4`; each row is the
/// [`claimed_columns`], then its lane ([`CLAIMED_LANE`]).
fn claim_holders_sql(lanes: usize) -> String {
    let dialect = Dialect::Sqlite;
    claim_pending_sql(
        dialect,
        &format!(
            "SELECT holder FROM ringyo_inbox_lanes WHERE lane IN ({})",
            dialect.list(4, lanes)
        ),
        ", lane",
    )
}

/// Where the rows of [`claim_holders_sql`] and [`claim_taken_postgres_sql`] have their lane:
/// after the [`claimed_columns`] (the hand-over reads it, to give each lane's delivery the
/// slot of the one that freed it).
const CLAIMED_LANE: usize = 10;

/// A delivery claimed by [`claim_holders_sql`], with its lane.
fn claimed_with_lane(row: &AnyRow) -> Result<(String, ClaimedDelivery), InboxError> {
    Ok((get::<String>(row, CLAIMED_LANE)?, rows::claimed(row)?))
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
            "{} ringyo_inbox_lanes (lane, due_at) VALUES {} {DUE_NO_LATER}",
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

/// How storing makes a lane due: a lane not yet due, or due later, becomes due at the new
/// delivery's time; one due as early already is left as it is.
const DUE_NO_LATER: &str = "ON CONFLICT (lane) DO UPDATE SET due_at = excluded.due_at \
     WHERE ringyo_inbox_lanes.due_at IS NULL OR excluded.due_at < ringyo_inbox_lanes.due_at";

/// [`make_due`] on SQLite for `rows` deliveries just stored, one row each, bound as its lane
/// (none outside lanes, skipped) and its due time, to run in the same query as their `INSERT`
/// ([`Dialect::runs_many_statements`]). One row a delivery, so the query's text depends on the
/// batch's length alone, and sqlx's cache of prepared statements (100 a connection) keeps
/// one a length rather than one for every count of distinct lanes too. SQLite writes an
/// upsert's rows one at a time, so a lane named twice keeps the earlier due time. At most
/// [`MAX_LANES_PER_STATEMENT`] rows.
pub(super) fn make_due_each_sql(rows: usize) -> String {
    format!(
        "{} ringyo_inbox_lanes (lane, due_at) SELECT column1, column2 FROM (VALUES {}) \
         WHERE column1 IS NOT NULL {DUE_NO_LATER}",
        Dialect::Sqlite.insert(),
        Dialect::Sqlite.values(rows, 2)
    )
}

/// The most lanes one statement of [`make_due`] or [`make_due_each_sql`] names (two
/// parameters each: SQLite takes 32,766, Postgres 65,535).
pub(super) const MAX_LANES_PER_STATEMENT: usize = 1024;

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
