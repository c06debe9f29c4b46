//! The `x-ringyo-signature` parser: any bytes give a signature or an error, never a panic,
//! and a parsed signature prints back to a value that parses to the same signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringyo_webhook::Signature;

fuzz_target!(|data: &[u8]| {
    if let Ok(signature) = Signature::parse(data) {
        let printed = signature.to_string();
        // `Signature` has no `==` (comparisons are constant time, in the verifier): compare text.
        let again = Signature::parse(printed.as_bytes()).map(|again| again.to_string());
        assert_eq!(again.ok(), Some(printed));
    }
});
