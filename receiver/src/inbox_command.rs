//! `ringyo-receiver inbox ...`: looks into the receiver's inbox: counts, dead letters, and
//! replaying one.
//!
//! ```text
//! cargo run -p ringyo-receiver -- inbox stats
//! cargo run -p ringyo-receiver -- inbox dead
//! cargo run -p ringyo-receiver -- inbox replay <DELIVERY_ID>
//! ```
//!
//! Works against the same database as the receiver: `RINGYO_INBOX_URL`, default
//! `sqlite://ringyo-inbox.db` in the working directory. A replayed delivery is run again from
//! its first attempt by the receiver's worker (at its next poll, or at once on Postgres).

use ringyo_webhook::{
    inbox::{Inbox, InboxStats},
    DeliveryId,
};

/// How many dead letters `dead` lists.
const DEAD_LIMIT: u32 = 100;

/// What `inbox` with no or an unknown command answers.
pub const USAGE: &str = "usage: ringyo-receiver inbox stats | dead | replay <DELIVERY_ID>\n\
                         (RINGYO_INBOX_URL names the database; default sqlite://ringyo-inbox.db)";

/// Runs one command (`args`: `stats`, `dead` or `replay <DELIVERY_ID>`) against the inbox at
/// `url` and returns what to print. A SQLite file that is missing is not created.
///
/// # Errors
///
/// A sentence: an unusable URL, a database that does not answer, an unknown command (the
/// [`USAGE`]), a malformed delivery id, or one that is not dead-lettered.
pub async fn run(args: &[String], url: &str) -> Result<String, String> {
    // Looking must not create: a SQLite file missing here means the wrong directory or URL.
    let url = if url.starts_with("sqlite:") && !url.contains("mode=") {
        format!("{url}{}mode=rw", if url.contains('?') { '&' } else { '?' })
    } else {
        url.to_owned()
    };
    let inbox =
        Inbox::open(&url).map_err(|err| format!("RINGYO_INBOX_URL cannot be used: {err}"))?;
    let unreachable = |err| format!("the inbox database did not answer: {err}");
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["stats"] => Ok(stats(&inbox.stats().await.map_err(unreachable)?)),
        ["dead"] => {
            let dead = inbox.dead(DEAD_LIMIT).await.map_err(unreachable)?;
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
        ["replay", id] => {
            let id: DeliveryId = id.parse().map_err(|_| {
                format!("{id:?} is not a delivery id (64 hex digits, as `dead` lists them)")
            })?;
            if inbox.replay(id).await.map_err(unreachable)? {
                Ok(format!("{id} will run again, from its first attempt"))
            } else {
                Err(format!("{id} is not a dead-lettered delivery"))
            }
        }
        _ => Err(USAGE.to_owned()),
    }
}

fn stats(stats: &InboxStats) -> String {
    let oldest = stats.oldest_pending.map_or("-".to_owned(), |at| {
        at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    });
    format!(
        "pending {}\nrunning {}\ndone    {}\ndead    {}\noldest pending received {oldest}",
        stats.pending, stats.running, stats.done, stats.dead
    )
}
