//! Lowercase hex: the workspace's one hex codec. User ids on the wire ([`crate::UserId`]), the
//! hashes and keys in a request's signing string ([`crate::auth`]), and ids in logs and `Debug`
//! output (grove-proto's `GroupId` and `ChainId`) are all written and read here.
//!
//! Encoding writes lowercase; decoding accepts either case and refuses anything else (odd
//! length, a non-hex character) with `None`. Never panics.

use std::fmt;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    Hex(bytes).to_string()
}

/// The bytes of a hex string (either case), or `None` if it has an odd length or a character
/// that is not a hex digit.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let digits = s.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits.chunks_exact(2).map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?)).collect()
}

/// The `N` bytes of a hex string of exactly `2 * N` digits, or `None`.
pub fn decode_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    <[u8; N]>::try_from(decode(s)?).ok()
}

/// Writes `bytes` as lowercase hex through [`fmt::Display`], without allocating.
#[derive(Clone, Copy)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            let pair = [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]];
            // Both bytes are ASCII digits or letters.
            f.write_str(std::str::from_utf8(&pair).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let s = encode(&all);
        assert_eq!(s.len(), 512);
        assert!(s.starts_with("000102") && s.ends_with("fdfeff"), "{s}");
        assert_eq!(decode(&s), Some(all.clone()));
        assert_eq!(decode(&s.to_uppercase()), Some(all));
        assert_eq!(Hex(&[0xab, 0x01]).to_string(), "ab01");
    }

    #[test]
    fn refuses_what_is_not_hex() {
        assert_eq!(decode(""), Some(Vec::new()));
        assert_eq!(decode("abc"), None);
        assert_eq!(decode("zz"), None);
        assert_eq!(decode("a "), None);
        assert_eq!(decode("é1"), None);
        assert_eq!(decode_array::<2>("abcd"), Some([0xab, 0xcd]));
        assert_eq!(decode_array::<2>("abcdef"), None);
        assert_eq!(decode_array::<2>("ab"), None);
    }
}
