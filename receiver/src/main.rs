//! The receiver: `ringyo-receiver` serves (see the library's docs for its environment
//! variables); `ringyo-receiver inbox stats | dead | replay <DELIVERY_ID> | replay --dead|--handled
//! [FILTER]...` looks into its inbox (`inbox --help`).
//! Exits 0 on a clean stop or a command done, 1 with an `error: ...` sentence on stderr
//! otherwise, and 2 on arguments it does not know.

use std::process::ExitCode;

use ringyo_receiver::{config::inbox_url, inbox_command, Config};

const USAGE: &str = "usage: ringyo-receiver                (serve; see README for its variables)\n\
                     \x20      ringyo-receiver inbox stats | dead | replay <DELIVERY_ID> | replay --dead|--handled [FILTER]...   (inbox --help)\n\
                     To try dead letters: RINGYO_FAIL_EVENTS=call.completed RINGYO_MAX_ATTEMPTS=1 ringyo-receiver\n\
                     fails every call.completed on purpose; then `inbox dead` and `inbox replay --dead`.";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        None => serve().await,
        Some((command, args)) if command == "inbox" => inbox(args).await,
        Some(_) => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Serves until Ctrl-C or SIGTERM.
async fn serve() -> ExitCode {
    // The default timer writes UTC to the microsecond: a `processed event` line's time less its
    // `took_ms` is when the handler started, to well under the time between two handlers.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ringyo_webhook=debug".into()),
        )
        .init();
    match Config::from_env() {
        Ok(config) => ringyo_receiver::start(config).await,
        Err(problem) => Err(problem),
    }
    .map_or_else(failure, |()| {
        tracing::info!("stopped; what was not processed waits in the inbox");
        ExitCode::SUCCESS
    })
}

/// Runs an `inbox` command against `RINGYO_INBOX_URL` and prints what it says.
async fn inbox(args: &[String]) -> ExitCode {
    let url = match inbox_url(std::env::var("RINGYO_INBOX_URL")) {
        Ok(url) => url,
        Err(problem) => return failure(problem),
    };
    inbox_command::run(args, &url)
        .await
        .map_or_else(failure, |report| {
            println!("{report}");
            ExitCode::SUCCESS
        })
}

/// A sentence for the person at the terminal, not a `Debug` dump.
fn failure(problem: String) -> ExitCode {
    eprintln!("error: {problem}");
    ExitCode::FAILURE
}
