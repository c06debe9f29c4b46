//! Looks into the receiver's inbox: counts, dead letters, and replaying one.
//!
//! ```text
//! cargo run --example inbox -- stats
//! cargo run --example inbox -- dead
//! cargo run --example inbox -- replay <DELIVERY_ID>
//! ```
//!
//! Works against the same database as the receiver example: `RINGYO_INBOX_URL`, default
//! `sqlite://ringyo-inbox.db` in the working directory. A replayed delivery is run again from
//! its first attempt by the receiver's worker (at once if it runs in the same process, else
//! at its next poll, or at once on Postgres).

use std::process::ExitCode;

use ringyo_webhook::{
    inbox::{Inbox, InboxStats},
    DeliveryId,
};

/// The receiver example's default inbox.
pub(crate) const DEFAULT_INBOX_URL: &str = "sqlite://ringyo-inbox.db";

/// How many dead letters `dead` lists.
const DEAD_LIMIT: u32 = 100;

const USAGE: &str = "usage: inbox stats | dead | replay <DELIVERY_ID>\n\
                     (RINGYO_INBOX_URL names the database; default sqlite://ringyo-inbox.db)";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = std::env::var("RINGYO_INBOX_URL").unwrap_or_else(|_| DEFAULT_INBOX_URL.to_owned());
    match run(&args, &url).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("error: {problem}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command against the inbox at `url` and returns what to print.
pub(crate) async fn run(args: &[String], url: &str) -> Result<String, String> {
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
