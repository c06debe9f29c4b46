//! Is this delivery genuine and fresh? Plain, synchronous code with no I/O and no framework
//! types.
//!
//! Ringyo signs each delivery with `HMAC-SHA256(key = secret, message = raw body)` and sends the
//! lowercase hex digest in the `x-ringyo-signature` header. The key is the *whole* secret string
//! as Ringyo shows it, `whsec_` prefix included: it is not base64-decoded as Svix and Standard
//! Webhooks secrets are, so their verifiers give wrong answers for Ringyo.
//!
//! - [`Verifier`] holds the secrets and the freshness window on the signed `timestamp`; the
//!   layer and [`RingyoEvent::verify`](crate::RingyoEvent::verify) both use it.
//! - [`Secrets`] is a set of secrets, each kept only as its HMAC key state (computed once,
//!   wiped when dropped). Every signature, the layer's fixed set's or one a
//!   [source](crate::secrets) found for a request, is checked against one in the same loop,
//!   which also decides how long a refusal takes (so that an unknown tenant is refused in the
//!   time a known one is).
//! - [`Signature`] is a parsed header value: exactly 32 bytes, compared in constant time.
//! - [`DeliveryId`] names a delivery, the same for every retry of it.
//! - [`SecretError`] is a configuration mistake, found when a verifier is built;
//!   [`SignatureError`] is a request's fault.
//!
//! ```
//! use ringyo_webhook::{Signature, Verifier};
//!
//! # let (current, previous) = ("whsec_doctest_current", "whsec_doctest_previous");
//! // `current` and `previous`: the endpoint's secrets, from the environment or a file.
//! let verifier = Verifier::new(current)?.add_secret(previous)?;
//! let body = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:00Z","data":{}}"#;
//! let header = Verifier::new(previous)?.sign(body).to_string();
//!
//! let verified = verifier.verify(body, &Signature::parse(&header)?)?;
//! assert_eq!(verified.secret_index(), 1); // the old secret matched: not retired yet
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod freshness;
mod hex;
mod id;
mod keys;
mod secret;
mod signature;
mod verifier;

pub(crate) use freshness::after;
pub use freshness::{Clock, SystemClock};
pub use id::{DeliveryId, InvalidDeliveryId};
pub(crate) use keys::{check, Keys};
pub use keys::{Secrets, Verified};
pub use secret::SecretError;
pub(crate) use signature::describe_header;
pub use signature::{Signature, SignatureError, SIGNATURE_HEADER};
pub use verifier::Verifier;
