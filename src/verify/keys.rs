//! [`Secrets`], the set of keys a delivery is checked against, and [`check`], the one loop
//! every signature goes through and the one place that decides how long a refusal takes.

use std::{fmt, sync::Arc, sync::OnceLock};

use super::{
    id::DeliveryId,
    secret::{HmacKey, SecretError},
    signature::{Signature, SignatureError},
};

/// The secrets one endpoint's deliveries may be signed with, in order: the current one first,
/// then older ones still accepted while a rotation runs.
///
/// Each secret is checked and turned into its HMAC key state once, here; the set is then cheap
/// to clone (one `Arc`) and to share between requests. `Debug` shows how many secrets there
/// are, never the secrets, and the key states are wiped from memory once the last clone is
/// dropped.
///
/// A [`Verifier`](super::Verifier) holds one fixed set; the sources in
/// [`secrets`](crate::secrets) hand the layer a set per request:
/// [`RotatingSecrets`](crate::secrets::RotatingSecrets) swaps sets at run time, a
/// [`TenantMap`](crate::secrets::TenantMap) holds one set per tenant.
///
/// ```
/// use ringyo_webhook::verify::Secrets;
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

    /// The set that answers for a tenant nobody knows, and the secrets of a layer's verifier
    /// when a source supplies the real ones; see [`check`].
    pub(crate) fn decoy() -> Self {
        decoy().clone()
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

/// The decoy set: one key, hashed like any other, that never matches. The key is random per
/// process as well, so not even a set that lost its flag could be signed for.
fn decoy() -> &'static Secrets {
    static DECOY: OnceLock<Secrets> = OnceLock::new();
    DECOY.get_or_init(|| {
        use std::hash::BuildHasher;
        // SipHash keys drawn from the OS for each `RandomState`: 128 unguessable bits.
        let random = || std::collections::hash_map::RandomState::new().hash_one(0u8);
        let key = format!("ringyo-webhook decoy {:016x}{:016x}", random(), random());
        // Not `HmacKey::new`: this key is no Ringyo secret, and its missing `whsec_` would be
        // warned about on every start of a layer built `from_source`.
        Secrets {
            keys: Arc::new([HmacKey::from_key(key.as_bytes())]),
            decoy: true,
        }
    })
}

/// The keys one request is checked against, and what they stand for: that decides how long
/// [`check`] takes to refuse.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keys<'a> {
    /// One endpoint's set: a layer's or a verifier's fixed set, or a rotating source's.
    Endpoint(&'a Secrets),
    /// A known tenant's set, from a source of tenants.
    Tenant(&'a Secrets),
    /// From a source of tenants, for a name no tenant goes by (or no name at all).
    UnknownTenant,
}

impl Keys<'_> {
    /// How many secrets a mismatch is checked against (the decoy's one for an unknown tenant).
    pub(crate) fn len(self) -> usize {
        match self {
            Self::Endpoint(secrets) | Self::Tenant(secrets) => secrets.len(),
            Self::UnknownTenant => decoy().len(),
        }
    }
}

/// How many times a refused request for a tenant hashes its body, at least: as often as a
/// known tenant in mid-rotation (two secrets) does.
const REFUSAL_HASHES: usize = 2;

/// Checks `signature` over `body` against `keys`: the one loop for the layer, for
/// [`Verifier::verify`](super::Verifier::verify) and for every tenant.
///
/// The timing rule, stated here and nowhere else:
///
/// - The body is hashed under each secret in turn, each digest compared with the signature in
///   constant time, until one matches. A match's time tells which secret matched (in the span
///   anyway); a refusal's, how many secrets the set holds, which is no secret for one endpoint.
/// - For a source of tenants ([`Keys::Tenant`], [`Keys::UnknownTenant`]) a refusal hashes the
///   body [`REFUSAL_HASHES`] times at least, padding with the decoy's key: an unknown tenant
///   hashes under the decoy once, then pads once; a known tenant with one secret pads once;
///   one in mid-rotation does not pad. So neither the answer (401 `invalid_signature`) nor its
///   time tells a made-up name from a tenant. A tenant with more secrets takes longer to
///   refuse. (`tests/layer/secrets.rs`, `an_unknown_tenant_is_refused_in_the_time_a_known_one_is`,
///   measures it.)
/// - The decoy is hashed and compared like any set and never matches, not even its own
///   signature, nor a set that a decoy was joined or added to (a layer built from a source
///   holds one in its verifier).
pub(crate) fn check(
    keys: Keys<'_>,
    body: &[u8],
    signature: &Signature,
) -> Result<Verified, SignatureError> {
    let (secrets, padded) = match keys {
        Keys::Endpoint(secrets) => (secrets, false),
        Keys::Tenant(secrets) => (secrets, true),
        Keys::UnknownTenant => (decoy(), true),
    };
    for (secret_index, key) in secrets.keys.iter().enumerate() {
        let digest = key.mac(body);
        if signature.matches(&digest) && !secrets.decoy {
            return Ok(Verified::new(secret_index, digest));
        }
    }
    if padded {
        let padding = &decoy().keys[0];
        for _ in secrets.len()..REFUSAL_HASHES {
            // For the time it takes and nothing else.
            std::hint::black_box(padding.mac(body));
        }
    }
    Err(SignatureError::Mismatch)
}

/// What a successful signature check found: which secret matched, and the delivery's id.
///
/// See [`Verifier::verify`](super::Verifier::verify) for an example.
#[derive(Clone, Copy)]
pub struct Verified {
    secret_index: usize,
    // What the delivery id is derived from: the matching secret's HMAC of the body (a valid
    // signature, so kept private and out of Debug), folded with the tenant when there is one.
    digest: [u8; 32],
}

impl Verified {
    /// Which secret matched: 0 for the first, then in the order they were added.
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// The delivery's identity; see [`DeliveryId`]. Computed on demand (one short hash), so
    /// verification costs nothing extra when no one asks.
    pub fn delivery_id(&self) -> DeliveryId {
        DeliveryId::from_digest(&self.digest)
    }

    fn new(secret_index: usize, digest: [u8; 32]) -> Self {
        Self {
            secret_index,
            digest,
        }
    }

    /// The same match, for the tenant named `tenant`: its delivery id differs from every
    /// other tenant's for the same bytes, even when two tenants share a secret.
    #[must_use]
    pub(crate) fn for_tenant(self, tenant: &str) -> Self {
        Self {
            digest: DeliveryId::tenant_digest(tenant, &self.digest),
            ..self
        }
    }
}

/// Compares in constant time: the digest inside is a valid signature.
impl PartialEq for Verified {
    fn eq(&self, other: &Self) -> bool {
        // The one constant-time comparison of digests, the signature's.
        let same_digest = Signature::from_digest(self.digest).matches(&other.digest);
        same_digest & (self.secret_index == other.secret_index)
    }
}

impl Eq for Verified {}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("secret_index", &self.secret_index)
            .field("delivery_id", &self.delivery_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"{}";

    fn index_matching(secrets: &Secrets, secret: &str) -> Option<usize> {
        let signature = Secrets::new(secret).unwrap().sign(BODY);
        check(Keys::Endpoint(secrets), BODY, &signature)
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
        let joined = Secrets::new("whsec_a").unwrap().joined(&decoy);
        for keys in [
            Keys::Endpoint(&decoy),
            Keys::Tenant(&decoy),
            Keys::UnknownTenant,
            Keys::Endpoint(&joined),
        ] {
            assert_eq!(
                check(keys, BODY, &signature).unwrap_err(),
                SignatureError::Mismatch,
                "{keys:?}"
            );
        }
        assert_eq!(index_matching(&joined, "whsec_a"), None);
    }

    #[test]
    fn a_tenant_verifies_like_an_endpoint_with_the_same_secrets() {
        let secrets = Secrets::from_list(["whsec_a", "whsec_b"]).unwrap();
        let signature = Secrets::new("whsec_b").unwrap().sign(BODY);
        let endpoint = check(Keys::Endpoint(&secrets), BODY, &signature).unwrap();
        let tenant = check(Keys::Tenant(&secrets), BODY, &signature).unwrap();
        assert_eq!(endpoint, tenant);
        assert_eq!(endpoint.secret_index(), 1);
        assert_ne!(
            tenant.for_tenant("acme").delivery_id(),
            endpoint.delivery_id()
        );
        assert_eq!(Keys::UnknownTenant.len(), 1);
    }
}
