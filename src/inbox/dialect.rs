//! [`Dialect`]: where SQLite and Postgres differ for the inbox, and its versioned migrations.

use std::fmt;

use sqlx::{pool::PoolConnection, Any, AnyConnection, AnyPool, Executor, Row};
use tokio::sync::OwnedMutexGuard;

use super::{rows::claimed_columns, store::InboxError};
use crate::verify::{Clock, SystemClock};

/// The engine behind a [`SqlInbox`](super::SqlInbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// One step of the schema, applied once per database, in order.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

/// The schema's history, one list for both engines, each step a file per engine under
/// `migrations/<engine>/`. A released migration never changes; a new one is appended.
macro_rules! migrations {
    ($engine:literal) => {
        &[
            Migration {
                version: 1,
                description: "inbox",
                sql: include_str!(concat!("migrations/", $engine, "/0001_inbox.sql")),
            },
            Migration {
                version: 2,
                description: "tenant",
                sql: include_str!(concat!("migrations/", $engine, "/0002_tenant.sql")),
            },
            Migration {
                version: 3,
                description: "suspects",
                sql: include_str!(concat!("migrations/", $engine, "/0003_suspects.sql")),
            },
            Migration {
                version: 4,
                description: "probe",
                sql: include_str!(concat!("migrations/", $engine, "/0004_probe.sql")),
            },
            Migration {
                version: 5,
                description: "order",
                sql: include_str!(concat!("migrations/", $engine, "/0005_order.sql")),
            },
            Migration {
                version: 6,
                description: "no due index",
                sql: include_str!(concat!("migrations/", $engine, "/0006_no_due_index.sql")),
            },
            Migration {
                version: 7,
                description: "lanes by due",
                sql: include_str!(concat!("migrations/", $engine, "/0007_lanes_by_due.sql")),
            },
        ]
    };
}
const SQLITE_MIGRATIONS: &[Migration] = migrations!("sqlite");
const POSTGRES_MIGRATIONS: &[Migration] = migrations!("postgres");

/// The channel a Postgres commit notifies and idle workers listen on.
const CHANNEL: &str = "ringyo_inbox";

/// Replicas starting together take this advisory lock to migrate one at a time.
const MIGRATION_LOCK: i64 = 0x7269_6e67_796f_0001; // "ringyo" and the schema's table set

/// A claim statement for each engine, `[SQLite, Postgres]` (SQLite's an
/// [`update`](Dialect::update)): `$set` (more columns to set)
/// with the lease, on rows due that match `$which`, oldest first; Postgres skips rows
/// another claim is taking rather than wait for them (SQLite has one writer: nothing to skip).
/// Binds `$1` the token, `$2` the end of the lease, `$3` now, `$4` how many, `$5` the
/// claiming inbox's holder id (one per [`SqlInbox`](super::SqlInbox), so one per process).
macro_rules! claim_sql {
    ($set:literal, $which:literal) => {
        [
            claim_sql!("UPDATE OR FAIL", $set, $which, ""),
            claim_sql!("UPDATE", $set, $which, " FOR UPDATE SKIP LOCKED"),
        ]
    };
    ($update:literal, $set:literal, $which:literal, $lock:literal) => {
        concat!(
            $update,
            " ringyo_inbox SET state = 'running', attempts = attempts + 1, ",
            $set,
            "lease_token = $1, available_at = $2, lease_holder = $5 \
             WHERE delivery_id IN (SELECT delivery_id FROM ringyo_inbox \
               WHERE available_at <= $3 AND ",
            $which,
            " ORDER BY available_at LIMIT $4",
            $lock,
            ") RETURNING ",
            claimed_columns!()
        )
    };
}

impl Dialect {
    /// Registers the sqlx drivers this build has. If drivers were registered already (by the
    /// application), those stay, and connecting says if ours is missing.
    pub(super) fn install_drivers() {
        let _ = sqlx::any::install_drivers(&[
            #[cfg(feature = "sqlite")]
            sqlx::sqlite::any::DRIVER,
            #[cfg(feature = "postgres")]
            sqlx::postgres::any::DRIVER,
        ]);
    }

    /// The dialect of a URL, or what to build or write instead.
    pub(super) fn from_url(url: &str) -> Result<Self, InboxError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        let unsupported = |hint| InboxError::UnsupportedUrl {
            scheme: scheme.chars().take(20).collect(),
            hint,
        };
        match scheme {
            // Each pooled connection would get a database of its own, gone with the process.
            "sqlite" if url.contains(":memory:") || url.contains("mode=memory") => Err(
                unsupported("an in-memory SQLite database is not durable; name a file"),
            ),
            "sqlite" if cfg!(feature = "sqlite") => Ok(Self::Sqlite),
            "postgres" | "postgresql" if cfg!(feature = "postgres") => Ok(Self::Postgres),
            "sqlite" => Err(unsupported("build with the `sqlite` feature")),
            "postgres" | "postgresql" => Err(unsupported("build with the `postgres` feature")),
            _ => Err(unsupported(
                "use sqlite://PATH or postgres://USER@HOST/DATABASE",
            )),
        }
    }

    /// The URL to connect with: a SQLite file is created if missing, unless a `mode` is given
    /// (`mode=ro` opens an existing one read-only).
    pub(super) fn connect_url(self, url: &str) -> String {
        match self {
            Self::Sqlite if !url.contains("mode=") => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_owned(),
        }
    }

    /// SQLite has one writer at a time, so more connections only add waiting.
    pub(super) fn max_connections(self) -> u32 {
        match self {
            Self::Sqlite => 4,
            Self::Postgres => 10,
        }
    }

    /// Settings for each new connection: on SQLite, a commit reaches the disk (WAL with
    /// `synchronous=FULL`), a writer waits for the lock rather than failing at once, the WAL
    /// is cut back to 64 MiB whenever it restarts, and a commit checkpoints it only past
    /// 10,000 pages, the upkeep checkpointing it in the background meanwhile (see
    /// [`Upkeep`](super::upkeep::Upkeep)).
    pub(super) fn on_connect(self) -> &'static [&'static str] {
        match self {
            Self::Sqlite => &[
                "PRAGMA journal_size_limit = 67108864",
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA busy_timeout = 5000",
                "PRAGMA wal_autocheckpoint = 10000",
            ],
            Self::Postgres => &[],
        }
    }

    /// A setting only a new file takes, before anything else (WAL included) is written to it:
    /// on SQLite, pages of deleted rows go back to the file system (`auto_vacuum`, see
    /// [`Upkeep`](super::upkeep::Upkeep)). A file that cannot be written refuses it, and
    /// needs it no more than an older file, which keeps its own setting.
    pub(super) fn on_new_file(self) -> Option<&'static str> {
        match self {
            Self::Sqlite => Some("PRAGMA auto_vacuum = INCREMENTAL"),
            Self::Postgres => None,
        }
    }

    /// Leases due deliveries outside any lane that are not suspects (ordered ones are for
    /// [`lanes`](super::lanes), suspects for [`claim_suspect_sql`](Self::claim_suspect_sql)).
    pub(super) fn claim_sql(self) -> &'static str {
        // As the partial index `ringyo_inbox_unordered` says it, so both engines use it.
        self.pick(claim_sql!(
            "",
            "state = 'pending' AND lane IS NULL AND NOT suspect"
        ))
    }

    /// Leases one suspect to run alone: a row still `running` whose lease ran out (an attempt
    /// that never finished: counted in `orphaned`, and in `crashes_alone` if it ran alone
    /// too), or one given back while it ran alone. Both engines evaluate every `SET`
    /// expression on the row as it was before the update, so `state` there is the old one.
    ///
    /// A death alone is counted only when another holder takes the row: the same holder
    /// taking it again is alive, so its attempt ended without a crash (its outcome could not
    /// be recorded: the database was away for longer than the lease).
    pub(super) fn claim_suspect_sql(self) -> &'static str {
        self.pick(claim_sql!(
            "orphaned = orphaned + CASE WHEN state = 'running' THEN 1 ELSE 0 END, \
             crashes_alone = crashes_alone \
               + CASE WHEN state = 'running' AND suspect \
                   AND COALESCE(lease_holder, '') <> $5 THEN 1 ELSE 0 END, \
             suspect = TRUE, ",
            // Only `ringyo_inbox_suspect` matches it: with `state IN (..)` Postgres reads the
            // due index, every delivery waiting behind its subject included. A suspect is
            // waiting or running: finishing clears it.
            "(state = 'running' OR suspect)"
        ))
    }

    /// How a statement that writes several rows begins, `UPDATE` or `INSERT INTO`: on SQLite
    /// `OR FAIL`. Inside a transaction SQLite otherwise keeps a statement journal for such a
    /// statement wherever it might stop at a constraint (a copy of each page it changes, so
    /// that the statement alone can be undone), spilled to a temporary file past 64 KiB:
    /// settling or claiming 100 deliveries of 2 KiB wrote 474 pages instead of 306. With
    /// `OR FAIL` a statement stopped at a constraint keeps what it wrote before, and the error
    /// rolls back the whole transaction, as every error in one of the inbox's does (and its
    /// statements write only values the constraints allow: those are a last guard). An error
    /// that is not a constraint's (a full disk) rolls the transaction back either way.
    pub(super) fn update(self) -> &'static str {
        self.pick(["UPDATE OR FAIL", "UPDATE"])
    }

    /// [`update`](Self::update)'s `INSERT INTO`.
    pub(super) fn insert(self) -> &'static str {
        self.pick(["INSERT OR FAIL INTO", "INSERT INTO"])
    }

    /// This engine's statement of `[SQLite, Postgres]`.
    pub(super) fn pick(self, [sqlite, postgres]: [&'static str; 2]) -> &'static str {
        match self {
            Self::Sqlite => sqlite,
            Self::Postgres => postgres,
        }
    }

    /// `(.., ..), ..` for `rows` rows of `columns` parameters, numbered from 1: a `VALUES`
    /// list binding its parameters in order.
    pub(super) fn values(self, rows: usize, columns: usize) -> String {
        (0..rows)
            .map(|row| format!("({})", self.list(row * columns + 1, columns)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `count` parameters numbered from `first`, where `$1` to `$(first - 1)` come before
    /// them. SQLite gets anonymous `?`s, which it numbers on from the highest before: sqlx
    /// looks each parameter's name up, and SQLite finds a name by walking the list of all of
    /// them, so with hundreds of named ones (a batch's outcomes, 9 a delivery) binding took
    /// time quadratic in their number. A statement takes all its parameters from here or
    /// none: sqlx binds anonymous ones by a count of its own, which skips named ones. So does
    /// a query of several statements ([`runs_many_statements`](Self::runs_many_statements)):
    /// the count runs on across them, and a named parameter would not move it.
    pub(super) fn list(self, first: usize, count: usize) -> String {
        (first..first + count)
            .map(|at| match self {
                Self::Sqlite => "?".to_owned(),
                Self::Postgres => format!("${at}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Postgres: the rows of a JSON array of arrays, bound as `$at` (see [`json_param`]), as a
    /// subquery whose columns are `column1`.. of `types`, in place of [`values`](Self::values);
    /// see [`json_any`](Self::json_any) for how a statement matches its rows.
    ///
    /// One parameter for a batch of any length, so the statement's text is the same for every
    /// batch, and Postgres plans it once per connection. With a `VALUES` list each batch
    /// length was a statement of its own, on each connection, and Postgres plans a prepared
    /// statement afresh on each of its first five runs: in a 10 s load with ordering on, the
    /// release of lanes (1 to 64 a batch) was planned on 1,530 of its 1,560 calls, and
    /// planning took a fifth of the database's time (`pg_stat_statements.track_planning`).
    pub(super) fn json_rows(at: usize, types: &[&str]) -> String {
        let columns = types
            .iter()
            .enumerate()
            .map(|(column, ty)| format!("CAST(e->>{column} AS {ty}) AS column{}", column + 1))
            .collect::<Vec<_>>()
            .join(", ");
        format!("(SELECT {columns} FROM json_array_elements(CAST(${at} AS json)) AS e)")
    }

    /// Postgres: the texts of a JSON array bound as `$at` (see [`json_param`]), or with `first`
    /// the first column of a [`json_rows`](Self::json_rows), as `ANY(..)` of an array: so
    /// `key = ` this is an index condition, in place of `key IN (` [`list`](Self::list) `)`.
    ///
    /// A statement that takes a [`json_rows`](Self::json_rows) matches the rows it writes by
    /// one of these as well. Postgres keeps a generic plan of a statement after its first five
    /// runs, and a plan made while a table was small may join the JSON's rows to a scan of
    /// the whole table. (The settlement of deliveries, tried with a JSON parameter, kept a
    /// plan that read every running delivery through `ringyo_inbox_suspect`, dead entries
    /// included: 47,000 entries to settle 21. It keeps its `VALUES` list.)
    pub(super) fn json_any(at: usize, first: bool) -> String {
        if first {
            format!("ANY(ARRAY(SELECT e->>0 FROM json_array_elements(CAST(${at} AS json)) AS e))")
        } else {
            format!("ANY(ARRAY(SELECT json_array_elements_text(CAST(${at} AS json))))")
        }
    }

    /// The statement that starts a transaction that writes: on SQLite it takes the write lock
    /// at once, so it waits for it (busy_timeout) rather than failing when it upgrades from a
    /// read.
    fn begin_sql(self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN",
        }
    }

    /// Whether a settlement also takes free lanes due, for the slots its own lanes left empty
    /// (see [`InboxStore::settle_and_hand_over`]), and hands its own over in one statement
    /// with their release: SQLite's, whose writers take turns, so the worker keeps up with
    /// ingest. On Postgres, which runs writers side by side, a lane taken there would stay
    /// locked until the settlement commits, so stores of the lane would wait for it; its
    /// settlement hands over only the lanes it frees, which it holds locked anyway. (Handing
    /// those over was measured slower there once, 0.77 of ordering off against 0.81, in 3
    /// rounds of `benches/inbox.sh 10 3 order`; since its claim became cheaper it is faster:
    /// benches/README.md, "Kept on 2026-12-07 (evening)".)
    ///
    /// [`InboxStore::settle_and_hand_over`]: super::InboxStore::settle_and_hand_over
    pub(super) fn takes_lanes_when_settling(self) -> bool {
        self == Self::Sqlite
    }

    /// Whether one query may hold several statements, run in turn, so a transaction can
    /// send two in one round trip: SQLite's (Postgres's extended protocol takes one). sqlx
    /// binds them anonymous parameters in order across the statements (see
    /// [`list`](Self::list)) and returns the rows of all of them; it stops at the first that
    /// fails.
    pub(super) fn runs_many_statements(self) -> bool {
        self == Self::Sqlite
    }

    /// The setting of the connections that claim: their commits return without waiting for
    /// the disk.
    ///
    /// A claim lost in a crash (of the machine, or of Postgres) leaves its deliveries pending,
    /// as if never claimed, and they run then: a handler that ran meanwhile runs again, as at
    /// least once allows, and a transactional one finds its lease gone and commits nothing.
    /// Nothing durable can depend on a claim unseen: both engines write their log in order,
    /// so any later commit that reached the disk (an outcome, a stored delivery) took the
    /// claims before it along. What it saves is a flush per claim, a third of the inbox's
    /// commits, and on Postgres the time its lanes stay locked.
    pub(super) fn lazy_commit(self) -> &'static str {
        match self {
            Self::Sqlite => "PRAGMA synchronous = NORMAL",
            Self::Postgres => "SET synchronous_commit = off",
        }
    }

    /// Starts a transaction that writes, on a connection of its own; see [`WriteTx`].
    pub(super) async fn begin_write(self, pool: &AnyPool) -> Result<WriteTx, InboxError> {
        let conn = pool.acquire().await.map_err(InboxError::database)?;
        let mut tx = WriteTx {
            conn,
            committed: false,
            turn: None,
        };
        tx.conn()
            .execute(self.begin_sql())
            .await
            .map_err(InboxError::database)?;
        Ok(tx)
    }

    /// Wakes workers in other processes when `tx` commits (Postgres); a no-op on SQLite,
    /// whose workers share the process, where the inbox wakes them itself.
    pub(super) async fn notify(self, tx: &mut WriteTx) -> Result<(), InboxError> {
        if self == Self::Postgres {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(tx.conn())
                .await
                .map_err(InboxError::database)?;
        }
        Ok(())
    }

    /// A connection listening for other processes' commits.
    #[cfg(feature = "postgres")]
    pub(super) async fn listen(pool: &AnyPool) -> Result<sqlx::postgres::PgListener, InboxError> {
        let url = pool.connect_options().database_url.clone();
        let options: sqlx::postgres::PgConnectOptions =
            url.as_str().parse().map_err(InboxError::database)?;
        let listener_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let mut listener = sqlx::postgres::PgListener::connect_with(&listener_pool)
            .await
            .map_err(InboxError::database)?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(InboxError::database)?;
        Ok(listener)
    }

    fn migrations(self) -> &'static [Migration] {
        match self {
            Self::Sqlite => SQLITE_MIGRATIONS,
            Self::Postgres => POSTGRES_MIGRATIONS,
        }
    }

    /// Brings the schema up to date: a read when it is (so a read-only database opens), else
    /// the missing steps in one transaction under a lock that serializes replicas.
    pub(super) async fn migrate(self, pool: &AnyPool) -> Result<(), InboxError> {
        let known = self.migrations().last().map_or(0, |step| step.version);
        self.migrate_to(pool, known).await
    }

    /// Brings the schema up to `known`, the version this build targets.
    async fn migrate_to(self, pool: &AnyPool, known: i64) -> Result<(), InboxError> {
        // Absent table or no row: not migrated yet.
        let mut conn = pool.acquire().await.map_err(InboxError::database)?;
        let found = schema_version(&mut conn).await.unwrap_or(0);
        drop(conn);
        if found == known {
            return Ok(());
        }
        check_not_newer(found, known)?;
        let mut tx = self.begin_write(pool).await?;
        if self == Self::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(tx.conn())
                .await
                .map_err(InboxError::database)?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS ringyo_inbox_migrations \
             (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(tx.conn())
        .await
        .map_err(InboxError::database)?;
        // Under the lock: another replica may have migrated meanwhile.
        let found = schema_version(tx.conn())
            .await
            .map_err(InboxError::database)?;
        check_not_newer(found, known)?;
        let missing = self
            .migrations()
            .iter()
            .skip_while(|step| step.version <= found)
            .take_while(|step| step.version <= known);
        for step in missing.collect::<Vec<_>>() {
            // A plain string runs as a simple query, which may hold several statements.
            tx.conn()
                .execute(step.sql)
                .await
                .map_err(InboxError::database)?;
            sqlx::query(
                "INSERT INTO ringyo_inbox_migrations (version, description, applied_at) \
                 VALUES ($1, $2, $3)",
            )
            .bind(step.version)
            .bind(step.description)
            .bind(SystemClock.now().timestamp_millis())
            .execute(tx.conn())
            .await
            .map_err(InboxError::database)?;
            tracing::info!(
                version = step.version,
                "migrated the inbox schema: {}",
                step.description
            );
        }
        tx.commit().await
    }
}

/// The one parameter of a [`Dialect::json_rows`] or [`Dialect::json_any`]: `items` as JSON
/// (a tuple is an array). Its texts are a text column's, without NUL characters (see
/// `rows::text_column`), which Postgres's `json` would refuse as it refuses them in `text`.
pub(super) fn json_param(items: &impl serde::Serialize) -> Result<String, InboxError> {
    serde_json::to_string(items).map_err(InboxError::database)
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "Postgres",
        })
    }
}

/// A transaction that writes, on a pooled connection of its own, which goes back to the pool
/// only after a commit that succeeded.
///
/// After any failure the connection's transaction state is unknown: SQLite rolls a
/// transaction back by itself when the disk fills or turns read-only, while sqlx's own
/// bookkeeping still counts it open and then refuses every later `BEGIN` on that connection,
/// so a pool of such connections would answer 503 for ever once the disk has room again. A
/// connection whose transaction did not commit is therefore closed (closing rolls back what is
/// left) and the pool opens a fresh one.
pub(super) struct WriteTx {
    conn: PoolConnection<Any>,
    committed: bool,
    /// The process's turn to write, if it has one, given back once the transaction ends.
    turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Holds `turn` (see `SqlInbox::write_turn`) until the transaction ends.
    pub(super) fn in_turn(mut self, turn: Option<OwnedMutexGuard<()>>) -> Self {
        self.turn = turn;
        self
    }

    /// The connection, to run the transaction's statements on.
    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }

    /// Commits; the connection goes back to the pool only if that succeeded.
    pub(super) async fn commit(mut self) -> Result<(), InboxError> {
        self.conn()
            .execute("COMMIT")
            .await
            .map_err(InboxError::database)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

async fn schema_version(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM ringyo_inbox_migrations")
        .fetch_one(conn)
        .await?;
    row.try_get(0)
}

fn check_not_newer(found: i64, known: i64) -> Result<(), InboxError> {
    if found > known {
        return Err(InboxError::SchemaTooNew { found, known });
    }
    Ok(())
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        inbox::{InboxStore, SqlInbox},
        replay::ClaimToken,
    };

    #[test]
    fn each_row_of_a_statement_binds_its_own_numbered_parameters() {
        assert_eq!(Dialect::Postgres.values(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(Dialect::Postgres.list(4, 2), "$4, $5");
        // SQLite numbers each `?` on from the highest parameter before it.
        assert_eq!(Dialect::Sqlite.values(2, 2), "(?, ?), (?, ?)");
        assert_eq!(Dialect::Sqlite.list(4, 2), "?, ?");
    }

    /// A SQLite inbox in a directory of its own, its schema at `version` as a release that
    /// old left it: the directory (removed when dropped), its URL, and a pool on it.
    async fn inbox_at_version(version: i64) -> (tempfile::TempDir, String, AnyPool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
        Dialect::install_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .connect(&Dialect::Sqlite.connect_url(&url))
            .await
            .unwrap();
        Dialect::Sqlite.migrate_to(&pool, version).await.unwrap();
        (dir, url, pool)
    }

    /// An inbox as the first release left it, with a delivery waiting, opens with this build:
    /// the `tenant` column is added, and the waiting delivery runs, for no tenant.
    #[tokio::test]
    async fn an_inbox_of_the_first_schema_is_migrated_and_keeps_its_deliveries() {
        let (_dir, url, pool) = inbox_at_version(1).await;
        sqlx::query(
            "INSERT INTO ringyo_inbox (delivery_id, event, received_at, payload, state, \
             attempts, available_at) VALUES ($1, 'call.completed', 0, $2, 'pending', 0, 0)",
        )
        .bind("ab".repeat(32))
        .bind(b"{}".as_slice())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let inbox = SqlInbox::open(&url).unwrap();
        let now = SystemClock.now();
        let claimed = inbox
            .claim(now, now + TimeDelta::seconds(30), 10, ClaimToken::new())
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id.to_string(), "ab".repeat(32));
        assert_eq!(claimed[0].tenant, None);
        inbox.close().await;
    }

    /// An inbox of the fourth schema (before ordering), with a delivery of a call waiting,
    /// opens with this build: the delivery has no subject or lane and runs unordered, and the
    /// new columns read as absent.
    #[tokio::test]
    async fn an_inbox_of_the_fourth_schema_keeps_its_deliveries_and_runs_them_unordered() {
        let (_dir, url, pool) = inbox_at_version(4).await;
        sqlx::query(
            "INSERT INTO ringyo_inbox (delivery_id, event, event_at, received_at, payload, \
             state, attempts, available_at) VALUES ($1, 'call.ringing', 5, 0, $2, 'pending', 0, 0)",
        )
        .bind("ef".repeat(32))
        .bind(br#"{"event":"call.ringing","data":{"id":"call_1"}}"#.as_slice())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let inbox = SqlInbox::open(&url).unwrap();
        let now = SystemClock.now();
        let claimed = inbox
            .claim(now, now + TimeDelta::seconds(30), 10, ClaimToken::new())
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (claimed[0].subject.as_ref(), claimed[0].superseded_by),
            (None, None)
        );
        inbox.close().await;
    }

    /// An inbox of the second schema, with a delivery waiting and one whose process died
    /// mid-attempt before the upgrade, opens with this build: the waiting one is claimed as
    /// usual, the other is a suspect, its unfinished attempt counted but no death alone.
    #[tokio::test]
    async fn an_inbox_of_the_second_schema_keeps_its_deliveries_and_its_crash_is_a_suspect() {
        let (_dir, url, pool) = inbox_at_version(2).await;
        for (id, state, attempts) in [("ab", "pending", 0), ("cd", "running", 1)] {
            sqlx::query(
                "INSERT INTO ringyo_inbox (delivery_id, event, received_at, payload, state, \
                 attempts, available_at, lease_token, tenant) \
                 VALUES ($1, 'call.completed', 0, $2, $3, $4, 0, 'gone', 'acme')",
            )
            .bind(id.repeat(32))
            .bind(b"{}".as_slice())
            .bind(state)
            .bind(attempts)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;

        let inbox = SqlInbox::open(&url).unwrap();
        let now = SystemClock.now();
        let lease_until = now + TimeDelta::seconds(30);
        let claimed = inbox
            .claim(now, lease_until, 10, ClaimToken::new())
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id.to_string(), "ab".repeat(32));
        assert_eq!((claimed[0].orphaned, claimed[0].crashes_alone), (0, 0));
        assert_eq!(inbox.suspects(now).await.unwrap(), 1);
        let suspect = inbox
            .claim_suspect(now, lease_until, ClaimToken::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(suspect.id.to_string(), "cd".repeat(32));
        assert_eq!(
            (suspect.attempt, suspect.orphaned, suspect.crashes_alone),
            (2, 1, 0)
        );
        inbox.close().await;
    }
}
