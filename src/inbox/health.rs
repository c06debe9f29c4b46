//! [`Health`]: what the SQL inbox knows of its storage beyond one statement's result, a corrupt
//! SQLite file, and whether a commit can go through now.
//!
//! A 2xx is a promise that the delivery will be handled, so an inbox that can no longer keep
//! it must say so: a corrupt file is refused at start and, met while running, turns every
//! answer to 503 (Ringyo retries and the operator is told at error level) instead of storing
//! deliveries no worker can claim; and readiness is a real commit, not `SELECT 1`, so it fails
//! on a full disk or a file system turned read-only and passes again once writes do.

use std::sync::OnceLock;

use sqlx::{AnyPool, Executor, Row};

use super::{dialect::Dialect, store::InboxError};

/// How much of SQLite's own description of a corruption an error keeps.
const MAX_DETAIL: usize = 200;

/// How many bytes a readiness probe commits: about a large delivery, so a probe that passes
/// says a delivery of that size would commit too, not only a write that fits in a free page.
const PROBE_BYTES: usize = 64 * 1024;

/// The probe's bytes, made once: incompressible, since Postgres would store a row of zeros in
/// a few bytes and the probe would then say nothing of the room left.
fn probe_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let mut bytes = Vec::with_capacity(PROBE_BYTES);
        let mut block = Sha256::digest(b"ringyo inbox readiness probe");
        while bytes.len() < PROBE_BYTES {
            bytes.extend_from_slice(&block);
            block = Sha256::digest(block);
        }
        bytes.truncate(PROBE_BYTES);
        bytes
    })
}

/// The storage's health, shared by every handle of one [`SqlInbox`](super::SqlInbox).
#[derive(Debug)]
pub(super) struct Health {
    dialect: Dialect,
    /// The SQLite file, as the URL names it, for messages (a path holds no password).
    file: String,
    /// Set at the first sign of corruption, with SQLite's description. A corrupt file stays
    /// refused until a restart: nothing written to it can be trusted to be read back.
    corrupt: OnceLock<String>,
}

impl Health {
    pub(super) fn new(dialect: Dialect, url: &str) -> Self {
        Self {
            dialect,
            file: sqlite_file(url).to_owned(),
            corrupt: OnceLock::new(),
        }
    }

    /// The error every operation answers with once the file is known to be corrupt.
    pub(super) fn refused(&self) -> Result<(), InboxError> {
        match self.corrupt.get() {
            Some(detail) => Err(self.corrupt_error(detail)),
            None => Ok(()),
        }
    }

    /// `err`, or [`InboxError::Corrupt`] if it says the SQLite file is corrupt: remembered, and
    /// logged at error level the first time.
    ///
    /// Once the file is known to be corrupt, every error is that: a time-out waiting for a
    /// connection the pool could not set up on the file says less than what it hides.
    pub(super) fn classify(&self, err: InboxError) -> InboxError {
        match corruption(self.dialect, &err) {
            Some(detail) => self.mark(detail),
            None => self.refused().err().unwrap_or(err),
        }
    }

    fn mark(&self, detail: String) -> InboxError {
        let mut first = false;
        let detail = self.corrupt.get_or_init(|| {
            first = true;
            detail
        });
        let err = self.corrupt_error(detail);
        if first {
            tracing::error!("{err}; answering 503 until it is replaced and the receiver restarted");
        }
        err
    }

    fn corrupt_error(&self, detail: &str) -> InboxError {
        InboxError::Corrupt {
            file: self.file.clone(),
            detail: detail.to_owned(),
        }
    }

    /// Checks the structure of the whole SQLite file (`PRAGMA quick_check`: every page and
    /// record, without comparing indexes to their tables), once, before the inbox is used.
    /// Its cost grows with the file: see the inbox's documentation for figures.
    pub(super) async fn check_file(&self, pool: &AnyPool) -> Result<(), InboxError> {
        if self.dialect != Dialect::Sqlite {
            return Ok(());
        }
        let rows = sqlx::query("PRAGMA quick_check(1)")
            .fetch_all(pool)
            .await
            .map_err(|err| self.classify(InboxError::database(err)))?;
        let verdict: Vec<String> = rows
            .iter()
            .filter_map(|row| row.try_get::<String, _>(0).ok())
            .collect();
        match verdict.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            _ => Err(self.mark(one_line(&verdict.join("; ")))),
        }
    }

    /// Commits a small write: `Ok` only if the inbox can commit now.
    ///
    /// Each probe adds a row of [`PROBE_BYTES`] and deletes the ones before it, in one
    /// transaction: the insert needs room the deletes have not freed yet, so a full disk (or
    /// SQLite's page limit) fails it, and a read-only file system fails the commit.
    pub(super) async fn probe(&self, pool: &AnyPool) -> Result<(), InboxError> {
        let mut tx = self.dialect.begin_write(pool).await?;
        // `WHERE true`: SQLite reads `ON` after a bare `FROM` as a join's.
        sqlx::query(
            "INSERT INTO ringyo_inbox_probe (id, filler) \
             SELECT COALESCE(MAX(id), 0) + 1, $1 FROM ringyo_inbox_probe WHERE true \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(probe_bytes())
        .execute(tx.conn())
        .await
        .map_err(InboxError::database)?;
        tx.conn()
            .execute(
                "DELETE FROM ringyo_inbox_probe \
                 WHERE id < (SELECT MAX(id) FROM ringyo_inbox_probe)",
            )
            .await
            .map_err(InboxError::database)?;
        tx.commit().await
    }
}

/// SQLite's description, if `err` is SQLite saying the file is corrupt or not a database.
fn corruption(dialect: Dialect, err: &InboxError) -> Option<String> {
    /// `SQLITE_CORRUPT` and `SQLITE_NOTADB`, the primary codes of every extended one.
    const CORRUPT: i64 = 11;
    const NOT_A_DATABASE: i64 = 26;
    if dialect != Dialect::Sqlite {
        return None;
    }
    let InboxError::Database(source) = err else {
        return None;
    };
    let sqlx::Error::Database(database) = source.downcast_ref::<sqlx::Error>()? else {
        return None;
    };
    let code: i64 = database.code()?.parse().ok()?;
    matches!(code & 0xff, CORRUPT | NOT_A_DATABASE).then(|| one_line(database.message()))
}

/// `text` on one line, cut to [`MAX_DETAIL`] bytes on a character boundary.
fn one_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(&mut line, MAX_DETAIL);
    line
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
pub(super) fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let at = (0..=max)
            .rev()
            .find(|&at| text.is_char_boundary(at))
            .unwrap_or(0);
        text.truncate(at);
    }
}

/// The file a `sqlite://PATH?options` URL names (the whole URL on other engines, where it is
/// never shown).
fn sqlite_file(url: &str) -> &str {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or("");
    path.split_once('?').map_or(path, |(path, _)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_the_urls_path_without_its_options() {
        assert_eq!(sqlite_file("sqlite://ringyo-inbox.db"), "ringyo-inbox.db");
        assert_eq!(
            sqlite_file("sqlite:///var/lib/r.db?mode=rwc"),
            "/var/lib/r.db"
        );
        assert_eq!(sqlite_file("sqlite:r.db"), "r.db");
        assert_eq!(sqlite_file("postgres://user:secret@host/db"), "");
    }

    #[test]
    fn a_detail_is_one_line_and_bounded() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
        assert_eq!(one_line(&"é".repeat(200)).len(), MAX_DETAIL);
    }
}
