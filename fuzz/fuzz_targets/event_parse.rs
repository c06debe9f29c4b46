//! The envelope's head scan and the typed parse, on any signed bytes: no panic, and what the
//! typed parse and a generic parse read of the event agrees, or one of them refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringyo_webhook::{Event, RingyoEvent, Verifier};

fuzz_target!(|data: &[u8]| {
    // Freshness on: the head scan reads `timestamp` before the full parse runs.
    let fresh = Verifier::new("whsec_fuzz").unwrap();
    let header = fresh.sign(data).to_string();
    let typed = RingyoEvent::<Event>::verify(&fresh, data, &header);
    let generic = RingyoEvent::<serde_json::Value>::verify(&fresh, data, &header);
    if let (Ok(typed), Ok(generic)) = (&typed, &generic) {
        assert_eq!(typed.kind, generic.kind);
        assert_eq!(typed.timestamp, generic.timestamp);
        assert_eq!(typed.delivery_id, generic.delivery_id);
    }
    // Without the freshness check, the head scan is skipped: the parse alone must hold.
    let any_time = fresh.clone().skip_timestamp_check();
    let _ = RingyoEvent::<Event>::verify(&any_time, data, &header);
});
