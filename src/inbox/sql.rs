//! [`SqlInbox`]: the inbox in SQLite or Postgres, through sqlx.
//!
//! One implementation over sqlx's `Any` driver: the statements are mostly the same on both
//! engines (`ON CONFLICT DO NOTHING`, `RETURNING`, partial indexes), and the differences
//! (connection settings, a batch's parameters, `SKIP LOCKED`, `NOTIFY`, the migration lock)
//! are the [`Dialect`]'s, but for the steps of an ordered claim, which `lanes` writes for
//! each engine. Times are stored as Unix milliseconds, so both engines compare integers.

use std::{collections::HashSet, fmt, future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    AnyPool, Row,
};
use tokio::sync::{Mutex, OnceCell, OwnedMutexGuard};

use super::{
    dialect::{Dialect, WriteTx},
    filter::ReplayFilter,
    health::Health,
    lanes,
    rows::{self, attempts, delivery_id, get, millis, text_column, MAX_EVENT_LEN},
    settle,
    store::{
        ClaimedDelivery, DeadDelivery, HandOver, InboxAdmin, InboxError, InboxFuture, InboxStats,
        InboxStore, NewDelivery, Settlement, Stored,
    },
    upkeep::Upkeep,
};
use crate::{replay::ClaimToken, secrets::Tenant};

/// The inbox in an embedded SQLite file or in Postgres: [`InboxStore`] over sqlx.
///
/// - `sqlite://PATH` (feature `sqlite`): one file, no server, one machine. The file is created
///   if missing, in WAL mode with `synchronous=FULL`, so a commit survives a power cut.
///   (Claims alone commit without waiting for the disk, on both engines: a claim lost in a
///   power cut leaves its deliveries pending, and they run then.)
/// - `postgres://...` (feature `postgres`): one database for every replica. Claims use
///   `FOR UPDATE SKIP LOCKED`, and a commit `NOTIFY`s workers in other processes. For TLS
///   (`?sslmode=require`, as managed databases ask), add the feature `postgres-tls`.
///
/// A SQLite file is checked (`PRAGMA quick_check`) before first use and refused if corrupt
/// ([`InboxError::Corrupt`]); its WAL is truncated after bursts and after pruning, and a file
/// this version creates gives the space of pruned rows back (`auto_vacuum = INCREMENTAL`).
///
/// Opening connects lazily: a database that is down at start-up makes the inbox answer 503
/// (and the health check fail) until it is up, with no restart. The schema is created and
/// migrated on first use, versioned in a table of its own (`ringyo_inbox_migrations`, not
/// sqlx's, which a database shared with your own migrations already has), under a lock, so
/// replicas starting together migrate once.
///
/// Leases and retry times are read off each process's clock, so keep replicas' clocks in
/// step (NTP does): one running ahead by more than a lease would take deliveries another
/// replica still holds, and they would run twice.
///
/// ```no_run
/// # async fn demo() -> Result<(), ringyo_webhook::inbox::InboxError> {
/// use ringyo_webhook::inbox::{Inbox, InboxAdmin, SqlInbox};
///
/// let store = SqlInbox::open("sqlite://ringyo-inbox.db")?;
/// store.ping().await?; // optional: fail fast if the database is not there
/// let inbox = Inbox::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqlInbox {
    shared: Arc<Shared>,
}

struct Shared {
    pool: AnyPool,
    /// Connections that claim, whose commits do not wait for the disk (see
    /// [`Dialect::lazy_commit`]); the pool itself for a pool given with
    /// [`SqlInbox::with_pool`].
    claims: AnyPool,
    dialect: Dialect,
    health: Arc<Health>,
    upkeep: Arc<Upkeep>,
    /// This inbox's id on the leases it takes: a suspect it takes again was not killed by
    /// this process, which is alive.
    holder: String,
    migrated: OnceCell<()>,
    /// SQLite only: the turn to write, taken before the file's write lock; see
    /// [`SqlInbox::write_turn`].
    writer: Arc<Mutex<()>>,
    /// Postgres only: the connection that `LISTEN`s, made on first use.
    #[cfg(feature = "postgres")]
    listener: Mutex<Option<sqlx::postgres::PgListener>>,
    /// SQLite's own driver on the same file, made on first use: [`SqlInbox::sqlite_pool`].
    #[cfg(feature = "sqlite")]
    sqlite: OnceCell<sqlx::SqlitePool>,
    /// Postgres's own driver on the same database: [`SqlInbox::postgres_pool`].
    #[cfg(feature = "postgres")]
    postgres: OnceCell<sqlx::PgPool>,
}

/// How long a statement may wait for a pooled connection before it fails (and the delivery is
/// answered 503): a database that is down must not hold requests for sqlx's default 30 s.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a Postgres URL's `sslmode` (sqlx also reads `ssl-mode`) needs TLS: `require`,
/// `verify-ca` or `verify-full`. `prefer`, the default, falls back to plain text.
fn requires_tls(url: &str) -> bool {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    query.split('&').any(|pair| {
        matches!(
            pair.split_once('='),
            Some((
                "sslmode" | "ssl-mode",
                "require" | "verify-ca" | "verify-full"
            ))
        )
    })
}

impl SqlInbox {
    /// Opens the inbox at `url`, `sqlite://PATH` or `postgres://...`, without connecting yet.
    ///
    /// # Errors
    ///
    /// [`InboxError::UnsupportedUrl`] for a scheme this build has no feature for, or a
    /// Postgres URL that asks for TLS (`sslmode=require`, `verify-ca` or `verify-full`) in a
    /// build without the `postgres-tls` feature, which would fail every connection and answer
    /// 503 for ever; and [`InboxError::Database`] for a URL sqlx cannot read, or when called
    /// outside a tokio runtime. The error never repeats the URL, which may hold a password.
    pub fn open(url: &str) -> Result<Self, InboxError> {
        let dialect = Dialect::from_url(url)?;
        if dialect == Dialect::Postgres && !cfg!(feature = "postgres-tls") && requires_tls(url) {
            return Err(InboxError::UnsupportedUrl {
                scheme: "postgres".to_owned(),
                hint: "its sslmode asks for TLS, which this build has not: turn on \
                       ringyo-webhook's `postgres-tls` feature (for a binary: cargo build \
                       --features ringyo-webhook/postgres-tls)",
            });
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(InboxError::database("SqlInbox::open needs a tokio runtime"));
        }
        Dialect::install_drivers();
        let options: AnyConnectOptions = dialect
            .connect_url(url)
            .parse()
            .map_err(|_| InboxError::database(format!("cannot read the {dialect} URL")))?;
        let health = Arc::new(Health::new(dialect, url));
        let pool = connect(
            dialect,
            options.clone(),
            &health,
            dialect.max_connections(),
            None,
        );
        let claims = connect(dialect, options, &health, 2, Some(dialect.lazy_commit()));
        Ok(Self::from_parts(pool, claims, dialect, health))
    }

    /// Uses a pool you configured yourself (size, time-outs, TLS), for example to share it
    /// with your application. On SQLite, set `journal_mode=WAL` and `synchronous=FULL` on its
    /// connections, as [`open`](Self::open) does: with less, a commit may not survive a
    /// power cut, and the inbox's promise is only as good as the commit.
    ///
    /// # Errors
    ///
    /// [`InboxError::UnsupportedUrl`] if the pool's database is not one this build supports.
    pub fn with_pool(pool: AnyPool) -> Result<Self, InboxError> {
        let url = pool.connect_options().database_url.to_string();
        let dialect = Dialect::from_url(&url)?;
        let health = Arc::new(Health::new(dialect, &url));
        Ok(Self::from_parts(pool.clone(), pool, dialect, health))
    }

    fn from_parts(pool: AnyPool, claims: AnyPool, dialect: Dialect, health: Arc<Health>) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool,
                claims,
                dialect,
                health,
                upkeep: Arc::default(),
                holder: ClaimToken::new().to_string(),
                migrated: OnceCell::new(),
                writer: Arc::default(),
                #[cfg(feature = "postgres")]
                listener: Mutex::default(),
                #[cfg(feature = "sqlite")]
                sqlite: OnceCell::new(),
                #[cfg(feature = "postgres")]
                postgres: OnceCell::new(),
            }),
        }
    }

    /// A pool of SQLite's own driver on the inbox's file, for your own tables beside the
    /// inbox's: to create them, and for a transactional handler
    /// ([`Worker::transactional`](super::Worker::transactional)), whose writes commit with the
    /// delivery's outcome. Made on first call, once the inbox's schema is ready.
    ///
    /// One connection, since SQLite has one writer at a time: transactional handlers take
    /// turns on it rather than wait on the file's lock. Its connections are set as the
    /// inbox's (WAL, `synchronous=FULL`, a 5 s busy time-out).
    ///
    /// # Errors
    ///
    /// [`InboxError::UnsupportedUrl`] if the inbox is not SQLite, and the errors of first use.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub async fn sqlite_pool(&self) -> Result<sqlx::SqlitePool, InboxError> {
        self.own_pool(Dialect::Sqlite, &self.shared.sqlite, |options| {
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        for pragma in Dialect::Sqlite.on_connect() {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                        Ok(())
                    })
                })
                .connect_lazy_with(options)
        })
        .await
    }

    /// A pool of Postgres's own driver on the inbox's database, as
    /// [`sqlite_pool`](Self::sqlite_pool) is for SQLite: for your own tables, and for
    /// transactional handlers, each of which holds a connection for its transaction (up to
    /// 32 at once).
    ///
    /// # Errors
    ///
    /// [`InboxError::UnsupportedUrl`] if the inbox is not Postgres, and the errors of first
    /// use.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn postgres_pool(&self) -> Result<sqlx::PgPool, InboxError> {
        self.own_pool(Dialect::Postgres, &self.shared.postgres, |options| {
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(32)
                .connect_lazy_with(options)
        })
        .await
    }

    /// The pool of `engine`'s own driver kept in `cell`, made by `make` from the inbox's URL
    /// on first call, once the schema is ready: [`sqlite_pool`](Self::sqlite_pool) and
    /// [`postgres_pool`](Self::postgres_pool).
    async fn own_pool<DB: sqlx::Database>(
        &self,
        engine: Dialect,
        cell: &OnceCell<sqlx::Pool<DB>>,
        make: impl FnOnce(<DB::Connection as sqlx::Connection>::Options) -> sqlx::Pool<DB>,
    ) -> Result<sqlx::Pool<DB>, InboxError> {
        self.engine(engine)?;
        self.ready().await?;
        let pool = cell
            .get_or_try_init(|| async {
                let url = &self.shared.pool.connect_options().database_url;
                let options = url
                    .as_str()
                    .parse()
                    .map_err(|_| InboxError::database(format!("cannot read the {engine} URL")))?;
                Ok::<_, InboxError>(make(options))
            })
            .await?;
        Ok(pool.clone())
    }

    /// `Ok` if this inbox is on `engine`.
    pub(super) fn engine(&self, engine: Dialect) -> Result<(), InboxError> {
        if self.shared.dialect == engine {
            return Ok(());
        }
        Err(InboxError::UnsupportedUrl {
            scheme: self.shared.dialect.to_string(),
            hint: match engine {
                Dialect::Sqlite => "this needs a sqlite:// inbox",
                Dialect::Postgres => "this needs a postgres:// inbox",
            },
        })
    }

    /// On SQLite, this process's turn to write: writers queue for it in order, and only its
    /// holder takes the file's write lock. SQLite itself has no queue: a writer that finds the
    /// lock taken sleeps (1 ms, then 2, 5, 10, up to 100 ms) and tries again, so under load
    /// the lock sits free while writers sleep, and ingest, which writes most often, takes it
    /// again and again while the worker's claims and settlements wait. Queued here, each
    /// writer starts the moment the last one commits, in turn. (Other processes on the file,
    /// such as the admin command, still wait the SQLite way.) `None` on Postgres, whose
    /// writers do not exclude each other. On SQLite it also schedules the background
    /// checkpoint (see [`Upkeep`]).
    pub(super) async fn write_turn(&self) -> Option<OwnedMutexGuard<()>> {
        if self.shared.dialect != Dialect::Sqlite {
            return None;
        }
        self.shared.upkeep.wrote(&self.shared.pool);
        Some(Arc::clone(&self.shared.writer).lock_owned().await)
    }

    /// Begins a transaction that writes, in this process's turn.
    async fn begin_write(&self, pool: &AnyPool) -> Result<WriteTx, InboxError> {
        let turn = self.write_turn().await;
        let tx = self.shared.dialect.begin_write(pool).await?;
        Ok(tx.in_turn(turn))
    }

    /// Closes the pool's connections, waiting for statements in flight.
    pub async fn close(&self) {
        self.shared.claims.close().await;
        self.shared.pool.close().await;
    }

    /// The schema, checked and migrated once per process (and again after a failure). A
    /// SQLite file is checked for corruption first, so a corrupt one is refused before it
    /// acknowledges anything.
    async fn ready(&self) -> Result<&AnyPool, InboxError> {
        let shared = &self.shared;
        shared
            .migrated
            .get_or_try_init(|| async {
                shared.health.check_file(&shared.pool).await?;
                shared.dialect.migrate(&shared.pool).await
            })
            .await?;
        Ok(&shared.pool)
    }

    /// Runs `operation` unless the file is known to be corrupt, and recognises corruption in
    /// its error: every operation of the store goes through here.
    fn run<'a, T: 'a>(
        &'a self,
        operation: impl Future<Output = Result<T, InboxError>> + Send + 'a,
    ) -> InboxFuture<'a, T> {
        let health = &self.shared.health;
        Box::pin(async move {
            health.refused()?;
            operation.await.map_err(|err| health.classify(err))
        })
    }

    /// Counts a commit of deliveries of about `bytes` for the upkeep of a SQLite file's WAL.
    fn committed(&self, bytes: usize) {
        if self.shared.dialect == Dialect::Sqlite {
            let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
            self.shared.upkeep.committed(bytes, &self.shared.pool);
        }
    }

    /// Settles, and with `hand_over` claims a delivery after each settlement that ended an
    /// attempt, in one transaction (see [`InboxStore::settle_and_hand_over`]).
    async fn settle_with(
        &self,
        settlements: &[Settlement],
        hand_over: Option<&HandOver>,
    ) -> Result<Vec<(bool, Option<ClaimedDelivery>)>, InboxError> {
        let pool = self.ready().await?;
        let dialect = self.shared.dialect;
        let mut tx = self.begin_write(pool).await?;
        let settle::Recorded {
            held,
            finished,
            released,
        } = settle::record(dialect, tx.conn(), settlements).await?;
        let mut next: Vec<Option<ClaimedDelivery>> = vec![None; settlements.len()];
        let lanes_too = dialect.takes_lanes_when_settling();
        match hand_over {
            // Each lane freed to its next delivery, with the slot of the one that freed it.
            Some(hand_over) if lanes_too => {
                let (ended, given_back): (Vec<_>, Vec<_>) = released
                    .into_iter()
                    .partition(|release| release.ended_attempt);
                settle::release(dialect, tx.conn(), &given_back).await?;
                for wave in settle::lane_waves(&ended) {
                    let claimed = lanes::release_and_hand_over(
                        tx.conn(),
                        &wave,
                        hand_over,
                        &self.shared.holder,
                    )
                    .await?;
                    into_slots(&finished, &mut next, claimed);
                }
            }
            // On Postgres too, by the claim's statement on the lanes the release left free and
            // locked.
            Some(hand_over) => {
                settle::release(dialect, tx.conn(), &released).await?;
                let mut ended: Vec<String> = released
                    .iter()
                    .filter(|release| release.ended_attempt)
                    .map(|release| release.lane.clone())
                    .collect();
                ended.dedup();
                let claimed =
                    lanes::claim_locked_postgres(tx.conn(), ended, hand_over, &self.shared.holder)
                        .await?;
                into_slots(&finished, &mut next, claimed);
            }
            None => settle::release(dialect, tx.conn(), &released).await?,
        }
        if let Some(hand_over) = hand_over {
            // Then each slot left empty, as the claim loop fills them: the oldest due outside
            // lanes, then on SQLite the heads of free lanes that are due (on Postgres a lane
            // claimed here would stay locked until the settlement commits, see
            // `Dialect::takes_lanes_when_settling`).
            let mut slots: Vec<usize> = finished
                .iter()
                .filter(|finished| next[finished.by].is_none())
                .filter(|finished| finished.lane.is_none() || lanes_too)
                .map(|finished| finished.by)
                .collect();
            if !slots.is_empty() {
                let claimed = self
                    .claim_query(dialect.claim_sql(), hand_over, count(&slots))
                    .fetch_all(tx.conn())
                    .await
                    .map_err(InboxError::database)?;
                let filled = claimed.len().min(slots.len());
                for (by, row) in slots.drain(..filled).zip(&claimed) {
                    next[by] = Some(rows::claimed(row)?);
                }
            }
            if !slots.is_empty() && lanes_too {
                let claimed = lanes::take_and_claim(
                    dialect,
                    tx.conn(),
                    hand_over,
                    count(&slots),
                    &self.shared.holder,
                )
                .await?;
                for (by, delivery) in slots.into_iter().zip(claimed) {
                    next[by] = Some(delivery);
                }
            }
        }
        tx.commit().await?;
        Ok(held.into_iter().zip(next).collect())
    }

    /// Claims with `sql`, the dialect's claim of deliveries or of a suspect.
    async fn claim_with(
        &self,
        sql: &'static str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        token: ClaimToken,
    ) -> Result<Vec<ClaimedDelivery>, InboxError> {
        self.ready().await?;
        let _turn = self.write_turn().await;
        let lease = HandOver::new(now, lease_until, token);
        let rows = self
            .claim_query(sql, &lease, limit)
            .fetch_all(&self.shared.claims)
            .await
            .map_err(InboxError::database)?;
        rows.iter().map(rows::claimed).collect()
    }

    /// `sql`, the dialect's claim of deliveries or of a suspect, of up to `limit` leased as
    /// `lease` says.
    fn claim_query<'q>(
        &'q self,
        sql: &'q str,
        lease: &HandOver,
        limit: u32,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        sqlx::query(sql)
            .bind(lease.token.to_string())
            .bind(lease.lease_until.timestamp_millis())
            .bind(lease.now.timestamp_millis())
            .bind(i64::from(limit))
            .bind(self.shared.holder.as_str())
    }
}

/// Gives each delivery `claimed` in a settlement for a lane the slot of the settlement that
/// freed that lane, in `next`.
fn into_slots(
    finished: &[settle::Finished],
    next: &mut [Option<ClaimedDelivery>],
    claimed: Vec<(String, ClaimedDelivery)>,
) {
    for (lane, delivery) in claimed {
        let by = finished
            .iter()
            .find(|finished| finished.lane.as_deref() == Some(lane.as_str()));
        if let Some(finished) = by {
            next[finished.by] = Some(delivery);
        }
    }
}

/// How many `items` there are, as a claim's limit or a count of what it claimed.
fn count<T>(items: &[T]) -> u32 {
    u32::try_from(items.len()).unwrap_or(u32::MAX)
}

/// A pool on the inbox's database, of up to `max` connections, each set as the dialect says
/// (and with `lazy`, if given). A corrupt file is recognised as each connects.
fn connect(
    dialect: Dialect,
    options: AnyConnectOptions,
    health: &Arc<Health>,
    max: u32,
    lazy: Option<&'static str>,
) -> AnyPool {
    let health = Arc::clone(health);
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| {
            let health = Arc::clone(&health);
            Box::pin(async move {
                if let Some(pragma) = dialect.on_new_file() {
                    // Only on a file with nothing in it yet: on any other the setting
                    // changes nothing, yet takes the write lock, which a busy inbox holds
                    // almost always (its writers queue for it back to back), so a new
                    // connection would wait out its busy time-out. Best effort: see
                    // `on_new_file`.
                    let pages = sqlx::query("PRAGMA page_count")
                        .fetch_one(&mut *conn)
                        .await
                        .and_then(|row| row.try_get::<i64, _>(0));
                    if matches!(pages, Ok(0)) {
                        let _ = sqlx::query(pragma).execute(&mut *conn).await;
                    }
                }
                for pragma in dialect.on_connect().iter().chain(&lazy) {
                    if let Err(err) = sqlx::query(pragma).execute(&mut *conn).await {
                        // The pool retries a failed connection until its time-out and
                        // then reports only that: a corrupt file must be seen here.
                        let err = health.classify(InboxError::database(err));
                        return Err(sqlx::Error::Protocol(err.to_string()));
                    }
                }
                Ok(())
            })
        })
        .connect_lazy_with(options)
}

/// Whether anything is due at `$1`: `[outside lanes, in a free lane]`, each 1 or 0, each
/// part as its partial index says it.
const DUE: &str = "SELECT \
     CAST(CASE WHEN EXISTS (SELECT 1 FROM ringyo_inbox WHERE state = 'pending' \
       AND lane IS NULL AND NOT suspect AND available_at <= $1) THEN 1 ELSE 0 END AS BIGINT), \
     CAST(CASE WHEN EXISTS (SELECT 1 FROM ringyo_inbox_lanes WHERE holder IS NULL \
       AND due_at <= $1) THEN 1 ELSE 0 END AS BIGINT)";

/// The most deliveries one `INSERT` stores: 12 parameters each, well inside SQLite's 32,766
/// and Postgres's 65,535.
const MAX_ROWS_PER_INSERT: usize = 1024;

// On SQLite an `INSERT`'s query makes its rows' lanes due too, one row of
// `lanes::make_due_each_sql` each.
const _: () = assert!(MAX_ROWS_PER_INSERT <= lanes::MAX_LANES_PER_STATEMENT);

/// The most payload bytes one `INSERT` carries, unless it stores a single delivery: the
/// driver copies a statement's parameters whole, so a batch of large bodies (256 of up to
/// 1 MiB by default) is sent in several statements rather than one copy of it all.
const MAX_BYTES_PER_INSERT: usize = 4 * 1024 * 1024;

/// `order` (indexes into `deliveries`) cut into the runs one `INSERT` each stores: at most
/// [`MAX_ROWS_PER_INSERT`] deliveries and [`MAX_BYTES_PER_INSERT`] of payloads, or a single
/// delivery however large.
fn insert_chunks<'o>(order: &'o [usize], deliveries: &[NewDelivery]) -> Vec<&'o [usize]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (at, &delivery) in order.iter().enumerate() {
        let size = deliveries[delivery].payload.len();
        if at > start && (at - start == MAX_ROWS_PER_INSERT || bytes + size > MAX_BYTES_PER_INSERT)
        {
            chunks.push(&order[start..at]);
            (start, bytes) = (at, 0);
        }
        bytes += size;
    }
    if start < order.len() {
        chunks.push(&order[start..]);
    }
    chunks
}

/// Stores `rows` new deliveries in one statement, each bound by [`bind_new`], and returns the
/// id of each one inserted (one already there, a retry, is left as it is).
fn insert_sql(dialect: Dialect, rows: usize) -> String {
    format!(
        "{} ringyo_inbox (delivery_id, event, event_at, received_at, payload, tenant, state, \
           attempts, available_at, subject, lane, order_at) VALUES {} \
         ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id",
        dialect.insert(),
        dialect.values(rows, 12)
    )
}

/// Binds a row of [`insert_sql`]: `delivery`'s columns in its order, pending with no
/// attempt, in `lane` ([`lane_of`]). An event without a timestamp is ordered by its arrival.
fn bind_new<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    delivery: &'q NewDelivery,
    lane: Option<&'q str>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let received_at = delivery.received_at.timestamp_millis();
    let event_at = delivery.timestamp.map(|at| at.timestamp_millis());
    query
        .bind(delivery.id.to_string())
        .bind(text_column(&delivery.event, MAX_EVENT_LEN))
        .bind(event_at)
        .bind(received_at)
        .bind(delivery.payload.as_ref())
        .bind(delivery.tenant.as_ref().map(Tenant::as_str))
        .bind("pending")
        .bind(0_i64)
        .bind(delivery.due_at.timestamp_millis())
        .bind(delivery.subject.as_ref().map(ToString::to_string))
        .bind(lane)
        .bind(event_at.unwrap_or(received_at))
}

/// The lane of an ordered delivery with a subject; none for any other.
fn lane_of(delivery: &NewDelivery) -> Option<String> {
    delivery
        .subject
        .as_ref()
        .filter(|_| delivery.ordered)
        .map(|subject| rows::lane(delivery.tenant.as_ref(), subject))
}

impl InboxStore for SqlInbox {
    fn store<'a>(&'a self, deliveries: &'a [NewDelivery]) -> InboxFuture<'a, Vec<Stored>> {
        self.run(async move {
            let pool = self.ready().await?;
            let mut tx = self.begin_write(pool).await?;
            // In id order, so two replicas storing the same deliveries (a retry sent to
            // both) lock their keys in the same order and never deadlock.
            let mut order: Vec<usize> = (0..deliveries.len()).collect();
            order.sort_by_key(|&at| deliveries[at].id);
            let mut stored = vec![Stored::Duplicate; deliveries.len()];
            let mut due_lanes = Vec::new();
            let lanes: Vec<Option<String>> = deliveries.iter().map(lane_of).collect();
            let dialect = self.shared.dialect;
            for chunk in insert_chunks(&order, deliveries) {
                let mut sql = insert_sql(dialect, chunk.len());
                // On SQLite the chunk's lanes are made due in the same query, a round trip
                // fewer while the transaction holds the writer's turn. Every ordered
                // delivery's lane, a duplicate's too: that makes its lane's hint early (or
                // brings back a lane pruned since), which costs one claim that finds nothing
                // and puts the hint right.
                let due_too =
                    dialect.runs_many_statements() && chunk.iter().any(|&at| lanes[at].is_some());
                if due_too {
                    sql = format!("{sql}; {}", lanes::make_due_each_sql(chunk.len()));
                }
                let mut query = sqlx::query(&sql);
                for &at in chunk {
                    query = bind_new(query, &deliveries[at], lanes[at].as_deref());
                }
                if due_too {
                    for &at in chunk {
                        query = query
                            .bind(lanes[at].as_deref())
                            .bind(deliveries[at].due_at.timestamp_millis());
                    }
                }
                // Only the `INSERT` returns rows.
                let inserted = query
                    .fetch_all(tx.conn())
                    .await
                    .map_err(InboxError::database)?
                    .iter()
                    .map(delivery_id)
                    .collect::<Result<HashSet<_>, _>>()?;
                // A delivery twice in one batch (a retry that raced its first send) is
                // inserted once: the first of the two, in id order, is the new one.
                let mut seen = HashSet::new();
                for &at in chunk {
                    let delivery = &deliveries[at];
                    if inserted.contains(&delivery.id) && seen.insert(delivery.id) {
                        stored[at] = Stored::New;
                        if !dialect.runs_many_statements() {
                            due_lanes.extend(
                                lanes[at]
                                    .clone()
                                    .map(|lane| (lane, delivery.due_at.timestamp_millis())),
                            );
                        }
                    }
                }
            }
            // Empty on SQLite, whose lanes the queries above made due.
            lanes::make_due(dialect, tx.conn(), &mut due_lanes).await?;
            if stored.contains(&Stored::New) {
                dialect.notify(&mut tx).await?;
            }
            tx.commit().await?;
            let bytes = deliveries
                .iter()
                .map(|delivery| delivery.payload.len())
                .sum();
            self.committed(bytes);
            Ok(stored)
        })
    }

    fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        token: ClaimToken,
    ) -> InboxFuture<'_, Vec<ClaimedDelivery>> {
        let sql = self.shared.dialect.claim_sql();
        self.run(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let pool = self.ready().await?;
            // A read first, then only the writes that find something: with nothing due, no
            // write (on SQLite, no wait for the writer); with ordering on, no empty claim
            // outside lanes before each claim of lanes.
            let due = sqlx::query(DUE)
                .bind(now.timestamp_millis())
                .fetch_one(pool)
                .await
                .map_err(InboxError::database)?;
            let mut claimed = Vec::new();
            if get::<i64>(&due, 0)? == 1 {
                claimed = self.claim_with(sql, now, lease_until, limit, token).await?;
            }
            let left = limit.saturating_sub(count(&claimed));
            if get::<i64>(&due, 1)? == 1 && left > 0 {
                let shared = &self.shared;
                let lease = HandOver::new(now, lease_until, token);
                claimed.extend(
                    lanes::claim(
                        shared.dialect,
                        self.begin_write(&shared.claims).await?,
                        &lease,
                        left,
                        &shared.holder,
                    )
                    .await?,
                );
            }
            Ok(claimed)
        })
    }

    fn suspects(&self, now: DateTime<Utc>) -> InboxFuture<'_, u64> {
        self.run(async move {
            let pool = self.ready().await?;
            // `state = 'running' OR suspect` as the partial index `ringyo_inbox_suspect` says it,
            // and nothing more, so both engines use it (given `state IN (..)` too, Postgres
            // reads the due index, every delivery waiting behind its subject included). A
            // suspect is waiting or running: finishing one clears it.
            let row = sqlx::query(
                "SELECT COUNT(*) FROM ringyo_inbox \
                     WHERE (state = 'running' OR suspect) \
                     AND available_at <= $1",
            )
            .bind(now.timestamp_millis())
            .fetch_one(pool)
            .await
            .map_err(InboxError::database)?;
            Ok(u64::try_from(get::<i64>(&row, 0)?).unwrap_or(0))
        })
    }

    fn claim_suspect(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        token: ClaimToken,
    ) -> InboxFuture<'_, Option<ClaimedDelivery>> {
        let sql = self.shared.dialect.claim_suspect_sql();
        self.run(async move {
            let claimed = self.claim_with(sql, now, lease_until, 1, token).await?;
            Ok(claimed.into_iter().next())
        })
    }

    fn settle<'a>(&'a self, settlements: &'a [Settlement]) -> InboxFuture<'a, Vec<bool>> {
        self.run(async move {
            let settled = self.settle_with(settlements, None).await?;
            Ok(settled.into_iter().map(|(held, _)| held).collect())
        })
    }

    fn settle_and_hand_over<'a>(
        &'a self,
        settlements: &'a [Settlement],
        hand_over: &'a HandOver,
    ) -> InboxFuture<'a, Vec<(bool, Option<ClaimedDelivery>)>> {
        self.run(self.settle_with(settlements, Some(hand_over)))
    }

    fn next_due(&self) -> InboxFuture<'_, Option<DateTime<Utc>>> {
        self.run(async move {
            let pool = self.ready().await?;
            // Each part as a partial index says it: a lane's backlog waits for its lane.
            let row = sqlx::query(&format!(
                "SELECT MIN(at) FROM (\
                   SELECT MIN(available_at) AS at FROM ringyo_inbox \
                     WHERE state = 'pending' AND lane IS NULL \
                   UNION ALL SELECT MIN(available_at) AS at FROM ringyo_inbox \
                     WHERE (state = 'running' OR suspect) \
                   UNION ALL {}) AS due",
                lanes::NEXT_DUE
            ))
            .fetch_one(pool)
            .await
            .map_err(InboxError::database)?;
            get::<Option<i64>>(&row, 0)?.map(millis).transpose()
        })
    }

    fn changed_elsewhere(&self) -> InboxFuture<'_, ()> {
        #[cfg(feature = "postgres")]
        if self.shared.dialect == Dialect::Postgres {
            return self.run(async move {
                let mut listener = self.shared.listener.lock().await;
                let Some(connection) = listener.as_mut() else {
                    let pool = self.ready().await?;
                    *listener = Some(Dialect::listen(pool).await?);
                    // What was stored before the `LISTEN` (since the worker's last claim)
                    // sent a notification no one heard: "may have changed", so the worker
                    // claims once now, and from here each commit's notification is heard.
                    return Ok(());
                };
                if let Err(err) = connection.recv().await {
                    // Connect afresh next time; what was sent meanwhile is found by the next claim.
                    *listener = None;
                    return Err(InboxError::database(err));
                }
                Ok(())
            });
        }
        Box::pin(std::future::pending())
    }
}

impl InboxAdmin for SqlInbox {
    fn stats(&self) -> InboxFuture<'_, InboxStats> {
        self.run(async move {
            let pool = self.ready().await?;
            let rows = sqlx::query(
                "SELECT state, CASE WHEN superseded THEN 1 ELSE 0 END AS skipped, COUNT(*), \
                 MIN(received_at) FROM ringyo_inbox GROUP BY state, skipped",
            )
            .fetch_all(pool)
            .await
            .map_err(InboxError::database)?;
            let mut stats = InboxStats::default();
            for row in &rows {
                let count = u64::try_from(get::<i64>(row, 2)?).unwrap_or(0);
                let superseded = get::<i64>(row, 1)? == 1;
                match get::<String>(row, 0)?.as_str() {
                    "pending" => {
                        stats.pending = count;
                        stats.oldest_pending =
                            get::<Option<i64>>(row, 3)?.map(millis).transpose()?;
                    }
                    "running" => stats.running = count,
                    "done" if superseded => stats.superseded = count,
                    "done" => stats.done = count,
                    _ => stats.dead = count,
                }
            }
            Ok(stats)
        })
    }

    fn dead(&self, limit: u32) -> InboxFuture<'_, Vec<DeadDelivery>> {
        self.run(async move {
                let pool = self.ready().await?;
                let rows = sqlx::query(
                    "SELECT delivery_id, event, attempts, finished_at, last_error, tenant FROM ringyo_inbox \
                     WHERE state = 'dead' ORDER BY finished_at LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(InboxError::database)?;
                rows.iter()
                    .map(|row| {
                        Ok(DeadDelivery {
                            id: delivery_id(row)?,
                            event: get(row, 1)?,
                            attempts: attempts(row, 2)?,
                            failed_at: millis(get(row, 3)?)?,
                            error: get::<Option<String>>(row, 4)?.unwrap_or_default(),
                            tenant: get::<Option<String>>(row, 5)?
                                .as_deref()
                                .and_then(Tenant::new),
                        })
                    })
                    .collect()
        })
    }

    fn replay<'a>(&'a self, filter: &'a ReplayFilter, now: DateTime<Utc>) -> InboxFuture<'a, u64> {
        self.run(async move {
            let pool = self.ready().await?;
            let mut tx = self.begin_write(pool).await?;
            let now = now.timestamp_millis();
            // Every condition binds a value or NULL, so one statement serves every filter.
            let sql = format!(
                "{} ringyo_inbox SET state = 'pending', attempts = 0, orphaned = 0, \
                 crashes_alone = 0, suspect = FALSE, superseded = FALSE, available_at = $1, \
                 finished_at = NULL \
                 WHERE ((state = 'dead' AND $2 = 1) OR (state = 'done' AND $3 = 1)) \
                   AND ($4 IS NULL OR delivery_id = $4) \
                   AND ($5 IS NULL OR received_at >= $5) \
                   AND ($6 IS NULL OR received_at < $6) \
                   AND ($7 IS NULL OR event = $7) \
                   AND ($8 IS NULL OR subject = $8) \
                   AND ($9 IS NULL OR tenant = $9) \
                 RETURNING lane",
                self.shared.dialect.update()
            );
            let rows = sqlx::query(&sql)
                .bind(now)
                .bind(i64::from(filter.dead))
                .bind(i64::from(filter.handled))
                .bind(filter.id.map(|id| id.to_string()))
                .bind(filter.received_since.map(|at| at.timestamp_millis()))
                .bind(filter.received_before.map(|at| at.timestamp_millis()))
                .bind(filter.event.as_deref())
                .bind(filter.subject.as_ref().map(ToString::to_string))
                .bind(filter.tenant.as_ref().map(Tenant::as_str))
                .fetch_all(tx.conn())
                .await
                .map_err(InboxError::database)?;
            let replayed = u64::try_from(rows.len()).unwrap_or(u64::MAX);
            let mut due_lanes = Vec::new();
            for row in &rows {
                if let Some(lane) = get::<Option<String>>(row, 0)? {
                    due_lanes.push((lane, now));
                }
            }
            lanes::make_due(self.shared.dialect, tx.conn(), &mut due_lanes).await?;
            for (lane, _) in &due_lanes {
                lanes::recount_newest(tx.conn(), lane).await?;
            }
            if replayed > 0 {
                self.shared.dialect.notify(&mut tx).await?;
            }
            tx.commit().await?;
            Ok(replayed)
        })
    }

    fn prune(&self, before: DateTime<Utc>) -> InboxFuture<'_, u64> {
        self.run(async move {
            let pool = self.ready().await?;
            let deleted =
                sqlx::query("DELETE FROM ringyo_inbox WHERE state = 'done' AND finished_at < $1")
                    .bind(before.timestamp_millis())
                    .execute(pool)
                    .await
                    .map_err(InboxError::database)?;
            lanes::prune(self.shared.dialect, pool, before).await?;
            if self.shared.dialect == Dialect::Sqlite && deleted.rows_affected() > 0 {
                self.shared.upkeep.after_prune(pool).await;
            }
            Ok(deleted.rows_affected())
        })
    }

    /// `Ok` only if the inbox can commit now: connects, checks and migrates on first use, then
    /// commits a small write. The write is what tells a full disk or a file system turned
    /// read-only (where `SELECT 1` still passes) from a working inbox, and it passes again as
    /// soon as deliveries would commit again.
    ///
    /// Errors: [`InboxError::Corrupt`] for a corrupt SQLite file (refuse to start: see its
    /// message), [`InboxError::SchemaTooNew`] if a newer version of this crate migrated the
    /// database, [`InboxError::Database`] if it cannot commit now.
    fn ping(&self) -> InboxFuture<'_, ()> {
        self.run(async move {
            let pool = self.ready().await?;
            self.shared.health.probe(pool).await
        })
    }
}

impl fmt::Debug for SqlInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL or the pool's options: they may hold a password.
        f.debug_struct("SqlInbox")
            .field("dialect", &self.shared.dialect)
            .field("connections", &self.shared.pool.size())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use sqlx::{Connection, Executor};

    use super::*;

    /// New deliveries with payloads of `sizes` bytes.
    fn of_sizes(sizes: &[usize]) -> Vec<NewDelivery> {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        sizes
            .iter()
            .enumerate()
            .map(|(at, &size)| NewDelivery {
                id: format!("{at:064x}").parse().unwrap(),
                event: "call.completed".to_owned(),
                timestamp: None,
                received_at: now,
                payload: vec![b' '; size].into(),
                tenant: None,
                subject: None,
                ordered: false,
                due_at: now,
            })
            .collect()
    }

    #[test]
    fn a_batch_is_stored_in_statements_of_at_most_four_mib_or_one_delivery() {
        const MIB: usize = 1024 * 1024;
        let deliveries = of_sizes(&[3 * MIB, MIB, MIB, 5 * MIB, 10, 10]);
        let order = [5, 4, 3, 2, 1, 0];
        let chunks = insert_chunks(&order, &deliveries);
        // The two small ones; 5 MiB alone (the first of its statement, however large); 1 + 1
        // MiB; then 3 MiB (2 + 3 is past 4).
        assert_eq!(chunks, [&[5, 4][..], &[3], &[2, 1], &[0]]);
    }

    #[test]
    fn a_batch_is_stored_in_statements_of_at_most_1024_deliveries_in_its_order() {
        let deliveries = of_sizes(&[1; 2500]);
        let order: Vec<usize> = (0..2500).rev().collect();
        let chunks = insert_chunks(&order, &deliveries);
        assert_eq!(
            chunks.iter().map(|chunk| chunk.len()).collect::<Vec<_>>(),
            [1024, 1024, 452]
        );
        assert_eq!(chunks.concat(), order);
        assert!(insert_chunks(&[], &deliveries).is_empty());
    }

    /// A process that opens a busy inbox (the admin command beside a receiver, say) reads at
    /// once: a new connection takes no write lock, which the receiver's writers hold back to
    /// back.
    #[tokio::test]
    async fn a_new_connection_to_a_file_whose_write_lock_is_held_reads_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
        SqlInbox::open(&url).unwrap().stats().await.unwrap();
        let mut writer = sqlx::SqliteConnection::connect(&url).await.unwrap();
        writer.execute("BEGIN IMMEDIATE").await.unwrap();

        let started = std::time::Instant::now();
        let stats = SqlInbox::open(&url).unwrap().stats().await;
        assert!(stats.is_ok(), "{stats:?}");
        assert!(
            started.elapsed() < ACQUIRE_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        writer.execute("ROLLBACK").await.unwrap();
    }
}
