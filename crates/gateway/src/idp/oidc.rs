//! Conduit as an OIDC relying party of one configured issuer: discovery (cached an hour, re-read
//! on failure), the JWKS (cached an hour; re-read at most every 30 s when a token names an
//! unknown `kid`, which is how a key rotation at the IdP reaches us), the authorization request
//! (code flow, PKCE S256, nonce), the code exchange and the refresh grant.
//!
//! The IdP is reached through the gateway's own outbound client (system roots, extra CA bundle,
//! egress proxy). `http://` issuers are accepted only on loopback (tests, a local Keycloak).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::Value;

use super::jwt::{self, Jwks};
use crate::upstream::UpstreamClient;

/// The metadata we use from the issuer's discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: String,
    /// Code exchange and refresh.
    pub token_endpoint: String,
    /// Signing keys.
    pub jwks_uri: String,
    /// Whether the IdP does PKCE S256 (absent: assumed).
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// The IdP's answer at its token endpoint.
#[derive(Debug, Deserialize)]
pub struct Tokens {
    /// The ID token (a refresh may omit it).
    #[serde(default)]
    pub id_token: Option<String>,
    /// The IdP's refresh token, if it issued one.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// An IdP refusal or failure: what to tell the person and the audit, never a token.
#[derive(Debug)]
pub enum IdpError {
    /// The IdP said no (`invalid_grant`, a bad code): the sign-in or the session ends.
    Refused(String),
    /// The IdP could not be asked (down, unreachable, malformed answer): retry later.
    Unavailable(String),
}

impl std::fmt::Display for IdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdpError::Refused(m) | IdpError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// The client's settings at the IdP.
#[derive(Debug, Clone)]
pub struct Client {
    /// The issuer URL, exactly as the IdP writes it in `iss`.
    pub issuer: String,
    /// Our client id.
    pub client_id: String,
    /// Our client secret (a confidential client), if configured.
    pub client_secret: Option<zeroize::Zeroizing<String>>,
    /// Scopes asked for.
    pub scopes: Vec<String>,
    /// Extra authorization-request parameters.
    pub extra: Vec<(String, String)>,
}

struct Cached<T> {
    value: T,
    at: Instant,
}

/// One issuer: its client settings and what was fetched from it.
pub struct Provider {
    /// The client settings.
    pub client: Client,
    http: UpstreamClient,
    metadata: Mutex<Option<Cached<Metadata>>>,
    jwks: Mutex<Option<Cached<Jwks>>>,
    jwks_refetch: Mutex<Option<Instant>>,
}

const CACHE_FOR: Duration = Duration::from_secs(3600);
const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
const MAX_BODY: usize = 1 << 20;

impl Provider {
    /// A provider; nothing is fetched until the first sign-in.
    pub fn new(client: Client, http: UpstreamClient) -> Provider {
        Provider {
            client,
            http,
            metadata: Mutex::new(None),
            jwks: Mutex::new(None),
            jwks_refetch: Mutex::new(None),
        }
    }

    /// The discovery metadata, fetched if not cached.
    pub async fn metadata(&self) -> Result<Metadata, IdpError> {
        if let Some(c) = lock(&self.metadata).as_ref()
            && c.at.elapsed() < CACHE_FOR
        {
            return Ok(c.value.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.client.issuer.trim_end_matches('/')
        );
        let (status, body) = self.send(Method::GET, &url, None).await?;
        if status != StatusCode::OK {
            return Err(IdpError::Unavailable(format!(
                "the IdP's discovery document {url} answered {status}; check signin.issuer"
            )));
        }
        let m: Metadata = serde_json::from_slice(&body).map_err(|e| {
            IdpError::Unavailable(format!(
                "the IdP's discovery document {url} is not one Conduit can read: {e}"
            ))
        })?;
        if m.issuer != self.client.issuer {
            return Err(IdpError::Unavailable(format!(
                "the IdP's discovery document names issuer {:?}, not the configured {:?}; set signin.issuer to exactly what the IdP writes",
                m.issuer, self.client.issuer
            )));
        }
        for (what, u) in [
            ("authorization_endpoint", &m.authorization_endpoint),
            ("token_endpoint", &m.token_endpoint),
            ("jwks_uri", &m.jwks_uri),
        ] {
            check_url(u).map_err(|e| IdpError::Unavailable(format!("the IdP's {what}: {e}")))?;
        }
        if let Some(methods) = &m.code_challenge_methods_supported
            && !methods.iter().any(|x| x == "S256")
        {
            return Err(IdpError::Unavailable(
                "the IdP does not offer PKCE with S256 (code_challenge_methods_supported); Conduit requires it".into(),
            ));
        }
        *lock(&self.metadata) = Some(Cached {
            value: m.clone(),
            at: Instant::now(),
        });
        Ok(m)
    }

    /// The URL the browser is sent to.
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        challenge: &str,
    ) -> Result<String, IdpError> {
        let m = self.metadata().await?;
        let scope = self.client.scopes.join(" ");
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &self.client.client_id),
            ("redirect_uri", redirect_uri),
            ("scope", &scope),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("prompt", "login consent"),
        ];
        params.extend(self.client.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let query = form(&params);
        let sep = if m.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!("{}{sep}{query}", m.authorization_endpoint))
    }

    /// Exchanges an authorization code.
    pub async fn exchange(&self, code: &str, verifier: &str, redirect_uri: &str) -> Result<Tokens, IdpError> {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ])
        .await
    }

    /// Refreshes at the IdP: the check that the person is still there.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, IdpError> {
        self.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
            .await
    }

    async fn token(&self, params: &[(&str, &str)]) -> Result<Tokens, IdpError> {
        let m = self.metadata().await?;
        let mut all: Vec<(&str, &str)> = params.to_vec();
        all.push(("client_id", &self.client.client_id));
        if let Some(secret) = &self.client.client_secret {
            all.push(("client_secret", secret.as_str()));
        }
        let (status, body) = self.send(Method::POST, &m.token_endpoint, Some(form(&all))).await?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|_| {
                IdpError::Unavailable("the IdP's token endpoint answered with JSON Conduit cannot read".into())
            });
        }
        // RFC 6749 §5.2: the error code only; error_description may echo what we sent.
        let code = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        if status.is_server_error() {
            Err(IdpError::Unavailable(format!(
                "the IdP's token endpoint failed ({code}); retry"
            )))
        } else {
            Err(IdpError::Refused(format!("the IdP refused the grant ({code})")))
        }
    }

    /// Verifies an ID token and checks its claims; the claims.
    pub async fn verify(
        &self,
        id_token: &str,
        expect: &jwt::Expect<'_>,
    ) -> Result<serde_json::Map<String, Value>, IdpError> {
        let parsed = jwt::parse(id_token).map_err(IdpError::Refused)?;
        let jwks = self.jwks(false).await?;
        let verified = match parsed.verify(&jwks) {
            Ok(()) => Ok(()),
            // An unknown key: the IdP may have rotated. Re-read once (bounded by the cooldown).
            Err(_) if self.may_refetch() => {
                let fresh = self.jwks(true).await?;
                parsed.verify(&fresh)
            }
            Err(e) => Err(e),
        };
        verified.map_err(IdpError::Refused)?;
        jwt::check_claims(&parsed.claims, expect).map_err(IdpError::Refused)?;
        Ok(parsed.claims)
    }

    fn may_refetch(&self) -> bool {
        let mut last = lock(&self.jwks_refetch);
        if last.is_some_and(|t| t.elapsed() < REFETCH_COOLDOWN) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    async fn jwks(&self, fresh: bool) -> Result<Jwks, IdpError> {
        if !fresh
            && let Some(c) = lock(&self.jwks).as_ref()
            && c.at.elapsed() < CACHE_FOR
        {
            return Ok(c.value.clone());
        }
        let m = self.metadata().await?;
        let (status, body) = self.send(Method::GET, &m.jwks_uri, None).await?;
        if status != StatusCode::OK {
            return Err(IdpError::Unavailable(format!("the IdP's JWKS answered {status}")));
        }
        let jwks: Jwks = serde_json::from_slice(&body)
            .map_err(|e| IdpError::Unavailable(format!("the IdP's JWKS is not one Conduit can read: {e}")))?;
        *lock(&self.jwks) = Some(Cached {
            value: jwks.clone(),
            at: Instant::now(),
        });
        Ok(jwks)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        form_body: Option<String>,
    ) -> Result<(StatusCode, Bytes), IdpError> {
        let unavailable = |m: String| IdpError::Unavailable(m);
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header(header::ACCEPT, "application/json");
        if form_body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let req = req
            .body(Full::new(Bytes::from(form_body.unwrap_or_default())))
            .map_err(|e| unavailable(format!("building a request to the IdP failed: {e}")))?;
        let host = url.split('/').nth(2).unwrap_or_default().to_string();
        let resp = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
            .await
            .map_err(|_| unavailable(format!("the IdP at {host} did not answer within 10 s")))?
            .map_err(|e| unavailable(format!("the IdP at {host} is unreachable: {e}")))?;
        let status = resp.status();
        let body = tokio::time::timeout(
            Duration::from_secs(10),
            Limited::new(resp.into_body(), MAX_BODY).collect(),
        )
        .await
        .map_err(|_| unavailable(format!("the IdP at {host} stalled mid-answer")))?
        .map_err(|e| unavailable(format!("reading the IdP's answer from {host} failed: {e}")))?
        .to_bytes();
        Ok((status, body))
    }
}

/// An IdP URL must be https, or http to loopback.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        _ => Err(format!(
            "{url:?} is not https (plain http is accepted only to loopback)"
        )),
    }
}

/// Whether a host name is loopback.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `application/x-www-form-urlencoded` of pairs.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Parses `application/x-www-form-urlencoded` (a query string or a form body); later duplicates
/// are ignored (the first wins), unknown names are kept for the caller to ignore.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    let decode = |v: &str| -> String {
        let bytes = v.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k);
        if !seen.iter().any(|(n, _)| *n == k) {
            seen.push((k, decode(v)));
        }
    }
    seen
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip_and_first_value_wins() {
        let s = form(&[("a b", "c&d=e"), ("x", "é%")]);
        assert_eq!(s, "a%20b=c%26d%3De&x=%C3%A9%25");
        let back = parse_form(&format!("{s}&x=second&empty"));
        assert_eq!(
            back,
            vec![
                ("a b".to_string(), "c&d=e".to_string()),
                ("x".to_string(), "é%".to_string()),
                ("empty".to_string(), String::new())
            ]
        );
        assert_eq!(
            parse_form("a=%zz&b=%4"),
            vec![("a".into(), "%zz".into()), ("b".into(), "%4".into())]
        );
        assert_eq!(parse_form("a=1+2%2"), vec![("a".into(), "1 2%2".into())]);
    }

    #[test]
    fn idp_urls_must_be_https_or_loopback() {
        assert!(check_url("https://idp.corp.example/x").is_ok());
        assert!(check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(check_url("http://localhost:9000/x").is_ok());
        assert!(check_url("http://[::1]:9000/x").is_ok());
        assert!(check_url("http://idp.corp.example/x").is_err());
        assert!(check_url("ftp://idp/x").is_err());
    }
}
