//! The receiver's configuration, read from environment variables, and the sentences a mistake
//! in one of them gets: for the person at the terminal, naming the variable and the fix, never
//! a secret or a database password.

use std::{
    env::VarError,
    net::SocketAddr,
    num::{NonZeroU64, NonZeroUsize},
    path::PathBuf,
    time::Duration,
};

use ringyo_webhook::{inbox::Inbox, testing::DEVELOPMENT_SECRET, RingyoWebhookLayer, SecretError};

use crate::{process::Work, secrets_file::SecretsFile};

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
            Some(path) => layer_from_file(path)?,
            None => layer_from(std::env::var("RINGYO_WEBHOOK_SECRET"))?,
        };
        let mut inbox = inbox_from(std::env::var("RINGYO_INBOX_URL"))?;
        if let Some(window) = reorder_window_from(std::env::var("RINGYO_REORDER_WINDOW_MS"))? {
            inbox = inbox.reorder_window(window);
        }
        Ok(Self {
            layer,
            inbox,
            work: work_from(std::env::var("RINGYO_WORK_MS"))?,
            concurrency: concurrency_from(std::env::var("RINGYO_CONCURRENCY"))?,
            lease: lease_from(std::env::var("RINGYO_LEASE_MS"))?,
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
    let url = match url {
        Ok(url) => url,
        Err(VarError::NotPresent) => DEFAULT_INBOX_URL.to_owned(),
        // Not printed: a database URL may hold a password.
        Err(VarError::NotUnicode(_)) => return Err("RINGYO_INBOX_URL is not valid UTF-8".into()),
    };
    let inbox = Inbox::open(&url)
        .map_err(|err| format!("RINGYO_INBOX_URL cannot be used: {err}"))?
        .order_by_subject(true);
    tracing::info!("deliveries are stored in {}", redacted(&url));
    Ok(inbox)
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
    use super::redacted;

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
