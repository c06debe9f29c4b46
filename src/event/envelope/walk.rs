//! [`Walk`]: any JSON value read as serde_json reads it into a `Value`, and built into nothing.
//!
//! The layer is the door, and the inbox's worker reads later what it let in: a 2xx is Ringyo's
//! last word on a delivery, so one the worker cannot read is lost. So the door reads every value
//! it does not keep with the same parser's limits rather than skipping it: serde_json checks its
//! nesting limit on every array and object (127 levels; refused rather than parsed without the
//! limit, which would let a body of brackets overflow the stack of whoever builds it), parses
//! every number (refusing one past the range of an `f64`, such as `1e400`: Ringyo's Node sender
//! cannot write one, as `JSON.stringify` writes infinities as `null`, so only someone else's
//! sender can) and every string, as a `Value` would.

use std::{borrow::Cow, fmt};

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What [`Walk`] found, as far as the typed models care.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) enum Walked {
    /// `null`, or nothing (no `data`).
    #[default]
    Null,
    /// An object, and whether one of its own keys appears twice, and its own string `id` and
    /// `call_id` (when asked to check its own keys).
    Object {
        repeats: bool,
        ids: Ids,
    },
    Other,
}

/// An object's own string `id` and `call_id`, which name the event's
/// [`Subject`](crate::Subject); each `None` when absent or not a string, as the models read
/// them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Ids {
    pub(super) id: Option<String>,
    pub(super) call_id: Option<String>,
}

/// Reads any JSON value as a `Value` would be read.
///
/// It recurses once per level of the JSON, which serde_json bounds (its recursion limit is
/// checked before a visitor is called), so the stack holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Walk {
    /// Whether an object's own keys are checked for repeats (`data`'s, which the models read
    /// into fields that refuse a second value).
    own_keys: bool,
}

impl Walk {
    pub(super) const ANY: Self = Self { own_keys: false };
    pub(super) const OWN_KEYS: Self = Self { own_keys: true };
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Walked;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Walked, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = Walked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Walked, E> {
        Ok(Walked::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Walked, E> {
        Ok(Walked::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Walked, E> {
        Ok(Walked::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Walked, E> {
        Ok(Walked::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Walked, E> {
        Ok(Walked::Other)
    }
    fn visit_unit<E>(self) -> Result<Walked, E> {
        Ok(Walked::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Walked, A::Error> {
        while seq.next_element_seed(Self::ANY)?.is_some() {}
        Ok(Walked::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Walked, A::Error> {
        let mut ids = Ids::default();
        if !self.own_keys {
            while map.next_entry_seed(Self::ANY, Self::ANY)?.is_some() {}
            return Ok(Walked::Object {
                repeats: false,
                ids,
            });
        }
        // Unescaped, as serde matches field names; sorted rather than hashed, one allocation.
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let id = match &*key.0 {
                "id" => &mut ids.id,
                "call_id" => &mut ids.call_id,
                _ => {
                    map.next_value_seed(Self::ANY)?;
                    keys.push(key.0);
                    continue;
                }
            };
            // Built, as a `Value` reads it (a string, in practice a short one), to be kept if
            // it is a string.
            *id = match map.next_value::<serde_json::Value>()? {
                serde_json::Value::String(text) => Some(text),
                _ => None,
            };
            keys.push(key.0);
        }
        keys.sort_unstable();
        Ok(Walked::Object {
            repeats: keys.windows(2).any(|pair| pair[0] == pair[1]),
            ids,
        })
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(text: &str, seed: Walk) -> Result<Walked, serde_json::Error> {
        seed.deserialize(&mut serde_json::Deserializer::from_str(text))
    }

    #[test]
    fn own_keys_repeat_as_serde_matches_them_and_only_when_asked() {
        let object = |repeats| {
            Ok(Walked::Object {
                repeats,
                ids: Ids::default(),
            })
        };
        let cases = [
            (r#"{"id":1,"\u0069d":2}"#, Walk::OWN_KEYS, object(true)),
            (
                r#"{"id":1,"ID":2,"a":{"b":1,"b":2}}"#,
                Walk::OWN_KEYS,
                object(false),
            ),
            (r#"{"id":1,"id":2}"#, Walk::ANY, object(false)),
        ];
        for (text, seed, expected) in cases {
            assert_eq!(
                walk(text, seed).map_err(|err| err.to_string()),
                expected,
                "{text}"
            );
        }
        for (text, expected) in [
            ("null", Walked::Null),
            ("[]", Walked::Other),
            ("\"x\"", Walked::Other),
        ] {
            assert_eq!(walk(text, Walk::OWN_KEYS).unwrap(), expected, "{text}");
        }
    }

    /// The subject's ids are read as the models read them: a string, unescaped, at the top
    /// level only; anything else is none.
    #[test]
    fn own_string_ids_are_kept_and_nothing_else() {
        let ids = |text| match walk(text, Walk::OWN_KEYS).unwrap() {
            Walked::Object { ids, .. } => (ids.id, ids.call_id),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ids(r#"{"\u0069d":"call_\u0031","call_id":"c2"}"#),
            (Some("call_1".into()), Some("c2".into()))
        );
        assert_eq!(ids(r#"{"id":7,"call_id":["x"]}"#), (None, None));
        assert_eq!(ids(r#"{"nested":{"id":"x"},"ID":"y"}"#), (None, None));
        let Walked::Object { ids, .. } = walk(r#"{"id":"x"}"#, Walk::ANY).unwrap() else {
            panic!()
        };
        assert_eq!(ids, Ids::default(), "only asked of `data`");
    }

    #[test]
    fn walking_holds_to_what_a_value_reads() {
        for text in [
            "[1e400]",
            r#"{"a":-1e400}"#,
            &format!("{}1{}", "[".repeat(128), "]".repeat(128)),
        ] {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_err(),
                "{text}"
            );
            assert!(walk(text, Walk::ANY).is_err(), "{text}");
        }
        assert!(walk(
            &format!("{}1{}", "[".repeat(127), "]".repeat(127)),
            Walk::ANY
        )
        .is_ok());
    }
}
