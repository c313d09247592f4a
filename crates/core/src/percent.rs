//! Percent-encoding (RFC 3986), in the few forms the gateway needs: decoding a path segment or a
//! query value, and encoding a path segment as AWS SDKs do (everything but unreserved characters).

/// Decodes `%XX` escapes; invalid escapes are kept as written. Not UTF-8 → lossy.
pub fn decode(s: &str) -> String {
    decode_with(s, false)
}

/// As [`decode`], and `+` is a space (`application/x-www-form-urlencoded` query values).
pub fn decode_query(s: &str) -> String {
    decode_with(s, true)
}

fn decode_with(s: &str, plus_is_space: bool) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes everything but RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) and `keep`.
pub fn encode_keeping(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
            out.push(char::from(b"0123456789ABCDEF"[(b & 15) as usize]));
        }
    }
    out
}

/// A path segment as AWS SDKs encode a label (`us.anthropic.x-v1:0` → `us.anthropic.x-v1%3A0`).
pub fn encode(s: &str) -> String {
    encode_keeping(s, b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_bad_escapes() {
        for s in ["us.anthropic.claude-v1:0", "a b/c?d=é", "100%", "%zz"] {
            assert_eq!(decode(&encode(s)), s);
        }
        assert_eq!(encode("v1:0"), "v1%3A0");
        assert_eq!(encode_keeping("secret.*", b"*"), "secret.*");
        assert_eq!(decode("a%2Fb+c%"), "a/b+c%");
        assert_eq!(decode_query("a%2Fb+c"), "a/b c");
    }
}
