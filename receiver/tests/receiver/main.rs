//! The receiver, driven through real HTTP and as real processes of its binary: store,
//! acknowledge, process, health and graceful shutdown (`serving`); killed mid-stream and two on
//! one Postgres (`processes`); its secrets file at start and on SIGHUP (`secrets_file`); its
//! `inbox` admin command (`inbox_command`).
//!
//! One test binary, a module per subject. `inbox_outage.rs` is a binary of its own: it stops the
//! shared Postgres server, which no other test may see.

mod common;
mod inbox_command;
mod processes;
mod secrets_file;
mod serving;
