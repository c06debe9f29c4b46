//! The layer and the extractor, as an application meets them: through real HTTP on 127.0.0.1,
//! in axum, with secrets that change at run time; what the layer logs; properties of
//! verification and parsing; the error codes of docs/security.md. The hyper, tonic and send
//! examples carry their own tests (`cargo test` runs them).
//!
//! One test binary, a module per subject. The tests that measure the whole process (memory,
//! the reserved memory of an announced length, the global metrics recorder) are binaries of
//! their own: `tests/memory.rs`, `tests/announced_length.rs`, `tests/metrics.rs`.

mod extract;
mod logs;
mod properties;
mod readme;
mod secrets;
mod statuses;
