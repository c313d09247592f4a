//! A JWT is a credential when it names someone or something: its payload carries an identity,
//! an audience or a lifetime. `{"confidence":0.8}` signed with a demo key is a sample.
//!
//! Fail closed: only a token whose header and payload both decode to JSON objects, whose header
//! has `alg`, and whose payload has none of the claims below is set aside. Anything that does not
//! decode stays a finding.

/// Registered claims (RFC 7519 §4.1) and the identity / authorisation claims IdPs and APIs use.
const CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "azp",
    "scope",
    "scp",
    "client_id",
    "cid",
    "uid",
    "user_id",
    "userid",
    "userId",
    "user",
    "username",
    "preferred_username",
    "email",
    "role",
    "roles",
    "groups",
    "tid",
    "oid",
    "upn",
    "sid",
    "session_id",
    "sessionId",
    "auth_time",
    "nonce",
    "acct",
    "account",
    "account_id",
    "org_id",
    "tenant",
    "tenant_id",
    "permissions",
    "entitlements",
    "api_key",
    "key",
    "token",
    "secret",
    "name",
    "id",
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
    header.contains_key("alg") && !CLAIMS.iter().any(|c| payload.contains_key(*c))
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
