//! [`RotatingSecrets`]: a set of secrets swapped at run time.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::request::Parts;

use super::{Lookup, Resolved, SecretSource};
use crate::verify::{SecretError, Secrets};

/// A set of secrets that another task (an admin endpoint, a file watcher, a SIGHUP handler)
/// changes while the layer serves: a secret is added, promoted and retired without a restart.
///
/// Clones share one set. Each request reads the set once, before its body is read, and keeps
/// what it read: a change never fails a request in flight, and the next request sees it.
/// Reads take no lock (`arc-swap`); each change builds a new set, so changes are for the
/// operator's pace, not per request. [`promote`](Self::promote) and
/// [`retire`](Self::retire) name a secret by its index in the set as it is when they apply, so
/// make changes from one task.
///
/// ```
/// use ringyo_webhook::{secrets::{RotatingSecrets, Secrets}, RingyoWebhookLayer};
///
/// # let (old, new) = ("whsec_doctest_old", "whsec_doctest_new");
/// // `old` and `new`: the two endpoints' secrets, from your configuration.
/// let secrets = RotatingSecrets::new(Secrets::new(old)?);
/// let layer = RingyoWebhookLayer::from_source(secrets.clone());
///
/// // Later, from another task: a new endpoint's secret is accepted too...
/// secrets.add(new)?;
/// // ...then becomes the current one, and the old one is retired.
/// assert!(secrets.promote(1));
/// assert!(secrets.retire(1));
/// assert_eq!(secrets.current().len(), 1);
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RotatingSecrets {
    current: Arc<ArcSwap<Secrets>>,
}

impl RotatingSecrets {
    /// Starts with `secrets`.
    pub fn new(secrets: Secrets) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(secrets)),
        }
    }

    /// The set requests are verified with now.
    pub fn current(&self) -> Secrets {
        Secrets::clone(&self.current.load())
    }

    /// Replaces the whole set (for example with the contents of a re-read file).
    pub fn set(&self, secrets: Secrets) {
        self.current.store(Arc::new(secrets));
    }

    /// Adds `secret` last: deliveries signed with it pass from the next request on.
    ///
    /// # Errors
    ///
    /// [`SecretError`] if the secret is empty or has whitespace at either end; the set is
    /// then unchanged.
    pub fn add(&self, secret: impl AsRef<str>) -> Result<(), SecretError> {
        let added = Secrets::new(secret)?;
        self.current
            .rcu(|current| Secrets::clone(current).joined(&added));
        Ok(())
    }

    /// Moves the secret at `index` first, where the current secret belongs: it is tried first.
    /// `false` if there is no such secret.
    pub fn promote(&self, index: usize) -> bool {
        self.change(|secrets| secrets.promote(index))
    }

    /// Removes the secret at `index`: deliveries signed with it fail from the next request on.
    /// `false` if there is no such secret, or it is the last one (retire it by setting
    /// another set).
    pub fn retire(&self, index: usize) -> bool {
        self.change(|secrets| secrets.retire(index))
    }

    // Indexes are the set's as it is when the change applies: another task's `set` in between
    // shifts them, so let one task (one admin endpoint, one file watcher) make the changes.
    fn change(&self, change: impl Fn(&Secrets) -> Option<Secrets>) -> bool {
        let mut changed = false;
        self.current.rcu(|current| {
            let next = change(current);
            changed = next.is_some();
            next.map_or_else(|| Arc::clone(current), Arc::new)
        });
        changed
    }
}

impl SecretSource for RotatingSecrets {
    fn lookup(&self, _: &Parts) -> Lookup {
        Lookup::ready(Resolved::secrets(self.current()))
    }
}
