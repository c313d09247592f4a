//! AWS credentials for Bedrock, and signing a request with them (AWS Signature Version 4).
//!
//! The sealed `bedrock` credential is either an access key pair — `ACCESS_KEY_ID:SECRET[:SESSION]`
//! (`conduit credentials set bedrock --from-aws-env`) — which signs every request with SigV4 over
//! its method, path, query, `host`, `x-amz-date` and the SHA-256 of the body, or a Bedrock API key,
//! sent as `Authorization: Bearer`. Signing uses the `aws-sigv4` crate; the secret lives in a
//! [`Zeroizing`] buffer for the duration of one request.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use zeroize::Zeroizing;

/// The service name Bedrock's runtime and control plane are signed for.
pub const SIGNING_NAME: &str = "bedrock";

/// A parsed `bedrock` credential.
pub enum AwsCredential {
    /// An access key pair, optionally temporary.
    KeyPair {
        /// `AKIA…` / `ASIA…`.
        access_key_id: String,
        /// The secret access key.
        secret: Zeroizing<String>,
        /// STS session token for temporary credentials.
        session_token: Option<Zeroizing<String>>,
    },
    /// A Bedrock API key (`Authorization: Bearer`).
    ApiKey(Zeroizing<String>),
}

impl std::fmt::Debug for AwsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwsCredential::KeyPair { access_key_id, .. } => {
                write!(f, "KeyPair({}…)", &access_key_id[..access_key_id.len().min(4)])
            }
            AwsCredential::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
        }
    }
}

impl AwsCredential {
    /// Parses `ACCESS_KEY_ID:SECRET[:SESSION_TOKEN]`, or a Bedrock API key (no `:`). Errors never
    /// contain the secret.
    pub fn parse(text: &str) -> Result<AwsCredential, String> {
        let text = text.trim();
        if !text.contains(':') {
            return Ok(AwsCredential::ApiKey(Zeroizing::new(text.to_string())));
        }
        let mut parts = text.splitn(3, ':');
        let id = parts.next().unwrap_or_default();
        let secret = parts.next().unwrap_or_default();
        let token = parts.next();
        if id.len() < 3 || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return Err(format!(
                "the bedrock credential's access key id ({} characters before the first ':') is not shaped like one (upper-case letters and digits, e.g. AKIA…); expected ACCESS_KEY_ID:SECRET[:SESSION_TOKEN] or a Bedrock API key",
                id.len()
            ));
        }
        if secret.is_empty() || token.is_some_and(str::is_empty) {
            return Err(
                "the bedrock credential has an empty secret or session token; expected ACCESS_KEY_ID:SECRET[:SESSION_TOKEN]"
                    .into(),
            );
        }
        Ok(AwsCredential::KeyPair {
            access_key_id: id.to_string(),
            secret: Zeroizing::new(secret.to_string()),
            session_token: token.map(|t| Zeroizing::new(t.to_string())),
        })
    }
}

/// Signs a request for `region`, returning the headers to add (`authorization`, `x-amz-date`,
/// `x-amz-security-token`, `x-amz-content-sha256`), the authorization marked sensitive. `headers`
/// are the ones the signature covers besides `host` (taken from `uri`).
pub fn sign_request(
    credential: &AwsCredential,
    region: &str,
    method: &Method,
    uri: &Uri,
    headers: &[(&str, &str)],
    body: &[u8],
    now: SystemTime,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let (access_key_id, secret, session_token) = match credential {
        AwsCredential::KeyPair {
            access_key_id,
            secret,
            session_token,
        } => (access_key_id, secret, session_token),
        AwsCredential::ApiKey(key) => {
            let text = Zeroizing::new(format!("Bearer {}", key.as_str()));
            let mut value = HeaderValue::from_str(&text)
                .map_err(|_| "the Bedrock API key contains characters not allowed in a header".to_string())?;
            value.set_sensitive(true);
            return Ok(vec![(http::header::AUTHORIZATION, value)]);
        }
    };
    let identity = Credentials::new(
        access_key_id.as_str(),
        secret.as_str(),
        session_token.as_ref().map(|t| t.to_string()),
        None,
        "conduit-sealed",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| format!("SigV4 parameters: {e}"))?
        .into();
    let uri_text = uri.to_string();
    let signable = SignableRequest::new(
        method.as_str(),
        &uri_text,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("SigV4 request: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("SigV4 signing: {e}"))?
        .into_parts();
    let mut out = Vec::with_capacity(4);
    for (name, value) in instructions.headers() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("SigV4 header name {name:?}"))?;
        let mut value = HeaderValue::from_str(value).map_err(|_| format!("SigV4 header {name} is not header text"))?;
        if name == http::header::AUTHORIZATION || name == "x-amz-security-token" {
            value.set_sensitive(true);
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Headers a client's own signature brought; dropped before Conduit signs (they would be stale).
pub fn is_client_signing_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-amz-date" | "x-amz-content-sha256" | "x-amz-security-token" | "x-amz-user-agent" | "amz-sdk-request"
    )
}

/// Headers covered by Conduit's signature besides `host` (taken from the request being sent).
pub fn signed_headers(headers: &HeaderMap) -> Vec<(&str, &str)> {
    ["content-type", "accept"]
        .into_iter()
        .filter_map(|n| headers.get(n).and_then(|v| v.to_str().ok()).map(|v| (n, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_never_echoes_the_secret() {
        let c = AwsCredential::parse("AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").unwrap();
        assert!(matches!(
            &c,
            AwsCredential::KeyPair {
                session_token: None,
                ..
            }
        ));
        assert!(!format!("{c:?}").contains("wJal"));
        let c = AwsCredential::parse("ASIAIOSFODNN7EXAMPLE:secret:token").unwrap();
        assert!(matches!(
            &c,
            AwsCredential::KeyPair {
                session_token: Some(_),
                ..
            }
        ));
        assert!(matches!(
            AwsCredential::parse("ABSKQmVkcm9ja0FQSUtleQ==").unwrap(),
            AwsCredential::ApiKey(_)
        ));
        let err = AwsCredential::parse("akia-lower:supersecretvalue").unwrap_err();
        assert!(err.contains("access key id") && !err.contains("supersecret"), "{err}");
        assert!(AwsCredential::parse("AKIAIOSFODNN7EXAMPLE:").is_err());
    }

    /// The signature of AWS's own documented example (sigv4 test suite "get-vanilla").
    #[test]
    fn signs_like_the_aws_test_suite() {
        let c = AwsCredential::parse("AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").unwrap();
        let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let uri: Uri = "https://example.amazonaws.com/".parse().unwrap();
        let headers = sign_request(&c, "us-east-1", &Method::GET, &uri, &[], b"", when).unwrap();
        let auth = headers.iter().find(|(n, _)| n == http::header::AUTHORIZATION).unwrap();
        let auth = auth.1.to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request"));
        assert!(
            auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date"),
            "{auth}"
        );
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "x-amz-date" && v == "20150830T123600Z")
        );
    }
}
