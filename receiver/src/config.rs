//! The receiver's configuration, read from environment variables, and the sentences a mistake
//! in one of them gets: for the person at the terminal, naming the variable and the fix, never
//! a secret or a database password.

use std::{
    env::VarError,
    net::SocketAddr,
    num::{NonZeroU32, NonZeroU64, NonZeroUsize},
    path::PathBuf,
    time::Duration,
};

use ringyo_webhook::{
    inbox::{sqlx::postgres::PgConnectOptions, Inbox},
    testing::DEVELOPMENT_SECRET,
    EventKind, RingyoWebhookLayer, SecretError,
};

use crate::{
    process::{FailEvents, Work},
    secrets_file::SecretsFile,
};

/// Where the receiver listens unless `RINGYO_BIND` says otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:3000";

/// Where health checks and metrics are served unless `RINGYO_ADMIN_BIND` says otherwise: apart
/// from the webhook, so the internet-facing port exposes nothing else.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9090";

/// The inbox unless `RINGYO_INBOX_URL` says otherwise: a SQLite file in the working directory.
pub const DEFAULT_INBOX_URL: &str = "sqlite://ringyo-inbox.db";

/// What the receiver runs with, from its environment variables.
#[derive(Debug)]
pub struct Config {
    /// From `RINGYO_WEBHOOK_SECRET` or `RINGYO_SECRETS_FILE`: [`layer_from`] and
    /// [`layer_from_file`].
    pub layer: RingyoWebhookLayer,
    /// From `RINGYO_INBOX_URL`: [`inbox_from`].
    pub inbox: Inbox,
    /// From `RINGYO_WORK_MS`: [`work_from`].
    pub work: Work,
    /// From `RINGYO_CONCURRENCY`: [`concurrency_from`].
    pub concurrency: Option<usize>,
    /// From `RINGYO_LEASE_MS`: [`lease_from`].
    pub lease: Option<Duration>,
    /// From `RINGYO_MAX_ATTEMPTS`: [`max_attempts_from`].
    pub max_attempts: Option<u32>,
    /// From `RINGYO_FAIL_EVENTS`: [`fail_events_from`].
    pub fail_events: FailEvents,
    /// From `RINGYO_INBOX_URL`, when it names Postgres: where, for the sentence that says how
    /// to create a database that does not exist ([`PostgresTarget::createdb`]).
    pub postgres: Option<PostgresTarget>,
    /// From `RINGYO_BIND`: [`bind_from`].
    pub bind: SocketAddr,
    /// From `RINGYO_ADMIN_BIND`: [`bind_from`].
    pub admin_bind: SocketAddr,
}

impl Config {
    /// Reads the environment. With nothing set, the development secret (with a warning that
    /// prints it), the SQLite file [`DEFAULT_INBOX_URL`] and the default addresses.
    ///
    /// Runs inside a tokio runtime: a secrets file's SIGHUP handler is a task.
    ///
    /// # Errors
    ///
    /// A sentence that names the variable in the way and what to set instead.
    pub fn from_env() -> Result<Self, String> {
        let layer = match std::env::var_os("RINGYO_SECRETS_FILE") {
            Some(_) if std::env::var_os("RINGYO_WEBHOOK_SECRET").is_some() => {
                return Err("set RINGYO_WEBHOOK_SECRET or RINGYO_SECRETS_FILE, not both".into())
            }
            Some(path) if path.is_empty() => {
                return Err(
                    "RINGYO_SECRETS_FILE is empty; set it to the path of a file of \
                            secrets, one per line, or unset it"
                        .into(),
                )
            }
            Some(path) => layer_from_file(path)?,
            None => layer_from(std::env::var("RINGYO_WEBHOOK_SECRET"))?,
        };
        let url = std::env::var("RINGYO_INBOX_URL");
        let postgres = url.as_deref().ok().and_then(PostgresTarget::from_url);
        let mut inbox = inbox_from(url)?;
        if let Some(window) = reorder_window_from(std::env::var("RINGYO_REORDER_WINDOW_MS"))? {
            inbox = inbox.reorder_window(window);
        }
        Ok(Self {
            layer,
            inbox,
            work: work_from(std::env::var("RINGYO_WORK_MS"))?,
            concurrency: concurrency_from(std::env::var("RINGYO_CONCURRENCY"))?,
            lease: lease_from(std::env::var("RINGYO_LEASE_MS"))?,
            max_attempts: max_attempts_from(std::env::var("RINGYO_MAX_ATTEMPTS"))?,
            fail_events: fail_events_from(std::env::var("RINGYO_FAIL_EVENTS"))?,
            postgres,
            bind: bind_from(
                "RINGYO_BIND",
                std::env::var("RINGYO_BIND").ok(),
                DEFAULT_BIND,
            )?,
            admin_bind: bind_from(
                "RINGYO_ADMIN_BIND",
                std::env::var("RINGYO_ADMIN_BIND").ok(),
                DEFAULT_ADMIN_BIND,
            )?,
        })
    }
}

/// The layer for the secret in `RINGYO_WEBHOOK_SECRET`, or the development secret if it is
/// unset. Freshness is checked by default (events up to an hour old).
///
/// # Errors
///
/// A secret that is not UTF-8, empty, or has whitespace around it.
pub fn layer_from(secret: Result<String, VarError>) -> Result<RingyoWebhookLayer, String> {
    let secret = match secret {
        Ok(secret) => secret,
        // Only an unset variable falls back; a garbled one must not become a public secret.
        Err(VarError::NotPresent) => {
            tracing::warn!(
                "RINGYO_WEBHOOK_SECRET is not set: using the development secret \
                 {DEVELOPMENT_SECRET:?}. Anyone who reads this can sign events; never use it \
                 in production"
            );
            DEVELOPMENT_SECRET.to_owned()
        }
        Err(VarError::NotUnicode(_)) => {
            return Err("RINGYO_WEBHOOK_SECRET is not valid UTF-8; Ringyo's secrets are".into())
        }
    };
    let layer = RingyoWebhookLayer::new(secret).map_err(|err| match err {
        SecretError::Empty => "RINGYO_WEBHOOK_SECRET is empty; set it to your endpoint's \
                               secret (whsec_...), or unset it to use the development secret"
            .to_owned(),
        SecretError::SurroundingWhitespace => "RINGYO_WEBHOOK_SECRET has whitespace at its \
                                               start or end (a trailing newline?); Ringyo's \
                                               secrets have none"
            .to_owned(),
        other => format!("RINGYO_WEBHOOK_SECRET cannot be used: {other}"),
    })?;
    Ok(layer)
}

/// The layer for the secrets in the file at `path`, re-read on SIGHUP (see [`SecretsFile`]).
///
/// # Errors
///
/// A file that cannot be read or used (naming the file and the line, never a secret), or no
/// SIGHUP handler.
pub fn layer_from_file(path: impl Into<PathBuf>) -> Result<RingyoWebhookLayer, String> {
    let file = SecretsFile::load(path)?;
    #[cfg(unix)]
    file.clone()
        .reload_on_hangup()
        .map_err(|err| format!("cannot listen for SIGHUP: {err}"))?;
    Ok(RingyoWebhookLayer::from_source(file.secrets()))
}

/// The inbox at `RINGYO_INBOX_URL`, or the SQLite file in the working directory.
///
/// # Errors
///
/// A URL that is not UTF-8 or names no engine the inbox speaks; never the URL itself, which
/// may hold a password.
pub fn inbox_from(url: Result<String, VarError>) -> Result<Inbox, String> {
    let url = inbox_url(url)?;
    let inbox = Inbox::open(&url)
        .map_err(|err| format!("RINGYO_INBOX_URL cannot be used: {err}"))?
        .order_by_subject(true);
    tracing::info!("deliveries are stored in {}", redacted(&url));
    Ok(inbox)
}

/// The URL in `RINGYO_INBOX_URL` (its value `url`), or [`DEFAULT_INBOX_URL`] when it is unset:
/// for the receiver and for its `inbox` command.
///
/// # Errors
///
/// A value that is empty or not UTF-8, in a sentence that never repeats it.
pub fn inbox_url(url: Result<String, VarError>) -> Result<String, String> {
    match url {
        Ok(url) if url.trim().is_empty() => Err(format!(
            "RINGYO_INBOX_URL is empty; set it to sqlite://PATH or postgres://USER@HOST/DATABASE, \
             or unset it for {DEFAULT_INBOX_URL}"
        )),
        Ok(url) => Ok(url),
        Err(VarError::NotPresent) => Ok(DEFAULT_INBOX_URL.to_owned()),
        // Not printed: a database URL may hold a password.
        Err(VarError::NotUnicode(_)) => Err("RINGYO_INBOX_URL is not valid UTF-8".into()),
    }
}

/// Where a `postgres://` inbox URL points, without its password: for the sentence that says
/// how to create a database that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTarget {
    host: String,
    port: u16,
    user: String,
    database: String,
}

impl PostgresTarget {
    /// Read as sqlx reads the URL (its defaults and `PG*` variables included); `None` for a
    /// URL of another engine, or one sqlx cannot read.
    pub fn from_url(url: &str) -> Option<Self> {
        if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            return None;
        }
        let options: PgConnectOptions = url.parse().ok()?;
        let user = options.get_username().to_owned();
        Some(Self {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            // Postgres's own default: the database named as the user.
            database: options.get_database().unwrap_or(&user).to_owned(),
            user,
        })
    }

    /// The database's name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The sentence for a database that does not exist (Postgres's `3D000`): its name, and
    /// the two ways to create it, with the URL's host, port and user (never its password).
    pub fn createdb(&self) -> String {
        let Self {
            host,
            port,
            user,
            database,
        } = self;
        format!(
            "the inbox database {database:?} does not exist on {host}:{port}; create it with \
             `createdb -h {host} -p {port} -U {user} {database}` (or `CREATE DATABASE \
             \"{database}\";` in psql), and the receiver uses it at once, without a restart; \
             until then it answers 503 and Ringyo retries"
        )
    }
}

/// A database URL for the log: its scheme, host and path, without the user and password
/// before an `@` nor the query after a `?` (sqlx reads `password=` and `sslpassword=` there).
fn redacted(url: &str) -> String {
    let without_query = url.split_once('?').map_or(url, |(base, _)| base);
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let host_and_path = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
            format!("{scheme}://{host_and_path}")
        }
        None => without_query.to_owned(),
    }
}

/// The simulated work per event in `RINGYO_WORK_MS`: milliseconds (`20`), or a range of them
/// (`5-20`); none when unset.
///
/// # Errors
///
/// A value that is neither a whole number of milliseconds nor two joined by `-`.
pub fn work_from(work: Result<String, VarError>) -> Result<Work, String> {
    let ms = match work {
        Err(VarError::NotPresent) => return Ok(Work::NONE),
        Ok(ms) => ms,
        Err(VarError::NotUnicode(_)) => return Err("RINGYO_WORK_MS is not valid UTF-8".into()),
    };
    let millis = |text: &str| text.trim().parse().map(Duration::from_millis).ok();
    let (least, most) = match ms.split_once('-') {
        Some((least, most)) => (millis(least), millis(most)),
        None => (millis(&ms), millis(&ms)),
    };
    match least.zip(most) {
        Some((least, most)) => Ok(Work::between(least, most)),
        None => Err(format!(
            "RINGYO_WORK_MS is {ms:?}, which is not a whole number of milliseconds nor a range \
             of them such as 5-20"
        )),
    }
}

/// How many handlers the worker runs at once, from `RINGYO_CONCURRENCY` (`16`); when unset,
/// `None`: the worker's default, [`Worker::DEFAULT_CONCURRENCY`] (8).
///
/// # Errors
///
/// A value that is not a whole number of 1 or more.
///
/// [`Worker::DEFAULT_CONCURRENCY`]: ringyo_webhook::inbox::Worker::DEFAULT_CONCURRENCY
pub fn concurrency_from(concurrency: Result<String, VarError>) -> Result<Option<usize>, String> {
    let concurrency = parsed::<NonZeroUsize>(
        "RINGYO_CONCURRENCY",
        concurrency,
        "a number of handlers to run at once such as 16",
    )?;
    Ok(concurrency.map(NonZeroUsize::get))
}

/// How long the worker's claim of a delivery lasts unless extended, from `RINGYO_LEASE_MS` in
/// milliseconds (`30000`); when unset, `None`: the worker's default, [`Worker::DEFAULT_LEASE`]
/// (30 s). The worker extends it every third of that while a handler runs; it is how long the
/// deliveries a killed process was running wait before another process runs them again. Keep
/// it well above the longest database stall: a lease that runs out under a running handler
/// lets the delivery run twice. The worker raises anything under 30 ms to that.
///
/// # Errors
///
/// A value that is not a whole number of milliseconds above zero.
///
/// [`Worker::DEFAULT_LEASE`]: ringyo_webhook::inbox::Worker::DEFAULT_LEASE
pub fn lease_from(lease: Result<String, VarError>) -> Result<Option<Duration>, String> {
    let ms = parsed::<NonZeroU64>(
        "RINGYO_LEASE_MS",
        lease,
        "a whole number of milliseconds above zero such as 30000",
    )?;
    Ok(ms.map(|ms| Duration::from_millis(ms.get())))
}

/// How many attempts a delivery gets before it is dead-lettered, from `RINGYO_MAX_ATTEMPTS`
/// (`3`); when unset, `None`: the worker's default, [`Worker::DEFAULT_MAX_ATTEMPTS`] (12, the
/// last about an hour after the first). Attempts whose process died do not count.
///
/// # Errors
///
/// A value that is not a whole number of 1 or more.
///
/// [`Worker::DEFAULT_MAX_ATTEMPTS`]: ringyo_webhook::inbox::Worker::DEFAULT_MAX_ATTEMPTS
pub fn max_attempts_from(attempts: Result<String, VarError>) -> Result<Option<u32>, String> {
    let attempts = parsed::<NonZeroU32>(
        "RINGYO_MAX_ATTEMPTS",
        attempts,
        "a number of attempts of 1 or more such as 3",
    )?;
    Ok(attempts.map(NonZeroU32::get))
}

/// The event names whose deliveries the receiver's handler fails on purpose, from
/// `RINGYO_FAIL_EVENTS`: names as sent, joined by commas (`call.completed,credits.low`); none
/// when unset. For trying retries, dead letters (`inbox dead`) and their replay (`inbox replay
/// --dead`) before production: with `RINGYO_MAX_ATTEMPTS=1` a failed delivery is dead at
/// once. Logged at start as a warning, since a receiver that fails real deliveries on purpose
/// must not go unnoticed.
///
/// # Errors
///
/// A value that is empty, not UTF-8, or names no event once spaces and empty items are left out.
pub fn fail_events_from(names: Result<String, VarError>) -> Result<FailEvents, String> {
    let names = match names {
        Err(VarError::NotPresent) => return Ok(FailEvents::default()),
        Err(VarError::NotUnicode(_)) => {
            return Err("RINGYO_FAIL_EVENTS is not valid UTF-8".into());
        }
        Ok(names) => names,
    };
    let events: Vec<EventKind> = names
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(EventKind::from)
        .collect();
    if events.is_empty() {
        return Err(format!(
            "RINGYO_FAIL_EVENTS is {names:?}, which names no event; set it to event names \
             joined by commas, such as call.completed,credits.low, or unset it"
        ));
    }
    Ok(FailEvents::new(events))
}

/// How long each delivery of a subject waits before it may run, so that events sent close
/// together are sorted first, from `RINGYO_REORDER_WINDOW_MS` in milliseconds (`0` runs each
/// as soon as it is stored, still one at a time per subject); when unset, `None`: the inbox's
/// default, [`Inbox::DEFAULT_REORDER_WINDOW`] (1 s). See [`Inbox::reorder_window`] for the
/// trade between latency and order.
///
/// # Errors
///
/// A value that is not a whole number of milliseconds.
pub fn reorder_window_from(window: Result<String, VarError>) -> Result<Option<Duration>, String> {
    let ms = parsed::<u64>(
        "RINGYO_REORDER_WINDOW_MS",
        window,
        "a whole number of milliseconds such as 1000",
    )?;
    Ok(ms.map(Duration::from_millis))
}

/// The number in `variable` (its value `value`), or `None` when it is unset; otherwise a
/// sentence naming the variable, its value and `what` it takes.
fn parsed<T: std::str::FromStr>(
    variable: &str,
    value: Result<String, VarError>,
    what: &str,
) -> Result<Option<T>, String> {
    match value {
        Err(VarError::NotPresent) => Ok(None),
        Err(VarError::NotUnicode(_)) => Err(format!("{variable} is not valid UTF-8")),
        Ok(value) => match value.trim().parse() {
            Ok(number) => Ok(Some(number)),
            Err(_) => Err(format!("{variable} is {value:?}, which is not {what}")),
        },
    }
}

/// The address in `variable` (its value `bind`), or `default`.
///
/// # Errors
///
/// A value that is not an address and port.
pub fn bind_from(
    variable: &str,
    bind: Option<String>,
    default: &str,
) -> Result<SocketAddr, String> {
    let bind = bind.unwrap_or_else(|| default.to_owned());
    bind.parse().map_err(|_| {
        format!("{variable} is {bind:?}, which is not an address and port such as {default}")
    })
}

/// Why the receiver cannot listen on `addr` (from `variable`), and what to do about it.
pub fn cannot_listen(variable: &str, addr: SocketAddr, err: &std::io::Error) -> String {
    let reason = match err.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string(),
    };
    format!("cannot listen on {addr}: {reason}; set {variable} to another address")
}

#[cfg(test)]
mod tests {
    use super::{redacted, PostgresTarget};

    #[test]
    fn the_createdb_sentence_names_host_port_user_and_database_but_no_password() {
        let target = PostgresTarget::from_url(
            "postgres://ringyo:hunter2@db.internal:6543/inbox?sslmode=prefer",
        )
        .unwrap();
        let sentence = target.createdb();
        assert!(
            sentence.contains("`createdb -h db.internal -p 6543 -U ringyo inbox`"),
            "{sentence}"
        );
        assert!(sentence.contains("CREATE DATABASE \"inbox\""), "{sentence}");
        assert!(!sentence.contains("hunter2"), "{sentence}");
        assert_eq!(PostgresTarget::from_url("sqlite://ringyo-inbox.db"), None);
    }

    #[test]
    fn a_logged_database_url_keeps_no_user_password_or_query() {
        assert_eq!(
            redacted("sqlite://ringyo-inbox.db"),
            "sqlite://ringyo-inbox.db"
        );
        assert_eq!(
            redacted("postgres://user:secret@db.internal:5432/ringyo"),
            "postgres://db.internal:5432/ringyo"
        );
        assert_eq!(
            redacted("postgres://db.internal/ringyo?user=r&password=hunter2"),
            "postgres://db.internal/ringyo"
        );
        assert_eq!(
            redacted("postgres://u:p@h/db?sslpassword=s3cret&sslmode=require"),
            "postgres://h/db"
        );
        assert_eq!(redacted("not a url?password=x"), "not a url");
    }
}
