//! Exactly-once handling despite Ringyo's retries: the delivery store.
//!
//! Ringyo retries a delivery until it gets a 2xx and tells receivers to be idempotent. With a
//! store on the layer ([`RingyoWebhookLayer::delivery_store`]), a delivery whose handler already
//! answered 2xx is answered 200 again without running the handler (with `x-webhook-duplicate:
//! true`), a copy that arrives while the first is still running gets a retryable 409, and a
//! delivery whose handling failed is forgotten so its retry runs again. (Freshness, the other
//! half of replay protection, is part of [`Verifier`](crate::Verifier).)
//!
//! - [`DeliveryStore`] is the small async trait a backend implements: `claim`, `complete`,
//!   `release`. The layer knows only the trait.
//! - [`MemoryDeliveryStore`] is the in-process backend, bounded in size.
//! - `RedisDeliveryStore` (feature `redis`) is shared by every replica behind a load balancer.
//!
//! ```
//! use std::sync::Arc;
//! use ringyo_webhook::{MemoryDeliveryStore, RingyoWebhookLayer};
//!
//! # std::env::set_var("RINGYO_WEBHOOK_SECRET", "whsec_doctest_only");
//! let store = Arc::new(MemoryDeliveryStore::new());
//! let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?
//!     .delivery_store(Arc::clone(&store));
//! assert!(store.is_empty()); // a handle to watch it
//! # Ok::<(), ringyo_webhook::SecretError>(())
//! ```
//!
//! [`RingyoWebhookLayer::delivery_store`]: crate::RingyoWebhookLayer::delivery_store

mod guard;
mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
mod redis;
mod store;

pub(crate) use guard::{ClaimCall, ClaimGuard, SettleCall};
pub use memory::MemoryDeliveryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisDeliveryStore;
pub use store::{Claim, ClaimToken, DeliveryStore, StoreError, StoreFuture};
