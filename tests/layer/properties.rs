//! Properties of verification and parsing, over generated bodies, secrets and events.
//!
//! Any body signed with any configured secret verifies, and says which; any single-byte
//! change to the body or the signature, any other secret, any truncation or extension fails;
//! any object with unknown events or unknown fields deserializes.

use proptest::prelude::*;
use ringyo_webhook::{
    testing::sign, Clock, Event, EventKind, RingyoEvent, Signature, SignatureError, SystemClock,
    Verifier,
};
use serde_json::{json, Value};

/// A secret as Ringyo issues them: `whsec_` and a run of letters and digits.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{1,40}".prop_map(|tail| format!("whsec_{tail}"))
}

/// A verifier with `secrets`, in order.
fn verifier(secrets: &[String]) -> Verifier {
    secrets[1..]
        .iter()
        .fold(Verifier::new(&secrets[0]).unwrap(), |verifier, secret| {
            verifier.add_secret(secret).unwrap()
        })
        .skip_timestamp_check()
}

fn verify(verifier: &Verifier, body: &[u8], header: &str) -> Result<usize, SignatureError> {
    let signature = Signature::parse(header)?;
    verifier
        .verify(body, &signature)
        .map(|verified| verified.secret_index())
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |n| n.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_body_signed_with_any_configured_secret_verifies_and_says_which(
        secrets in prop::collection::vec(secret(), 1..4),
        body in prop::collection::vec(any::<u8>(), 0..2048),
        pick in any::<prop::sample::Index>(),
    ) {
        let signer = pick.get(&secrets);
        let header = sign(signer, &body).unwrap();
        let first = secrets.iter().position(|secret| secret == signer).unwrap();
        prop_assert_eq!(verify(&verifier(&secrets), &body, &header), Ok(first));
    }

    #[test]
    fn any_single_byte_change_to_the_body_fails(
        secret in secret(),
        body in prop::collection::vec(any::<u8>(), 1..2048),
        at in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let header = sign(&secret, &body).unwrap();
        let mut changed = body.clone();
        changed[at.index(body.len())] ^= flip;
        prop_assert_eq!(
            verify(&verifier(&[secret]), &changed, &header),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_single_digit_change_to_the_signature_fails(
        secret in secret(),
        body in prop::collection::vec(any::<u8>(), 0..512),
        at in any::<prop::sample::Index>(),
        digit in 0..16u32,
    ) {
        let header = sign(&secret, &body).unwrap();
        let mut changed: Vec<char> = header.chars().collect();
        let at = at.index(changed.len());
        let replacement = char::from_digit(digit, 16).unwrap();
        prop_assume!(changed[at] != replacement);
        changed[at] = replacement;
        let changed: String = changed.into_iter().collect();
        prop_assert_eq!(
            verify(&verifier(&[secret]), &body, &changed),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn another_secret_a_truncation_or_an_extension_fails(
        secret in secret(),
        other in secret(),
        body in prop::collection::vec(any::<u8>(), 1..2048),
        extra in any::<u8>(),
    ) {
        prop_assume!(secret != other);
        let header = sign(&secret, &body).unwrap();
        let verifier = verifier(std::slice::from_ref(&other));
        prop_assert_eq!(verify(&verifier, &body, &header), Err(SignatureError::Mismatch));
        let verifier = self::verifier(&[secret]);
        prop_assert_eq!(
            verify(&verifier, &body[..body.len() - 1], &header),
            Err(SignatureError::Mismatch)
        );
        let mut longer = body.clone();
        longer.push(extra);
        prop_assert_eq!(verify(&verifier, &longer, &header), Err(SignatureError::Mismatch));
    }

    #[test]
    fn unknown_events_and_unknown_fields_always_deserialize(
        known in any::<prop::sample::Index>(),
        unknown in "[a-z]{1,10}\\.[a-z_]{1,12}",
        use_known in any::<bool>(),
        extra in prop::collection::btree_map("x_[a-z_]{0,10}", json_value(), 0..6),
        unknown_data in json_value(),
        top_level in prop::collection::btree_map("x_[a-z_]{0,10}", json_value(), 0..3),
    ) {
        let (name, data) = if use_known {
            // A known event: its model ignores fields it does not know.
            let name = known.get(EventKind::KNOWN).to_string();
            (name, Value::Object(extra.into_iter().collect()))
        } else {
            prop_assume!(!EventKind::KNOWN.contains(&unknown.as_str()));
            (unknown, unknown_data)
        };
        let mut envelope = json!({
            "event": name,
            "timestamp": SystemClock.now().to_rfc3339(),
            "data": data,
        });
        for (key, value) in top_level {
            envelope[key] = value;
        }
        let body = serde_json::to_vec(&envelope).unwrap();
        let secret = "whsec_properties".to_owned();
        let header = sign(&secret, &body).unwrap();
        let event = RingyoEvent::<Event>::verify(&Verifier::new(&secret).unwrap(), &body, &header);
        prop_assert!(event.is_ok(), "{:?} for {}", event.err(), String::from_utf8_lossy(&body));
        let event = event.unwrap();
        prop_assert_eq!(event.kind.as_str(), name.as_str());
        prop_assert_eq!(matches!(event.data, Event::Unknown { .. }), !use_known);
    }
}
