//! Each call's events one at a time, in the order they happened (issue 21), through real HTTP
//! and real receiver processes: 200 calls' lifecycles sent shuffled from 16 senders, a fifth of
//! them twice (half of those as two copies at once), 5 to 20 ms of work per event, 16 workers
//! per process; on SQLite with one receiver and on Postgres with two, then with a receiver
//! SIGKILLed mid-run and restarted on the same port.
//!
//! What ran, when and for how long comes from the receivers' logs: a `processed event` line is
//! written at the end of its handler, so the line's time less its `took_ms` is the handler's
//! start; a `superseded event` line is a delivery skipped without running the handler.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::future::join_all;
use ringyo_webhook::{
    chrono::{DateTime, TimeDelta, Utc},
    inbox::Inbox,
    testing::{TestDelivery, DEVELOPMENT_SECRET},
    Clock, SystemClock,
};
use tokio::time::Instant;

use crate::common::process::{Log, Receiver};

/// A call's events, in the order they happen (and are timestamped).
const LIFECYCLE: [&str; 5] = [
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.completed",
    "call.transcript.ready",
];
const CALLS: usize = 200;
const SENDERS: usize = 16;
/// Each receiver's workers: `RINGYO_CONCURRENCY`.
const CONCURRENCY: usize = 16;
/// A lease of 3 s rather than the default 30 s: the deliveries a killed receiver held run again
/// within the test. Its handlers take at most 20 ms, and the worker extends it every second.
const LEASE_MS: &str = "3000";
/// Between two sends of one sender: the sending lasts a few seconds, so handlers run while
/// deliveries still arrive, and a kill finds both under way.
const PACE: Duration = Duration::from_millis(20);
/// How long a sender keeps retrying one delivery, and how long the inbox may take to empty.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn one_receiver_on_sqlite_runs_each_calls_events_one_at_a_time_in_timestamp_order() {
    let database = ringyo_test_support::inbox::sqlite();
    prove(&database.url, 1, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_receivers_on_one_postgres_run_each_calls_events_one_at_a_time_in_timestamp_order() {
    let Some(database) = ringyo_test_support::inbox::postgres().await else {
        return;
    };
    prove(&database.url, 2, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_on_sqlite_killed_mid_run_and_restarted_keeps_each_calls_order() {
    let database = ringyo_test_support::inbox::sqlite();
    prove(&database.url, 1, Some(0)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_receivers_on_postgres_killed_mid_run_and_restarted_keeps_each_calls_order() {
    let Some(database) = ringyo_test_support::inbox::postgres().await else {
        return;
    };
    prove(&database.url, 2, Some(0)).await;
}

/// The [`SENDERS`], each taking the next of `sends` until none is left.
fn spawn_senders(
    addrs: &Arc<[SocketAddr]>,
    deliveries: &Arc<[Delivery]>,
    sends: &Arc<[Send]>,
    acked: &Arc<Mutex<Acked>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicUsize::new(0));
    (0..SENDERS)
        .map(|_| {
            let (next, acked) = (Arc::clone(&next), Arc::clone(acked));
            let (addrs, deliveries, sends) =
                (Arc::clone(addrs), Arc::clone(deliveries), Arc::clone(sends));
            tokio::spawn(async move {
                let client = ringyo_test_support::client();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let Some(send) = sends.get(n) else { return };
                    let delivery = &deliveries[send.delivery];
                    deliver(&client, &addrs, n, send.copies, delivery, &acked).await;
                    tokio::time::sleep(PACE).await;
                }
            })
        })
        .collect()
}

/// Runs `processes` receivers on the inbox at `url`, sends every call's lifecycle to them
/// (SIGKILLing receiver `kill` mid-run and restarting it, if given), waits until the inbox has
/// nothing left to run, and checks every call in the logs.
async fn prove(url: &str, processes: usize, kill: Option<usize>) {
    let started = Instant::now();
    let log = Log::default();
    let mut receivers = join_all((0..processes).map(|_| start(url, None, &log))).await;
    let addrs: Arc<[SocketAddr]> = receivers.iter().map(|receiver| receiver.addr).collect();
    let deliveries: Arc<[Delivery]> = lifecycles(SystemClock.now()).into();
    let sends: Arc<[Send]> = plan(deliveries.len()).into();
    let acked = Arc::new(Mutex::new(Acked::default()));

    let senders = spawn_senders(&addrs, &deliveries, &sends, &acked);

    let mut at_kill = None;
    if let Some(victim) = kill {
        // Past half the sends, with handlers under way: some run at the kill, some wait in
        // the inbox, and more are still to come.
        let deadline = Instant::now() + PATIENCE;
        while acked.lock().unwrap().acked.len() < deliveries.len() / 2
            || lines(&log).iter().filter(|line| line.ran()).count() < 100
        {
            assert!(Instant::now() < deadline, "the run never got under way");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let receiver = receivers.remove(victim);
        let addr = receiver.addr;
        receiver.kill().await;
        let acked_at_kill = acked.lock().unwrap().acked.len();
        let finished_at_kill = lines(&log).len();
        at_kill = Some((acked_at_kill, finished_at_kill));
        // Down for a moment, while its senders get no answer and retry.
        tokio::time::sleep(Duration::from_millis(300)).await;
        receivers.insert(victim, start(url, Some(addr), &log).await);
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let sent_in = started.elapsed();
    let Acked { acked, statuses } = std::mem::take(&mut *acked.lock().unwrap());
    let stats = until_settled(url, &log, &acked).await;
    drop(receivers);

    let report = check(&lines(&log), deliveries.len(), &acked, kill.is_some());
    assert_eq!(
        acked.len(),
        deliveries.len(),
        "every delivery answered 2xx in the end"
    );
    assert_eq!(stats.dead, 0, "{stats:?}");
    assert_eq!(
        stats.done + stats.superseded,
        u64::try_from(deliveries.len()).unwrap(),
        "each delivery stored once: {stats:?}"
    );
    if let Some((acked_at_kill, finished_at_kill)) = at_kill {
        assert!(
            finished_at_kill < acked_at_kill && acked_at_kill < deliveries.len(),
            "the kill came mid-run: {finished_at_kill} finished of {acked_at_kill} acknowledged, \
             of {}",
            deliveries.len()
        );
    }
    let suspects = log
        .lines()
        .iter()
        .filter(|line| line.contains("running a suspect alone"))
        .count();
    let warnings: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    eprintln!(
        "{processes} receiver(s){}: {} deliveries in {} sends ({:?}), sent in {sent_in:.1?}, \
         settled in {:.1?}; {report}; {suspects} suspects run alone; inbox {stats:?}; \
         {} warnings: {:#?}",
        match at_kill {
            Some((acked, finished)) =>
                format!(", one killed with {acked} acknowledged and {finished} finished"),
            None => String::new(),
        },
        deliveries.len(),
        sends.len(),
        statuses,
        started.elapsed(),
        warnings.len(),
        &warnings[..warnings.len().min(5)],
    );
}

/// A receiver process on the inbox at `url`, on `bind` (else an ephemeral port), logging to
/// `log`: its `processed event` lines, the inbox's `superseded event` lines and its notes on
/// suspects, and warnings.
async fn start(url: &str, bind: Option<SocketAddr>, log: &Log) -> Receiver {
    let bind = bind.map_or_else(|| "127.0.0.1:0".to_owned(), |addr| addr.to_string());
    let concurrency = CONCURRENCY.to_string();
    let env = [
        // What the test kit signs with by default.
        ("RINGYO_WEBHOOK_SECRET", DEVELOPMENT_SECRET),
        ("RINGYO_INBOX_URL", url),
        ("RINGYO_BIND", &bind),
        ("RINGYO_WORK_MS", "5-20"),
        ("RINGYO_CONCURRENCY", &concurrency),
        ("RINGYO_LEASE_MS", LEASE_MS),
        (
            "RUST_LOG",
            "warn,ringyo_receiver=info,ringyo_webhook::inbox=info",
        ),
    ];
    Receiver::start(&env, log).await
}

/// A call's event as Ringyo sends it: step `step` of [`LIFECYCLE`] for `call_{call}`.
struct Delivery {
    call: usize,
    step: usize,
    body: Vec<u8>,
    signature: String,
}

/// Every call's lifecycle, timestamped in its order: a minute before `now`, call `n` 10 ms
/// after call `n - 1`, its events 2 s apart; so every timestamp is distinct to the
/// millisecond.
fn lifecycles(now: DateTime<Utc>) -> Vec<Delivery> {
    let start = now - TimeDelta::minutes(1);
    let mut deliveries = Vec::new();
    for call in 0..CALLS {
        for (step, event) in LIFECYCLE.into_iter().enumerate() {
            let at = start
                + TimeDelta::milliseconds(10 * i64::try_from(call).unwrap())
                + TimeDelta::seconds(2 * i64::try_from(step).unwrap());
            let delivery = TestDelivery::new(event);
            // The sample call of `event`, as this call.
            let mut data = ringyo_webhook::testing::sample_data(&event.into());
            data["id"] = format!("call_{call}").into();
            let (body, signature) = delivery.data(data).timestamp(at).body_and_signature();
            deliveries.push(Delivery {
                call,
                step,
                body: body.into_bytes(),
                signature: signature.unwrap(),
            });
        }
    }
    deliveries
}

/// One send of a delivery: its index, and how many copies go at once (2: a retry that
/// overlaps the first attempt).
struct Send {
    delivery: usize,
    copies: usize,
}

/// Every delivery once, and a fifth of them twice: half of those as a copy sent separately,
/// half as two copies at once; shuffled.
fn plan(deliveries: usize) -> Vec<Send> {
    let mut random = Random(0x5eed_0021);
    let mut sends: Vec<Send> = (0..deliveries)
        .map(|delivery| Send {
            delivery,
            copies: 1,
        })
        .collect();
    let mut twice: Vec<usize> = (0..deliveries).collect();
    random.shuffle(&mut twice);
    for (k, &delivery) in twice[..deliveries / 5].iter().enumerate() {
        if k % 2 == 0 {
            sends.push(Send {
                delivery,
                copies: 1,
            });
        } else {
            sends[delivery].copies = 2;
        }
    }
    random.shuffle(&mut sends);
    sends
}

/// splitmix64: a fixed, reproducible shuffle without a dependency for it.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for at in (1..items.len()).rev() {
            let other = usize::try_from(self.next() % (at as u64 + 1)).unwrap();
            items.swap(at, other);
        }
    }
}

/// What the senders were answered: the deliveries answered 2xx (by call and step), and how
/// many answers of each kind came.
#[derive(Default)]
struct Acked {
    acked: HashSet<(usize, usize)>,
    statuses: BTreeMap<String, usize>,
}

/// Sends `copies` copies of `delivery` at once, as send `n`, to the receivers in turn (as a load
/// balancer would), until one is answered 2xx: as Ringyo does, a delivery that gets no answer
/// or another status is sent again, for up to [`PATIENCE`].
async fn deliver(
    client: &reqwest::Client,
    addrs: &[SocketAddr],
    n: usize,
    copies: usize,
    delivery: &Delivery,
    acked: &Mutex<Acked>,
) {
    let give_up = Instant::now() + PATIENCE;
    for attempt in 0.. {
        let answers = join_all((0..copies).map(|copy| {
            let addr = addrs[(n + attempt + copy) % addrs.len()];
            post(client, addr, delivery)
        }))
        .await;
        let answered = answers
            .iter()
            .any(|answer| matches!(answer, Some(200..=299)));
        {
            let mut acked = acked.lock().unwrap();
            for answer in &answers {
                let kind =
                    answer.map_or_else(|| "no answer".to_owned(), |status| status.to_string());
                *acked.statuses.entry(kind).or_default() += 1;
            }
            if answered {
                acked.acked.insert((delivery.call, delivery.step));
            }
        }
        if answered {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "call_{} {}: never answered 2xx ({answers:?})",
            delivery.call,
            LIFECYCLE[delivery.step]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs `delivery` to `addr`; the status, or `None` if no answer came (the process died).
async fn post(client: &reqwest::Client, addr: SocketAddr, delivery: &Delivery) -> Option<u16> {
    let response = client
        .post(format!("http://{addr}{}", ringyo_receiver::PATH))
        .header("x-ringyo-signature", &delivery.signature)
        .body(delivery.body.clone())
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// Waits (bounded) until the inbox at `url` has nothing pending or running and the log
/// accounts for every delivery in `acked`; the inbox's counts then.
async fn until_settled(
    url: &str,
    log: &Log,
    acked: &HashSet<(usize, usize)>,
) -> ringyo_webhook::inbox::InboxStats {
    let inbox = Inbox::open(url).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = inbox.stats().await.unwrap();
        let seen: HashSet<_> = lines(log).iter().map(Line::delivery).collect();
        let mut missing: Vec<_> = acked.iter().filter(|key| !seen.contains(*key)).collect();
        if stats.pending == 0 && stats.running == 0 && missing.is_empty() {
            return stats;
        }
        missing.sort_unstable();
        let missing: Vec<_> = missing
            .iter()
            .map(|(call, step)| format!("call_{call} {}", LIFECYCLE[*step]))
            .collect();
        assert!(
            Instant::now() < deadline,
            "not settled in {PATIENCE:?}: acknowledged but neither handled nor superseded: \
             {missing:?}; {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `processed event` or `superseded event` line of a call's event.
#[derive(Debug)]
struct Line {
    call: usize,
    step: usize,
    delivery_id: String,
    /// The line's time, in microseconds since the epoch.
    at: i64,
    /// Whether, and how, it ran.
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The handler ran from `start` (microseconds since the epoch) to the line's time.
    Ran { start: i64, superseded: bool },
    /// Skipped as superseded: no handler ran.
    Skipped,
}

impl Line {
    fn ran(&self) -> bool {
        matches!(self.outcome, Outcome::Ran { .. })
    }

    /// A handled event: ran, and not superseded.
    fn handled(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Ran {
                superseded: false,
                ..
            }
        )
    }

    fn superseded(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Skipped
                | Outcome::Ran {
                    superseded: true,
                    ..
                }
        )
    }

    fn delivery(&self) -> (usize, usize) {
        (self.call, self.step)
    }

    /// When its handler ran, in microseconds since the epoch.
    fn span(&self) -> Option<(i64, i64)> {
        match self.outcome {
            Outcome::Ran { start, .. } => Some((start, self.at)),
            Outcome::Skipped => None,
        }
    }

    /// A `processed event` or `superseded event` line; `None` if it is not one of a call's
    /// event as the receiver writes them.
    fn parse(line: &str) -> Option<Self> {
        let ran = line.contains(" processed event ");
        let at: DateTime<Utc> = line.split_whitespace().next()?.parse().ok()?;
        let at = at.timestamp_micros();
        let call = field(line, "subject")?
            .strip_prefix("call:call_")?
            .parse()
            .ok()?;
        let event = field(line, "event")?;
        let step = LIFECYCLE.iter().position(|known| *known == event)?;
        let outcome = if ran {
            let took_ms: f64 = field(line, "took_ms")?.parse().ok()?;
            // Whole microseconds, rounded down: the span is never longer than the handler's.
            let took = (took_ms * 1e3).floor() as i64;
            Outcome::Ran {
                start: at - took,
                superseded: field(line, "superseded") == Some("true"),
            }
        } else {
            Outcome::Skipped
        };
        Some(Self {
            call,
            step,
            delivery_id: field(line, "delivery_id")?.to_owned(),
            at,
            outcome,
        })
    }
}

/// The value of `name=` among a log line's fields, unquoted; the fields read here hold no
/// spaces.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = line.split_once(&format!(" {name}="))?;
    Some(rest.split(' ').next()?.trim_matches('"'))
}

/// The log's `processed event` and `superseded event` lines.
///
/// # Panics
///
/// On such a line this test cannot read: a change of format must not pass as lost deliveries.
fn lines(log: &Log) -> Vec<Line> {
    log.lines()
        .iter()
        .filter(|line| line.contains(" processed event ") || line.contains(" superseded event "))
        .map(|line| Line::parse(line).unwrap_or_else(|| panic!("unreadable: {line}")))
        .collect()
}

/// Checks every call against the log's `lines`, and says what it saw. At most once a delivery
/// unless `killed`, when a delivery in a handler at the kill may run again.
///
/// For every call: no two of its handlers ran at once; its handled (not superseded) events ran
/// in timestamp order; each superseded one came after a newer one of its call was handled;
/// every delivery answered 2xx was handled or superseded (so none was lost).
fn check(
    lines: &[Line],
    deliveries: usize,
    acked: &HashSet<(usize, usize)>,
    killed: bool,
) -> String {
    let mut by_call: HashMap<usize, Vec<&Line>> = HashMap::new();
    for line in lines {
        by_call.entry(line.call).or_default().push(line);
    }
    let mut problems = Problems::default();
    let mut closest = i64::MAX;
    for call in 0..CALLS {
        let lines = by_call.remove(&call).unwrap_or_default();
        closest = closest.min(check_call(call, &lines, acked, &mut problems));
    }

    let mut times: HashMap<(usize, usize), usize> = HashMap::new();
    for line in lines {
        *times.entry(line.delivery()).or_default() += 1;
    }
    let mut again: Vec<_> = times
        .iter()
        .filter(|(_, times)| **times > 1)
        .map(|((call, step), times)| format!("call_{call} {} {times}×", LIFECYCLE[*step]))
        .collect();
    again.sort();
    // After a kill, only what was in a handler (or being skipped) then may run again.
    let allowed = if killed { CONCURRENCY } else { 0 };
    if again.len() > allowed {
        problems.push(
            "run again",
            format!("{} deliveries: {again:?}", again.len()),
        );
    }
    assert!(problems.0.is_empty(), "{problems}");

    let count = |keep: fn(&Line) -> bool| lines.iter().filter(|line| keep(line)).count();
    format!(
        "{} handled in order, {} run though superseded, {} skipped as superseded, of {} \
         deliveries; {} run again after the kill {again:?}; closest handlers of a call {} µs \
         apart",
        count(Line::handled),
        count(|line| line.ran() && line.superseded()),
        count(|line| line.outcome == Outcome::Skipped),
        deliveries,
        again.len(),
        closest
    )
}

/// Checks one call's `lines` into `problems`; the least time between two of its handlers, in
/// microseconds.
fn check_call(
    call: usize,
    lines: &[&Line],
    acked: &HashSet<(usize, usize)>,
    problems: &mut Problems,
) -> i64 {
    let mut spans: Vec<(i64, i64, &Line)> = lines
        .iter()
        .filter_map(|line| line.span().map(|(start, end)| (start, end, *line)))
        .collect();
    spans.sort_by_key(|(start, _, _)| *start);
    let mut closest = i64::MAX;
    for pair in spans.windows(2) {
        let ((_, end, first), (start, _, second)) = (pair[0], pair[1]);
        closest = closest.min(start - end);
        if start < end {
            problems.push(
                "ran at once",
                format!(
                    "call_{call}: {} and {}, for {} µs",
                    LIFECYCLE[first.step],
                    LIFECYCLE[second.step],
                    end - start
                ),
            );
        }
    }

    let handled: Vec<&Line> = spans
        .iter()
        .map(|(_, _, line)| *line)
        .filter(|line| line.handled())
        .collect();
    for pair in handled.windows(2) {
        // The same step twice is one delivery run again (at least once), not disorder.
        if pair[1].step < pair[0].step {
            problems.push(
                "out of timestamp order",
                format!(
                    "call_{call}: {} handled after {}",
                    LIFECYCLE[pair[1].step], LIFECYCLE[pair[0].step]
                ),
            );
        }
    }

    for line in lines.iter().filter(|line| line.superseded()) {
        let newer_before = handled
            .iter()
            .any(|newer| newer.step > line.step && newer.at < line.at);
        if !newer_before {
            problems.push(
                "superseded by nothing handled before",
                format!("call_{call}: {}", LIFECYCLE[line.step]),
            );
        }
    }

    for (step, event) in LIFECYCLE.into_iter().enumerate() {
        let ids: HashSet<&str> = lines
            .iter()
            .filter(|line| line.step == step)
            .map(|line| line.delivery_id.as_str())
            .collect();
        if acked.contains(&(call, step)) && ids.is_empty() {
            problems.push(
                "answered 2xx, never handled nor superseded",
                format!("call_{call}: {event}"),
            );
        }
        if ids.len() > 1 {
            problems.push(
                "one event logged under several delivery ids",
                format!("call_{call}: {event}: {ids:?}"),
            );
        }
    }
    closest
}

/// What [`check`] found wrong, by kind.
#[derive(Default)]
struct Problems(BTreeMap<&'static str, Vec<String>>);

impl Problems {
    fn push(&mut self, kind: &'static str, problem: String) {
        self.0.entry(kind).or_default().push(problem);
    }
}

/// How many of each kind, and the first few of each.
impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (kind, problems) in &self.0 {
            writeln!(f, "{kind}: {}, such as", problems.len())?;
            for problem in problems.iter().take(5) {
                writeln!(f, "    {problem}")?;
            }
        }
        Ok(())
    }
}
