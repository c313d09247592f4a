//! A JWT is a credential when it names someone or something: its payload carries an identity,
//! an audience or a lifetime. `{"confidence":0.8}` signed with a demo key is a sample.
//!
//! Fail closed: only a token whose header and payload both decode to JSON objects, whose header
//! has `alg`, and whose payload has none of the claims below is set aside. Anything that does not
//! decode stays a finding.

/// Words that make a claim name an identity, an audience, a lifetime or a grant: the registered
/// claims (RFC 7519 §4.1) and what IdPs and APIs use. A key counts when one of its words
/// ([`crate::words`]: letters, split at anything else and at camelCase humps) is here, or when it ends in `id`
/// (`userID`, `customerid`), at any depth of the payload.
const CLAIM_WORDS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "azp",
    "scope",
    "scopes",
    "scp",
    "id",
    "uid",
    "uuid",
    "guid",
    "user",
    "username",
    "email",
    "mail",
    "login",
    "role",
    "roles",
    "group",
    "groups",
    "tenant",
    "tid",
    "oid",
    "org",
    "organization",
    "account",
    "acct",
    "session",
    "sid",
    "key",
    "token",
    "secret",
    "perm",
    "perms",
    "permissions",
    "entitlements",
    "client",
    "upn",
    "nonce",
    "name",
    "admin",
    "auth",
    "authorities",
    "grant",
    "grants",
    "identity",
];

/// True when `token` decodes to a JWT whose payload names nobody and grants nothing.
pub(crate) fn claims_nobody(token: &[u8]) -> bool {
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Some(header), Some(payload)) = (object(header), object(payload)) else {
        return false;
    };
    header.contains_key("alg") && !names_someone(&payload, 0)
}

fn names_someone(map: &serde_json::Map<String, serde_json::Value>, depth: usize) -> bool {
    map.iter().any(|(key, value)| {
        claim_key(key)
            || match value {
                // Nesting is bounded by serde_json's own recursion limit; this stops far earlier.
                serde_json::Value::Object(inner) if depth < 8 => names_someone(inner, depth + 1),
                serde_json::Value::Array(items) if depth < 8 => items.iter().any(|item| match item {
                    serde_json::Value::Object(inner) => names_someone(inner, depth + 1),
                    _ => false,
                }),
                _ => false,
            }
    })
}

fn claim_key(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with("id")
        || crate::words(key.as_bytes())
            .iter()
            .any(|w| CLAIM_WORDS.iter().any(|c| c.as_bytes() == w))
}

fn object(part: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_slice(&base64url(part)?).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Unpadded base64url (also accepts the standard alphabet); `None` on any other byte.
fn base64url(input: &[u8]) -> Option<Vec<u8>> {
    let input = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_names_nobody_is_a_sample() {
        // {"alg":"HS256","typ":"JWT"} . {"confidence":0.8}
        let sample = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjb25maWRlbmNlIjowLjh9.kvRPfjAhLhtRTczoRgctVGp7KY1QVH3UBZM-gM0x8ec";
        assert!(claims_nobody(sample));
        // {"alg":"HS256"} . {"sub":"1234567890"}
        let real = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert!(!claims_nobody(real));
        assert!(
            !claims_nobody(b"eyJhbGciOi.eyJzdWIi!!.sig"),
            "what does not decode stays a finding"
        );
    }
}
