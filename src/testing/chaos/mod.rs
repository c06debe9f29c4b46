//! Delivery chaos: plays events against your handler under the faults Ringyo and a crashing
//! process produce, and checks that your state ends as after one clean delivery of each.
//!
//! See [`Chaos`]; [`ChaosFault`] lists the faults, and [`ChaosFailure`] is what a failing
//! check says.

mod check;
mod events;
mod failure;
mod fault;
#[cfg(feature = "sqlite")]
mod inbox;
mod route;

pub use check::{Chaos, ChaosRun};
pub use failure::ChaosFailure;
pub use fault::ChaosFault;
