//! [`DeliveryId`]: what makes two requests the same delivery.

use std::fmt;

use sha2::{Digest, Sha256};

use super::hex;

/// The identity of a delivery, the same for every copy of it.
///
/// Ringyo's envelope has no event id, and `webhook_id` is the endpoint's id, the same for every
/// event, so the content is the identity: a retry of a delivery has the same bytes. The id is a
/// SHA-256, under a fixed domain label, of the body's HMAC under the secret that matched (its
/// signature): that HMAC is computed during verification anyway, and hashing it again means the
/// id is **not** a valid signature, so storing or logging ids next to payloads never yields a
/// replayable request. Adding, promoting or retiring *other* secrets leaves it unchanged, so a
/// retry that spans a rotation is still the same delivery. With tenants
/// ([`Tenants`](crate::secrets::Tenants)) the tenant's name is folded in: the same bytes sent to
/// two tenants are two deliveries, even if the two share a secret.
///
/// Its `Display` form is 64 lowercase hex digits, fit for a database column or a log line.
/// Handlers get it from [`RingyoEvent::delivery_id`](crate::RingyoEvent::delivery_id), or as
/// an axum extractor of its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId([u8; 32]);

impl DeliveryId {
    /// Domain separation: an id can never equal a signature or another use of the digest.
    const LABEL: &'static [u8] = b"ringyo-webhook delivery id v1\0";

    /// Domain separation for the tenant fold.
    const TENANT_LABEL: &'static [u8] = b"ringyo-webhook tenant v1\0";

    pub(super) fn from_digest(digest: &[u8; 32]) -> Self {
        let mut hash = Sha256::new();
        hash.update(Self::LABEL);
        hash.update(digest);
        Self(hash.finalize().into())
    }

    /// `digest` folded with a tenant's name (length first, so no two names and digests run
    /// together into the same bytes).
    pub(super) fn tenant_digest(tenant: &str, digest: &[u8; 32]) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(Self::TENANT_LABEL);
        hash.update((tenant.len() as u64).to_be_bytes());
        hash.update(tenant.as_bytes());
        hash.update(digest);
        hash.finalize().into()
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Reads the `Display` form back, as stored in a database column or typed by an operator:
///
/// ```
/// use ringyo_webhook::DeliveryId;
///
/// let id: DeliveryId = "ab".repeat(32).parse()?;
/// assert_eq!(id.to_string(), "ab".repeat(32));
/// assert!("not an id".parse::<DeliveryId>().is_err());
/// # Ok::<(), ringyo_webhook::verify::InvalidDeliveryId>(())
/// ```
impl std::str::FromStr for DeliveryId {
    type Err = InvalidDeliveryId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        hex::decode_32(text.as_bytes())
            .map(Self)
            .ok_or(InvalidDeliveryId)
    }
}

/// Text that is not a [`DeliveryId`]: one is exactly 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a delivery id is 64 hex digits")]
#[non_exhaustive]
pub struct InvalidDeliveryId;

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&const_hex::encode(self.0))
    }
}

impl fmt::Debug for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeliveryId({self})")
    }
}
