//! Inboxes to test against: a fresh SQLite file always, a fresh Postgres database when
//! `RINGYO_TEST_POSTGRES_URL` names a server (`.ci/with-postgres` starts one).

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use ringyo_webhook::{
    inbox::{sqlx, SqlInbox},
    ClaimToken,
};

/// An inbox database of a test's own, removed when dropped (SQLite) or left to the
/// throwaway server (Postgres).
#[derive(Debug)]
pub struct Database {
    /// The engine: `sqlite` or `postgres`.
    pub name: &'static str,
    /// The URL [`SqlInbox::open`] takes.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Database {
    /// The inbox store on this database.
    pub fn open(&self) -> SqlInbox {
        SqlInbox::open(&self.url).unwrap()
    }
}

/// The route inbox tests deliver to.
pub const PATH: &str = "/webhooks/ringyo";

/// The webhook route in front of `inbox`, as README shows it, on a real server.
pub async fn serve(inbox: &ringyo_webhook::inbox::Inbox) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        PATH,
        axum::routing::post_service(inbox.clone()).route_layer(crate::layer()),
    );
    crate::serve(app).await
}

/// A fresh SQLite file in a temporary directory.
pub fn sqlite() -> Database {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
    Database {
        name: "sqlite",
        url,
        _dir: Some(dir),
    }
}

/// The test server's URL, or `None` (and a note) when there is none outside CI.
pub fn postgres_url() -> Option<String> {
    match std::env::var("RINGYO_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!(
                "RINGYO_TEST_POSTGRES_URL is not set: in CI a skipped Postgres test is a failure"
            )
        }
        Err(_) => {
            eprintln!(
                "skipped: the Postgres cases need a server in RINGYO_TEST_POSTGRES_URL \
                 (`bash .ci/with-postgres cargo test` starts one)"
            );
            None
        }
    }
}

/// A fresh database on the Postgres test server, if there is one.
pub async fn postgres() -> Option<Database> {
    let server = postgres_url()?;
    let name = format!("inbox_{}", ClaimToken::new());
    create_database(&server, &name).await;
    let (base, _) = server.rsplit_once('/').unwrap();
    Some(Database {
        name: "postgres",
        url: format!("{base}/{name}"),
        _dir: None,
    })
}

/// Creates the database `name` on the Postgres server at `server` (a URL of one of its
/// databases).
pub async fn create_database(server: &str, name: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::postgres::PgConnection::connect(server).await.unwrap();
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
}

/// Every engine available here: SQLite, and Postgres when there is a server.
pub async fn databases() -> Vec<Database> {
    let mut databases = vec![sqlite()];
    databases.extend(postgres().await);
    databases
}

/// A pool on `database` whose connections may grow the file to `limit` pages at most, the
/// limit read as each connection opens: SQLite's own cap on a file's size stands in for a full
/// disk (the same `SQLITE_FULL`, the same automatic rollback), with no mount needed.
pub async fn capped_pool(database: &Database, limit: &Arc<AtomicI64>) -> sqlx::AnyPool {
    use sqlx::{any::AnyPoolOptions, Executor};
    let limit = Arc::clone(limit);
    AnyPoolOptions::new()
        .max_connections(4)
        .after_connect(move |conn, _| {
            let pages = limit.load(Ordering::SeqCst);
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute(format!("PRAGMA max_page_count = {pages}").as_str())
                    .await?;
                Ok(())
            })
        })
        .connect(&database.url)
        .await
        .unwrap()
}

/// Raises the cap on every connection of `pool` (holding them all at once), as freeing space
/// on a full disk would.
pub async fn give_room(pool: &sqlx::AnyPool, limit: &AtomicI64) {
    use sqlx::Executor;
    limit.store(1 << 30, Ordering::SeqCst);
    let mut held = Vec::new();
    for _ in 0..pool.options().get_max_connections() {
        held.push(pool.acquire().await.unwrap());
    }
    for conn in &mut held {
        conn.execute("PRAGMA max_page_count = 1073741824")
            .await
            .unwrap();
    }
}
