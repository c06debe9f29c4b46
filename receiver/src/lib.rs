//! A Ringyo webhook receiver: verify, store durably, acknowledge, process in the background.
//!
//! ```text
//! cargo run -p ringyo-receiver                       # serve (the binary, `src/main.rs`)
//! cargo run -p ringyo-receiver -- inbox --help       # its inbox: stats, dead letters, replay
//! ```
//!
//! Reads `RINGYO_WEBHOOK_SECRET` (without it, starts with the development secret, which it prints)
//! or `RINGYO_SECRETS_FILE` (a file of secrets, one per line, the current first, re-read on SIGHUP:
//! rotation without a restart; see [`secrets_file`]), `RINGYO_BIND` (default `127.0.0.1:3000`),
//! `RINGYO_ADMIN_BIND` (default `127.0.0.1:9090`), `RINGYO_INBOX_URL` (default
//! `sqlite://ringyo-inbox.db`, a file in the working directory; or `postgres://...`, shared by
//! replicas), `RINGYO_WORK_MS` (default 0: simulated work per event, `20` or a range `5-20`, a
//! stand-in for a slow downstream call), `RINGYO_CONCURRENCY` (default 8: handlers at once in this
//! process), `RINGYO_LEASE_MS` (default 30000: how long a claim of a delivery lasts unless
//! extended, and so how long the deliveries of a killed process wait before they run again) and
//! `RINGYO_REORDER_WINDOW_MS` (default 1000: how long each event of a call waits, so that events
//! sent close together run in timestamp order; `0` runs each at once), `RINGYO_MAX_ATTEMPTS`
//! (default 12: attempts before a delivery is dead-lettered) and `RINGYO_FAIL_EVENTS` (unset by
//! default: event names, `call.completed,credits.low`, whose deliveries the handler fails on
//! purpose, to try `inbox dead` and `inbox replay --dead`; warned about at start); see
//! [`Config`]. On `RINGYO_BIND` it serves only `POST /webhooks/ringyo`, the one thing the internet
//! should reach; on `RINGYO_ADMIN_BIND`, for the orchestrator and Prometheus, `GET /healthz`
//! (liveness: 200 while the process serves), `GET /readyz` (200 while the inbox can commit, else
//! 503) and `GET /metrics` (Prometheus text format; see README for the metrics and alerts); see
//! [`admin`].
//!
//! Each verified delivery is committed to the inbox and only then answered 202, as Ringyo asks
//! (answer within 5 s, do heavy work in the background); a crash after that loses nothing, because
//! the worker finds the delivery in the inbox after the restart. A retry of a stored delivery gets
//! 200 and is not stored twice; if the database cannot commit, the answer is 503, so Ringyo
//! retries. The worker handles the events of one call one at a time, in timestamp order, and its
//! demo effect counts each `call.*` delivery in a table `call_counts` of the inbox's database,
//! inside the delivery's own transaction, so exactly once whatever crashes
//! ([`process::counting_sqlite`], [`process::counting_postgres`]); it logs `processed event`
//! once per handled delivery, with `took_ms`, how long its handler ran. Ctrl-C or SIGTERM stops
//! accepting connections, finishes in-flight requests and running handlers, and leaves the rest
//! in the inbox for the next start ([`run`]).
//!
//! Both servers close a connection that does not finish its request headers within 10 s
//! (silent, trickling, or idle between requests), serve at most 1 024 connections at once, and
//! give open connections 20 s to finish at shutdown: the crate's
//! [`serve`](ringyo_webhook::serve::serve) (feature `serve`) with the default
//! [`ServerLimits`](ringyo_webhook::serve::ServerLimits). A request, body included, has 10 s.
//!
//! The modules, one role each: [`config`] (environment variables to a [`Config`], and the
//! sentences a mistake in them gets), [`app`] (the start and the two servers), [`admin`]
//! (health, readiness and metrics), [`mod@process`] (the background work), [`secrets_file`],
//! [`signal`] and [`inbox_command`] (`stats`, `dead`, and inbox replay: `replay ID` for one
//! dead letter, or `replay --dead|--handled` with filters by time received, event, subject,
//! tenant or id, to re-run handlers after a bug fix).

pub mod admin;
pub mod app;
pub mod config;
pub mod inbox_command;
pub mod process;
pub mod secrets_file;
pub mod signal;

pub use app::{check_inbox, run, start, Listeners, Settings, PATH};
pub use config::Config;
pub use process::{process, Work};
