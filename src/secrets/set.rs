//! [`Secrets`]: an ordered set of signing secrets, each kept only as its HMAC key state.

use std::{fmt, sync::Arc, sync::OnceLock};

use crate::verify::{HmacKey, SecretError, Signature, SignatureError, Verified};

/// The secrets one endpoint's deliveries may be signed with, in order: the current one first,
/// then older ones still accepted while a rotation runs.
///
/// Each secret is checked and turned into its HMAC key state once, here; the set is then cheap
/// to clone (one `Arc`) and to share between requests. `Debug` shows how many secrets there
/// are, never the secrets, and the key states are wiped from memory once the last clone is
/// dropped.
///
/// A [`Verifier`](crate::Verifier) holds one fixed set; [`RotatingSecrets`](super::RotatingSecrets)
/// swaps sets at run time; a [`TenantMap`](super::TenantMap) holds one set per tenant.
///
/// ```
/// use ringyo_webhook::secrets::Secrets;
///
/// # let (current, previous) = ("whsec_doctest_current", "whsec_doctest_previous");
/// // The secrets as your configuration gives them (the environment, a file, a vault).
/// let secrets = Secrets::new(current)?.with(previous)?;
/// assert_eq!(secrets.len(), 2);
/// assert_eq!(format!("{secrets:?}"), "Secrets { count: 2 }");
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Clone)]
pub struct Secrets {
    keys: Arc<[HmacKey]>,
    /// The set that stands in for an unknown tenant: computed like any other, never a match.
    decoy: bool,
}

impl Secrets {
    /// A set of one secret, the whole string as Ringyo shows it (`whsec_...`).
    ///
    /// # Errors
    ///
    /// [`SecretError`] if the secret is empty or has whitespace at either end.
    pub fn new(secret: impl AsRef<str>) -> Result<Self, SecretError> {
        Ok(Self {
            keys: Arc::new([HmacKey::new(secret.as_ref())?]),
            decoy: false,
        })
    }

    /// This set with `secret` added last: tried after the others.
    ///
    /// # Errors
    ///
    /// [`SecretError`] as for [`new`](Self::new).
    pub fn with(self, secret: impl AsRef<str>) -> Result<Self, SecretError> {
        let key = HmacKey::new(secret.as_ref())?;
        Ok(Self {
            keys: self.keys.iter().cloned().chain([key]).collect(),
            // A decoy stays one: nothing added to it ever verifies.
            decoy: self.decoy,
        })
    }

    /// A set of `secrets`, in their order.
    ///
    /// # Errors
    ///
    /// [`SecretError::Empty`] when there is none; otherwise as for [`new`](Self::new).
    pub fn from_list<I>(secrets: I) -> Result<Self, SecretError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let keys = secrets
            .into_iter()
            .map(|secret| HmacKey::new(secret.as_ref()))
            .collect::<Result<Arc<[HmacKey]>, SecretError>>()?;
        if keys.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { keys, decoy: false })
    }

    /// How many secrets the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always `false`: a set holds at least one secret.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The set with the secret at `index` moved first, the others keeping their order; `None`
    /// when there is no such secret.
    pub fn promote(&self, index: usize) -> Option<Self> {
        let key = self.keys.get(index)?.clone();
        let rest = self.without_index(index);
        Some(Self {
            keys: [key].into_iter().chain(rest).collect(),
            decoy: self.decoy,
        })
    }

    /// The set without the secret at `index`; `None` when there is no such secret, or when it
    /// is the last one (a set never becomes empty).
    pub fn retire(&self, index: usize) -> Option<Self> {
        if index >= self.keys.len() || self.keys.len() == 1 {
            return None;
        }
        Some(Self {
            keys: self.without_index(index).collect(),
            decoy: self.decoy,
        })
    }

    /// This set followed by `other`'s secrets (a decoy if either is one).
    pub(crate) fn joined(&self, other: &Self) -> Self {
        Self {
            keys: self.keys.iter().chain(other.keys.iter()).cloned().collect(),
            decoy: self.decoy || other.decoy,
        }
    }

    fn without_index(&self, index: usize) -> impl Iterator<Item = HmacKey> + '_ {
        self.keys
            .iter()
            .enumerate()
            .filter(move |(at, _)| *at != index)
            .map(|(_, key)| key.clone())
    }

    /// The set that answers for a tenant nobody knows: its one key is hashed like any other,
    /// so the answer takes as long as for a known tenant, and it never matches. The key is
    /// random per process as well, so not even a set that lost its flag could be signed for.
    pub(crate) fn decoy() -> Self {
        static DECOY: OnceLock<Secrets> = OnceLock::new();
        DECOY
            .get_or_init(|| {
                use std::hash::BuildHasher;
                // SipHash keys drawn from the OS for each `RandomState`: 128 unguessable bits.
                let random = || std::collections::hash_map::RandomState::new().hash_one(0u8);
                let key = format!("ringyo-webhook decoy {:016x}{:016x}", random(), random());
                // Not `HmacKey::new`: this key is no Ringyo secret, and its missing `whsec_`
                // would be warned about on every start of a layer built `from_source`.
                Self {
                    keys: Arc::new([HmacKey::from_key(key.as_bytes())]),
                    decoy: true,
                }
            })
            .clone()
    }

    /// Hashes `body` under the decoy's key `times` times, for the time it takes and nothing
    /// else.
    pub(crate) fn waste(body: &[u8], times: usize) {
        let decoy = Self::decoy();
        for _ in 0..times {
            std::hint::black_box(decoy.keys[0].mac(body));
        }
    }

    /// Checks `signature` against `body` under each secret in turn, in constant time each.
    pub(crate) fn verify(
        &self,
        body: &[u8],
        signature: &Signature,
    ) -> Result<Verified, SignatureError> {
        for (secret_index, key) in self.keys.iter().enumerate() {
            let digest = key.mac(body);
            if signature.matches(&digest) && !self.decoy {
                return Ok(Verified::new(secret_index, digest));
            }
        }
        Err(SignatureError::Mismatch)
    }

    /// The first secret's signature of `body`.
    pub(crate) fn sign(&self, body: &[u8]) -> Signature {
        // A set is never empty.
        Signature::from_digest(self.keys[0].mac(body))
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("count", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"{}";

    fn index_matching(secrets: &Secrets, secret: &str) -> Option<usize> {
        let signature = Secrets::new(secret).unwrap().sign(BODY);
        secrets
            .verify(BODY, &signature)
            .ok()
            .map(|verified| verified.secret_index())
    }

    #[test]
    fn promote_and_retire_reorder_without_losing_a_secret() {
        let set = Secrets::from_list(["whsec_a", "whsec_b", "whsec_c"]).unwrap();
        let promoted = set.promote(2).unwrap();
        let order: Vec<_> = ["whsec_c", "whsec_a", "whsec_b"]
            .iter()
            .map(|secret| index_matching(&promoted, secret))
            .collect();
        assert_eq!(order, [Some(0), Some(1), Some(2)]);
        let retired = promoted.retire(1).unwrap();
        assert_eq!(index_matching(&retired, "whsec_a"), None);
        assert_eq!(index_matching(&retired, "whsec_b"), Some(1));
        assert!(set.promote(3).is_none() && set.retire(3).is_none());
        assert!(Secrets::new("whsec_a").unwrap().retire(0).is_none());
        assert_eq!(
            Secrets::from_list(Vec::<String>::new()).err(),
            Some(SecretError::Empty)
        );
    }

    #[test]
    fn the_decoy_never_matches_even_its_own_signature() {
        let decoy = Secrets::decoy();
        let signature = decoy.sign(BODY);
        assert_eq!(
            decoy.verify(BODY, &signature).unwrap_err(),
            SignatureError::Mismatch
        );
    }
}
