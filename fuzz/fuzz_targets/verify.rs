//! The verifier: any body verifies against its own signature, and against a signature made of
//! arbitrary bytes only if those bytes are that signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringyo_webhook::{Signature, Verifier};

fuzz_target!(|data: &[u8]| {
    let verifier = Verifier::new("whsec_fuzz").unwrap();
    let (header, body) = data.split_at(data.len().min(64));
    let own = verifier.sign(body);
    assert!(verifier.verify(body, &own).is_ok());
    if let Ok(signature) = Signature::parse(header) {
        let same = signature.to_string() == own.to_string();
        assert_eq!(verifier.verify(body, &signature).is_ok(), same);
    }
});
