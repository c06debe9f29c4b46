//! The receiver, driven through real HTTP and as real processes of its binary: store,
//! acknowledge, process, health and graceful shutdown (`serving`); killed mid-stream and two on
//! one Postgres (`processes`); each call's events one at a time and in timestamp order, on
//! SQLite and on two processes on Postgres, also across a SIGKILL (`ordering`); its secrets file
//! at start and on SIGHUP (`secrets_file`); its `inbox` admin command (`inbox_command`); what
//! it says at start, and the sentences its mistakes get (`start_up`).
//!
//! One test binary, a module per subject. `inbox_outage.rs` is a binary of its own: it stops the
//! shared Postgres server, which no other test may see.

mod common;
mod exactly_once;
mod inbox_command;
mod ordering;
mod processes;
mod secrets_file;
mod serving;
mod start_up;
