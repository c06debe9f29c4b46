//! Tenants: one endpoint for many workspaces, each with its own secrets.

use std::{borrow::Borrow, fmt, sync::Arc};

use http::{request::Parts, HeaderName};

use super::{Lookup, Resolved, SecretSource};

/// The name of a tenant (a client workspace), as the request gives it.
///
/// 1 to 128 bytes of ASCII letters, digits, `-`, `_`, `.` and `~` (the characters a URL path
/// segment carries unescaped), so a name from a path or a header can go into a log line, a
/// metric-free span field or a database key as it is. Anything else names no tenant.
///
/// ```
/// use ringyo_webhook::secrets::Tenant;
///
/// assert_eq!(Tenant::new("acme-dental").unwrap().as_str(), "acme-dental");
/// assert!(Tenant::new("").is_none());
/// assert!(Tenant::new("../etc").is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// The longest name accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// `name` as a tenant, or `None` when it is empty, too long or has other characters.
    pub fn new(name: &str) -> Option<Self> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        let valid = (1..=Self::MAX_LEN).contains(&name.len())
            && name.bytes().all(allowed)
            && name != "."
            && name != "..";
        valid.then(|| Self(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Tenant {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenant({})", self.0)
    }
}

/// Where a request names its tenant: never its body, which is unverified until the tenant's
/// secrets are known.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TenantKey {
    /// The path segment at this position, counting from 0: `PathSegment(2)` reads `acme` from
    /// `/webhooks/ringyo/acme` (the route `/webhooks/ringyo/{tenant}`). A query string is not
    /// part of the path. Count in the path the layer sees: inside an axum `Router::nest`, that
    /// is the path with the nest's prefix taken off (a wrong count names no tenant, so every
    /// delivery is refused, never let through).
    PathSegment(usize),
    /// A header your own gateway sets (and strips from what clients send): exactly one value.
    Header(HeaderName),
}

impl TenantKey {
    /// The tenant `request` names, if it names a valid one.
    pub fn tenant(&self, request: &Parts) -> Option<Tenant> {
        match self {
            Self::PathSegment(index) => request
                .uri
                .path()
                .split('/')
                .filter(|segment| !segment.is_empty())
                .nth(*index)
                .and_then(Tenant::new),
            Self::Header(name) => {
                let mut values = request.headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (Some(value), None) => value.to_str().ok().and_then(Tenant::new),
                    _ => None,
                }
            }
        }
    }
}

/// Finds a tenant's secrets: a [`TenantMap`](super::TenantMap) in memory, or a
/// [`CachedLookup`](super::CachedLookup) around your own async lookup.
pub trait TenantLookup: Send + Sync + 'static {
    /// The secrets of `tenant`: [`Resolved::tenant`] when it is known,
    /// [`Resolved::unknown`] when not.
    fn lookup_tenant(&self, tenant: Tenant) -> Lookup;
}

/// A [`SecretSource`] for one endpoint serving many tenants, each with its own secrets: the
/// request names its tenant ([`TenantKey`]), a [`TenantLookup`] finds the tenant's secrets.
///
/// A request that names no valid tenant, or an unknown one, is answered exactly like a bad
/// signature (401 `invalid_signature`), after the same work: every refused request hashes its
/// body twice (under the tenant's secrets, or a stand-in), as a tenant in mid-rotation with
/// two secrets does, so neither the answer nor its time tells which tenants exist. (A tenant
/// with three or more secrets takes longer to refuse.) The tenant a delivery
/// verified for is in [`VerifiedPayload::tenant`](crate::VerifiedPayload::tenant) and
/// [`RingyoEvent::tenant`](crate::RingyoEvent::tenant), in the delivery's span, and part of
/// its [`DeliveryId`](crate::DeliveryId): the same body sent to two tenants is two deliveries.
///
/// ```
/// use ringyo_webhook::{
///     secrets::{Secrets, Tenant, TenantKey, TenantMap, Tenants},
///     RingyoWebhookLayer,
/// };
///
/// # let (acme_secret, globex_secret) = ("whsec_doctest_acme", "whsec_doctest_globex");
/// // Each tenant's secret, from your secret store (a vault, a database).
/// let map = TenantMap::new();
/// map.insert(Tenant::new("acme").unwrap(), Secrets::new(acme_secret)?);
/// // Route: POST /webhooks/ringyo/{tenant}
/// let layer = RingyoWebhookLayer::from_source(Tenants::new(TenantKey::PathSegment(2), map.clone()));
///
/// // At run time, from another task:
/// map.insert(Tenant::new("globex").unwrap(), Secrets::new(globex_secret)?);
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Tenants<L> {
    key: TenantKey,
    lookup: L,
}

impl<L: TenantLookup> Tenants<L> {
    /// Tenants named by `key`, their secrets found by `lookup`.
    pub fn new(key: TenantKey, lookup: L) -> Self {
        Self { key, lookup }
    }
}

impl<L: TenantLookup> SecretSource for Tenants<L> {
    fn lookup(&self, request: &Parts) -> Lookup {
        match self.key.tenant(request) {
            Some(tenant) => self.lookup.lookup_tenant(tenant),
            None => Lookup::ready(Resolved::unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::post(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn tenant_names_are_plain_path_characters() {
        for name in ["acme", "a", "A-b_c.d~9", &"x".repeat(128)] {
            assert!(Tenant::new(name).is_some(), "{name}");
        }
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            "a%2Fb",
            "a\n",
            &"x".repeat(129),
        ] {
            assert!(Tenant::new(name).is_none(), "{name:?}");
        }
    }

    #[test]
    fn a_key_reads_the_tenant_from_the_path_or_one_header() {
        let path = TenantKey::PathSegment(2);
        let name = |key: &TenantKey, parts: &Parts| key.tenant(parts).map(|t| t.to_string());
        assert_eq!(
            name(&path, &parts("/webhooks/ringyo/acme?x=1", &[])),
            Some("acme".into())
        );
        assert_eq!(
            name(&path, &parts("//webhooks//ringyo/acme/", &[])),
            Some("acme".into())
        );
        assert_eq!(name(&path, &parts("/webhooks/ringyo", &[])), None);
        assert_eq!(name(&path, &parts("/webhooks/ringyo/a%2Fb", &[])), None);

        let header = TenantKey::Header(HeaderName::from_static("x-tenant"));
        assert_eq!(
            name(&header, &parts("/", &[("x-tenant", "acme")])),
            Some("acme".into())
        );
        assert_eq!(name(&header, &parts("/", &[])), None);
        // Two values: which one did the gateway set?
        let two = parts("/", &[("x-tenant", "acme"), ("x-tenant", "globex")]);
        assert_eq!(name(&header, &two), None);
    }
}
