//! Transactional handlers through real HTTP, on every engine: the handler's writes commit with
//! the delivery's outcome, or not at all.

use std::time::Duration;

use crate::order::{call_event, send};
use ringyo_test_support::{
    self as support,
    inbox::{serve, Database},
};
use ringyo_webhook::inbox::{Backoff, Inbox, InboxStats};

/// Polls (bounded) until `done` holds of the inbox's counts.
async fn until(inbox: &Inbox, done: impl Fn(&InboxStats) -> bool) -> InboxStats {
    for _ in 0..400 {
        let stats = inbox.stats().await.unwrap();
        if done(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never reached: {:?}", inbox.stats().await.unwrap());
}

fn quick_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(20), Duration::from_millis(50))
}

/// The user's table beside the inbox's: one row per call, and the events it was told of.
const TABLE: &str = "CREATE TABLE IF NOT EXISTS call_events \
     (call_id TEXT NOT NULL, event TEXT NOT NULL, attempt BIGINT NOT NULL)";

/// The same cases for each engine, whose transactions are of different types.
macro_rules! transactional_cases {
    ($engine:ident, $db:ty, $other:ty, $pool:ident, $database:expr) => {
        mod $engine {
            use ringyo_webhook::{
                inbox::{
                    sqlx::{self, Transaction},
                    Inbox, Job, Worker,
                },
                Event,
            };

            use super::*;

            /// An inbox on `database` with the user's table, served; its pool.
            async fn receiver(
                database: &Database,
                ordered: bool,
            ) -> (Inbox, std::net::SocketAddr, sqlx::Pool<$db>) {
                let inbox = Inbox::new(database.open())
                    .order_by_subject(ordered)
                    .reorder_window(Duration::ZERO);
                let pool = inbox.sql().unwrap().$pool().await.unwrap();
                sqlx::query(TABLE).execute(&pool).await.unwrap();
                let addr = serve(&inbox).await;
                (inbox, addr, pool)
            }

            /// The user's rows: (call, event, attempt), in the order written.
            async fn rows(pool: &sqlx::Pool<$db>) -> Vec<(String, String, i64)> {
                sqlx::query_as("SELECT call_id, event, attempt FROM call_events")
                    .fetch_all(pool)
                    .await
                    .unwrap()
            }

            /// A handler that writes a row, then fails on the attempts `fails` says, with an
            /// error or a panic: what it wrote must go with the failure.
            fn writing(
                fails: fn(u32) -> Option<&'static str>,
            ) -> impl for<'t> Fn(
                Job<Event>,
                &'t mut Transaction<'static, $db>,
            ) -> ringyo_webhook::inbox::TxFuture<'t, sqlx::Error>
                   + Send
                   + Sync
                   + 'static {
                move |job: Job<Event>, tx: &mut Transaction<'static, $db>| {
                    Box::pin(async move {
                        let call = job.subject.as_ref().map(|s| s.id().to_owned());
                        sqlx::query("INSERT INTO call_events VALUES ($1, $2, $3)")
                            .bind(call.unwrap_or_default())
                            .bind(job.event.kind.as_str())
                            .bind(i64::from(job.attempt))
                            .execute(&mut **tx)
                            .await?;
                        match fails(job.attempt) {
                            Some("panic") => panic!("boom after writing"),
                            Some(error) => Err(sqlx::Error::Protocol(error.to_owned())),
                            None => Ok(()),
                        }
                    })
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_handlers_writes_commit_with_its_delivery_and_a_failure_keeps_none() {
                let Some(database) = $database else { return };
                let (inbox, addr, pool) = receiver(&database, false).await;
                let worker = Worker::transactional(
                    &inbox,
                    writing(|attempt| match attempt {
                        1 => Some("downstream is down"),
                        2 => Some("panic"),
                        _ => None,
                    }),
                )
                .unwrap()
                .backoff(quick_backoff());
                tokio::spawn(worker.run(std::future::pending()));

                assert_eq!(
                    send(addr, &call_event("call.completed", "call_1", 0)).await,
                    202
                );
                let stats = until(&inbox, |stats| stats.done == 1).await;
                assert_eq!((stats.pending, stats.running, stats.dead), (0, 0, 0));
                assert_eq!(
                    rows(&pool).await,
                    [("call_1".to_owned(), "call.completed".to_owned(), 3)],
                    "only the third attempt's row, once"
                );
            }

            /// Ordered and transactional: each call's events run one at a time in timestamp
            /// order, each recorded in its own transaction, which frees the call for the next.
            #[tokio::test(flavor = "multi_thread")]
            async fn ordered_events_each_commit_in_their_transaction_in_timestamp_order() {
                let Some(database) = $database else { return };
                let (inbox, addr, pool) = receiver(&database, true).await;
                let worker = Worker::transactional(&inbox, writing(|_| None))
                    .unwrap()
                    .concurrency(8);
                // Stored before the worker starts, in the wrong order.
                for (kind, at) in [
                    ("call.completed", 30),
                    ("call.answered", 20),
                    ("call.ringing", 10),
                ] {
                    for call in ["call_1", "call_2"] {
                        assert_eq!(send(addr, &call_event(kind, call, at)).await, 202);
                    }
                }
                tokio::spawn(worker.run(std::future::pending()));
                until(&inbox, |stats| stats.done == 6).await;
                let rows = rows(&pool).await;
                for call in ["call_1", "call_2"] {
                    let events: Vec<_> = rows
                        .iter()
                        .filter(|(id, _, _)| id == call)
                        .map(|(_, event, _)| event.as_str())
                        .collect();
                    assert_eq!(events, ["call.ringing", "call.answered", "call.completed"]);
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_transactional_worker_on_the_other_engine_is_refused() {
                let Some(database) = $database else { return };
                let inbox = Inbox::new(database.open());
                let refused = Worker::transactional(
                    &inbox,
                    |_: Job<Event>, _: &mut Transaction<'static, $other>| {
                        Box::pin(async { Ok::<(), String>(()) })
                    },
                );
                assert!(refused.is_err());
            }
        }
    };
}

transactional_cases!(
    sqlite,
    ringyo_webhook::inbox::sqlx::Sqlite,
    ringyo_webhook::inbox::sqlx::Postgres,
    sqlite_pool,
    Some(support::inbox::sqlite())
);
transactional_cases!(
    postgres,
    ringyo_webhook::inbox::sqlx::Postgres,
    ringyo_webhook::inbox::sqlx::Sqlite,
    postgres_pool,
    support::inbox::postgres().await
);
