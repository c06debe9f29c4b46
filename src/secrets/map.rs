//! [`TenantMap`]: tenants' secrets in memory, changed at run time.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;

use super::{Lookup, Resolved, Tenant, TenantLookup};
use crate::verify::Secrets;

/// Every tenant's secrets in memory, for [`Tenants`](super::Tenants): a lookup is one hash
/// probe, whatever the number of tenants, and takes no lock.
///
/// Clones share one map. Changes from another task apply from the next request on; each
/// change copies the map (one `Arc` per tenant), so load many tenants at once with
/// [`replace`](Self::replace) or `collect`, and keep single changes for the operator's pace.
///
/// ```
/// use ringyo_webhook::secrets::{Secrets, Tenant, TenantMap};
///
/// # let workspaces = [("acme", "whsec_doctest_acme"), ("globex", "whsec_doctest_globex")];
/// // (name, secret) pairs from your secret store, never from code.
/// let map: TenantMap = workspaces
///     .into_iter()
///     .map(|(name, secret)| Ok((Tenant::new(name).unwrap(), Secrets::new(secret)?)))
///     .collect::<Result<_, ringyo_webhook::SecretError>>()?;
/// assert_eq!(map.len(), 2);
/// assert!(map.remove("globex"));
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct TenantMap {
    tenants: Arc<ArcSwap<HashMap<Tenant, Secrets>>>,
}

impl TenantMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `tenant`'s secrets, adding the tenant or replacing its set.
    pub fn insert(&self, tenant: Tenant, secrets: Secrets) {
        self.tenants.rcu(|tenants| {
            let mut tenants = HashMap::clone(tenants);
            tenants.insert(tenant.clone(), secrets.clone());
            tenants
        });
    }

    /// Removes `tenant`: its deliveries fail from the next request on. `false` if it was not
    /// there.
    pub fn remove(&self, tenant: &str) -> bool {
        let mut removed = false;
        self.tenants.rcu(|tenants| {
            let mut tenants = HashMap::clone(tenants);
            removed = tenants.remove(tenant).is_some();
            tenants
        });
        removed
    }

    /// Replaces every tenant at once.
    pub fn replace(&self, tenants: HashMap<Tenant, Secrets>) {
        self.tenants.store(Arc::new(tenants));
    }

    /// `tenant`'s secrets, if it is known.
    pub fn get(&self, tenant: &str) -> Option<Secrets> {
        self.tenants.load().get(tenant).cloned()
    }

    /// How many tenants there are.
    pub fn len(&self) -> usize {
        self.tenants.load().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tenants.load().is_empty()
    }
}

impl FromIterator<(Tenant, Secrets)> for TenantMap {
    fn from_iter<I: IntoIterator<Item = (Tenant, Secrets)>>(tenants: I) -> Self {
        Self {
            tenants: Arc::new(ArcSwap::from_pointee(tenants.into_iter().collect())),
        }
    }
}

impl TenantLookup for TenantMap {
    fn lookup_tenant(&self, tenant: Tenant) -> Lookup {
        Lookup::ready(match self.get(tenant.as_str()) {
            Some(secrets) => Resolved::tenant(tenant, secrets),
            None => Resolved::unknown(),
        })
    }
}
