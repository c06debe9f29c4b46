//! The hooks the layer, the delivery stores and the inbox call: one interface, two files.
//!
//! With the feature `metrics` (`on.rs`) they record through the facade; without it
//! (`off.rs`) each is empty and its timers are zero-sized, so nothing is measured, kept or
//! compiled in, and no caller needs a `cfg` of its own.

#[cfg(feature = "metrics")]
mod on;
#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
mod off;
#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;
