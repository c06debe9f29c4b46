//! A durable inbox: a delivery is acknowledged only once it is committed, then handled by
//! workers, at least once, across crashes, restarts and replicas.
//!
//! Ringyo's advice is to answer fast and do the work later; answering 2xx and then losing the
//! event (a crash, a deploy, an OOM kill) loses it for good, since Ringyo does not retry after
//! a 2xx. With the inbox, the route behind [`RingyoWebhookLayer`](crate::RingyoWebhookLayer)
//! stores the verified bytes and answers 202 only after the commit; a [`Worker`] then runs
//! your handler, with a lease, retries with back-off and a dead letter.
//!
//! - [`Inbox`]: the tower service for the webhook route; accepts deliveries (group commit),
//!   and lists, replays and counts them.
//! - [`Worker`], [`Job`], [`Handler`], [`Backoff`]: running your handler on stored deliveries.
//! - [`InboxStore`] and [`InboxAdmin`]: the small async traits a database implements, the
//!   queue and its administration; [`SqlInbox`] implements them for SQLite (feature `sqlite`:
//!   a file, no server) and Postgres (feature `postgres`: one database for every replica).
//!
//! What is promised, exactly:
//!
//! - a 2xx only after the delivery (bytes, id, event name and timestamp, time received) is
//!   committed: SQLite in WAL mode with `synchronous=FULL`, Postgres with its default
//!   synchronous commit; otherwise 503 `inbox_unavailable` with `Retry-After`;
//! - each delivery stored once, across replicas (its id is the primary key); a retry is
//!   answered 200 with `x-webhook-duplicate: true`;
//! - stored bytes are re-read with the types of the build that handles them, and a delivery
//!   they cannot read is dead-lettered with the reason, not retried for ever.
//! - when the storage fails (a full disk, a read-only file system), 503 until it works again,
//!   then 2xx with no restart; a corrupt SQLite file is refused at start and, met while
//!   running, answered 503 until it is replaced; [`Inbox::ping`] (readiness) is a real commit;
//! - with [`Inbox::order_by_subject`], the deliveries of one call (appointment, agent, phone
//!   number) run one at a time, in the order of their signed timestamps, across workers and
//!   replicas, and a late one is marked superseded ([`Job::superseded_by`]) or skipped
//!   ([`Worker::skip_superseded`]).
//!
//! ```no_run
//! use axum::{routing::post_service, Router};
//! use ringyo_webhook::{inbox::{Inbox, Job, Worker}, serve::{serve, ServerLimits}};
//! use ringyo_webhook::{Event, RingyoWebhookLayer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let inbox = Inbox::open("sqlite://ringyo-inbox.db")?;
//! let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
//! let app = Router::new()
//!     .route("/webhooks/ringyo", post_service(inbox.clone()).route_layer(layer));
//! tokio::spawn(Worker::new(&inbox, handle).run(std::future::pending()));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // Feature `serve`; any future as the shutdown signal.
//! serve(listener, app, ServerLimits::default(), std::future::pending()).await?;
//! # Ok(()) }
//!
//! async fn handle(job: Job<Event>) -> Result<(), std::io::Error> {
//!     // Idempotent on job.delivery_id(): a crash mid-handler runs it again.
//!     println!("{} attempt {}", job.event.kind, job.attempt);
//!     Ok(())
//! }
//! ```

mod backoff;
mod commit;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod dialect;
mod filter;
mod handle;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod health;
mod job;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod lanes;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
mod service;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod settle;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
mod store;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod transactional;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod tx_group;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod upkeep;
mod worker;

pub use backoff::Backoff;
pub use filter::ReplayFilter;
pub use handle::Inbox;
#[doc(hidden)]
pub use job::RunFuture;
pub use job::{Handler, Job, Plain, Runs};
pub use service::InboxResponseFuture;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use sql::SqlInbox;
pub use store::{
    ClaimedDelivery, DeadDelivery, HandOver, InboxAdmin, InboxError, InboxFuture, InboxStats,
    InboxStore, NewDelivery, Settle, Settlement, Stored,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use transactional::{InTransaction, TxEngine, TxFuture};
pub use worker::Worker;
// The SQL crate whose pool `SqlInbox::with_pool` takes, so users name the same version.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use sqlx;
