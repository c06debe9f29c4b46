//! Helpers for testing your own handlers (feature `test-util`).

use crate::verify::{SecretError, Verifier};

/// The `x-ringyo-signature` value Ringyo would send for `body` under `secret`.
///
/// ```
/// let body = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:00Z","data":{}}"#;
/// let header = ringyo_webhook::testing::sign("whsec_test", body)?;
/// assert_eq!(header.len(), 64);
/// assert_eq!(ringyo_webhook::verify(["whsec_test"], body, &header), Ok(0));
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
///
/// # Errors
///
/// [`SecretError`] if the secret would be refused by the layer.
pub fn sign(secret: &str, body: &[u8]) -> Result<String, SecretError> {
    Ok(Verifier::new(secret)?.sign(body).to_string())
}
