//! Signature verification: plain, synchronous code with no I/O and no framework types.
//!
//! Ringyo signs each delivery with `HMAC-SHA256(key = secret, message = raw body)` and sends the
//! lowercase hex digest in the `x-ringyo-signature` header. The key is the *whole* secret string
//! as Ringyo shows it, `whsec_` prefix included: it is not base64-decoded as Svix and Standard
//! Webhooks secrets are, so their verifiers give wrong answers for Ringyo.
//!
//! [`Verifier`] computes the HMAC key schedule once per secret, so verifying a request costs the
//! SHA-256 work the body needs anyway plus one more block, with no allocation.

use std::fmt;

use http::{HeaderMap, HeaderName};
use sha2::{compress256, digest::generic_array::GenericArray, Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header that carries the signature, `x-ringyo-signature`.
///
/// Header names are case-insensitive; `http` stores them lowercase, so a lookup with this name
/// finds `X-Ringyo-Signature` too.
pub const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-ringyo-signature");

/// The prefix Ringyo puts on the secrets it generates.
const SECRET_PREFIX: &str = "whsec_";

/// An optional prefix some senders and proxies put before the hex digest.
const ALGORITHM_PREFIX: &[u8] = b"sha256=";

/// The length of an HMAC-SHA256 digest in bytes.
const DIGEST_LEN: usize = 32;

/// Why a webhook secret was refused when a [`Verifier`] or layer was built.
///
/// Secrets are checked once, at start-up, so a configuration slip shows up as an error there
/// instead of as every delivery failing with `invalid_signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret is the empty string. An empty HMAC key is one anybody can sign with, which
    /// usually means an unset environment variable read as `""`.
    #[error("the webhook secret is empty (is the environment variable that holds it unset?)")]
    Empty,
    /// The secret starts or ends with whitespace, typically a trailing newline from a file or a
    /// space from a copy-paste. Ringyo's secrets never do, so using it would fail every delivery.
    #[error(
        "the webhook secret has whitespace at its start or end (a trailing newline from a file \
         or a copy-paste slip?); Ringyo's secrets have none"
    )]
    SurroundingWhitespace,
    /// No secret was given at all.
    #[error("no webhook secret was given")]
    NoSecrets,
}

/// Why a signature did not verify.
///
/// None of these say anything about the secret: a caller may show them to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The request has no `x-ringyo-signature` header.
    #[error("the x-ringyo-signature header is missing")]
    MissingSignature,
    /// The header appears more than once with different values, so it is not clear which one
    /// the sender meant.
    #[error("the x-ringyo-signature header appears more than once with different values")]
    ConflictingSignatures,
    /// The header is not 64 hex digits (optionally after `sha256=`): empty, truncated,
    /// over-long or not hex. Such a value can never match.
    #[error("the x-ringyo-signature header is not 64 hex digits")]
    MalformedSignature,
    /// The signature is well formed but matches the body under none of the secrets.
    #[error("the signature does not match the request body")]
    Mismatch,
    /// A secret given to [`verify`] was refused; see [`SecretError`].
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// A parsed `x-ringyo-signature` value: the 32 bytes of an HMAC-SHA256 digest.
///
/// Parsing accepts lowercase or uppercase hex, an optional `sha256=` prefix and surrounding
/// whitespace. It deliberately has no `PartialEq`: compare signatures through
/// [`Verifier::verify`], which does so in constant time.
///
/// Its [`Display`](fmt::Display) form is the lowercase hex Ringyo sends.
///
/// ```
/// use ringyo_webhook::Signature;
///
/// let hex = "5e".repeat(32);
/// let sig = Signature::parse(format!("sha256={}", hex.to_uppercase())).unwrap();
/// assert_eq!(sig.to_string(), hex);
///
/// assert!(Signature::parse("").is_err());
/// assert!(Signature::parse("sha256=").is_err());
/// assert!(Signature::parse(&hex[..63]).is_err());
/// ```
#[derive(Clone, Copy)]
pub struct Signature([u8; DIGEST_LEN]);

impl Signature {
    /// Parses one header value.
    ///
    /// # Errors
    ///
    /// [`VerifyError::MalformedSignature`] unless the value is exactly 64 hex digits after
    /// trimming whitespace and an optional `sha256=` prefix.
    pub fn parse(value: impl AsRef<[u8]>) -> Result<Self, VerifyError> {
        let value = value.as_ref().trim_ascii();
        let hex = match value.get(..ALGORITHM_PREFIX.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(ALGORITHM_PREFIX) => {
                &value[ALGORITHM_PREFIX.len()..]
            }
            _ => value,
        };
        // Exactly 64 digits, so a short or long value is an error here, never a shorter
        // comparison later (the bug Svix once shipped).
        decode_hex(hex)
            .map(Self)
            .ok_or(VerifyError::MalformedSignature)
    }

    /// Finds and parses the `x-ringyo-signature` header.
    ///
    /// The header may be repeated (a proxy may duplicate it) only with the same value.
    ///
    /// # Errors
    ///
    /// [`VerifyError::MissingSignature`], [`VerifyError::ConflictingSignatures`] or
    /// [`VerifyError::MalformedSignature`].
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, VerifyError> {
        let mut values = headers.get_all(SIGNATURE_HEADER).iter();
        let first = Self::parse(values.next().ok_or(VerifyError::MissingSignature)?)?;
        for other in values {
            // Compared as digests, so `ab..` and `sha256=AB..` agree. Both values come from the
            // request, so this comparison reveals nothing secret.
            if Self::parse(other)?.0 != first.0 {
                return Err(VerifyError::ConflictingSignatures);
            }
        }
        Ok(first)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// Constant time: every byte is compared whatever the others hold. XOR-OR over four words,
    /// then one `subtle` comparison, is as safe as a byte-wise `ct_eq` and several times faster
    /// (which shows at 1 KiB bodies).
    fn matches(&self, digest: &[u8; DIGEST_LEN]) -> bool {
        let difference = self
            .0
            .chunks_exact(8)
            .zip(digest.chunks_exact(8))
            .fold(0u64, |acc, (a, b)| acc | (word(a) ^ word(b)));
        difference.ct_eq(&0).into()
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; DIGEST_LEN * 2];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        // Only ASCII digits were written.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

/// The value of each byte as a hex digit, or `0xff` for a byte that is not one.
const HEX_VALUES: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Decodes exactly 64 hex digits, either case. Branch-free over the digits; the header is the
/// sender's, so its timing reveals nothing secret, but it is on every request's path.
fn decode_hex(hex: &[u8]) -> Option<[u8; DIGEST_LEN]> {
    let hex: &[u8; DIGEST_LEN * 2] = hex.try_into().ok()?;
    let mut digest = [0u8; DIGEST_LEN];
    let mut invalid = 0u8;
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let high = HEX_VALUES[usize::from(pair[0])];
        let low = HEX_VALUES[usize::from(pair[1])];
        invalid |= high | low;
        *byte = (high << 4) | (low & 0xf);
    }
    // A valid digit is below 16; `0xff` sets the high bits.
    (invalid < 16).then_some(digest)
}

fn word(bytes: &[u8]) -> u64 {
    // `chunks_exact(8)` yields 8-byte chunks only.
    u64::from_ne_bytes(bytes.try_into().unwrap_or_default())
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A signature is public (it travels in a header), so showing it is safe and useful.
        write!(f, "Signature({self})")
    }
}

/// The identity of a delivery, the same for every copy of it.
///
/// Ringyo's envelope has no event id, and `webhook_id` is the endpoint's id, the same for every
/// event, so the content is the identity: a retry of a delivery has the same bytes. The id is a
/// SHA-256, under a fixed domain label, of the body's HMAC under the *first* secret: that HMAC is
/// computed during verification anyway, and hashing it again means the id is **not** a valid
/// signature, so storing or logging ids next to payloads never yields a replayable request. It
/// changes when the first secret changes; since deliveries older than the timestamp window are
/// refused anyway, that matters only for a retry that spans such a change.
///
/// Its `Display` form is 64 lowercase hex digits, fit for a database column or a log line.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId([u8; DIGEST_LEN]);

impl DeliveryId {
    /// Domain separation: an id can never equal a signature or another use of the digest.
    const LABEL: &'static [u8] = b"ringyo-webhook delivery id v1\0";

    fn from_digest(digest: &[u8; DIGEST_LEN]) -> Self {
        let mut hash = Sha256::new();
        hash.update(Self::LABEL);
        hash.update(digest);
        Self(hash.finalize().into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Signature(self.0), f)
    }
}

impl fmt::Debug for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeliveryId({self})")
    }
}

/// What a successful verification found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    secret_index: usize,
    // The first secret's HMAC of the body: a valid signature, so kept private and out of Debug.
    first_digest: [u8; DIGEST_LEN],
}

impl Verified {
    /// Which secret matched: 0 for the first, then in the order they were added.
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// The delivery's identity; see [`DeliveryId`]. Computed on demand (one short hash), so
    /// verification costs nothing extra when no one asks.
    pub fn delivery_id(&self) -> DeliveryId {
        DeliveryId::from_digest(&self.first_digest)
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("secret_index", &self.secret_index)
            .field("delivery_id", &self.delivery_id())
            .finish()
    }
}

/// Verifies Ringyo signatures against one or more secrets.
///
/// Build it once at start-up and share it; each secret's HMAC key schedule is computed here, not
/// per request. Several secrets support rotation: a signature verifies if any secret matches,
/// and [`verify`](Self::verify) says which one did, so an old secret can be retired once it stops
/// matching. `Debug` shows how many secrets there are, never the secrets.
///
/// ```
/// use ringyo_webhook::{Signature, Verifier};
///
/// let verifier = Verifier::new("whsec_new")?.add_secret("whsec_old")?;
/// let body = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:00Z","data":{}}"#;
///
/// // A delivery signed with the old secret still verifies, and says so.
/// let signed_with_old = Verifier::new("whsec_old")?.sign(body);
/// assert_eq!(verifier.verify(body, &signed_with_old).unwrap().secret_index(), 1);
///
/// // Any change to the bytes is a mismatch.
/// let tampered = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:01Z","data":{}}"#;
/// assert!(verifier.verify(tampered, &signed_with_old).is_err());
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<HmacKey>,
}

/// HMAC-SHA256 (RFC 2104) with the key schedule done: both hashes' states after their padded
/// key block.
///
/// Why not the `hmac` crate: its result is the same (a test checks it), but the outer hash of
/// HMAC is always exactly one block, the 32-byte inner hash plus padding, and compressing that
/// block directly saves a whole hash finalization per request. At 1 KiB bodies that is the
/// difference between 0.90 and 0.93 of a raw SHA-256 of the same bytes (benches/README.md).
#[derive(Clone)]
struct HmacKey {
    inner: Sha256,
    outer: [u32; 8],
}

impl HmacKey {
    /// SHA-256's initial state (FIPS 180-4, 5.3.3).
    const INITIAL_STATE: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    fn new(secret: &[u8]) -> Self {
        let mut key = [0u8; 64];
        if secret.len() > key.len() {
            key[..DIGEST_LEN].copy_from_slice(&Sha256::digest(secret));
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        let mut inner = Sha256::new();
        inner.update(key.map(|byte| byte ^ 0x36));
        let mut outer = Self::INITIAL_STATE;
        compress(&mut outer, &key.map(|byte| byte ^ 0x5c));
        Self { inner, outer }
    }

    fn mac(&self, body: &[u8]) -> [u8; DIGEST_LEN] {
        let mut inner = self.inner.clone();
        inner.update(body);
        // The outer message is the 64-byte key block (already in `outer`) and the 32-byte
        // inner hash: one block holds the hash, the 0x80 marker and the 96-byte bit length.
        let mut block = [0u8; 64];
        block[..DIGEST_LEN].copy_from_slice(&inner.finalize());
        block[DIGEST_LEN] = 0x80;
        block[56..].copy_from_slice(&(8 * (64 + DIGEST_LEN as u64)).to_be_bytes());
        let mut state = self.outer;
        compress(&mut state, &block);
        let mut digest = [0u8; DIGEST_LEN];
        for (bytes, word) in digest.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }
}

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

impl Verifier {
    /// A verifier for one secret, the whole string as Ringyo shows it (`whsec_...`).
    ///
    /// A secret without the `whsec_` prefix is accepted, since users may choose their own when
    /// they create the webhook, but logs a warning in case it is an API key by mistake.
    ///
    /// # Errors
    ///
    /// [`SecretError`] if the secret is empty or has whitespace at either end.
    pub fn new(secret: impl AsRef<str>) -> Result<Self, SecretError> {
        Self { keys: Vec::new() }.add_secret(secret)
    }

    /// Adds another secret that deliveries may be signed with, for rotation.
    ///
    /// Secrets are tried in the order they were added, so put the current one first.
    ///
    /// # Errors
    ///
    /// [`SecretError`] as for [`new`](Self::new).
    pub fn add_secret(mut self, secret: impl AsRef<str>) -> Result<Self, SecretError> {
        let secret = secret.as_ref();
        let key = key_for(secret)?;
        if !secret.starts_with(SECRET_PREFIX) {
            tracing::warn!(
                secret_index = self.keys.len(),
                "webhook secret does not start with `whsec_`; accepted, but Ringyo's generated \
                 secrets do: check that it is the endpoint's signing secret, not an API key"
            );
        }
        self.keys.push(key);
        Ok(self)
    }

    /// How many secrets this verifier holds.
    pub fn secret_count(&self) -> usize {
        self.keys.len()
    }

    /// Checks `signature` against `body`, the raw bytes exactly as received.
    ///
    /// On success, says which secret matched (0 for the one given to [`new`](Self::new), then
    /// in the order of [`add_secret`](Self::add_secret)) and the delivery's [`DeliveryId`].
    /// Each comparison takes constant time.
    ///
    /// # Errors
    ///
    /// [`VerifyError::Mismatch`] if no secret matches.
    pub fn verify(&self, body: &[u8], signature: &Signature) -> Result<Verified, VerifyError> {
        let mut first_digest = None;
        for (secret_index, key) in self.keys.iter().enumerate() {
            let digest = key.mac(body);
            // The first key's digest identifies the delivery, whichever key matches.
            let first_digest = *first_digest.get_or_insert(digest);
            if signature.matches(&digest) {
                return Ok(Verified {
                    secret_index,
                    first_digest,
                });
            }
        }
        Err(VerifyError::Mismatch)
    }

    /// Signs `body` with the first secret, as Ringyo would.
    ///
    /// For tests and tools that send deliveries; a receiver only needs
    /// [`verify`](Self::verify).
    pub fn sign(&self, body: &[u8]) -> Signature {
        // `new` always stores one key, and keys are never removed.
        Signature(self.keys[0].mac(body))
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Verifies one delivery without building a [`Verifier`] first.
///
/// For code outside tower, such as a serverless handler: pass the secret or secrets, the raw
/// body exactly as received, and the `x-ringyo-signature` header value (a `&str` or the
/// header's bytes). Returns the index of the
/// secret that matched and the delivery's id. It recomputes each secret's key schedule on every call; a long-running
/// server should keep a [`Verifier`] instead.
///
/// It checks the signature only; a caller outside the layer that wants replay protection
/// checks the envelope's `timestamp` itself and deduplicates on [`Verified::delivery_id`].
///
/// ```
/// let body = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00Z","data":{}}"#;
/// let header = ringyo_webhook::Verifier::new("whsec_test")?.sign(body).to_string();
///
/// let verified = ringyo_webhook::verify(["whsec_test"], body, &header).unwrap();
/// assert_eq!(verified.secret_index(), 0);
/// assert!(ringyo_webhook::verify(["whsec_other"], body, &header).is_err());
/// assert!(ringyo_webhook::verify([""], body, &header).is_err());
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
///
/// # Errors
///
/// [`VerifyError::Secret`] if a secret is refused (see [`SecretError`]), otherwise as for
/// [`Signature::parse`] and [`Verifier::verify`].
pub fn verify<I>(
    secrets: I,
    body: &[u8],
    signature: impl AsRef<[u8]>,
) -> Result<Verified, VerifyError>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let keys = secrets
        .into_iter()
        .map(|secret| key_for(secret.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(SecretError::NoSecrets.into());
    }
    Verifier { keys }.verify(body, &Signature::parse(signature)?)
}

fn key_for(secret: &str) -> Result<HmacKey, SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty);
    }
    if secret.trim() != secret {
        return Err(SecretError::SurroundingWhitespace);
    }
    // The whole string, prefix included, is the key: that is what Ringyo's Node example does
    // with `createHmac('sha256', secret)`.
    Ok(HmacKey::new(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECRET: &str = "whsec_a1b2c3d4e5f6g7h8i9j0";
    const BODY: &[u8] = br#"{"event":"call.completed","timestamp":"2024-01-15T10:30:00Z","webhook_id":"wh_abc123","data":{"id":"call_xyz789"}}"#;
    // Computed by the seed's own Node algorithm:
    // crypto.createHmac('sha256', SECRET).update(BODY).digest('hex')
    const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
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
    fn malformed_values_are_rejected_not_matched() {
        let long = format!("{NODE_SIGNATURE}00");
        let odd = format!("{NODE_SIGNATURE}0");
        let non_hex = format!("{}zz", &NODE_SIGNATURE[..62]);
        for value in [
            "",
            "sha256=",
            "   ",
            &NODE_SIGNATURE[..63],
            &NODE_SIGNATURE[..32],
            &long,
            &odd,
            &non_hex,
            "sha256=sha256=00",
            "é",
        ] {
            assert_eq!(
                Signature::parse(value).err(),
                Some(VerifyError::MalformedSignature),
                "{value:?}"
            );
        }
    }

    #[test]
    fn hmac_agrees_with_the_hmac_crate() {
        use hmac::Mac;
        // Keys around the 64-byte block (a longer key is hashed first), bodies around blocks.
        for key_len in [1usize, 26, 55, 63, 64, 65, 200] {
            let secret: Vec<u8> = (0..key_len).map(|i| i as u8 ^ 0xa5).collect();
            let key = HmacKey::new(&secret);
            for body_len in (0..=130).chain([191, 192, 1024, 65_537]) {
                let body: Vec<u8> = (0..body_len).map(|i| (i * 7) as u8).collect();
                let mut reference = hmac::Hmac::<Sha256>::new_from_slice(&secret).unwrap();
                reference.update(&body);
                let expected: [u8; 32] = reference.finalize().into_bytes().into();
                assert_eq!(key.mac(&body), expected, "key {key_len}, body {body_len}");
            }
        }
    }

    #[test]
    fn hex_decoding_agrees_with_the_hex_crate() {
        let mut inputs: Vec<Vec<u8>> =
            vec![NODE_SIGNATURE.into(), NODE_SIGNATURE.to_uppercase().into()];
        // Every byte value in every position class, valid or not.
        for byte in 0..=255u8 {
            let mut value = NODE_SIGNATURE.as_bytes().to_vec();
            value[byte as usize % 64] = byte;
            inputs.push(value);
        }
        for input in inputs {
            let mut expected = [0u8; 32];
            let expected = hex::decode_to_slice(&input, &mut expected)
                .ok()
                .map(|()| expected);
            assert_eq!(decode_hex(&input), expected, "{input:?}");
        }
    }

    #[test]
    fn a_difference_in_any_byte_is_a_mismatch() {
        let sig = Signature::parse(NODE_SIGNATURE).unwrap();
        for i in 0..32 {
            for bit in 0..8 {
                let mut digest = *sig.as_bytes();
                digest[i] ^= 1 << bit;
                assert!(!sig.matches(&digest));
            }
        }
        assert!(sig.matches(sig.as_bytes()));
    }

    #[test]
    fn any_changed_byte_is_a_mismatch() {
        let sig = Signature::parse(NODE_SIGNATURE).unwrap();
        let mut body = BODY.to_vec();
        for i in [0, body.len() / 2, body.len() - 1] {
            body[i] ^= 1;
            assert_eq!(verifier().verify(&body, &sig), Err(VerifyError::Mismatch));
            body[i] ^= 1;
        }
        assert_eq!(
            verifier().verify(&BODY[..BODY.len() - 1], &sig),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn secret_prefix_is_part_of_the_key() {
        let without_prefix = Verifier::new(&SECRET["whsec_".len()..]).unwrap();
        let sig = Signature::parse(NODE_SIGNATURE).unwrap();
        assert_eq!(
            without_prefix.verify(BODY, &sig),
            Err(VerifyError::Mismatch)
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
        // The id comes from the first secret's digest, whichever secret matched.
        let signed_with_first = rotated.sign(BODY);
        let again = rotated.verify(BODY, &signed_with_first).unwrap();
        assert_eq!(again.secret_index(), 0);
        assert_eq!(again.delivery_id(), verified.delivery_id());
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
        for secret in [" whsec_x", "whsec_x\n", "whsec_x\r\n", "\twhsec_x"] {
            assert_eq!(
                Verifier::new(secret).err(),
                Some(SecretError::SurroundingWhitespace)
            );
        }
        assert!(Verifier::new("my-own-secret").is_ok());
        assert_eq!(
            verify(Vec::<&str>::new(), BODY, NODE_SIGNATURE),
            Err(VerifyError::Secret(SecretError::NoSecrets))
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let debug = format!("{:?}", verifier());
        assert!(!debug.contains("a1b2"), "{debug}");
        assert_eq!(debug, "Verifier { secrets: 1, .. }");
        let err = Verifier::new(" whsec_a1b2").unwrap_err();
        assert!(!err.to_string().contains("a1b2"));
    }

    #[test]
    fn repeated_header_must_agree() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            Signature::from_headers(&headers).err(),
            Some(VerifyError::MissingSignature)
        );
        headers.append(
            "X-Ringyo-Signature",
            HeaderValue::from_static(NODE_SIGNATURE),
        );
        let prefixed = format!("sha256={}", NODE_SIGNATURE.to_uppercase());
        headers.append(SIGNATURE_HEADER, HeaderValue::from_str(&prefixed).unwrap());
        assert!(Signature::from_headers(&headers).is_ok());
        headers.append(SIGNATURE_HEADER, HeaderValue::from_static(ZEROS));
        assert_eq!(
            Signature::from_headers(&headers).err(),
            Some(VerifyError::ConflictingSignatures)
        );
    }
}
