//! What a transactional handler costs against a plain one: a worker of concurrency 64 drains
//! a backlog of stored deliveries, each handler counting its call in a table of the inbox's
//! database (`call_counts`, as the receiver's does). See README.md, "Transactional handlers".
//!
//! ```text
//! cargo build --release -p ringyo-webhook-benches --example tx_handlers
//! target/release/examples/tx_handlers <URL> [DELIVERIES] [ROUNDS] [CONCURRENCY]
//! ```
//!
//! `URL` is `sqlite://PATH` (created if missing) or `postgres://...`. Each round, for each
//! mode in turn, it stores DELIVERIES (default 4096) `call.transcript.ready` deliveries of
//! 2 KiB over 1,000 calls, untimed, then starts a worker of CONCURRENCY (default 64) and
//! times it until every one is handled. Modes:
//!
//! - `plain, no write`: the handler writes nothing (what the inbox itself costs);
//! - `plain, own write`: the handler upserts its call's count through the engine's pool, in a
//!   transaction of its own, and the worker records the outcome after it (at least once: a
//!   crash between the two counts the delivery twice);
//! - `transactional`: `Worker::transactional`, the same upsert in the inbox's transaction
//!   (exactly once): on SQLite deliveries back to back share a transaction, a savepoint each.
//!
//! It prints each mode's median round in handled deliveries a second, and each against
//! `plain, own write` of the same round.

use std::time::{Duration, Instant};

use ringyo_webhook::{
    bytes::Bytes,
    chrono::{DateTime, TimeDelta, Utc},
    inbox::{
        sqlx::{self, Postgres, Sqlite, Transaction},
        Inbox, InboxAdmin, InboxStore, Job, NewDelivery, Runs, SqlInbox, Worker,
    },
    testing::{sample_data, TestDelivery},
    DeliveryId, Event, EventKind, Subject, SubjectKind,
};
use serde_json::Value;

type Error = Box<dyn std::error::Error>;

const SUBJECTS: usize = 1000;

const UPSERT: &str = "INSERT INTO call_counts (call_id, handled) VALUES ($1, 1) \
     ON CONFLICT (call_id) DO UPDATE SET handled = call_counts.handled + 1";

const MODES: [&str; 3] = ["plain, no write", "plain, own write", "transactional"];

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |at: usize, default: usize| -> Result<usize, Error> {
        Ok(match args.get(at) {
            Some(value) => value.parse()?,
            None => default,
        })
    };
    let Some(url) = args.first() else {
        return Err("usage: tx_handlers <URL> [DELIVERIES] [ROUNDS] [CONCURRENCY]".into());
    };
    let (deliveries, rounds, concurrency) = (
        number(1, 4096)?.max(1),
        number(2, 3)?.max(1),
        number(3, 64)?.max(1),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(url, deliveries, rounds, concurrency))
}

async fn run(url: &str, deliveries: usize, rounds: usize, concurrency: usize) -> Result<(), Error> {
    let store = SqlInbox::open(url)?;
    store.ping().await?;
    let inbox = Inbox::new(store.clone());
    let sqlite = url.starts_with("sqlite:");
    let table = "CREATE TABLE IF NOT EXISTS call_counts \
                 (call_id TEXT PRIMARY KEY, handled BIGINT NOT NULL)";
    if sqlite {
        sqlx::query(table)
            .execute(&store.sqlite_pool().await?)
            .await?;
    } else {
        sqlx::query(table)
            .execute(&store.postgres_pool().await?)
            .await?;
    }
    // A database used before keeps its counts: count from here.
    let before = counted(&store, sqlite).await?;
    println!(
        "{deliveries} deliveries of 2 KiB a round over {SUBJECTS} calls, a worker of \
         concurrency {concurrency}, {rounds} rounds (and one to warm up), median round"
    );
    let payload = Bytes::from(body());
    let mut next_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos()
        << 64;
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut ratios: [Vec<f64>; 3] = Default::default();
    for round in 0..=rounds {
        let mut this_round = [0.0; 3];
        for (mode, rate) in this_round.iter_mut().enumerate() {
            fill(&store, &payload, deliveries, &mut next_id).await?;
            let took = if sqlite {
                drain_sqlite(&inbox, &store, mode, concurrency, deliveries).await?
            } else {
                drain_postgres(&inbox, &store, mode, concurrency, deliveries).await?
            };
            *rate = deliveries as f64 / took.as_secs_f64();
        }
        if round == 0 {
            continue;
        }
        for mode in 0..3 {
            rates[mode].push(this_round[mode]);
            ratios[mode].push(this_round[mode] / this_round[1]);
        }
        println!(
            "round {round}: {}",
            MODES
                .iter()
                .zip(this_round)
                .map(|(mode, rate)| format!("{mode} {rate:.0}/s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("| mode | handled/s | against plain, own write | each round |");
    println!("|---|---|---|---|");
    for mode in 0..3 {
        let each: Vec<String> = ratios[mode].iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {} | {:.0} | {:.2} | {} |",
            MODES[mode],
            median(&rates[mode]),
            median(&ratios[mode]),
            each.join(", ")
        );
    }
    let counted = counted(&store, sqlite).await? - before;
    // Two of the three modes count, in every round and the warm-up.
    let expected = i64::try_from(2 * deliveries * (rounds + 1))?;
    if counted != expected {
        return Err(format!("counted {counted} handled deliveries, expected {expected}").into());
    }
    println!("counted: {counted}, each delivery once");
    Ok(())
}

/// The deliveries counted in `call_counts` so far.
async fn counted(store: &SqlInbox, sqlite: bool) -> Result<i64, Error> {
    let sum = "SELECT CAST(COALESCE(SUM(handled), 0) AS BIGINT) FROM call_counts";
    Ok(if sqlite {
        sqlx::query_scalar(sum)
            .fetch_one(&store.sqlite_pool().await?)
            .await?
    } else {
        sqlx::query_scalar(sum)
            .fetch_one(&store.postgres_pool().await?)
            .await?
    })
}

macro_rules! drain {
    ($name:ident, $db:ty, $pool:ident) => {
        async fn $name(
            inbox: &Inbox,
            store: &SqlInbox,
            mode: usize,
            concurrency: usize,
            deliveries: usize,
        ) -> Result<Duration, Error> {
            let pool = store.$pool().await?;
            match mode {
                0 => {
                    let worker = Worker::new(inbox, |_: Job<Event>| async { Ok::<_, String>(()) });
                    drain(inbox, worker.concurrency(concurrency), deliveries).await
                }
                1 => {
                    let worker = Worker::new(inbox, move |job: Job<Event>| {
                        let pool = pool.clone();
                        async move {
                            let call = job.subject.map(|subject| subject.id().to_owned());
                            sqlx::query(UPSERT).bind(call).execute(&pool).await?;
                            Ok::<_, sqlx::Error>(())
                        }
                    });
                    drain(inbox, worker.concurrency(concurrency), deliveries).await
                }
                _ => {
                    let worker = Worker::transactional(
                        inbox,
                        |job: Job<Event>, tx: &mut Transaction<'static, $db>| {
                            Box::pin(async move {
                                let call = job.subject.map(|subject| subject.id().to_owned());
                                sqlx::query(UPSERT).bind(call).execute(&mut **tx).await?;
                                Ok::<_, sqlx::Error>(())
                            })
                        },
                    )?;
                    drain(inbox, worker.concurrency(concurrency), deliveries).await
                }
            }
        }
    };
}

drain!(drain_sqlite, Sqlite, sqlite_pool);
drain!(drain_postgres, Postgres, postgres_pool);

/// Runs `worker` until `deliveries` more are handled than when it started; how long that took.
async fn drain<H: Runs<Event>>(
    inbox: &Inbox,
    worker: Worker<Event, H>,
    deliveries: usize,
) -> Result<Duration, Error> {
    let target = inbox.stats().await?.done + u64::try_from(deliveries)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let deadline = started + Duration::from_secs(300);
    loop {
        let stats = inbox.stats().await?;
        if stats.done >= target {
            break;
        }
        if Instant::now() > deadline || stats.dead > 0 {
            return Err(format!("not drained: {stats:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let _ = stop.send(());
    running.await?;
    Ok(took)
}

/// Stores `deliveries` new deliveries, due now, untimed.
async fn fill(
    store: &SqlInbox,
    payload: &Bytes,
    deliveries: usize,
    next_id: &mut u128,
) -> Result<(), Error> {
    let now = DateTime::<Utc>::from(std::time::SystemTime::now()) - TimeDelta::milliseconds(1);
    let new: Vec<NewDelivery> = (0..deliveries)
        .map(|index| {
            *next_id += 1;
            let id: DeliveryId = format!("{:064x}", *next_id).parse().expect("64 hex digits");
            let call = format!("call_load_{:06}", index % SUBJECTS);
            NewDelivery {
                id,
                event: "call.transcript.ready".to_owned(),
                timestamp: Some(now),
                received_at: now,
                payload: payload.clone(),
                tenant: None,
                subject: Subject::new(SubjectKind::Call, &call),
                ordered: false,
                due_at: now,
            }
        })
        .collect();
    for chunk in new.chunks(256) {
        store.store(chunk).await?;
    }
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn body() -> String {
    let mut data = sample_data(&EventKind::CallTranscriptReady);
    data["id"] = Value::from("call_load_000000");
    TestDelivery::new("call.transcript.ready")
        .secret("whsec_load_test_secret")
        .data(data)
        .pad_to(2048)
        .body_and_signature()
        .0
}
