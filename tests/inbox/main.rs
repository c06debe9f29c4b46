//! The durable inbox: through real HTTP (what is acknowledged, when, and what workers do with
//! it), the door that agrees with the worker, the store suite and per-subject ordering on every
//! engine, storage faults, and a worker whose handler aborts its process.
//!
//! One test binary, a module per subject. `processes` starts copies of this binary that run one
//! ignored test by its path in it (`processes::aborting_worker`).

mod chaos;
mod door;
mod faults;
mod http;
mod order;
mod processes;
mod store;
mod test_job;
mod transactional;
