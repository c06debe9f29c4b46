//! Handlers whose database writes commit in one transaction with the delivery's outcome:
//! effects exactly once, across crashes and lost leases.

use std::{fmt, future::Future, marker::PhantomData, pin::Pin, sync::Arc};

use chrono::{DateTime, Utc};
use sqlx::{Executor, Pool, Transaction};

use super::{
    dialect::Dialect,
    handle::Inbox,
    job::{private::Sealed, Job, RunFuture, Runs},
    settle,
    store::{InboxError, InboxFuture, Settle, Settlement},
    tx_group::{failed, Execute, Member, TxGroup, Work},
    worker::Worker,
    SqlInbox,
};
use crate::{
    event::FromEventData,
    replay::ClaimToken,
    verify::{Clock, DeliveryId},
};

/// What a transactional handler returns: a boxed future that may borrow the transaction, as
/// sqlx's own `Connection::transaction` takes (`Box::pin(async move { .. })`).
pub type TxFuture<'t, E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 't>>;

/// The engines a transactional handler runs on, each with sqlx's own driver:
/// [`sqlx::Sqlite`] (feature `sqlite`) and [`sqlx::Postgres`] (feature `postgres`). Sealed.
pub trait TxEngine: sqlx::Database + EngineSealed {
    /// `Ok` if `inbox` is on this engine.
    #[doc(hidden)]
    fn check(inbox: &SqlInbox) -> Result<(), InboxError>;

    /// The pool of this driver on `inbox`'s database.
    #[doc(hidden)]
    fn pool(inbox: &SqlInbox) -> InboxFuture<'_, Pool<Self>>;

    /// Begins the handler's transaction: on SQLite it takes the write lock at once, as the
    /// inbox's own writes do, so the transaction never fails to upgrade a read.
    #[doc(hidden)]
    const BEGIN: &'static str;

    /// Whether deliveries share transactions (see `tx_group`): on SQLite, whose one writer
    /// runs them one at a time anyway; not on Postgres, where they run side by side.
    #[doc(hidden)]
    const GROUPS: bool;

    /// Runs a statement of no result (a savepoint's) on `conn`.
    #[doc(hidden)]
    const EXECUTE: Execute<Self>;

    /// `true` if `token` still holds the delivery `id` (running, not lost to another worker),
    /// and from then on until the transaction ends: on Postgres the row is locked, on SQLite
    /// the transaction holds the file's write lock.
    #[doc(hidden)]
    fn holds(
        conn: &mut Self::Connection,
        id: DeliveryId,
        token: ClaimToken,
    ) -> InboxFuture<'_, bool>;

    /// Records the delivery handled in the transaction, as the worker's own settlement does
    /// (freeing its subject, if ordered); `false` if `token` no longer holds it.
    #[doc(hidden)]
    fn record_handled(
        conn: &mut Self::Connection,
        id: DeliveryId,
        token: ClaimToken,
        at: DateTime<Utc>,
    ) -> InboxFuture<'_, bool>;
}

#[doc(hidden)]
pub trait EngineSealed {}

/// The lease check of [`TxEngine::holds`], without and with the row lock.
const HOLDS: [&str; 2] = [
    "SELECT delivery_id FROM ringyo_inbox WHERE delivery_id = $1 AND lease_token = $2 \
     AND state = 'running'",
    "SELECT delivery_id FROM ringyo_inbox WHERE delivery_id = $1 AND lease_token = $2 \
     AND state = 'running' FOR UPDATE",
];

macro_rules! tx_engine {
    ($db:ty, $dialect:expr, $begin:literal, $groups:literal, $pool:ident) => {
        impl EngineSealed for $db {}

        impl TxEngine for $db {
            fn check(inbox: &SqlInbox) -> Result<(), InboxError> {
                inbox.engine($dialect)
            }

            fn pool(inbox: &SqlInbox) -> InboxFuture<'_, Pool<Self>> {
                Box::pin(inbox.$pool())
            }

            const BEGIN: &'static str = $begin;

            const GROUPS: bool = $groups;

            const EXECUTE: Execute<Self> = |conn, sql| {
                Box::pin(async move {
                    conn.execute(sql).await?;
                    Ok(())
                })
            };

            fn holds(
                conn: &mut Self::Connection,
                id: DeliveryId,
                token: ClaimToken,
            ) -> InboxFuture<'_, bool> {
                Box::pin(async move {
                    let held = sqlx::query($dialect.pick(HOLDS))
                        .bind(id.to_string())
                        .bind(token.to_string())
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(InboxError::database)?;
                    Ok(held.is_some())
                })
            }

            fn record_handled(
                conn: &mut Self::Connection,
                id: DeliveryId,
                token: ClaimToken,
                at: DateTime<Utc>,
            ) -> InboxFuture<'_, bool> {
                Box::pin(async move {
                    let outcome = Settle::Done { at };
                    let done = Settlement { id, token, outcome };
                    let (held, _) = settle::settle($dialect, conn, &[done]).await?;
                    Ok(held == [true])
                })
            }
        }
    };
}

#[cfg(feature = "sqlite")]
tx_engine!(
    sqlx::Sqlite,
    Dialect::Sqlite,
    "BEGIN IMMEDIATE",
    true,
    sqlite_pool
);
#[cfg(feature = "postgres")]
tx_engine!(
    sqlx::Postgres,
    Dialect::Postgres,
    "BEGIN",
    false,
    postgres_pool
);

/// A handler run in a transaction on the inbox's own database, for
/// [`Worker::transactional`]: the worker's `H`.
pub struct InTransaction<DB: TxEngine, F, E> {
    handler: F,
    inbox: SqlInbox,
    /// The transaction deliveries share, where the engine groups them.
    group: TxGroup<DB>,
    marker: PhantomData<fn() -> E>,
}

impl<DB: TxEngine, F, E> fmt::Debug for InTransaction<DB, F, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InTransaction")
            .field("inbox", &self.inbox)
            .finish_non_exhaustive()
    }
}

impl<T, DB: TxEngine, F, E> Sealed<T> for InTransaction<DB, F, E> {}

impl<T, DB, F, E> Runs<T> for InTransaction<DB, F, E>
where
    T: Send + 'static,
    DB: TxEngine,
    F: for<'t> Fn(Job<T>, &'t mut Transaction<'static, DB>) -> TxFuture<'t, E>
        + Send
        + Sync
        + 'static,
    E: fmt::Display + Send + 'static,
{
    fn run(self: Arc<Self>, job: Job<T>, token: ClaimToken, clock: Arc<dyn Clock>) -> RunFuture {
        Box::pin(async move {
            let pool = DB::pool(&self.inbox).await.map_err(failed)?;
            // On SQLite, in the inbox's turn to write (see `SqlInbox::write_turn`), held until
            // the transaction ends.
            let turn = self.inbox.write_turn();
            if DB::GROUPS {
                let attempt = Attempt {
                    run: Arc::clone(&self),
                    job,
                    token,
                    clock,
                };
                self.group.run(&pool, DB::BEGIN, turn, attempt).await?;
                return Ok(true);
            }
            let _turn = turn.await;
            let mut tx = pool
                .begin_with(DB::BEGIN)
                .await
                .map_err(|err| failed(InboxError::database(err)))?;
            // Dropping `tx` on an error rolls back what the handler wrote.
            self.attempt(job, &mut tx, token, clock).await?;
            tx.commit()
                .await
                .map_err(|err| failed(InboxError::database(err)))?;
            Ok(true)
        })
    }

    fn extends_lease(&self) -> bool {
        // The transaction holds the delivery (its row locked, or SQLite's write lock): no
        // other worker can take it meanwhile, and an extension would wait for the transaction.
        false
    }
}

impl<DB: TxEngine, F, E: fmt::Display> InTransaction<DB, F, E> {
    /// One attempt at `job` in `tx`: the lease checked (and held), the handler, the delivery
    /// recorded handled. An error leaves the caller to roll back.
    async fn attempt<T>(
        &self,
        job: Job<T>,
        tx: &mut Transaction<'static, DB>,
        token: ClaimToken,
        clock: Arc<dyn Clock>,
    ) -> Result<(), String>
    where
        F: for<'t> Fn(Job<T>, &'t mut Transaction<'static, DB>) -> TxFuture<'t, E>,
    {
        let id = job.delivery_id();
        if !DB::holds(&mut **tx, id, token).await.map_err(failed)? {
            return Err(LEASE_LOST.to_owned());
        }
        (self.handler)(job, tx)
            .await
            .map_err(|err| err.to_string())?;
        let recorded = DB::record_handled(&mut **tx, id, token, clock.now());
        if !recorded.await.map_err(failed)? {
            return Err(LEASE_LOST.to_owned());
        }
        Ok(())
    }
}

/// An attempt at a delivery, as a member of the engine's group of transactions.
struct Attempt<T, DB: TxEngine, F, E> {
    run: Arc<InTransaction<DB, F, E>>,
    job: Job<T>,
    token: ClaimToken,
    clock: Arc<dyn Clock>,
}

impl<T, DB, F, E> Member<DB> for Attempt<T, DB, F, E>
where
    T: Send + 'static,
    DB: TxEngine,
    F: for<'t> Fn(Job<T>, &'t mut Transaction<'static, DB>) -> TxFuture<'t, E>
        + Send
        + Sync
        + 'static,
    E: fmt::Display + Send + 'static,
{
    fn work<'t>(self, tx: &'t mut Transaction<'static, DB>) -> Work<'t> {
        Box::pin(async move {
            let Self {
                run,
                job,
                token,
                clock,
            } = self;
            run.attempt(job, tx, token, clock).await
        })
    }
}

/// Why a transactional handler's writes were rolled back when its lease was gone.
const LEASE_LOST: &str =
    "the lease was lost (another worker has the delivery): nothing this attempt wrote was kept";

impl<T, DB, F, E> Worker<T, InTransaction<DB, F, E>>
where
    T: FromEventData + Send + 'static,
    DB: TxEngine,
    F: for<'t> Fn(Job<T>, &'t mut Transaction<'static, DB>) -> TxFuture<'t, E>
        + Send
        + Sync
        + 'static,
    E: fmt::Display + Send + 'static,
{
    /// A worker whose handler writes in the inbox's own transaction: the handler's writes and
    /// the delivery's "handled" commit together, so each delivery's effects are in the database
    /// exactly once, whatever crashes.
    ///
    /// A plain handler runs at least once: a crash after it finished but before its outcome
    /// was committed runs it again, so its effects must be idempotent. Here the worker begins a
    /// transaction on the inbox's database ([`sqlx::Sqlite`] or [`sqlx::Postgres`], sqlx's own
    /// driver, so your `sqlx` code works unchanged), checks in it that its lease still holds
    /// (and holds it: the row is locked on Postgres, the file on SQLite), runs your handler
    /// with it, records the delivery handled in it and commits:
    ///
    /// - `Ok` commits your writes and the outcome together; an error or a panic rolls both
    ///   back, and the delivery is retried (back-off and dead letter as for any handler);
    /// - a crash at any point rolls back what was not committed, and the delivery runs again
    ///   with nothing of the first attempt kept;
    /// - a handler whose lease was lost to another worker never commits.
    ///
    /// Keep your tables in the inbox's database: on SQLite the inbox's file, on Postgres the
    /// same database (every replica shares it). [`SqlInbox::sqlite_pool`] and
    /// [`SqlInbox::postgres_pool`] (from [`Inbox::sql`]) give you that pool, to create them.
    ///
    /// What stays at least once is what is not in the database: an HTTP call, an e-mail. Write
    /// an *outbox* row in the transaction instead, and send from it in a job of your own
    /// that marks the row sent: the row exists exactly once, and a crash between the send and
    /// the mark resends, which the receiving side must then take as a duplicate.
    ///
    /// On SQLite, with one writer at a time, transactional handlers run one at a time and hold
    /// the file's write lock while they run, so a delivery's commit waits for them: keep them
    /// short (under a second: a commit waits 5 s at most before it is answered 503). There,
    /// deliveries that run back to back share one transaction, a savepoint each, and so one
    /// flush of the disk: an error or a panic rolls back its own savepoint only, and each
    /// delivery's run ends once the shared commit succeeded (a crash before it rolls back
    /// every delivery of the group, and each runs again). On Postgres each runs in a
    /// transaction of its own, beside the others.
    ///
    /// # Errors
    ///
    /// [`InboxError::UnsupportedUrl`] if the inbox is not the crate's [`SqlInbox`] on `DB`'s
    /// engine.
    ///
    /// ```no_run
    /// use ringyo_webhook::{
    ///     inbox::{sqlx::{self, Sqlite, Transaction}, Inbox, Job, Worker},
    ///     Event,
    /// };
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let inbox = Inbox::open("sqlite://ringyo-inbox.db")?;
    /// let pool = inbox.sql().unwrap().sqlite_pool().await?;
    /// sqlx::query("CREATE TABLE IF NOT EXISTS calls (id TEXT PRIMARY KEY, events INTEGER)")
    ///     .execute(&pool)
    ///     .await?;
    ///
    /// let worker = Worker::transactional(
    ///     &inbox,
    ///     |job: Job<Event>, tx: &mut Transaction<'static, Sqlite>| {
    ///         Box::pin(async move {
    ///             let Some(call) = job.subject else { return Ok(()) };
    ///             sqlx::query(
    ///                 "INSERT INTO calls (id, events) VALUES ($1, 1) \
    ///                  ON CONFLICT (id) DO UPDATE SET events = events + 1",
    ///             )
    ///             .bind(call.id())
    ///             .execute(&mut **tx)
    ///             .await?;
    ///             Ok::<(), sqlx::Error>(())
    ///         })
    ///     },
    /// )?;
    /// tokio::spawn(worker.run(std::future::pending()));
    /// # Ok(()) }
    /// ```
    pub fn transactional(inbox: &Inbox, handler: F) -> Result<Self, InboxError> {
        let Some(sql) = inbox.sql() else {
            return Err(InboxError::UnsupportedUrl {
                scheme: "custom".to_owned(),
                hint: "a transactional worker needs the crate's SqlInbox",
            });
        };
        DB::check(sql)?;
        let handler = InTransaction {
            handler,
            inbox: sql.clone(),
            group: TxGroup::new(DB::EXECUTE),
            marker: PhantomData,
        };
        Ok(Self::with(inbox, handler))
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        inbox::{InboxStore, NewDelivery},
        verify::SystemClock,
        Event,
    };

    fn effect<'t>(
        _: Job<Event>,
        tx: &'t mut Transaction<'static, sqlx::Sqlite>,
    ) -> TxFuture<'t, sqlx::Error> {
        Box::pin(async move {
            sqlx::query("INSERT INTO effects VALUES (1)")
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }

    /// A handler whose lease went to another worker (its process stalled past the lease, say)
    /// writes nothing: the transaction finds the lease gone and rolls back, unrun.
    #[tokio::test]
    async fn a_handler_whose_lease_was_taken_by_another_worker_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
        let store = SqlInbox::open(&url).unwrap();
        let now = SystemClock.now();
        let body = r#"{"event":"call.completed","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;
        let delivery = NewDelivery {
            id: "ab".repeat(32).parse().unwrap(),
            event: "call.completed".to_owned(),
            timestamp: None,
            received_at: now,
            payload: body.into(),
            tenant: None,
            subject: None,
            ordered: false,
            due_at: now,
        };
        store.store(&[delivery]).await.unwrap();
        let stalled = ClaimToken::new();
        let claimed = store.claim(now, now, 1, stalled).await.unwrap();
        let later = now + TimeDelta::seconds(1);
        let taken = store
            .claim_suspect(later, later + TimeDelta::seconds(30), ClaimToken::new())
            .await
            .unwrap();
        assert!(taken.is_some(), "another worker has it");

        let pool = store.sqlite_pool().await.unwrap();
        sqlx::query("CREATE TABLE effects (n INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        let run = Arc::new(InTransaction::<sqlx::Sqlite, _, sqlx::Error> {
            handler: effect,
            inbox: store.clone(),
            group: TxGroup::new(<sqlx::Sqlite as TxEngine>::EXECUTE),
            marker: PhantomData,
        });
        let event = crate::RingyoEvent::<Event>::parse(&claimed[0].payload, claimed[0].id).unwrap();
        let job = Job {
            event,
            attempt: 1,
            received_at: now,
            subject: None,
            superseded_by: None,
        };
        let ran = run.run(job, stalled, Arc::new(SystemClock)).await;
        assert_eq!(ran, Err(LEASE_LOST.to_owned()));
        let effects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM effects")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(effects, 0);
    }
}
