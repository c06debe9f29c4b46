//! The hooks as nothing: the build without the feature `metrics`. The same interface as
//! `on.rs`, with zero-sized timers and empty functions, so callers never say `cfg`.

use crate::{event::EventKind, rejection::RejectionKind};

/// When something started: nothing, without metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch;

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Self
    }
}

/// A handler's start: nothing, without metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandlerTimer;

impl HandlerTimer {
    pub(crate) fn start(_: Option<&EventKind>) -> Self {
        Self
    }

    pub(crate) fn restart(self) -> Self {
        self
    }
}

/// Whether a delivery's response future was counted: nothing to keep, without metrics.
/// Braced, as `on.rs`'s, so both are made with `Tally::default()`.
#[derive(Debug, Default)]
pub(crate) struct Tally {}

impl Tally {
    pub(crate) fn polling(&mut self, _: bool) {}

    pub(crate) fn finished(&mut self) {}

    pub(crate) fn dropped(&self, _: bool) {}
}

pub(crate) fn body_read(_: Stopwatch) {}

pub(crate) fn verified(_: Stopwatch) {}

pub(crate) fn rejected(_: RejectionKind) {}

pub(crate) fn duplicate() {}

pub(crate) fn answered(_: HandlerTimer, _: Option<http::StatusCode>, _: bool) {}

pub(crate) fn store_outage() {}

#[cfg(feature = "redis")]
pub(crate) fn store_round_trip(_: Stopwatch, _: &'static str, _: &'static str, _: bool) {}

#[cfg(feature = "inbox")]
pub(crate) fn inbox_handler(_: HandlerTimer) {}

#[cfg(feature = "inbox")]
pub(crate) fn inbox_attempt(_: &'static str) {}
