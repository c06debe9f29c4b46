//! What each step of the durable inbox costs with per-subject ordering on and off, one step
//! at a time, in this process: no HTTP, no handler, nothing running beside it. It explains the
//! `order` part of `benches/inbox.sh` (see README.md there).
//!
//! ```text
//! cargo build --release -p ringyo-webhook-benches --example inbox_ops
//! target/release/examples/inbox_ops <URL> [BATCH] [ROUNDS] [SUBJECTS] [DELIVERIES]
//! ```
//!
//! `URL` is `sqlite://PATH` (a new file: it is created) or `postgres://...` (an empty
//! database). Each round, for ordering off and then on (`NewDelivery::ordered`, due at once:
//! a reorder window of 0), it stores DELIVERIES (default 4096) `call.transcript.ready`
//! deliveries of 2 KiB over SUBJECTS calls (default 1000), BATCH at a time (default 64, what
//! group commit gathers under load), then runs the worker's cycle until none is left: claim as
//! many as BATCH slots are free, settle the BATCH running as handled in one call that hands
//! the slots it frees their next deliveries (`settle_and_hand_over`), and again. It prints,
//! per mode, the median round's time
//! per delivery of each step (`store`, `claim`, `settle`) and in all, the claims per round,
//! and the ratio off / on, which is what the step allows per second with ordering on, against
//! off. The deliveries of every round stay (handled), as in a receiver's inbox.
//!
//! On SQLite it also counts the pages each step writes to the WAL (what each commit flushes):
//! the inbox runs on a pool made here with `SqlInbox::with_pool`, whose connections take the
//! settings `SqlInbox::open` gives them (WAL, `synchronous=FULL`, `auto_vacuum=INCREMENTAL`,
//! a busy time-out) and one more, `wal_autocheckpoint=0`, so the WAL only grows within a
//! round; it is checkpointed, untimed, before each round.
//!
//! With `INBOX_OPS_STATEMENTS=1` it also prints, per mode, the time of each statement the
//! inbox ran in the measured rounds (from sqlx's own log of each statement: its text and
//! elapsed time), per delivery, with the calls and the rows: where a step's time goes.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use ringyo_webhook::{
    bytes::Bytes,
    chrono::{DateTime, TimeDelta, Utc},
    inbox::{
        sqlx::{self, any::AnyPoolOptions, AnyPool},
        HandOver, InboxAdmin, InboxStore, NewDelivery, Settle, Settlement, SqlInbox,
    },
    testing::{sample_data, TestDelivery},
    ClaimToken, DeliveryId, EventKind, Subject, SubjectKind,
};
use serde_json::Value;

const SECRET: &str = "whsec_load_test_secret";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("INBOX_OPS_STATEMENTS").is_some() {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(statements::Log),
        )?;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |at: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(match args.get(at) {
            Some(value) => value.parse()?,
            None => default,
        })
    };
    let Some(url) = args.first() else {
        return Err(
            "usage: inbox_ops <URL> [BATCH] [ROUNDS] [SUBJECTS] [DELIVERIES]; URL sqlite://PATH \
             or postgres://..."
                .into(),
        );
    };
    let (batch, rounds, subjects, deliveries) = (
        number(1, 64)?.max(1),
        number(2, 5)?.max(1),
        number(3, 1000)?.max(1),
        number(4, 4096)?.max(1),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(url, batch, rounds, subjects, deliveries))
}

/// One round's times, summed over the round, and on SQLite the WAL pages each step wrote.
#[derive(Clone, Copy, Default)]
struct Round {
    store: Duration,
    claim: Duration,
    settle: Duration,
    claims: usize,
    pages: [u64; 3],
}

/// One step's time in a round.
type Step = fn(&Round) -> Duration;

impl Round {
    fn total(&self) -> Duration {
        self.store + self.claim + self.settle
    }
}

async fn run(
    url: &str,
    batch: usize,
    rounds: usize,
    subjects: usize,
    deliveries: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let sqlite = sqlite(url).await?;
    let inbox = match &sqlite {
        Some(wal) => SqlInbox::with_pool(wal.pool.clone())?,
        None => SqlInbox::open(url)?,
    };
    inbox.ping().await?;
    let payload = Bytes::from(body());
    println!(
        "{deliveries} deliveries of {} bytes a round over {subjects} subjects, batches of \
         {batch}, {rounds} rounds (and one to warm up), median round",
        payload.len()
    );
    // Ids unique to this run, so a database used before holds none of them (a duplicate is
    // not stored, and the round would come up short).
    let mut next_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos()
        << 64;
    let mut times: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    for round in 0..=rounds {
        for (mode, ordered) in [false, true].into_iter().enumerate() {
            if let Some(wal) = &sqlite {
                wal.checkpoint().await?;
            }
            let shape = Shape {
                payload: &payload,
                ordered,
                batch,
                subjects,
                deliveries,
            };
            statements::measure((round > 0).then_some(mode));
            let measured = one_round(&inbox, sqlite.as_ref(), &shape, &mut next_id).await?;
            statements::measure(None);
            if round > 0 {
                times[mode].push(measured);
            }
        }
    }
    let per = |time: Duration| time.as_secs_f64() * 1e6 / deliveries as f64;
    let median = |rounds: &[Round], of: Step| {
        let mut values: Vec<Duration> = rounds.iter().map(of).collect();
        values.sort();
        values[values.len() / 2]
    };
    let steps: [(&str, Step); 4] = [
        ("store", |round| round.store),
        ("claim", |round| round.claim),
        ("settle", |round| round.settle),
        ("in all", Round::total),
    ];
    println!("| step | off, µs per delivery | on, µs per delivery | off / on |");
    println!("|---|---|---|---|");
    for (name, of) in steps {
        let (off, on) = (median(&times[0], of), median(&times[1], of));
        println!(
            "| {name} | {:.1} | {:.1} | {:.3} |",
            per(off),
            per(on),
            off.as_secs_f64() / on.as_secs_f64()
        );
    }
    let claims = |rounds: &[Round]| {
        let mut claims: Vec<usize> = rounds.iter().map(|round| round.claims).collect();
        claims.sort_unstable();
        claims[claims.len() / 2]
    };
    println!(
        "claims a round (median): off {}, on {}",
        claims(&times[0]),
        claims(&times[1])
    );
    if sqlite.is_some() {
        println!("WAL pages written per delivery, median round:");
        println!("| step | off | on | on / off |");
        println!("|---|---|---|---|");
        let pages = |rounds: &[Round], step: usize| {
            let mut pages: Vec<u64> = rounds
                .iter()
                .map(|round| {
                    if step < 3 {
                        round.pages[step]
                    } else {
                        round.pages.iter().sum()
                    }
                })
                .collect();
            pages.sort_unstable();
            pages[pages.len() / 2] as f64 / deliveries as f64
        };
        for (step, name) in ["store", "claim", "settle", "in all"].iter().enumerate() {
            let (off, on) = (pages(&times[0], step), pages(&times[1], step));
            println!("| {name} | {off:.2} | {on:.2} | {:.2} |", on / off);
        }
    }
    statements::print(deliveries * rounds);
    inbox.close().await;
    Ok(())
}

/// What a round stores and how.
struct Shape<'a> {
    payload: &'a Bytes,
    ordered: bool,
    batch: usize,
    subjects: usize,
    deliveries: usize,
}

/// Stores `deliveries` new deliveries, then claims and settles them `batch` at a time.
async fn one_round(
    inbox: &SqlInbox,
    wal: Option<&Wal>,
    shape: &Shape<'_>,
    next_id: &mut u128,
) -> Result<Round, Box<dyn std::error::Error>> {
    let &Shape {
        payload,
        ordered,
        batch,
        subjects,
        deliveries,
    } = shape;
    let mut round = Round::default();
    let now = now();
    let new: Vec<NewDelivery> = (0..i64::try_from(deliveries)?)
        .map(|index| {
            *next_id += 1;
            let id: DeliveryId = format!("{:064x}", *next_id).parse().expect("64 hex digits");
            let call = format!("call_load_{:06}", index % subjects as i64);
            NewDelivery {
                id,
                event: "call.transcript.ready".to_owned(),
                timestamp: Some(now + TimeDelta::microseconds(10 * index)),
                received_at: now,
                payload: payload.clone(),
                tenant: None,
                subject: Subject::new(SubjectKind::Call, &call),
                ordered,
                due_at: now,
            }
        })
        .collect();
    let wal_size = || wal.map_or(0, Wal::size);
    for chunk in new.chunks(batch) {
        let (start, before) = (Instant::now(), wal_size());
        inbox.store(chunk).await?;
        round.store += start.elapsed();
        round.pages[0] += pages(wal_size() - before);
    }
    // The worker's cycle: the claim loop fills the free slots, and each group commit of
    // outcomes hands the slots it frees their next deliveries.
    let mut handled = 0;
    let mut running: Vec<(DeliveryId, ClaimToken)> = Vec::new();
    loop {
        if running.len() < batch {
            let token = ClaimToken::new();
            let at = self::now();
            let free = u32::try_from(batch - running.len())?;
            let (start, before) = (Instant::now(), wal_size());
            let claimed = inbox
                .claim(at, at + TimeDelta::seconds(60), free, token)
                .await?;
            round.claim += start.elapsed();
            round.pages[1] += pages(wal_size() - before);
            round.claims += 1;
            running.extend(claimed.iter().map(|delivery| (delivery.id, token)));
        }
        if running.is_empty() {
            break;
        }
        let settlements: Vec<Settlement> = running
            .iter()
            .map(|&(id, token)| Settlement {
                id,
                token,
                outcome: Settle::Done { at: self::now() },
            })
            .collect();
        let token = ClaimToken::new();
        let at = self::now();
        let hand_over = HandOver::new(at, at + TimeDelta::seconds(60), token);
        let (start, before) = (Instant::now(), wal_size());
        let settled = inbox.settle_and_hand_over(&settlements, &hand_over).await?;
        round.settle += start.elapsed();
        round.pages[2] += pages(wal_size() - before);
        if settled.iter().any(|(held, _)| !held) {
            return Err("a settlement found its lease gone".into());
        }
        handled += settlements.len();
        running = settled
            .into_iter()
            .filter_map(|(_, next)| Some((next?.id, token)))
            .collect();
    }
    if handled != deliveries {
        return Err(format!(
            "ordering {}: handled {handled} of {deliveries} deliveries",
            if ordered { "on" } else { "off" }
        )
        .into());
    }
    Ok(round)
}

/// A SQLite inbox's pool, and its WAL file.
struct Wal {
    pool: AnyPool,
    path: PathBuf,
}

impl Wal {
    /// The WAL's size in bytes (0 while there is none).
    fn size(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |meta| meta.len())
    }

    /// Copies the WAL into the database and empties it.
    async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The pages in `bytes` of WAL: each frame is a 24-byte header and a page of 4 KiB.
fn pages(bytes: u64) -> u64 {
    bytes / (24 + 4096)
}

/// For `sqlite://PATH`: a pool whose connections take `SqlInbox::open`'s settings and
/// `wal_autocheckpoint=0`; `None` for any other URL.
async fn sqlite(url: &str) -> Result<Option<Wal>, Box<dyn std::error::Error>> {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Ok(None);
    };
    let path = path.split('?').next().unwrap_or(path);
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _| {
            Box::pin(async move {
                for pragma in [
                    "PRAGMA auto_vacuum = INCREMENTAL",
                    "PRAGMA journal_size_limit = 67108864",
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA synchronous = FULL",
                    "PRAGMA busy_timeout = 5000",
                    "PRAGMA wal_autocheckpoint = 0",
                ] {
                    sqlx::query(pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(&format!("sqlite://{path}?mode=rwc"))
        .await?;
    Ok(Some(Wal {
        pool,
        path: PathBuf::from(format!("{path}-wal")),
    }))
}

/// The body of a `call.transcript.ready` delivery of about 2 KiB.
fn body() -> String {
    let mut data = sample_data(&EventKind::CallTranscriptReady);
    data["id"] = Value::from("call_load_000000");
    TestDelivery::new("call.transcript.ready")
        .secret(SECRET)
        .data(data)
        .pad_to(2048)
        .body_and_signature()
        .0
}

/// Now, a millisecond back, so that what was stored now is due.
fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now()) - TimeDelta::milliseconds(1)
}

/// The time of each statement, from sqlx's log (`INBOX_OPS_STATEMENTS=1`): its events on the
/// target `sqlx::query` carry the statement's text and `elapsed_secs`, timed where it runs.
mod statements {
    use std::{
        collections::BTreeMap,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Mutex,
        },
    };

    use tracing::field::{Field, Visit};

    /// The mode being measured (0 off, 1 on), or `NONE`.
    static MODE: AtomicUsize = AtomicUsize::new(NONE);
    const NONE: usize = usize::MAX;

    /// Per statement (its first characters) and mode: seconds, calls, rows.
    type Table = BTreeMap<(String, usize), (f64, u64, u64)>;
    static TABLE: Mutex<Table> = Mutex::new(BTreeMap::new());

    /// How much of a statement's text names it in the table.
    const NAME: usize = 140;

    /// Counts the statements from now on for `mode` (0 off, 1 on), or none.
    pub(crate) fn measure(mode: Option<usize>) {
        MODE.store(mode.unwrap_or(NONE), Ordering::Relaxed);
    }

    /// Prints the table, if anything was counted: per mode, µs per delivery of `deliveries`.
    pub(crate) fn print(deliveries: usize) {
        let table = TABLE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if table.is_empty() {
            return;
        }
        println!("statements, µs per delivery over the measured rounds:");
        println!("| statement | off | on | calls off | calls on | rows off | rows on |");
        println!("|---|---|---|---|---|---|---|");
        let mut names: Vec<&String> = table.keys().map(|(name, _)| name).collect();
        names.dedup();
        for name in names {
            let [off, on] = [0, 1].map(|mode| {
                table
                    .get(&(name.clone(), mode))
                    .copied()
                    .unwrap_or_default()
            });
            let per = |seconds: f64| seconds * 1e6 / deliveries as f64;
            println!(
                "| `{name}` | {:.2} | {:.2} | {} | {} | {} | {} |",
                per(off.0),
                per(on.0),
                off.1,
                on.1,
                off.2,
                on.2
            );
        }
    }

    /// One event's fields.
    #[derive(Default)]
    struct Fields {
        statement: String,
        summary: String,
        seconds: f64,
        rows: u64,
    }

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.record_str(field, &format!("{value:?}"));
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "db.statement" => self.statement = value.to_owned(),
                "summary" => self.summary = value.to_owned(),
                _ => {}
            }
        }

        fn record_f64(&mut self, field: &Field, value: f64) {
            if field.name() == "elapsed_secs" {
                self.seconds = value;
            }
        }

        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == "rows_returned" {
                self.rows += value;
            }
        }
    }

    /// The layer that counts sqlx's statement events.
    pub(crate) struct Log;

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Log {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mode = MODE.load(Ordering::Relaxed);
            if mode == NONE || event.metadata().target() != "sqlx::query" {
                return;
            }
            let mut fields = Fields::default();
            event.record(&mut fields);
            // The summary is the whole text when it is short; else the text is in `db.statement`.
            let text = if fields.statement.trim().is_empty() {
                &fields.summary
            } else {
                &fields.statement
            };
            let name: String = text
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(NAME)
                .collect();
            let mut table = TABLE
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let entry = table.entry((name, mode)).or_default();
            entry.0 += fields.seconds;
            entry.1 += 1;
            entry.2 += fields.rows;
        }
    }
}
