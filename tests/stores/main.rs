//! Delivery stores: the behaviour suite every store passes, on the memory store and on Redis
//! (with `--features redis` and a server), and replay protection and exactly-once handling
//! through real HTTP.
//!
//! One test binary, a module per store and subject.

mod memory_store;
mod redis;
mod replay;
