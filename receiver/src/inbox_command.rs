//! `ringyo-receiver inbox ...`: looks into the receiver's inbox (counts, dead letters) and runs
//! finished deliveries again (*inbox replay*).
//!
//! ```text
//! cargo run -p ringyo-receiver -- inbox stats
//! cargo run -p ringyo-receiver -- inbox dead
//! cargo run -p ringyo-receiver -- inbox replay <DELIVERY_ID>
//! cargo run -p ringyo-receiver -- inbox replay --handled --since 2026-12-06T09:00:00Z \
//!     --before 2026-12-06T10:30:00Z
//! cargo run -p ringyo-receiver -- inbox --help
//! ```
//!
//! Works against the same database as the receiver: `RINGYO_INBOX_URL`, default
//! `sqlite://ringyo-inbox.db` in the working directory. `stats` counts deliveries by state,
//! with those skipped as superseded apart from those handled; `dead` lists dead letters.
//!
//! `replay <DELIVERY_ID>` runs one dead letter again. `replay` with `--dead`, `--handled` or
//! both runs again every finished delivery of those states that its filters match
//! ([`ReplayFilter`]): received in a time range (`--since`, inclusive; `--before`, exclusive),
//! of one event name, about one subject (`call:call_123`), for one tenant, or one delivery by
//! id; every filter given must hold. That is how handlers are re-run after a bug fix. The state
//! is required, so that a filter alone never replays every handled delivery by accident;
//! waiting and running deliveries are never matched (they run anyway).
//!
//! A replayed delivery starts again from its first attempt, run by the receiver's worker (at its
//! next poll, or at once on Postgres), and goes through the same per-subject order as a new one:
//! a subject's deliveries run one at a time in timestamp order, and one older than the newest
//! delivery of its subject still handled is superseded (the receiver skips superseded status
//! events). So replay every event of the calls concerned (`--subject`, or a time range covering
//! them), not one kind alone.
//!
//! Inbox replay is the operator running stored deliveries again; it is unrelated to replay
//! protection (the freshness window and the delivery stores), which refuses copies of a
//! delivery sent again.

use ringyo_webhook::{
    chrono::{DateTime, Utc},
    inbox::{Inbox, InboxStats, ReplayFilter},
    secrets::Tenant,
    DeliveryId, Subject,
};

/// How many dead letters `dead` lists.
const DEAD_LIMIT: u32 = 100;

/// What `inbox` with no or an unknown command answers.
pub const USAGE: &str = "usage: ringyo-receiver inbox stats | dead | replay <DELIVERY_ID> \
                         | replay --dead|--handled [FILTER]...\n\
                         (`ringyo-receiver inbox --help` says more; RINGYO_INBOX_URL names the \
                         database, default sqlite://ringyo-inbox.db)";

/// What `inbox --help` (or `inbox replay --help`) answers.
pub const HELP: &str = "\
usage: ringyo-receiver inbox COMMAND

  stats                   deliveries by state (pending, running, done, superseded, dead) and
                          when the oldest pending one was received
  dead                    the dead-lettered deliveries, oldest first (at most 100)
  replay <DELIVERY_ID>    runs one dead-lettered delivery again, from its first attempt
  replay --dead|--handled [FILTER]...
                          runs again, from their first attempt, the finished deliveries that
                          every FILTER given matches: --dead for dead letters, --handled for
                          handled ones (superseded ones included), both for either; to re-run
                          handlers after a bug fix. Prints how many.

FILTER:
  --id DELIVERY_ID        only this delivery (64 hex digits, as `dead` lists them)
  --since TIME            only deliveries received at or after TIME (RFC 3339 with an offset:
                          2026-12-06T09:00:00Z, 2026-12-06T10:00:00+01:00)
  --before TIME           only deliveries received before TIME
  --event NAME            only events of this name, as sent (call.completed)
  --subject KIND:ID       only events about this call, appointment, agent or phone number
                          (call:call_123, appointment:apt_1, agent:agent_1, phone_number:pn_1)
  --tenant NAME           only deliveries verified for this tenant

Times are when the receiver got a delivery, not the event's own timestamp. Replayed deliveries
go through the same per-subject order as new ones: one at a time per subject, in timestamp
order; one older than the newest delivery of its subject still handled is superseded (and the
receiver skips superseded status events), so replay every event of the calls concerned, not
one kind alone. Waiting and running deliveries are never replayed.

Inbox replay runs stored deliveries again at your request. It is not replay protection (the
freshness window and the delivery stores), which refuses copies of a delivery sent again.

RINGYO_INBOX_URL names the database; default sqlite://ringyo-inbox.db.";

/// Runs one command (`args`: `stats`, `dead`, `replay <DELIVERY_ID>`, `replay` with states and
/// filters, or `--help`) against the inbox at `url` and returns what to print. The arguments
/// are read before the database is opened; a SQLite file that is missing is not created.
///
/// # Errors
///
/// A sentence: an unknown command (the [`USAGE`]), a `replay` argument that is unknown,
/// repeated, missing its value or has a value of the wrong form (naming the option and what it
/// takes), a `replay` without `--dead` or `--handled`, an unusable URL, a database that does
/// not answer, or a delivery id that is not dead-lettered.
pub async fn run(args: &[String], url: &str) -> Result<String, String> {
    let command = Command::parse(args)?;
    let inbox = || open(url);
    let unreachable = |err| format!("the inbox database did not answer: {err}");
    match command {
        Command::Help => Ok(HELP.to_owned()),
        Command::Stats => Ok(stats(&inbox()?.stats().await.map_err(unreachable)?)),
        Command::Dead => {
            let dead = inbox()?.dead(DEAD_LIMIT).await.map_err(unreachable)?;
            if dead.is_empty() {
                return Ok("no dead-lettered deliveries".to_owned());
            }
            let lines: Vec<String> = dead
                .iter()
                .map(|d| {
                    // A tenant's name has plain characters only: nothing to escape.
                    let tenant = d.tenant.as_ref().map_or("-", |tenant| tenant.as_str());
                    format!(
                        "{}  {tenant}  {}  {} attempts  failed {}  {}",
                        d.id,
                        // Escaped: a name or an error may hold newlines or a terminal's
                        // escape codes.
                        d.event.escape_debug(),
                        d.attempts,
                        d.failed_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        d.error.escape_debug()
                    )
                })
                .collect();
            Ok(lines.join("\n"))
        }
        Command::ReplayDead(id) => {
            if inbox()?.replay(id).await.map_err(unreachable)? {
                Ok(format!("{id} will run again, from its first attempt"))
            } else {
                Err(format!("{id} is not a dead-lettered delivery"))
            }
        }
        Command::Replay(filter) => {
            let replayed = inbox()?
                .replay_matching(&filter)
                .await
                .map_err(unreachable)?;
            Ok(replay_report(replayed, &filter))
        }
    }
}

/// The inbox at `url`, never created: a SQLite file missing here means the wrong directory or
/// URL, not a new inbox, and is said so, with the path (SQLite's own word is `(code: 14)
/// unable to open database file`).
fn open(url: &str) -> Result<Inbox, String> {
    if let Some(path) = sqlite_path(url).filter(|path| !path.exists()) {
        let shown = std::path::absolute(&path).unwrap_or(path);
        return Err(format!(
            "no inbox at {}: start the receiver once (it creates the file in its working \
             directory), or set RINGYO_INBOX_URL to the receiver's database (sqlite://PATH or \
             postgres://...)",
            shown.display()
        ));
    }
    let url = if url.starts_with("sqlite:") && !url.contains("mode=") {
        format!("{url}{}mode=rw", if url.contains('?') { '&' } else { '?' })
    } else {
        url.to_owned()
    };
    Inbox::open(&url).map_err(|err| format!("RINGYO_INBOX_URL cannot be used: {err}"))
}

/// The file a `sqlite://PATH?options` URL names; `None` for another engine.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    Some(path.into())
}

/// One `inbox` command, read from its arguments.
#[derive(Debug)]
enum Command {
    Help,
    Stats,
    Dead,
    /// `replay <DELIVERY_ID>`: one dead letter, an error if it is not one.
    ReplayDead(DeliveryId),
    /// `replay` with states and filters: however many match, none included.
    Replay(ReplayFilter),
}

impl Command {
    fn parse(args: &[String]) -> Result<Self, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match args[..] {
            ["--help" | "-h" | "help"] => Ok(Self::Help),
            ["stats"] => Ok(Self::Stats),
            ["dead"] => Ok(Self::Dead),
            ["replay", ref rest @ ..] => replay(rest),
            _ => Err(USAGE.to_owned()),
        }
    }
}

/// What `replay` says with no state: the state is what keeps a filter alone (or a mistyped
/// flag's value taken for a filter) from replaying every handled delivery.
const NO_STATE: &str = "replay needs --dead, --handled or both, to say which finished \
                        deliveries to run again (or a dead letter's id alone: replay \
                        <DELIVERY_ID>); filters alone replay nothing, so that no one runs every \
                        handled delivery again by accident";

/// A filter of `replay`: its option, and what its value must be.
struct Filter {
    option: &'static str,
    takes: &'static str,
}

impl Filter {
    /// The sentence for a `value` not of the form this filter takes.
    fn wrong(&self, value: &str) -> String {
        format!("{} needs {}; got {value:?}", self.option, self.takes)
    }
}

const ID: Filter = Filter {
    option: "--id",
    takes: "a delivery id (64 hex digits, as `inbox dead` lists them)",
};
const SINCE: Filter = Filter {
    option: "--since",
    takes: "a time in RFC 3339 with an offset, like 2026-12-06T09:00:00Z",
};
const BEFORE: Filter = Filter {
    option: "--before",
    takes: "a time in RFC 3339 with an offset, like 2026-12-06T10:30:00Z",
};
const EVENT: Filter = Filter {
    option: "--event",
    takes: "an event name, like call.completed",
};
const SUBJECT: Filter = Filter {
    option: "--subject",
    takes: "a subject KIND:ID, KIND one of call, appointment, agent, phone_number, like \
            call:call_123",
};
const TENANT: Filter = Filter {
    option: "--tenant",
    takes: "a tenant name (1 to 128 ASCII letters, digits, -, _, . or ~), like acme-dental",
};

/// The filters `replay` takes, in the order `replay_filter` reads their values back.
const FILTERS: [&Filter; 6] = [&ID, &SINCE, &BEFORE, &EVENT, &SUBJECT, &TENANT];

/// `replay`'s arguments: a dead letter's id alone, or states and filters.
fn replay(args: &[&str]) -> Result<Command, String> {
    match args {
        [] => Err(NO_STATE.to_owned()),
        [id] if !id.starts_with('-') => id.parse().map(Command::ReplayDead).map_err(|_| {
            format!("{id:?} is not a delivery id (64 hex digits, as `inbox dead` lists them)")
        }),
        _ => replay_filter(args),
    }
}

/// Reads `--dead`, `--handled` and the [`FILTERS`] (`--flag VALUE` or `--flag=VALUE`, each
/// once) into a filter.
fn replay_filter(args: &[&str]) -> Result<Command, String> {
    let (mut dead, mut handled) = (false, false);
    let mut values: [Option<&str>; FILTERS.len()] = [None; FILTERS.len()];
    let mut args = args.iter().copied().peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (arg, None),
        };
        match (flag, inline) {
            ("--help" | "-h", None) => return Ok(Command::Help),
            ("--dead", None) => dead = true,
            ("--handled", None) => handled = true,
            ("--dead" | "--handled", Some(value)) => {
                return Err(format!("{flag} takes no value; got {value:?}"));
            }
            _ => {
                let Some(at) = FILTERS.iter().position(|filter| filter.option == flag) else {
                    return Err(not_an_option(arg));
                };
                // The next argument is the value unless it is the next option: `--event
                // --dead` is a forgotten value, not an event named `--dead`.
                let value = inline.or_else(|| args.next_if(|next| !next.starts_with("--")));
                match value {
                    None | Some("") => {
                        return Err(format!("{flag} needs a value: {}", FILTERS[at].takes));
                    }
                    Some(_) if values[at].is_some() => {
                        return Err(format!(
                            "{flag} is given twice; give each filter once (every filter \
                             given must hold, so two of one would match nothing)"
                        ));
                    }
                    Some(value) => values[at] = Some(value),
                }
            }
        }
    }
    let mut filter = match (dead, handled) {
        (true, true) => ReplayFilter::finished(),
        (true, false) => ReplayFilter::dead(),
        (false, true) => ReplayFilter::handled(),
        (false, false) => return Err(NO_STATE.to_owned()),
    };
    let [id, since, before, event, subject, tenant] = values;
    if let Some(value) = id {
        let id: DeliveryId = value.parse().map_err(|_| ID.wrong(value))?;
        filter = filter.id(id);
    }
    let since = since
        .map(|value| time(value).ok_or_else(|| SINCE.wrong(value)))
        .transpose()?;
    let before = before
        .map(|value| time(value).ok_or_else(|| BEFORE.wrong(value)))
        .transpose()?;
    if let (Some(since), Some(before)) = (since, before) {
        if since >= before {
            return Err(format!(
                "--since ({}) must be earlier than --before ({}): no delivery is received in \
                 that range",
                since.to_rfc3339(),
                before.to_rfc3339()
            ));
        }
    }
    if let Some(since) = since {
        filter = filter.received_since(since);
    }
    if let Some(before) = before {
        filter = filter.received_before(before);
    }
    if let Some(event) = event {
        filter = filter.event(event);
    }
    if let Some(value) = subject {
        let subject: Subject = value.parse().map_err(|_| SUBJECT.wrong(value))?;
        filter = filter.subject(subject);
    }
    if let Some(value) = tenant {
        filter = filter.tenant(Tenant::new(value).ok_or_else(|| TENANT.wrong(value))?);
    }
    Ok(Command::Replay(filter))
}

/// The sentence for an argument of `replay` that is not one of its options.
fn not_an_option(arg: &str) -> String {
    let options: Vec<&str> = FILTERS.iter().map(|filter| filter.option).collect();
    let what = if arg.starts_with('-') {
        "an option of replay"
    } else {
        // A second id, or a value after a flag that takes none.
        "an option of replay (a delivery id goes alone, `replay <DELIVERY_ID>`, or after --id)"
    };
    format!(
        "{arg:?} is not {what}; replay takes --dead, --handled and the filters {} (see \
         `ringyo-receiver inbox --help`)",
        options.join(", ")
    )
}

/// A time in RFC 3339, with its offset (a time without one would be read in some zone the
/// operator did not mean).
fn time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// What a filtered replay says: how many, and that they run again.
fn replay_report(replayed: u64, filter: &ReplayFilter) -> String {
    let states = match (filter.dead, filter.handled) {
        (true, true) => "handled or dead-lettered",
        (true, false) => "dead-lettered",
        _ => "handled",
    };
    match replayed {
        0 => format!("replayed 0 deliveries: no {states} delivery matched"),
        1 => "replayed 1 delivery: it runs again from its first attempt, in its subject's order"
            .to_owned(),
        n => format!(
            "replayed {n} deliveries: they run again from their first attempt, one at a time \
             per subject, in timestamp order"
        ),
    }
}

fn stats(stats: &InboxStats) -> String {
    let oldest = stats.oldest_pending.map_or("-".to_owned(), |at| {
        at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    });
    format!(
        "pending    {}\nrunning    {}\ndone       {}\nsuperseded {}\ndead       {}\n\
         oldest pending received {oldest}",
        stats.pending, stats.running, stats.done, stats.superseded, stats.dead
    )
}
