//! Inbox databases for the receiver: a fresh SQLite file always, a fresh Postgres database when
//! `RINGYO_TEST_POSTGRES_URL` names a server (`.ci/with-postgres` starts one).

use ringyo_webhook::{inbox::sqlx, ClaimToken};

/// An inbox database of a test's own: its URL, for `RINGYO_INBOX_URL`. A SQLite file is
/// removed when this drops; a Postgres database is left to the throwaway server.
pub struct Database {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh SQLite file in a temporary directory.
pub fn sqlite() -> Database {
    let dir = tempfile::tempdir().unwrap();
    Database {
        url: format!("sqlite://{}", dir.path().join("inbox.db").display()),
        _dir: Some(dir),
    }
}

/// A fresh database on the Postgres test server; `None` (and a note) when there is no server,
/// which under CI is a failure instead.
pub async fn postgres() -> Option<Database> {
    use sqlx::{Connection, Executor};
    let Ok(server) = std::env::var("RINGYO_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "RINGYO_TEST_POSTGRES_URL is not set: in CI a skipped Postgres test is a failure"
        );
        eprintln!("skipped: no Postgres server (`bash .ci/with-postgres cargo test` starts one)");
        return None;
    };
    let name = format!("receiver_{}", ClaimToken::new());
    let mut admin = sqlx::postgres::PgConnection::connect(&server)
        .await
        .unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    Some(Database {
        url: format!("{base}/{name}"),
        _dir: None,
    })
}
