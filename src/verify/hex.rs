//! 64 hex digits as 32 bytes, exactly: the one reader of the signature header's digest and of
//! delivery ids.

/// The 32 bytes that exactly 64 hex digits (either case, mixed too) spell; `None` for anything
/// else. The length is checked first: `const_hex` would also take a `0x` before the digits,
/// which neither format has.
pub(super) fn decode_32(digits: &[u8]) -> Option<[u8; 32]> {
    if digits.len() != 64 {
        return None;
    }
    let mut bytes = [0; 32];
    const_hex::decode_to_slice(digits, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exactly_64_hex_digits_decode() {
        let digits = "0123456789abcdefABCDEF".repeat(3);
        let digits = &digits.as_bytes()[..64];
        assert!(decode_32(digits).is_some());
        let prefixed = format!("0x{}", &"ab".repeat(32)[..62]);
        let long = format!("0x{}", "ab".repeat(32));
        for bad in [
            &b""[..],
            &digits[..63],
            prefixed.as_bytes(),
            long.as_bytes(),
            &[b'g'; 64][..],
        ] {
            assert_eq!(decode_32(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
