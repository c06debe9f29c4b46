//! [`SecretSource`]: where the layer gets the secrets for each request.

use std::{fmt, future::Future, pin::Pin};

use http::request::Parts;

use super::Tenant;
use crate::verify::{Keys, Secrets};

/// Where [`RingyoWebhookLayer`](crate::RingyoWebhookLayer) gets the secrets to verify a request
/// with, asked once per request before its body is read.
///
/// The source sees the request's head (method, URI, headers), never its body: the body is
/// unverified until the secrets are known. Implementations in this crate:
///
/// - [`Secrets`]: a fixed set (what [`RingyoWebhookLayer::new`](crate::RingyoWebhookLayer::new)
///   uses, without going through this trait);
/// - [`RotatingSecrets`](super::RotatingSecrets): a set another task swaps at run time;
/// - [`Tenants`](super::Tenants): one set per tenant, named by a path segment or a header,
///   from a [`TenantMap`](super::TenantMap) or your own async lookup behind a
///   [`CachedLookup`](super::CachedLookup).
///
/// A source that needs I/O returns [`Lookup::Pending`]; the layer waits for it before reading
/// the body, with no time-out of its own, so bound the lookup (as
/// [`CachedLookup`](super::CachedLookup) does) well inside the 5 s Ringyo waits. One that cannot answer returns a [`LookupError`], answered 503
/// `secrets_unavailable` so Ringyo retries.
pub trait SecretSource: Send + Sync + 'static {
    /// The secrets for the request whose head is `request`.
    fn lookup(&self, request: &Parts) -> Lookup;
}

/// A [`SecretSource`]'s answer for one request.
pub enum Lookup {
    /// The answer, known without waiting.
    Ready(Result<Resolved, LookupError>),
    /// The answer, once this future resolves (a database, a vault).
    Pending(Pin<Box<dyn Future<Output = Result<Resolved, LookupError>> + Send>>),
}

impl Lookup {
    /// A ready answer.
    pub fn ready(resolved: Resolved) -> Self {
        Self::Ready(Ok(resolved))
    }
}

impl fmt::Debug for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(result) => f.debug_tuple("Ready").field(result).finish(),
            Self::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// The secrets found for a request, and the tenant they belong to.
#[derive(Debug, Clone)]
pub struct Resolved {
    tenant: Option<Tenant>,
    /// `None`: no such tenant.
    secrets: Option<Secrets>,
}

impl Resolved {
    /// The secrets of an endpoint with no tenants.
    pub fn secrets(secrets: Secrets) -> Self {
        Self {
            tenant: None,
            secrets: Some(secrets),
        }
    }

    /// The secrets of `tenant`.
    pub fn tenant(tenant: Tenant, secrets: Secrets) -> Self {
        Self {
            tenant: Some(tenant),
            secrets: Some(secrets),
        }
    }

    /// No tenant goes by this name (or the request names none): answered exactly like a bad
    /// signature, 401 `invalid_signature`, after the same work, so the endpoint does not
    /// reveal which tenants exist.
    pub fn unknown() -> Self {
        Self {
            tenant: None,
            secrets: None,
        }
    }

    /// The tenant, when the request named a known one.
    pub fn tenant_name(&self) -> Option<&Tenant> {
        self.tenant.as_ref()
    }

    /// What the request is verified with: one endpoint's set, a known tenant's, or none (an
    /// unknown tenant). How long a refusal takes follows from that, in `verify::check`.
    pub(crate) fn keys(&self) -> Keys<'_> {
        match (&self.tenant, &self.secrets) {
            (_, None) => Keys::UnknownTenant,
            (Some(_), Some(secrets)) => Keys::Tenant(secrets),
            (None, Some(secrets)) => Keys::Endpoint(secrets),
        }
    }

    /// The tenant, when the request named a known one.
    pub(crate) fn into_tenant(self) -> Option<Tenant> {
        self.tenant
    }
}

/// A [`SecretSource`] could not answer: the database or vault behind it failed. The layer
/// answers 503 `secrets_unavailable` with `Retry-After`, never 401: the delivery may be
/// genuine, and Ringyo's retry gets another chance.
///
/// Its message is logged, so it must not hold a secret.
#[derive(Debug, thiserror::Error)]
#[error("the secret lookup failed: {source}")]
pub struct LookupError {
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl LookupError {
    /// Wraps the lookup's own error.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

/// A fixed set is a source that gives the same secrets to every request.
impl SecretSource for Secrets {
    fn lookup(&self, _: &Parts) -> Lookup {
        Lookup::ready(Resolved::secrets(self.clone()))
    }
}
