//! Secrets: checked once when a verifier is built, then kept only as HMAC key state.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix Ringyo puts on the secrets it generates.
const SECRET_PREFIX: &str = "whsec_";

/// Why a webhook secret was refused when a [`Verifier`](super::Verifier) or layer was built.
///
/// Secrets are checked once, at start-up, so a configuration slip shows up as an error there
/// instead of as every delivery failing with `invalid_signature`. The messages never quote the
/// secret.
///
/// ```
/// use ringyo_webhook::{SecretError, Verifier};
///
/// // A secret read from a file with its trailing newline.
/// let err = Verifier::new("whsec_abc\n").unwrap_err();
/// assert_eq!(err, SecretError::SurroundingWhitespace);
/// assert!(!err.to_string().contains("abc"));
/// ```
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
    /// The environment variable meant to hold the secret is not set.
    #[error("{variable} is not set; set it to the endpoint's signing secret (whsec_...)")]
    NotSet {
        /// The variable's name.
        variable: &'static str,
    },
    /// The environment variable meant to hold the secret is set, to nothing: named, since a
    /// bare "empty" does not say which of a deployment's variables to fix.
    #[error("{variable} is empty; set it to the endpoint's signing secret (whsec_...)")]
    EmptyVariable {
        /// The variable's name.
        variable: &'static str,
    },
    /// The environment variable's value starts or ends with whitespace (a newline from `$(cat
    /// file)`, a space from a copy-paste): named, as [`EmptyVariable`](Self::EmptyVariable)
    /// is. The value is not repeated.
    #[error(
        "{variable} has whitespace at its start or end (a trailing newline from a file or a \
         copy-paste slip?); Ringyo's secrets have none"
    )]
    WhitespaceInVariable {
        /// The variable's name.
        variable: &'static str,
    },
    /// The environment variable holds bytes that are not UTF-8. Its value is not repeated:
    /// it is probably the secret, garbled.
    #[error("{variable} is not valid UTF-8; Ringyo's secrets are")]
    NotUnicode {
        /// The variable's name.
        variable: &'static str,
    },
    /// [`RingyoWebhookLayer::add_secret`](crate::RingyoWebhookLayer::add_secret) on a layer
    /// that takes its secrets from a [`SecretSource`](crate::secrets::SecretSource): the
    /// secret would never be used. Add it to the source.
    #[error(
        "this layer takes its secrets from a SecretSource (from_source): add the secret to \
         the source"
    )]
    FromSource,
}

/// The secret in the environment variable `variable`, wiped from memory when dropped.
///
/// Unlike `std::env::var`'s error, whose message repeats a value that is not UTF-8, what this
/// returns never holds the value. (The process environment itself keeps its copy: that one is
/// the deployment's to manage.)
pub(super) fn from_env(variable: &'static str) -> Result<Zeroizing<String>, SecretError> {
    match std::env::var(variable).map(Zeroizing::new) {
        Ok(secret) if secret.is_empty() => Err(SecretError::EmptyVariable { variable }),
        Ok(secret) if secret.trim() != secret.as_str() => {
            Err(SecretError::WhitespaceInVariable { variable })
        }
        Ok(secret) => Ok(secret),
        Err(std::env::VarError::NotPresent) => Err(SecretError::NotSet { variable }),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::NotUnicode { variable }),
    }
}

/// One secret's HMAC-SHA256 state after the key blocks, computed once and cloned per request.
///
/// With the `zeroize` feature of `hmac` and `sha2`, both SHA-256 states inside (the inner and
/// outer key blocks) and the block buffer overwrite themselves with zeros when dropped, through
/// volatile writes the compiler cannot skip. That holds for the key state kept here and for the
/// copy each request makes and consumes. The one copy neither wipes is the padded key block
/// `hmac` builds on the stack in [`HmacKey::new`], once per secret at start-up.
#[derive(Clone)]
pub(crate) struct HmacKey(Hmac<Sha256>);

// A build in which the SHA-256 state would not wipe itself fails here, rather than leave key
// states in freed memory.
const _: fn() = || {
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    wiped_on_drop::<<Sha256 as hmac::EagerHash>::Core>();
    wiped_on_drop::<hmac::digest::block_api::Buffer<<Sha256 as hmac::EagerHash>::Core>>();
};

impl HmacKey {
    /// Checks `secret` and computes its key state.
    ///
    /// The whole string, prefix included, is the key: that is what Ringyo's Node example does
    /// with `createHmac('sha256', secret)`.
    pub(crate) fn new(secret: &str) -> Result<Self, SecretError> {
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        if secret.trim() != secret {
            return Err(SecretError::SurroundingWhitespace);
        }
        if !secret.starts_with(SECRET_PREFIX) {
            tracing::warn!(
                "webhook secret does not start with `whsec_`; accepted, but Ringyo's generated \
                 secrets do: check that it is the endpoint's signing secret, not an API key"
            );
        }
        Ok(Self::from_key(secret.as_bytes()))
    }

    /// The key state for `key`, with none of [`new`](Self::new)'s checks or warnings: for keys
    /// the crate makes itself (the decoy), which are no Ringyo secret and must not be warned
    /// about as if a user had configured them.
    pub(crate) fn from_key(key: &[u8]) -> Self {
        Self(Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length"))
    }

    /// The HMAC-SHA256 of `body`.
    pub(crate) fn mac(&self, body: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn a_secret_variable_that_is_not_utf8_is_refused_without_its_value() {
        use std::os::unix::ffi::OsStrExt;
        // A name of this test's own: no other test reads or writes it.
        let variable = "RINGYO_TEST_GARBLED_SECRET_VARIABLE";
        std::env::set_var(variable, std::ffi::OsStr::from_bytes(b"whsec_hunter2\xff"));
        let err = from_env(variable).unwrap_err();
        assert_eq!(err, SecretError::NotUnicode { variable });
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        // What `std::env::var` would have printed.
        let std_err = std::env::var(variable).unwrap_err().to_string();
        assert!(std_err.contains("hunter2"), "{std_err}");
        assert_eq!(
            from_env("RINGYO_TEST_UNSET_SECRET_VARIABLE"),
            Err(SecretError::NotSet {
                variable: "RINGYO_TEST_UNSET_SECRET_VARIABLE"
            })
        );
    }

    /// `Error: Empty` from a `main` that returned the error said which variable to fix.
    #[test]
    fn an_empty_variable_is_named() {
        // A name of this test's own: no other test reads or writes it.
        let variable = "RINGYO_TEST_EMPTY_SECRET_VARIABLE";
        std::env::set_var(variable, "");
        let err = from_env(variable).unwrap_err();
        assert_eq!(err, SecretError::EmptyVariable { variable });
        assert!(err.to_string().starts_with(variable), "{err}");
        assert!(format!("{err:?}").contains(variable), "{err:?}");
    }

    /// `Error: SurroundingWhitespace` said neither which variable nor showed the value.
    #[test]
    fn a_variable_with_a_trailing_newline_is_named_and_not_repeated() {
        let variable = "RINGYO_TEST_NEWLINE_SECRET_VARIABLE";
        std::env::set_var(variable, "whsec_abc\n");
        let err = from_env(variable).unwrap_err();
        assert_eq!(err, SecretError::WhitespaceInVariable { variable });
        assert!(err.to_string().starts_with(variable), "{err}");
        assert!(!err.to_string().contains("abc"), "{err}");
    }

    use super::*;

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(HmacKey::new("").err(), Some(SecretError::Empty));
        for secret in [" whsec_x", "whsec_x\n", "whsec_x\r\n", "\twhsec_x"] {
            assert_eq!(
                HmacKey::new(secret).err(),
                Some(SecretError::SurroundingWhitespace)
            );
        }
        assert!(HmacKey::new("my-own-secret").is_ok());
    }

    #[test]
    fn key_state_gives_the_rfc_4231_answer() {
        // RFC 4231, test case 2: key "Jefe".
        let mac = HmacKey::new("Jefe")
            .unwrap()
            .mac(b"what do ya want for nothing?");
        assert_eq!(
            const_hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
