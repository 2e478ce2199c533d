//! Percent-encoding as IoT Hub expects it (RFC 3986): property bags, SAS audiences and user-name query values.
//!
//! Only the unreserved set `A–Z a–z 0–9 - . _ ~` is left as is; everything else, `/` and space included, becomes
//! `%XX` with upper-case hex. A space is `%20`, never `+`: `+` is an MQTT wildcard and may not appear in a PUBLISH
//! topic (azure-iot-sdk-java PR #775; the Python SDK: "DO NOT use quote_plus").

use thiserror::Error;

/// Why a percent-encoded string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// A `%` not followed by two hex digits.
    #[error("bad percent escape at byte {position}: '%' must be followed by two hex digits")]
    BadEscape { position: usize },
    /// The decoded bytes are not UTF-8.
    #[error("the decoded text is not valid UTF-8")]
    NotUtf8,
}

/// True for the RFC 3986 unreserved characters, which are never encoded.
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Encodes every byte of `s` outside the unreserved set as `%XX`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    encode_into(s, &mut out);
    out
}

/// Appends the query pair `key=value` to `out`, after a `&` unless `out` is empty; `value` is percent-encoded
/// ([`encode`]), `key` is written as it is (the callers' keys are fixed ASCII names).
pub fn push_query_pair(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(key);
    out.push('=');
    encode_into(value, out);
}

/// Like [`encode`], appending to `out`.
pub fn encode_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes. `+` is left as `+` (this is not form encoding).
pub fn decode(s: &str) -> Result<String, DecodeError> {
    let bytes = s.as_bytes();
    if !bytes.contains(&b'%') {
        return Ok(s.to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(DecodeError::BadEscape { position: i }),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_reserved_and_space() {
        assert_eq!(encode("a b/c:d#e+f"), "a%20b%2Fc%3Ad%23e%2Bf");
        assert_eq!(encode("$.mid"), "%24.mid");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("A-z_0.9~"), "A-z_0.9~");
    }

    #[test]
    fn decodes_both_cases_and_rejects_bad_escapes() {
        assert_eq!(decode("%24.mid").unwrap(), "$.mid");
        assert_eq!(decode("a%2fb%2Fc").unwrap(), "a/b/c");
        assert_eq!(decode("1+1").unwrap(), "1+1");
        assert_eq!(decode("50%"), Err(DecodeError::BadEscape { position: 2 }));
        assert_eq!(decode("%zz"), Err(DecodeError::BadEscape { position: 0 }));
        assert_eq!(decode("%FF"), Err(DecodeError::NotUtf8));
    }

    proptest! {
        #[test]
        fn round_trip(s in any::<String>()) {
            let e = encode(&s);
            prop_assert!(e.bytes().all(|b| is_unreserved(b) || b == b'%' || b.is_ascii_hexdigit()));
            prop_assert_eq!(decode(&e).unwrap(), s);
        }
    }
}
