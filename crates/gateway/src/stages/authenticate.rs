//! **authenticate** — reads: `x-api-key`, or `Authorization: Bearer` (anthropic-py 2.x, OpenAI
//! clients). Decides: whether the stand-in key is well-formed, known, unrevoked and unexpired —
//! checked against the store on every request, so a revocation applies to the very next one.
//! Returns: the [`Principal`] the request is attributed to, or a 401 that says which check failed
//! and what to do. The presented key is never logged or echoed beyond its last four characters.

use http::HeaderMap;

use conduit_state::Principal;
use conduit_state::store::KeyStore;

use crate::error::{ErrorKind, GatewayError};
use crate::keys::{self, KeyHash, Malformed};

const HOW: &str = "send the Conduit key you were issued as x-api-key or `Authorization: Bearer` (Claude Code: ANTHROPIC_API_KEY; OpenAI clients: OPENAI_API_KEY)";

/// Authenticates the request's stand-in key.
pub async fn principal(keys: &dyn KeyStore, headers: &HeaderMap, now: i64) -> Result<Principal, GatewayError> {
    let token = presented_key(headers)?;
    let unauthenticated = |msg: String| GatewayError::client(ErrorKind::Unauthenticated, msg);
    match keys::check_format(token) {
        Ok(()) => {}
        Err(Malformed::Prefix) if looks_like_provider_key(token) => {
            return Err(unauthenticated(format!(
                "this is a provider API key, not a Conduit key: Conduit holds the provider key itself. Remove it from your environment and {HOW}; ask your platform team for a Conduit key (ck_…)"
            )));
        }
        Err(Malformed::Prefix) => {
            return Err(unauthenticated(format!(
                "the API key is not a Conduit key (Conduit keys start with \"ck_\"); {HOW}"
            )));
        }
        Err(Malformed::Shape | Malformed::Checksum) => {
            return Err(unauthenticated(format!(
                "the Conduit key ending in {:?} is malformed (wrong length or checksum: a truncated or mistyped copy); copy it again, or ask for a new one",
                tail(token)
            )));
        }
    }
    let record = keys
        .by_hash(&KeyHash::of(token))
        .await
        .map_err(|e| {
            GatewayError::new(
                ErrorKind::StoreUnavailable,
                crate::error::Fault::Gateway,
                "the gateway cannot check keys right now (its store is not answering); retry shortly",
            )
            .with_cause(e)
        })?
        .ok_or_else(|| {
            unauthenticated(format!(
                "the Conduit key ending in {:?} is not known to this gateway; ask your platform team for a key",
                tail(token)
            ))
        })?;
    if let Some(reason) = record.unusable_reason(now) {
        return Err(unauthenticated(format!(
            "Conduit key {} (owner {}) {reason}; ask your platform team for a new key",
            record.id, record.owner
        )));
    }
    Ok(Principal::of(record))
}

fn presented_key(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let bad_header = |name: &str| {
        GatewayError::client(
            ErrorKind::Unauthenticated,
            format!("the {name} header is not valid text; {HOW}"),
        )
    };
    // `x-api-key` (Anthropic), `api-key` (Azure OpenAI clients).
    for name in ["x-api-key", "api-key"] {
        if let Some(v) = headers.get(name) {
            let v = v.to_str().map_err(|_| bad_header(name))?.trim();
            if !v.is_empty() {
                return Ok(v);
            }
        }
    }
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| bad_header("authorization"))?.trim();
        if v.starts_with("AWS4-HMAC-SHA256") {
            return Err(GatewayError::client(
                ErrorKind::Unauthenticated,
                "this request is signed with AWS credentials, which Conduit does not take from engineers: use your Conduit key as a Bedrock API key instead — set AWS_BEARER_TOKEN_BEDROCK=ck_… (and unset AWS_ACCESS_KEY_ID / AWS_PROFILE for this tool); Conduit signs for AWS itself",
            ));
        }
        let token = v
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| {
                GatewayError::client(
                    ErrorKind::Unauthenticated,
                    format!("the authorization header is not of the form `Bearer <key>`; {HOW}"),
                )
            })?;
        if !token.is_empty() {
            return Ok(token);
        }
    }
    Err(GatewayError::client(
        ErrorKind::Unauthenticated,
        format!("no API key in the request; {HOW}"),
    ))
}

fn looks_like_provider_key(token: &str) -> bool {
    ["sk-", "sk_", "AIza", "gsk_", "xai-", "hf_"]
        .iter()
        .any(|p| token.starts_with(p))
}

/// Last four characters, for messages (never more of a presented secret).
fn tail(token: &str) -> String {
    let start = token.char_indices().rev().nth(3).map(|(i, _)| i).unwrap_or(0);
    token[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_short_and_char_safe() {
        assert_eq!(tail("ck_abcdefgh"), "efgh");
        assert_eq!(tail("ab"), "ab");
        assert_eq!(tail("xxé€日本"), "xé€日本".chars().skip(1).collect::<String>());
    }
}
