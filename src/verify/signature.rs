//! The `x-ringyo-signature` header: finding it, parsing it, and comparing it.

use std::fmt;

use http::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

use super::hex;
use crate::rejection::{Rejection, RejectionKind};

/// The header that carries the signature, `x-ringyo-signature`.
///
/// Header names are case-insensitive; `http` stores them lowercase, so a lookup with this name
/// finds `X-Ringyo-Signature` too.
pub const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-ringyo-signature");

/// An optional prefix some senders and proxies put before the hex digest.
const ALGORITHM_PREFIX: &[u8] = b"sha256=";

/// Why a request's signature did not verify.
///
/// None of these say anything about the secret: a caller may show them to the sender. Each is
/// one [`RejectionKind`], whose message it displays.
///
/// ```
/// use ringyo_webhook::{http::HeaderMap, RejectionKind, Signature, SignatureError};
///
/// let err = Signature::from_headers(&HeaderMap::new()).unwrap_err();
/// assert_eq!(err, SignatureError::Missing);
/// assert_eq!(err.kind(), RejectionKind::MissingSignature);
/// assert_eq!(err.kind().code(), "missing_signature");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The request has no `x-ringyo-signature` header.
    Missing,
    /// The header appears more than once with different values, so it is not clear which one
    /// the sender meant.
    Conflicting,
    /// The header is not 64 hex digits (optionally after `sha256=`): empty, truncated,
    /// over-long or not hex. Such a value can never match.
    Malformed,
    /// The signature is well formed but matches the body under none of the secrets.
    Mismatch,
}

impl SignatureError {
    /// The rejection this error answers with.
    pub fn kind(self) -> RejectionKind {
        match self {
            Self::Missing => RejectionKind::MissingSignature,
            Self::Conflicting => RejectionKind::ConflictingSignatures,
            Self::Malformed => RejectionKind::MalformedSignature,
            Self::Mismatch => RejectionKind::SignatureMismatch,
        }
    }
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().message())
    }
}

impl std::error::Error for SignatureError {}

impl From<SignatureError> for Rejection {
    fn from(err: SignatureError) -> Self {
        Rejection::new(err.kind())
    }
}

/// A parsed `x-ringyo-signature` value: the 32 bytes of an HMAC-SHA256 digest.
///
/// Parsing accepts lowercase or uppercase hex, an optional `sha256=` prefix and surrounding
/// whitespace. It deliberately has no `PartialEq`: compare signatures through
/// [`Verifier::verify`](super::Verifier::verify), which does so in constant time.
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
pub struct Signature([u8; 32]);

impl Signature {
    pub(crate) fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// Parses one header value.
    ///
    /// # Errors
    ///
    /// [`SignatureError::Malformed`] unless the value is exactly 64 hex digits after trimming
    /// whitespace and an optional `sha256=` prefix.
    pub fn parse(value: impl AsRef<[u8]>) -> Result<Self, SignatureError> {
        let (_, digits) = split_prefix(value.as_ref());
        // Exactly 64 digits, so a short or long value is an error here, never a shorter
        // comparison later (the bug Svix once shipped).
        hex::decode_32(digits)
            .map(Self)
            .ok_or(SignatureError::Malformed)
    }

    /// Finds and parses the `x-ringyo-signature` header.
    ///
    /// The header may be repeated (a proxy may duplicate it) only with the same value.
    ///
    /// # Errors
    ///
    /// [`SignatureError::Missing`], [`SignatureError::Conflicting`] or
    /// [`SignatureError::Malformed`].
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, SignatureError> {
        let mut values = headers.get_all(SIGNATURE_HEADER).iter();
        let first = Self::parse(values.next().ok_or(SignatureError::Missing)?)?;
        for other in values {
            // Compared as digests, so `ab..` and `sha256=AB..` agree. Both values come from the
            // request, so this comparison reveals nothing secret.
            if Self::parse(other)?.0 != first.0 {
                return Err(SignatureError::Conflicting);
            }
        }
        Ok(first)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `digest` is this signature, in constant time: every byte is compared whatever
    /// the others hold.
    ///
    /// As four 64-bit words, each through `subtle`'s `ct_eq`: on the 32 bytes, `subtle` puts
    /// each byte's result through an optimization barrier of its own (a volatile read), 32 in
    /// all, which took about 50 ns of a 1 KiB verification's 700.
    pub(crate) fn matches(&self, digest: &[u8; 32]) -> bool {
        words(&self.0).ct_eq(&words(digest)).into()
    }
}

/// A digest as four 64-bit words, for [`Signature::matches`].
fn words(digest: &[u8; 32]) -> [u64; 4] {
    std::array::from_fn(|word| {
        u64::from_ne_bytes(std::array::from_fn(|byte| digest[word * 8 + byte]))
    })
}

/// Trims whitespace and splits off an optional `sha256=` (any case): the one place the header's
/// shape is read.
fn split_prefix(value: &[u8]) -> (bool, &[u8]) {
    let value = value.trim_ascii();
    match value.get(..ALGORITHM_PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(ALGORITHM_PREFIX) => {
            (true, &value[ALGORITHM_PREFIX.len()..])
        }
        _ => (false, value),
    }
}

/// What a mismatch log may say about the header: its length, whether it had the `sha256=`
/// prefix, and whether its hex had uppercase digits. Never the value.
pub(crate) fn describe_header(headers: &HeaderMap) -> (usize, bool, bool) {
    let value = headers
        .get(SIGNATURE_HEADER)
        .map_or(&[][..], |value| value.as_bytes());
    let (prefixed, hex) = split_prefix(value);
    (
        value.trim_ascii().len(),
        prefixed,
        hex.iter().any(u8::is_ascii_uppercase),
    )
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&const_hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A signature is public (it travels in a header), so showing it is safe and useful.
        write!(f, "Signature({self})")
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const NODE_SIGNATURE: &str = "72d34d0e8843ebffab0e86ee065dbe484b179988222ca4f5a402824658241a46";
    const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn uppercase_hex_prefix_and_whitespace_parse_to_the_same_digest() {
        let expected = *Signature::parse(NODE_SIGNATURE).unwrap().as_bytes();
        for value in [
            NODE_SIGNATURE.to_uppercase(),
            format!("sha256={NODE_SIGNATURE}"),
            format!("SHA256={}", NODE_SIGNATURE.to_uppercase()),
            format!("  {NODE_SIGNATURE}\t"),
        ] {
            assert_eq!(Signature::parse(&value).unwrap().as_bytes(), &expected);
        }
        assert_eq!(
            Signature::parse(NODE_SIGNATURE).unwrap().to_string(),
            NODE_SIGNATURE
        );
    }

    #[test]
    fn malformed_values_are_rejected_not_matched() {
        let long = format!("{NODE_SIGNATURE}00");
        let odd = format!("{NODE_SIGNATURE}0");
        let non_hex = format!("{}zz", &NODE_SIGNATURE[..62]);
        let zero_x = format!("0x{}", &NODE_SIGNATURE[..62]);
        let zero_x_long = format!("0x{NODE_SIGNATURE}");
        for value in [
            "",
            "sha256=",
            "   ",
            &NODE_SIGNATURE[..63],
            &NODE_SIGNATURE[..32],
            &long,
            &odd,
            &non_hex,
            &zero_x,
            &zero_x_long,
            "sha256=sha256=00",
            "é",
        ] {
            assert_eq!(
                Signature::parse(value).err(),
                Some(SignatureError::Malformed),
                "{value:?}"
            );
        }
    }

    #[test]
    fn a_difference_in_any_bit_is_a_mismatch() {
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
    fn repeated_header_must_agree() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            Signature::from_headers(&headers).err(),
            Some(SignatureError::Missing)
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
            Some(SignatureError::Conflicting)
        );
    }

    #[test]
    fn header_description_never_holds_the_value() {
        let mut headers = HeaderMap::new();
        let value = format!(" sha256={} ", NODE_SIGNATURE.to_uppercase());
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&value).unwrap());
        assert_eq!(describe_header(&headers), (71, true, true));
        assert_eq!(describe_header(&HeaderMap::new()), (0, false, false));
    }

    #[test]
    fn signature_errors_map_to_their_rejections() {
        let cases = [
            (SignatureError::Missing, "missing_signature"),
            (SignatureError::Malformed, "invalid_signature"),
            (SignatureError::Mismatch, "invalid_signature"),
            (SignatureError::Conflicting, "conflicting_signatures"),
        ];
        for (err, code) in cases {
            let rejection = Rejection::from(err);
            assert_eq!(rejection.code(), code);
            assert_eq!(rejection.status(), http::StatusCode::UNAUTHORIZED);
            assert_eq!(rejection.to_string(), err.to_string());
        }
    }
}
