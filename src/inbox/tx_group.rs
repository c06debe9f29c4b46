//! Group commit for transactional handlers on SQLite: deliveries that run back to back share
//! one transaction, each in a savepoint of its own, and so one flush of the disk.
//!
//! SQLite has one writer: transactional handlers run one at a time whatever the worker's
//! concurrency, and with a transaction each, every delivery waits for a commit (an fsync)
//! before the next can begin. Here a delivery that finds the group's transaction open joins
//! it: it runs in a savepoint, which an error or a panic rolls back alone, and the group
//! commits when no other delivery is waiting to join (or it has grown to [`MAX_DELIVERIES`],
//! or been open for [`MAX_OPEN`]). Each delivery's run ends only once the commit holding its
//! writes succeeded, so exactly once holds as with a transaction each: a crash before the
//! commit rolls back every delivery of the group, writes and "handled" alike, and each runs
//! again; a failed commit fails each of them.
//!
//! Postgres does not group: its transactional handlers run side by side, a transaction each,
//! and its own group commit shares the flushes of transactions that commit together.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use sqlx::{Pool, Transaction};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

/// The most deliveries one group's transaction holds.
pub(super) const MAX_DELIVERIES: usize = 64;

/// The longest a group's transaction stays open for more deliveries to join: it holds the
/// file's write lock, which the inbox's own commits (an acknowledgement among them) wait for.
pub(super) const MAX_OPEN: Duration = Duration::from_millis(50);

/// Runs a statement of no result on a connection of `DB`: how the group sets its savepoints,
/// each driver's own (sqlx has no executor common to its drivers' connections).
pub(super) type Execute<DB> =
    for<'c> fn(
        &'c mut <DB as sqlx::Database>::Connection,
        &'static str,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

/// The open transaction of the group, and how many deliveries wait to join it.
pub(super) struct TxGroup<DB: sqlx::Database> {
    open: Mutex<Option<Open<DB>>>,
    waiting: AtomicUsize,
    execute: Execute<DB>,
}

impl<DB: sqlx::Database> TxGroup<DB> {
    /// A group with no transaction open yet, setting savepoints with `execute`.
    pub(super) fn new(execute: Execute<DB>) -> Self {
        Self {
            open: Mutex::new(None),
            waiting: AtomicUsize::new(0),
            execute,
        }
    }
}

/// A group's transaction: in the inbox's turn to write, with the deliveries whose writes it
/// holds, each waiting to hear how the commit went.
struct Open<DB: sqlx::Database> {
    tx: Transaction<'static, DB>,
    /// Declared after `tx`: given back only once the transaction has ended.
    _turn: Option<OwnedMutexGuard<()>>,
    members: Vec<oneshot::Sender<Result<(), String>>>,
    began: Instant,
}

/// What one delivery's work in the group's transaction came to.
pub(super) type Work<'t> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 't>>;

/// One delivery's work, to run in a transaction of the group.
pub(super) trait Member<DB: sqlx::Database> {
    /// Does the work in `tx`.
    fn work<'t>(self, tx: &'t mut Transaction<'static, DB>) -> Work<'t>;
}

impl<DB: sqlx::Database> TxGroup<DB> {
    /// Runs `work` in a savepoint of the group's transaction (begun with `begin` in `turn`
    /// when none is open), and returns once the transaction holding its writes committed:
    /// `Ok` then, or `work`'s own error (its savepoint rolled back), or why the group's
    /// transaction failed.
    pub(super) async fn run(
        &self,
        pool: &Pool<DB>,
        begin: &'static str,
        turn: impl Future<Output = Option<OwnedMutexGuard<()>>>,
        member: impl Member<DB>,
    ) -> Result<(), String> {
        let waiting = Waiting::on(&self.waiting);
        let mut slot = self.open.lock().await;
        drop(waiting);
        let mut open = match slot.take() {
            Some(open) => open,
            None => {
                let turn = turn.await;
                let tx = pool.begin_with(begin).await.map_err(failed)?;
                Open {
                    tx,
                    _turn: turn,
                    members: Vec::new(),
                    began: Instant::now(),
                }
            }
        };
        // Any error of the savepoint's own statements leaves the transaction unknown: it is
        // dropped (rolled back) with every member's writes, and each member hears of it.
        self.execute(&mut open.tx, "SAVEPOINT ringyo_delivery")
            .await?;
        let outcome = CatchUnwind(member.work(&mut open.tx)).await;
        let joined = match outcome {
            Ok(()) => {
                self.execute(&mut open.tx, "RELEASE SAVEPOINT ringyo_delivery")
                    .await?;
                let (told, committed) = oneshot::channel();
                open.members.push(told);
                Ok(committed)
            }
            Err(err) => {
                self.execute(&mut open.tx, "ROLLBACK TO SAVEPOINT ringyo_delivery")
                    .await?;
                self.execute(&mut open.tx, "RELEASE SAVEPOINT ringyo_delivery")
                    .await?;
                Err(err)
            }
        };
        let full = open.members.len() >= MAX_DELIVERIES || open.began.elapsed() >= MAX_OPEN;
        if full || self.waiting.load(Ordering::Acquire) == 0 {
            let Open { tx, members, .. } = open;
            let committed = tx.commit().await.map_err(failed);
            for member in members {
                let _ = member.send(committed.clone());
            }
        } else {
            *slot = Some(open);
        }
        drop(slot);
        match joined?.await {
            Ok(result) => result,
            // The group's transaction was dropped before it committed (a member's statement
            // failed, or the run holding it was cancelled): rolled back.
            Err(_) => Err("the shared transaction was rolled back before it committed".to_owned()),
        }
    }
}

impl<DB: sqlx::Database> TxGroup<DB> {
    async fn execute(
        &self,
        tx: &mut Transaction<'static, DB>,
        sql: &'static str,
    ) -> Result<(), String> {
        (self.execute)(&mut **tx, sql).await.map_err(failed)
    }
}

/// Counts a delivery waiting to join, until it has the group's turn (or gave up waiting).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A transactional attempt's error when the inbox's transaction itself failed, in the group
/// or alone.
pub(super) fn failed(err: impl std::fmt::Display) -> String {
    format!("the inbox's transaction failed: {err}")
}

/// A delivery's work whose panic becomes its error, so that its savepoint alone is rolled
/// back and the group's other deliveries commit (the worker catches a panic at its task, as
/// it does a plain handler's, which here would drop the whole group).
struct CatchUnwind<'t>(Work<'t>);

impl Future for CatchUnwind<'_> {
    type Output = Result<(), String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let work = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(format!(
                "the handler panicked: {}",
                super::job::panic_message(payload)
            ))),
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn group() -> (
        tempfile::TempDir,
        sqlx::SqlitePool,
        Arc<TxGroup<sqlx::Sqlite>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("group.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE effects (n INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        let group = TxGroup::new(<sqlx::Sqlite as super::super::transactional::TxEngine>::EXECUTE);
        (dir, pool, Arc::new(group))
    }

    /// Inserts its number, then fails if it is a multiple of 3, panics if of 5.
    struct Insert(i64);

    impl Member<sqlx::Sqlite> for Insert {
        fn work<'t>(self, tx: &'t mut Transaction<'static, sqlx::Sqlite>) -> Work<'t> {
            let Self(n) = self;
            Box::pin(async move {
                sqlx::query("INSERT INTO effects VALUES ($1)")
                    .bind(n)
                    .execute(&mut **tx)
                    .await
                    .map_err(|err| err.to_string())?;
                if n % 3 == 0 {
                    return Err(format!("{n} fails"));
                }
                if n % 5 == 0 {
                    panic!("{n} panics");
                }
                Ok(())
            })
        }
    }

    /// Deliveries that run together share commits, and one that fails or panics takes only
    /// its own writes with it.
    #[tokio::test]
    async fn a_failing_or_panicking_member_rolls_back_alone_and_the_rest_commit() {
        let (_dir, pool, group) = group().await;
        let runs = (1..=30).map(|n| {
            let (pool, group) = (pool.clone(), Arc::clone(&group));
            tokio::spawn(async move {
                let ran = group
                    .run(&pool, "BEGIN IMMEDIATE", async { None }, Insert(n))
                    .await;
                (n, ran)
            })
        });
        for run in runs.collect::<Vec<_>>() {
            let (n, ran) = run.await.unwrap();
            match ran {
                Ok(()) => assert!(n % 3 != 0 && n % 5 != 0, "{n} should have failed"),
                Err(err) if n % 3 == 0 => assert_eq!(err, format!("{n} fails")),
                Err(err) => assert_eq!(err, format!("the handler panicked: {n} panics")),
            }
        }
        let kept: Vec<i64> = sqlx::query_scalar("SELECT n FROM effects ORDER BY n")
            .fetch_all(&pool)
            .await
            .unwrap();
        let expected: Vec<i64> = (1..=30).filter(|n| n % 3 != 0 && n % 5 != 0).collect();
        assert_eq!(kept, expected);
    }
}
