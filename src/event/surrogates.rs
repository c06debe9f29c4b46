//! Lone UTF-16 surrogate escapes (`\ud83d` without its `\ude00`), read as U+FFFD.
//!
//! JavaScript strings are UTF-16, and cutting one by length (`text.slice(0, 100)`) can split an
//! emoji's surrogate pair; `JSON.stringify` then writes the half it kept as an escape,
//! `"\ud83d"` (ECMAScript 2019, "well-formed JSON.stringify"). RFC 8259's grammar allows such an
//! escape but names no character for it, `JSON.parse` accepts it, and serde_json refuses the
//! whole body ("lone leading surrogate in hex escape", or "unexpected end of hex escape"). Ringyo
//! sends from Node, so a transcript cut mid-emoji is a real delivery: it is read with U+FFFD in
//! place of the half, as a browser's `TextEncoder` would write it, rather than refused.
//!
//! The rewrite is six bytes for six (`\uFFFD`), so every position serde_json reports stays
//! true, and it touches nothing else: a body without a lone surrogate is returned as it is,
//! after one search for backslashes.

use std::borrow::Cow;

/// `text` with each lone surrogate escape replaced by `\uFFFD`; borrowed when there is none.
///
/// Escapes are followed from backslash to backslash, so `\\ud83d` (an escaped backslash, then
/// the letters `ud83d`) is left alone. A backslash outside a string is a syntax error however
/// it is read, so strings need not be tracked.
pub(crate) fn replace_lone(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    while let Some(found) = text[at..].find('\\') {
        let escape = at + found;
        let Some(unit) = unit_at(bytes, escape) else {
            // Past the escaped character when it is a backslash (so `\\u` is no escape);
            // otherwise past the backslash alone, which stays on a character boundary.
            at = escape
                + if bytes.get(escape + 1) == Some(&b'\\') {
                    2
                } else {
                    1
                };
            continue;
        };
        at = escape + 6;
        let lone = match unit {
            0xD800..=0xDBFF => match unit_at(bytes, escape + 6) {
                Some(0xDC00..=0xDFFF) => {
                    at = escape + 12;
                    false
                }
                _ => true,
            },
            // A trailing half not taken by a leading one just before it.
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if lone {
            let out = out.get_or_insert_with(|| bytes.to_vec());
            out[escape..escape + 6].copy_from_slice(b"\\uFFFD");
        }
    }
    match out {
        // ASCII replaced ASCII, so the text is still UTF-8.
        Some(out) => Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| text.to_owned())),
        None => Cow::Borrowed(text),
    }
}

/// The UTF-16 unit of a `\uXXXX` escape starting at `at`, if there is one.
fn unit_at(bytes: &[u8], at: usize) -> Option<u16> {
    let escape = bytes.get(at..at + 6)?;
    if escape[..2] != *b"\\u" {
        return None;
    }
    let hex = std::str::from_utf8(&escape[2..]).ok()?;
    // `from_str_radix` takes a leading `+`, which JSON's escapes do not.
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_halves_become_the_replacement_character_and_pairs_stay() {
        let cases = [
            // Cut mid-emoji, as Node's JSON.stringify writes it.
            (r#""hi \ud83d""#, r#""hi \uFFFD""#),
            (r#""\ude00 after""#, r#""\uFFFD after""#),
            (r#""\ud83d\ude00""#, r#""\ud83d\ude00""#),
            (r#""\uD83D\uDE00""#, r#""\uD83D\uDE00""#),
            // A leading half followed by another leading half, then its pair.
            (r#""\ud83d\ud83d\ude00""#, r#""\uFFFD\ud83d\ude00""#),
            // A leading half followed by something other than a trailing one.
            (r#""\ud83d\u0041\n""#, r#""\uFFFD\u0041\n""#),
            (r#""\ud83d\n""#, r#""\uFFFD\n""#),
            (r#"{"\udc00":1}"#, r#"{"\uFFFD":1}"#),
            // An escaped backslash, then text: no escape at all.
            (r#""\\ud83d""#, r#""\\ud83d""#),
            (r#""\\\ud83d""#, r#""\\\uFFFD""#),
            // Not escapes of a surrogate, or cut short: left for the parser to judge.
            (r#""\u00e9 \ud8""#, r#""\u00e9 \ud8""#),
            (r#""\u+d83""#, r#""\u+d83""#),
            ("\\", "\\"),
            ("\\\u{e9}\\ud83d", "\\\u{e9}\\uFFFD"),
        ];
        for (text, expected) in cases {
            assert_eq!(replace_lone(text), expected, "{text}");
            assert_eq!(replace_lone(text).len(), text.len());
        }
    }

    #[test]
    fn text_without_a_lone_half_is_borrowed() {
        for text in [r#"{"a":"\n\"\u00e9"}"#, r#""\ud83d\ude00""#, "plain"] {
            assert!(matches!(replace_lone(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn serde_json_reads_the_replacement_where_it_refused_the_half() {
        let text = r#"["\ud83d", "ok \ud83d\ude00"]"#;
        assert!(serde_json::from_str::<Vec<String>>(text).is_err());
        let read: Vec<String> = serde_json::from_str(&replace_lone(text)).unwrap();
        assert_eq!(read, ["\u{FFFD}", "ok \u{1F600}"]);
    }
}
