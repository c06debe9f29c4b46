//! [`Verifier`]: the secrets and the freshness window, and the checks they make.

use std::{fmt, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use crate::{event::envelope::Head, rejection::Rejection};

use super::{
    freshness::{Clock, Freshness},
    keys::{check, Keys, Secrets, Verified},
    secret::SecretError,
    signature::{Signature, SignatureError},
};

/// Verifies Ringyo deliveries: their signature against one or more secrets, and the freshness
/// of their signed `timestamp`.
///
/// Build it once at start-up and share it (it is cheap to clone): each secret's HMAC key state
/// is computed here, not per request. Several secrets support rotation: a signature verifies if
/// any secret matches, and [`verify`](Self::verify) says which one did, so an old secret can be
/// retired once it stops matching. `Debug` shows how many secrets there are, never the secrets,
/// and the key states are overwritten with zeros once the last clone is dropped.
///
/// [`RingyoWebhookLayer::from_verifier`](crate::RingyoWebhookLayer::from_verifier) puts one in
/// front of a tower service; [`RingyoEvent::verify`](crate::RingyoEvent::verify) runs the same
/// checks on a body and a header value, for code outside tower.
///
/// ```
/// use ringyo_webhook::{Signature, Verifier};
///
/// # let (new, old) = ("whsec_doctest_new", "whsec_doctest_old");
/// // `new` and `old`: the endpoint's secrets, from the environment or a file.
/// let verifier = Verifier::new(new)?.add_secret(old)?;
/// let body = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:00Z","data":{}}"#;
///
/// // A delivery signed with the old secret still verifies, and says so.
/// let signed_with_old = Verifier::new(old)?.sign(body);
/// assert_eq!(verifier.verify(body, &signed_with_old).unwrap().secret_index(), 1);
///
/// // Any change to the bytes is a mismatch.
/// let tampered = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:01Z","data":{}}"#;
/// assert!(verifier.verify(tampered, &signed_with_old).is_err());
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Clone)]
pub struct Verifier {
    secrets: Secrets,
    freshness: Freshness,
}

impl Verifier {
    /// How old an event may be by default: one hour. See
    /// [`timestamp_tolerance`](Self::timestamp_tolerance).
    pub const DEFAULT_MAX_AGE: Duration = Freshness::DEFAULT_MAX_AGE;

    /// How far ahead of this clock an event may be by default: five minutes.
    pub const DEFAULT_MAX_FUTURE: Duration = Freshness::DEFAULT_MAX_FUTURE;

    /// A verifier for one secret, the whole string as Ringyo shows it (`whsec_...`), with the
    /// default freshness window on the system clock.
    ///
    /// A secret without the `whsec_` prefix is accepted, since users may choose their own when
    /// they create the webhook, but logs a warning in case it is an API key by mistake.
    ///
    /// # Errors
    ///
    /// [`SecretError`] if the secret is empty or has whitespace at either end.
    pub fn new(secret: impl AsRef<str>) -> Result<Self, SecretError> {
        Ok(Self::with_secrets(Secrets::new(secret)?))
    }

    /// A verifier with the secret in the environment variable `variable`.
    ///
    /// ```
    /// use ringyo_webhook::{SecretError, Verifier};
    ///
    /// let err = Verifier::from_env("RINGYO_DOCTEST_UNSET_VARIABLE").unwrap_err();
    /// assert_eq!(err, SecretError::NotSet { variable: "RINGYO_DOCTEST_UNSET_VARIABLE" });
    /// ```
    ///
    /// # Errors
    ///
    /// [`SecretError::NotSet`], [`SecretError::EmptyVariable`],
    /// [`SecretError::WhitespaceInVariable`] or [`SecretError::NotUnicode`], which name the
    /// variable and never repeat the value
    /// (`std::env::var`'s error prints a value that is not UTF-8, which would put a garbled
    /// secret in a log), and then as [`new`](Self::new).
    pub fn from_env(variable: &'static str) -> Result<Self, SecretError> {
        Self::new(super::secret::from_env(variable)?)
    }

    /// Adds another secret that deliveries may be signed with, for rotation.
    ///
    /// Secrets are tried in the order they were added, so put the current one first.
    ///
    /// # Errors
    ///
    /// [`SecretError`] as for [`new`](Self::new).
    pub fn add_secret(mut self, secret: impl AsRef<str>) -> Result<Self, SecretError> {
        self.secrets = self.secrets.with(secret)?;
        Ok(self)
    }

    /// A verifier for the set `secrets`, with the default freshness window on the system
    /// clock.
    pub fn with_secrets(secrets: Secrets) -> Self {
        Self {
            secrets,
            freshness: Freshness::default(),
        }
    }

    /// The secrets this verifier checks signatures with.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Sets how far the signed `timestamp` may be from now: at most `max_age` in the past and
    /// `max_future` in the future. Defaults: one hour and five minutes
    /// ([`DEFAULT_MAX_AGE`](Self::DEFAULT_MAX_AGE), [`DEFAULT_MAX_FUTURE`](Self::DEFAULT_MAX_FUTURE)).
    ///
    /// Keep `max_age` above Ringyo's retry schedule (about 13 minutes): a narrower window
    /// refuses genuine retries, and those events are lost.
    #[must_use]
    pub fn timestamp_tolerance(mut self, max_age: Duration, max_future: Duration) -> Self {
        self.freshness.set_tolerance(max_age, max_future);
        self
    }

    /// Turns the timestamp check off: any verified delivery is accepted whatever its age, so a
    /// captured request can be replayed for ever. Only for a receiver that checks freshness
    /// itself.
    ///
    /// A layer's delivery store then remembers a handled delivery for
    /// [`DEFAULT_MAX_AGE`](Self::DEFAULT_MAX_AGE) after it was handled: a replay later than that
    /// runs the handler again.
    #[must_use]
    pub fn skip_timestamp_check(mut self) -> Self {
        self.freshness.turn_off();
        self
    }

    /// Sets the clock the timestamp check (and a layer's delivery store) uses. Default: the
    /// system clock. Tests can pass a closure returning a fixed or advancing time.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.freshness.set_clock(Arc::new(clock));
        self
    }

    /// How many secrets this verifier holds.
    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// Checks `signature` against `body`, the raw bytes exactly as received. The timestamp is
    /// not looked at: that needs the body parsed, which only verified bytes may be.
    ///
    /// On success, says which secret matched (0 for the one given to [`new`](Self::new), then
    /// in the order of [`add_secret`](Self::add_secret)) and the delivery's [`DeliveryId`](super::DeliveryId).
    /// Each comparison takes constant time.
    ///
    /// # Errors
    ///
    /// [`SignatureError::Mismatch`] if no secret matches.
    pub fn verify(&self, body: &[u8], signature: &Signature) -> Result<Verified, SignatureError> {
        check(Keys::Endpoint(&self.secrets), body, signature)
    }

    /// Signs `body` with the first secret, as Ringyo would.
    ///
    /// For tests and tools that send deliveries; a receiver only needs
    /// [`verify`](Self::verify).
    pub fn sign(&self, body: &[u8]) -> Signature {
        self.secrets.sign(body)
    }

    /// The time on this verifier's clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.freshness.now()
    }

    /// Checks the freshness of verified bytes at `now`, reading the envelope's `event` and
    /// `timestamp` (the rest is skipped, though read to the end: see `Head::scan`).
    ///
    /// The layer and [`RingyoEvent::verify`](crate::RingyoEvent::verify) both decide here, so
    /// the same bytes get the same answer on either path.
    ///
    /// # Errors
    ///
    /// With the check on: a stale or future `timestamp`, or none, or a body that is not an
    /// envelope, as the [`Rejection`] the extractor would answer too.
    pub(crate) fn check_fresh(&self, body: &[u8], now: DateTime<Utc>) -> Result<Fresh, Rejection> {
        let head = Head::scan(body);
        let timestamp = head
            .as_ref()
            .map_err(Clone::clone)
            .and_then(Head::timestamp)
            .map_err(Rejection::from);
        let keep_until = self.freshness.check(timestamp, now)?;
        Ok(Fresh {
            // With the check off, a body that is no envelope passes: its head is empty.
            head: head.unwrap_or_default(),
            keep_until,
        })
    }
}

/// What [`Verifier::check_fresh`] found.
#[derive(Debug)]
pub(crate) struct Fresh {
    /// The envelope's `event` and `timestamp`, as far as they could be read: for the span,
    /// and for the inbox's row, which then need not read the body again.
    pub(crate) head: Head,
    /// Until when a copy of this delivery could still pass: how long a store remembers it.
    pub(crate) keep_until: DateTime<Utc>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.secrets.len())
            .field("freshness", &self.freshness)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_a1b2c3d4e5f6g7h8i9j0";
    const BODY: &[u8] = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00Z","webhook_id":"wh_abc123","data":{"id":"call_xyz789"}}"#;
    // Computed by the seed's own Node algorithm:
    // crypto.createHmac('sha256', SECRET).update(BODY).digest('hex')
    const NODE_SIGNATURE: &str = "72d34d0e8843ebffab0e86ee065dbe484b179988222ca4f5a402824658241a46";

    fn verifier() -> Verifier {
        Verifier::new(SECRET).unwrap()
    }

    #[test]
    fn signature_from_node_algorithm_verifies() {
        let sig = Signature::parse(NODE_SIGNATURE).unwrap();
        assert_eq!(verifier().verify(BODY, &sig).unwrap().secret_index(), 0);
        assert_eq!(verifier().sign(BODY).to_string(), NODE_SIGNATURE);
    }

    #[test]
    fn uppercase_hex_and_sha256_prefix_verify() {
        for value in [
            NODE_SIGNATURE.to_uppercase(),
            format!("sha256={NODE_SIGNATURE}"),
            format!("SHA256={}", NODE_SIGNATURE.to_uppercase()),
            format!("  {NODE_SIGNATURE}\t"),
        ] {
            let sig = Signature::parse(&value).unwrap();
            assert!(verifier().verify(BODY, &sig).is_ok(), "{value}");
        }
    }

    #[test]
    fn any_changed_byte_is_a_mismatch() {
        let sig = Signature::parse(NODE_SIGNATURE).unwrap();
        let mut body = BODY.to_vec();
        for i in [0, body.len() / 2, body.len() - 1] {
            body[i] ^= 1;
            assert_eq!(
                verifier().verify(&body, &sig),
                Err(SignatureError::Mismatch)
            );
            body[i] ^= 1;
        }
        assert_eq!(
            verifier().verify(&BODY[..BODY.len() - 1], &sig),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn secret_prefix_is_part_of_the_key() {
        let without_prefix = Verifier::new(&SECRET["whsec_".len()..]).unwrap();
        let sig = Signature::parse(NODE_SIGNATURE).unwrap();
        assert_eq!(
            without_prefix.verify(BODY, &sig),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_reports_which_secret_matched() {
        let rotated = Verifier::new("whsec_new")
            .unwrap()
            .add_secret(SECRET)
            .unwrap();
        let sig = Signature::parse(NODE_SIGNATURE).unwrap();
        let verified = rotated.verify(BODY, &sig).unwrap();
        assert_eq!(verified.secret_index(), 1);
        assert_eq!(rotated.secret_count(), 2);
        // The id comes from the matching secret's digest, so reordering or retiring the other
        // secrets leaves a retry's id as it was.
        let promoted = Verifier::new(SECRET)
            .unwrap()
            .add_secret("whsec_new")
            .unwrap();
        let again = promoted.verify(BODY, &sig).unwrap();
        assert_eq!(again.secret_index(), 0);
        assert_eq!(again.delivery_id(), verified.delivery_id());
        let signed_with_first = rotated.sign(BODY);
        // It is derived, never itself a valid signature, and Debug does not show the digest.
        assert_ne!(
            verified.delivery_id().to_string(),
            signed_with_first.to_string()
        );
        assert!(!format!("{verified:?}").contains(&signed_with_first.to_string()));
    }

    #[test]
    fn bad_secrets_are_refused_at_build_time() {
        assert_eq!(Verifier::new("").err(), Some(SecretError::Empty));
        assert_eq!(
            verifier().add_secret("whsec_x\n").err(),
            Some(SecretError::SurroundingWhitespace)
        );
        assert!(Verifier::new("my-own-secret").is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let debug = format!("{:?}", verifier());
        assert!(!debug.contains("a1b2"), "{debug}");
        assert!(debug.starts_with("Verifier { secrets: 1, "), "{debug}");
        let err = Verifier::new(" whsec_a1b2").unwrap_err();
        assert!(!err.to_string().contains("a1b2"));
    }
}
