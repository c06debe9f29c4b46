//! Secrets at run time: rotation without a restart, and one endpoint for many tenants.
//!
//! [`RingyoWebhookLayer::new`](crate::RingyoWebhookLayer::new) verifies with a fixed set of
//! secrets, the fastest path. When the secrets change while the service runs, or depend on the
//! request, build the layer with
//! [`RingyoWebhookLayer::from_source`](crate::RingyoWebhookLayer::from_source) and a
//! [`SecretSource`], asked once per request, before the body is read:
//!
//! - [`RotatingSecrets`]: one set that another task changes: add the new endpoint's secret,
//!   promote it, retire the old one, with no restart and no request failed on the way.
//! - [`Tenants`]: one set per tenant (a client workspace), named by a path segment or a
//!   header ([`TenantKey`]), from a [`TenantMap`] in memory or your own async lookup behind a
//!   [`CachedLookup`]. An unknown tenant is answered like a bad signature.
//!
//! Every set is a [`Secrets`]: HMAC key states computed once per secret, wiped when dropped.
//! It is defined in [`verify`](crate::verify), which checks signatures against it, and
//! re-exported here beside the sources that hold it.
//!
//! ```
//! use ringyo_webhook::{
//!     secrets::{Secrets, Tenant, TenantKey, TenantMap, Tenants},
//!     RingyoWebhookLayer,
//! };
//!
//! # let acme_secret = "whsec_doctest_only";
//! // Each tenant's secret, from your secret store (a vault, a database).
//! let map = TenantMap::new();
//! map.insert(Tenant::new("acme").unwrap(), Secrets::new(acme_secret)?);
//! let layer = RingyoWebhookLayer::from_source(Tenants::new(TenantKey::PathSegment(2), map));
//! // axum: .route("/webhooks/ringyo/{tenant}", post(handler).route_layer(layer))
//! # Ok::<(), ringyo_webhook::SecretError>(())
//! ```

mod cached;
mod map;
mod rotating;
mod source;
mod tenant;

pub use crate::verify::Secrets;
pub use cached::CachedLookup;
pub use map::TenantMap;
pub use rotating::RotatingSecrets;
pub use source::{Lookup, LookupError, Resolved, SecretSource};
pub use tenant::{Tenant, TenantKey, TenantLookup, Tenants};
