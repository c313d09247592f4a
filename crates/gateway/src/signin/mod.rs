//! Sign-in with the org's IdP, on the gateway listener: the Claude Code gateway protocol
//! (`claude gateway`'s `/protocol`, which Claude Code's `/login` speaks) and `conduit login`.
//!
//! ```text
//! GET  /.well-known/oauth-authorization-server  RFC 8414 metadata (device, token, revocation)
//! POST /oauth/device_authorization               RFC 8628 §3.2: device_code, user_code
//! GET  /device[?user_code=…]                     the confirmation page (sets the CSRF cookie)
//! POST /device                                   approve → 303 to the IdP (PKCE S256 + nonce) | deny
//! GET  /oauth/callback                           the IdP's answer: code exchange, ID token checks
//! POST /oauth/token                              device-code and refresh grants
//! POST /oauth/revoke                             RFC 7009: an access or refresh token
//! GET  /managed/settings                         Claude Code managed settings for the user's team
//! GET  /api/oauth/usage                          spend against the user's budgets
//! POST /v1/{metrics,logs,traces}                 OTLP intake: 200, forwarded when configured
//! ```
//!
//! What a sign-in yields is a stand-in key (`ck_…`) that expires after `access_ttl_secs`, owned
//! by the IdP user's verified email, in the team their groups map to, tied to a session; and a
//! refresh token (`crt_…`) that is rotated on every use. A refresh first refreshes at the IdP
//! (the deprovisioning check: an IdP that no longer knows the person ends the session) and reads
//! the groups again. Revoking — `conduit users revoke`, the revocation endpoint, a reused refresh
//! token — revokes the key in the key store, which every replica's key cache hears: the next
//! request is refused everywhere.
//!
//! Nothing secret is stored or logged: device codes, `state` values and refresh tokens are kept
//! as SHA-256 hashes, the PKCE verifier and nonce are derived from the state under a key derived
//! from the master key (so they are stored nowhere), the IdP's refresh token is sealed.

pub mod admin;
pub mod pages;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use conduit_state::records::KeyRecord;
use conduit_state::signin::{
    self, DeviceGrant, GrantStatus, Identity, REFRESH, Records, SESSION, STATE, Session, USER, USER_CODE, UserRecord,
};

use crate::body::GatewayBody;
use crate::error::{ErrorKind, Fault, GatewayError};
use crate::gateway::Gateway;
use crate::idp::jwt;
use crate::idp::oidc::IdpError;
pub use crate::idp::{RawSignIn, SignIn, SignInConfig};
use crate::idp::{cookie, oidc};
use crate::stages::accept::Exchange;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const REFRESH_PREFIX: &str = "crt_";
/// How long a rotated refresh token may still be presented without ending the session: two
/// processes sharing one credential store refresh at once, and the loser re-reads the winner's.
const REUSE_GRACE_SECS: i64 = 10;
/// An access token replaced by a refresh stays valid this long, for requests already under way.
const OVERLAP_SECS: i64 = 60;
const CSRF_COOKIE: &str = "conduit_csrf";
const BIND_COOKIE: &str = "conduit_signin";

/// Whether `path` is one the sign-in serves.
pub fn serves(path: &str) -> bool {
    matches!(
        path,
        "/.well-known/oauth-authorization-server"
            | "/oauth/device_authorization"
            | "/device"
            | "/oauth/callback"
            | "/oauth/token"
            | "/oauth/revoke"
            | "/managed/settings"
            | "/api/oauth/usage"
            | "/v1/metrics"
            | "/v1/logs"
            | "/v1/traces"
    )
}

type Answer = Result<Response<GatewayBody>, GatewayError>;

/// Answers one sign-in request. Errors on the bearer endpoints come back as `GatewayError`s (the
/// pipeline renders them in the Anthropic shape); the OAuth endpoints answer RFC 6749 errors.
pub async fn handle(gw: &Gateway, si: &SignIn, req: Request<Incoming>, ex: &mut Exchange) -> Answer {
    let path = req.uri().path().to_string();
    ex.path = path.clone();
    ex.treatment = "signin";
    let method = req.method().clone();
    let ip = ex.peer.ip();
    let now = crate::clock::now_unix();
    let ctx = Ctx { gw, si, now };
    match (method, path.as_str()) {
        (Method::GET, "/.well-known/oauth-authorization-server") => {
            let base = ctx.base(req.headers())?;
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "issuer": base,
                    "device_authorization_endpoint": format!("{base}/oauth/device_authorization"),
                    "token_endpoint": format!("{base}/oauth/token"),
                    "revocation_endpoint": format!("{base}/oauth/revoke"),
                    "grant_types_supported": [DEVICE_GRANT, "refresh_token"],
                    "response_types_supported": [],
                    "token_endpoint_auth_methods_supported": ["none"],
                    "revocation_endpoint_auth_methods_supported": ["none"],
                }),
            ))
        }
        (Method::POST, "/oauth/device_authorization") => {
            if !si.device_requests.allow(ip) {
                return Ok(oauth_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "slow_down",
                    "too many sign-ins from this address; wait a minute",
                ));
            }
            let base = ctx.base(req.headers())?;
            let form = read_form(req, &gw.config.limits).await?;
            ctx.device_authorization(&base, field(&form, "surface")).await
        }
        (Method::GET, "/device") => {
            let code = req
                .uri()
                .query()
                .map(oidc::parse_form)
                .and_then(|q| field(&q, "user_code").map(str::to_owned));
            Ok(ctx.confirm_page(req.headers(), code.as_deref(), None))
        }
        (Method::POST, "/device") => {
            if !si.verify_attempts.allow(ip) {
                return Ok(html(
                    StatusCode::TOO_MANY_REQUESTS,
                    pages::outcome(
                        "Too many attempts",
                        "Too many codes were tried from this address. Wait a minute and try again.",
                    ),
                    &[],
                ));
            }
            let base = ctx.base(req.headers())?;
            let headers = req.headers().clone();
            let form = read_form(req, &gw.config.limits).await?;
            ctx.confirm(&base, &headers, &form).await
        }
        (Method::GET, "/oauth/callback") => {
            let base = ctx.base(req.headers())?;
            let query = req.uri().query().map(oidc::parse_form).unwrap_or_default();
            Ok(ctx.callback(&base, req.headers(), &query).await)
        }
        (Method::POST, "/oauth/token") => {
            let form = read_form(req, &gw.config.limits).await?;
            ctx.token(&form, ex).await
        }
        (Method::POST, "/oauth/revoke") => {
            let form = read_form(req, &gw.config.limits).await?;
            if let Some(token) = field(&form, "token") {
                ctx.revoke_token(token).await?;
            }
            // RFC 7009 §2.2: 200 whether or not the token was known.
            Ok(json_response(StatusCode::OK, &json!({})))
        }
        (Method::GET, "/managed/settings") => {
            ex.protocol = Some(crate::protocol::Protocol::Anthropic);
            let principal = ctx.bearer(req.headers()).await?;
            ex.principal = Some(principal.clone());
            Ok(ctx.managed_settings(&principal, req.headers()))
        }
        (Method::GET, "/api/oauth/usage") => {
            ex.protocol = Some(crate::protocol::Protocol::Anthropic);
            let principal = ctx.bearer(req.headers()).await?;
            ex.principal = Some(principal.clone());
            ctx.usage(&principal).await
        }
        (Method::POST, "/v1/metrics" | "/v1/logs" | "/v1/traces") => {
            ex.protocol = Some(crate::protocol::Protocol::Anthropic);
            let principal = ctx.bearer(req.headers()).await?;
            ex.principal = Some(principal);
            ctx.telemetry(&path, req).await
        }
        (m, _) => Err(GatewayError::client(
            ErrorKind::MethodNotAllowed,
            format!("{m} is not served on {path}; see docs/sign-in.md"),
        )),
    }
}

struct Ctx<'a> {
    gw: &'a Gateway,
    si: &'a SignIn,
    now: i64,
}

impl Ctx<'_> {
    fn records(&self) -> Records<'_> {
        Records(self.gw.state.signin.as_ref())
    }

    fn cfg(&self) -> &SignInConfig {
        &self.si.config
    }

    /// The origin this gateway is reached at: `public_url`, else a loopback `Host` (the
    /// configuration allows no `public_url` only on a loopback listener).
    fn base(&self, headers: &HeaderMap) -> Result<String, GatewayError> {
        if let Some(u) = &self.cfg().public_url {
            return Ok(u.clone());
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if oidc::is_loopback(name) {
            let scheme = if self.gw.config.tls.is_some() { "https" } else { "http" };
            Ok(format!("{scheme}://{host}"))
        } else {
            Err(GatewayError::client(
                ErrorKind::BadRequest,
                format!(
                    "this gateway has no signin.public_url and was reached as {host:?}, not on loopback; set signin.public_url"
                ),
            ))
        }
    }

    /// A key derived from the master key for the sign-in's MACs.
    fn mac(&self, label: &str, data: &str) -> String {
        let key = self.gw.master_key().derive("conduit/signin/v1");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_ref());
        let tag = ring::hmac::sign(&key, format!("{label}\0{data}").as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    async fn device_authorization(&self, base: &str, surface: Option<&str>) -> Answer {
        let device_code = random_token(32)?;
        let device_hash = signin::hash(&device_code);
        let cfg = self.cfg();
        let records = self.records();
        let mut user_code = String::new();
        for _ in 0..8 {
            let candidate = new_user_code()?;
            if records
                .0
                .swap(&format!("{USER_CODE}{candidate}"), None, Some(&device_hash))
                .await
                .map_err(store_error)?
            {
                user_code = candidate;
                break;
            }
        }
        if user_code.is_empty() {
            return Err(GatewayError::new(
                ErrorKind::Internal,
                Fault::Gateway,
                "no free user code after 8 tries; retry",
            ));
        }
        let grant = DeviceGrant {
            device_hash: device_hash.clone(),
            user_code: user_code.clone(),
            created_at: self.now,
            expires_at: self.now + cfg.device_code_ttl.as_secs() as i64,
            interval_secs: cfg.poll_interval.as_secs(),
            last_poll_ms: None,
            surface: surface.map(|s| s.chars().filter(char::is_ascii_graphic).take(40).collect()),
            status: GrantStatus::Pending,
        };
        records
            .create(&format!("{}{device_hash}", signin::GRANT), &grant)
            .await
            .map_err(store_error)?;
        // Clean-up of expired grants, sessions and admin records: at most once a minute per
        // process, off the request.
        let last = self.si.last_prune.load(std::sync::atomic::Ordering::Relaxed);
        if self.now - last >= 60
            && self
                .si
                .last_prune
                .compare_exchange(
                    last,
                    self.now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            let store = self.gw.state.signin.clone();
            let now = self.now;
            tokio::spawn(async move {
                if let Err(e) = Records(store.as_ref()).prune(now).await {
                    tracing::debug!(error = %e, "pruning sign-in records failed");
                }
            });
        }
        let mut body = json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": format!("{base}/device"),
            "verification_uri_complete": format!("{base}/device?user_code={user_code}"),
            "expires_in": cfg.device_code_ttl.as_secs(),
            "interval": cfg.poll_interval.as_secs(),
        });
        if let Some(n) = &cfg.login_notice {
            body["login_notice"] = n.clone().into();
        }
        Ok(json_response(StatusCode::OK, &body))
    }

    fn confirm_page(&self, headers: &HeaderMap, code: Option<&str>, error: Option<&str>) -> Response<GatewayBody> {
        // The CSRF token is a MAC of a per-browser cookie: a form posted from another site carries
        // neither the cookie (SameSite=Strict) nor a matching token.
        let cookie = self
            .cookie(headers, CSRF_COOKIE)
            .filter(|c| c.len() == 43)
            .map(str::to_owned)
            .or_else(|| random_token(32).ok())
            .unwrap_or_default();
        let csrf = self.mac("csrf", &cookie);
        let set = self.cookie_header(CSRF_COOKIE, &cookie, "Strict", 3600);
        let code = code.map(normalize_code).filter(|c| c.len() == 9);
        html_with(
            if error.is_some() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            },
            pages::confirm(code.as_deref(), &csrf, error, self.cfg().login_notice.as_deref()),
            &[set],
            &format!("'self' {}", origin(&self.cfg().issuer)),
        )
    }

    /// Whether the device page's cookies are `Secure` (and so `__Host-` named).
    fn secure_cookies(&self) -> bool {
        self.gw.config.tls.is_some()
            || self
                .cfg()
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
    }

    fn cookie_header(&self, name: &str, value: &str, same_site: &str, max_age: i64) -> String {
        let secure = self.secure_cookies();
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}{}",
            crate::idp::cookie_name(secure, name),
            if secure { "; Secure" } else { "" }
        )
    }

    /// A device-page cookie's value, under the name it is set with.
    fn cookie<'h>(&self, headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
        cookie(headers, &crate::idp::cookie_name(self.secure_cookies(), name))
    }

    async fn confirm(&self, base: &str, headers: &HeaderMap, form: &[(String, String)]) -> Answer {
        let csrf_ok = match (self.cookie(headers, CSRF_COOKIE), field(form, "csrf")) {
            (Some(c), Some(t)) => constant_eq(&self.mac("csrf", c), t),
            _ => false,
        };
        if !csrf_ok {
            return Ok(html(
                StatusCode::FORBIDDEN,
                pages::outcome(
                    "This form has expired",
                    "The sign-in form was not sent from this gateway's own page (or your browser blocked its cookie). Open the link from your terminal again.",
                ),
                &[],
            ));
        }
        let code = normalize_code(field(form, "user_code").unwrap_or_default());
        let records = self.records();
        let unknown = || {
            Ok(self.confirm_page(headers, None, Some("That code is not waiting for sign-in: it may have expired or been used. Check it against your terminal, or start again.")))
        };
        let Some(device_hash) = records.text(&format!("{USER_CODE}{code}")).await.map_err(store_error)? else {
            return unknown();
        };
        let grant_name = format!("{}{device_hash}", signin::GRANT);
        let Some(read) = records.read::<DeviceGrant>(&grant_name).await.map_err(store_error)? else {
            return unknown();
        };
        let grant = read.value;
        // A sign-in already at the IdP may be confirmed again (a retry, a closed tab) only from
        // the browser that confirmed it: someone else who sees the code cannot take it over.
        let resumable = match &grant.status {
            GrantStatus::Pending => true,
            GrantStatus::Authorizing { state_hash } => self.cookie(headers, BIND_COOKIE) == Some(state_hash.as_str()),
            _ => false,
        };
        if grant.expires_at <= self.now || !resumable {
            return unknown();
        }
        if field(form, "action") == Some("deny") {
            let denied = DeviceGrant {
                status: GrantStatus::Denied {
                    reason: "the person chose Deny".into(),
                },
                ..grant
            };
            records
                .replace(&grant_name, &read.raw, &denied)
                .await
                .map_err(store_error)?;
            tracing::info!(user_code = %code, "sign-in denied in the browser");
            return Ok(html(
                StatusCode::OK,
                pages::outcome(
                    "Sign-in stopped",
                    "No access was granted and the code is no longer valid. If you did not start this sign-in, tell your security team.",
                ),
                &[],
            ));
        }
        let state = random_token(32)?;
        let state_hash = signin::hash(&state);
        let authorizing = DeviceGrant {
            status: GrantStatus::Authorizing {
                state_hash: state_hash.clone(),
            },
            ..grant
        };
        if !records
            .replace(&grant_name, &read.raw, &authorizing)
            .await
            .map_err(store_error)?
        {
            return unknown();
        }
        records
            .0
            .swap(&format!("{STATE}{state_hash}"), None, Some(&device_hash))
            .await
            .map_err(store_error)?;
        let verifier = self.mac("pkce", &state);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let nonce = self.mac("nonce", &state);
        let url = self
            .si
            .provider
            .authorization_url(&format!("{base}/oauth/callback"), &state, &nonce, &challenge)
            .await
            .map_err(idp_unavailable)?;
        // The callback must come back to the browser that approved (SameSite=Lax: the IdP's
        // redirect is a cross-site top-level navigation).
        let bind = self.cookie_header(
            BIND_COOKIE,
            &state_hash,
            "Lax",
            self.cfg().device_code_ttl.as_secs() as i64,
        );
        let mut resp = Response::new(GatewayBody::empty());
        *resp.status_mut() = StatusCode::SEE_OTHER;
        set(&mut resp, header::LOCATION, &url);
        set(&mut resp, header::SET_COOKIE, &bind);
        no_store(&mut resp);
        Ok(resp)
    }

    async fn callback(&self, base: &str, headers: &HeaderMap, query: &[(String, String)]) -> Response<GatewayBody> {
        let fail = |title: &str, msg: &str| html(StatusCode::BAD_REQUEST, pages::outcome(title, msg), &[]);
        let Some(state) = field(query, "state") else {
            return fail(
                "Sign-in failed",
                "The identity provider's answer has no state. Start the sign-in again from your terminal.",
            );
        };
        let state_hash = signin::hash(state);
        let records = self.records();
        let index = format!("{STATE}{state_hash}");
        let device_hash = match records.text(&index).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                return fail(
                    "This sign-in is not waiting",
                    "It may have expired or already finished. Start again from your terminal.",
                );
            }
            Err(e) => return fail("Sign-in failed", &store_error(e).message),
        };
        if self.cookie(headers, BIND_COOKIE) != Some(state_hash.as_str()) {
            return fail(
                "Sign-in failed",
                "This answer from the identity provider did not come back to the browser that approved the code. Start again from your terminal, in one browser.",
            );
        }
        let _ = records.0.swap(&index, Some(&device_hash), None).await;
        let grant_name = format!("{}{device_hash}", signin::GRANT);
        let outcome = self.authenticate(base, state, query).await;
        let status = match &outcome {
            Ok((identity, sealed)) => GrantStatus::Approved {
                identity: identity.clone(),
                idp_refresh: sealed.clone(),
            },
            Err(reason) => GrantStatus::Denied { reason: reason.clone() },
        };
        let updated = records
            .update::<DeviceGrant, _>(&grant_name, |g| match &g.status {
                GrantStatus::Authorizing { state_hash: s } if *s == state_hash && g.expires_at > self.now => {
                    Some(DeviceGrant {
                        status: status.clone(),
                        ..g
                    })
                }
                _ => None,
            })
            .await;
        match (updated, outcome) {
            (Ok(Some(_)), Ok((identity, _))) => {
                tracing::info!(user = %identity.email, team = identity.team.as_deref().unwrap_or("-"), "sign-in approved at the IdP");
                html(
                    StatusCode::OK,
                    pages::outcome(
                        "You are signed in",
                        &format!(
                            "Signed in as {}. Return to your terminal; you can close this tab.",
                            identity.email
                        ),
                    ),
                    &[],
                )
            }
            (Ok(Some(_)), Err(reason)) => {
                tracing::info!(%reason, "sign-in refused");
                fail("Sign-in refused", &reason)
            }
            (Ok(None), _) => fail(
                "This sign-in is not waiting",
                "It expired or was stopped meanwhile. Start again from your terminal.",
            ),
            (Err(e), _) => fail("Sign-in failed", &store_error(e).message),
        }
    }

    /// The code exchange and every check on who came back.
    async fn authenticate(
        &self,
        base: &str,
        state: &str,
        query: &[(String, String)],
    ) -> Result<(Identity, Option<Box<conduit_core::seal::SealedCredential>>), String> {
        if let Some(err) = field(query, "error") {
            let err: String = err
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(format!("The identity provider refused the sign-in ({err})."));
        }
        let code = field(query, "code").ok_or("The identity provider's answer has no code.")?;
        let verifier = self.mac("pkce", state);
        let tokens = self
            .si
            .provider
            .exchange(code, &verifier, &format!("{base}/oauth/callback"))
            .await
            .map_err(|e| e.to_string())?;
        let id_token = tokens
            .id_token
            .ok_or("The identity provider sent no ID token (is openid among signin.scopes?).")?;
        let nonce = self.mac("nonce", state);
        let claims = self
            .si
            .provider
            .verify(&id_token, &self.expect(Some(&nonce)))
            .await
            .map_err(|e| e.to_string())?;
        let identity = self.identity(&claims)?;
        self.admitted(&identity).await?;
        let sealed = match &tokens.refresh_token {
            Some(t) => Some(Box::new(self.seal(&identity.sub, t).map_err(|e| e.to_string())?)),
            None => None,
        };
        Ok((identity, sealed))
    }

    fn expect<'n>(&'n self, nonce: Option<&'n str>) -> jwt::Expect<'n> {
        jwt::Expect {
            issuer: &self.cfg().issuer,
            client_id: &self.cfg().client_id,
            nonce,
            now: self.now,
            skew: self.cfg().clock_skew.as_secs() as i64,
        }
    }

    /// The identity the claims describe, under the configured rules.
    fn identity(&self, claims: &serde_json::Map<String, Value>) -> Result<Identity, String> {
        let cfg = self.cfg();
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let email = claims
            .get(&cfg.email_claim)
            .and_then(Value::as_str)
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| e.contains('@'))
            .ok_or_else(|| format!("The identity provider sent no email in the {:?} claim; ask your administrator to release it (or set signin.email_claim).", cfg.email_claim))?;
        if cfg.require_verified_email && claims.get("email_verified").and_then(Value::as_bool) != Some(true) {
            return Err(format!("The identity provider does not mark {email} as verified."));
        }
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if !cfg.allowed_email_domains.is_empty() && !cfg.allowed_email_domains.iter().any(|d| d == domain) {
            return Err(format!("Accounts of {domain} may not sign in to this gateway."));
        }
        let groups: Vec<String> = match claims.get(&cfg.groups_claim) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        if !cfg.allowed_groups.is_empty() && !groups.iter().any(|g| cfg.allowed_groups.contains(g)) {
            return Err(format!("{email} is not in a group allowed to sign in to this gateway."));
        }
        let team = cfg
            .teams
            .iter()
            .find(|(g, _)| groups.contains(g))
            .map(|(_, t)| t.clone());
        let name = claims.get("name").and_then(Value::as_str).map(str::to_owned);
        Ok(Identity {
            sub,
            email,
            name,
            groups,
            team,
        })
    }

    /// Refuses a person Conduit's operators have blocked.
    async fn admitted(&self, identity: &Identity) -> Result<(), String> {
        let user = self
            .records()
            .read::<UserRecord>(&format!("{USER}{}", identity.email))
            .await
            .map_err(|e| e.to_string())?;
        match user.map(|u| u.value) {
            Some(UserRecord {
                blocked_at: Some(t), ..
            }) => Err(format!(
                "{} was signed out by an administrator at {} and may not sign in again until they restore access.",
                identity.email,
                crate::clock::format_rfc3339(t)
            )),
            _ => Ok(()),
        }
    }

    fn seal(&self, sub: &str, token: &str) -> crate::error::Result<conduit_core::seal::SealedCredential> {
        self.gw.master_key().seal("signin", sub, 1, token.as_bytes(), self.now)
    }

    async fn token(&self, form: &[(String, String)], ex: &mut Exchange) -> Answer {
        match field(form, "grant_type") {
            Some(DEVICE_GRANT) => {
                let Some(code) = field(form, "device_code") else {
                    return Ok(oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "device_code is missing",
                    ));
                };
                self.device_grant(code, ex).await
            }
            Some("refresh_token") => {
                let Some(token) = field(form, "refresh_token") else {
                    return Ok(oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "refresh_token is missing",
                    ));
                };
                self.refresh_grant(token, ex).await
            }
            Some(other) => Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!(
                    "grant_type {:?} is not served here; use the device code or refresh_token grant",
                    other.chars().take(80).collect::<String>()
                ),
            )),
            None => Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            )),
        }
    }

    async fn device_grant(&self, device_code: &str, ex: &mut Exchange) -> Answer {
        let records = self.records();
        let name = format!("{}{}", signin::GRANT, signin::hash(device_code));
        let Some(read) = records.read::<DeviceGrant>(&name).await.map_err(store_error)? else {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the device_code is not known (expired long ago, or already used)",
            ));
        };
        let grant = read.value;
        if grant.expires_at <= self.now {
            let _ = records.remove(&name, &read.raw).await;
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "expired_token",
                "the sign-in was not approved in time; start again",
            ));
        }
        let now_ms = self.now * 1000;
        match grant.status.clone() {
            GrantStatus::Pending | GrantStatus::Authorizing { .. } => {
                // RFC 8628 §3.5: polling faster than the interval earns slow_down (+5 s).
                let too_soon = grant
                    .last_poll_ms
                    .is_some_and(|t| now_ms - t < (grant.interval_secs as i64 * 1000) * 8 / 10);
                let next = DeviceGrant {
                    last_poll_ms: Some(now_ms),
                    interval_secs: if too_soon {
                        grant.interval_secs + 5
                    } else {
                        grant.interval_secs
                    },
                    ..grant
                };
                let _ = records.replace(&name, &read.raw, &next).await;
                if too_soon {
                    Ok(oauth_error(
                        StatusCode::BAD_REQUEST,
                        "slow_down",
                        "polling faster than the interval; wait 5 s more between polls",
                    ))
                } else {
                    Ok(oauth_error(
                        StatusCode::BAD_REQUEST,
                        "authorization_pending",
                        "waiting for the person to approve in the browser",
                    ))
                }
            }
            GrantStatus::Denied { .. } => {
                let _ = records.remove(&name, &read.raw).await;
                Ok(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "access_denied",
                    "the sign-in was refused",
                ))
            }
            GrantStatus::Approved { identity, idp_refresh } => {
                // Single use: of every poll racing on this code, one deletes the grant.
                if !records.remove(&name, &read.raw).await.map_err(store_error)? {
                    return Ok(oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "the device_code was already used",
                    ));
                }
                if let Err(reason) = self.admitted(&identity).await {
                    return Ok(oauth_error(StatusCode::BAD_REQUEST, "access_denied", &reason));
                }
                let _ = records
                    .0
                    .swap(
                        &format!("{USER_CODE}{}", grant.user_code),
                        Some(&grant.device_hash),
                        None,
                    )
                    .await;
                self.start_session(identity, idp_refresh, grant.surface, ex).await
            }
        }
    }

    async fn start_session(
        &self,
        identity: Identity,
        idp_refresh: Option<Box<conduit_core::seal::SealedCredential>>,
        surface: Option<String>,
        ex: &mut Exchange,
    ) -> Answer {
        let id = format!("ses_{}", conduit_core::hex::encode(&random_bytes::<9>()?));
        let refresh = format!("{REFRESH_PREFIX}{}", random_token(32)?);
        let (access, key) = self.issue_access(&identity, &id, surface.as_deref()).await?;
        let session = Session {
            id: id.clone(),
            identity: identity.clone(),
            surface,
            created_at: self.now,
            expires_at: self.now + self.cfg().session_ttl.as_secs() as i64,
            refreshed_at: self.now,
            refresh_hash: signin::hash(&refresh),
            previous_refresh_hash: None,
            access_key: key.id.clone(),
            idp_refresh,
            ended_at: None,
            ended_why: None,
        };
        let records = self.records();
        records
            .0
            .swap(&format!("{REFRESH}{}", session.refresh_hash), None, Some(&id))
            .await
            .map_err(store_error)?;
        records
            .create(&format!("{SESSION}{id}"), &session)
            .await
            .map_err(store_error)?;
        ex.principal = Some(conduit_state::Principal::of(key));
        tracing::info!(user = %identity.email, session = %id, "signed in");
        Ok(self.token_response(&access, &refresh, &identity.email))
    }

    fn token_response(&self, access: &str, refresh: &str, email: &str) -> Response<GatewayBody> {
        json_response(
            StatusCode::OK,
            &json!({
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": self.cfg().access_ttl.as_secs(),
                "refresh_token": refresh,
                "email": email,
            }),
        )
    }

    /// A new access token: a stand-in key that expires.
    async fn issue_access(
        &self,
        identity: &Identity,
        session: &str,
        surface: Option<&str>,
    ) -> Result<(String, KeyRecord), GatewayError> {
        let new = conduit_core::keys::generate().map_err(|e| {
            GatewayError::new(
                ErrorKind::Internal,
                Fault::Gateway,
                format!("OS random source failed: {e}"),
            )
        })?;
        let record = KeyRecord {
            id: new.id.clone(),
            hint: new.hint.clone(),
            owner: identity.email.clone(),
            team: identity.team.clone(),
            name: Some(format!("signin:{}", surface.unwrap_or("client"))),
            created_at: self.now,
            expires_at: Some(self.now + self.cfg().access_ttl.as_secs() as i64),
            revoked_at: None,
            limits: Default::default(),
            session: Some(session.to_string()),
        };
        self.gw
            .state
            .keys
            .insert(&new.hash, &record)
            .await
            .map_err(store_error)?;
        Ok((new.secret, record))
    }

    async fn refresh_grant(&self, token: &str, ex: &mut Exchange) -> Answer {
        let invalid = |why: &str| Ok(oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", why));
        let presented = signin::hash(token);
        let records = self.records();
        let Some(id) = records
            .text(&format!("{REFRESH}{presented}"))
            .await
            .map_err(store_error)?
        else {
            return invalid("the refresh token is not known; sign in again");
        };
        let name = format!("{SESSION}{id}");
        let Some(read) = records.read::<Session>(&name).await.map_err(store_error)? else {
            return invalid("the session is gone; sign in again");
        };
        let session = read.value;
        if session.ended_at.is_some() {
            return invalid("the session was ended; sign in again");
        }
        if session.refresh_hash != presented {
            if session.previous_refresh_hash.as_deref() == Some(presented.as_str())
                && self.now - session.refreshed_at <= REUSE_GRACE_SECS
            {
                return invalid("this refresh token was just replaced; use the new one");
            }
            // A rotated-out token presented again: it was copied. End the session (RFC 9700).
            tracing::warn!(user = %session.identity.email, session = %id, "a replaced refresh token was presented again; ending the session");
            self.end_session(&id, "a replaced refresh token was presented again (possible theft)")
                .await?;
            return invalid("the refresh token was already used; the session is ended; sign in again");
        }
        if session.expires_at <= self.now {
            self.end_session(&id, "reached its absolute lifetime").await?;
            return invalid("the session reached its lifetime; sign in again");
        }
        // The IdP check: still a member, still allowed.
        let (identity, idp_refresh) = match self.recheck(&session).await {
            Ok(v) => v,
            Err(IdpError::Refused(why)) => {
                tracing::info!(user = %session.identity.email, session = %id, %why, "the IdP refused a refresh; ending the session");
                self.end_session(&id, &format!("the IdP refused the refresh: {why}"))
                    .await?;
                return invalid("the identity provider no longer vouches for this sign-in; sign in again");
            }
            Err(IdpError::Unavailable(why)) => {
                tracing::warn!(session = %id, %why, "the IdP could not be asked at a refresh");
                let mut resp = oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the identity provider is not answering; retry shortly",
                );
                set(&mut resp, header::RETRY_AFTER, "30");
                return Ok(resp);
            }
        };
        if let Err(reason) = self.admitted(&identity).await {
            self.end_session(&id, "blocked by an administrator").await?;
            return invalid(&reason);
        }
        let refresh = format!("{REFRESH_PREFIX}{}", random_token(32)?);
        let (access, key) = self.issue_access(&identity, &id, session.surface.as_deref()).await?;
        let next = Session {
            identity: identity.clone(),
            refreshed_at: self.now,
            refresh_hash: signin::hash(&refresh),
            previous_refresh_hash: Some(presented.clone()),
            access_key: key.id.clone(),
            idp_refresh,
            ..session.clone()
        };
        records
            .0
            .swap(&format!("{REFRESH}{}", next.refresh_hash), None, Some(&id))
            .await
            .map_err(store_error)?;
        if !records.replace(&name, &read.raw, &next).await.map_err(store_error)? {
            // Another refresh with this token won the race: this one's token must not work.
            self.revoke_key(&key.id).await?;
            return invalid("this refresh token was just replaced; use the new one");
        }
        // Every retired token's index stays until the session is pruned: any of them presented
        // again (outside the grace above) is a copy, and ends the session.
        self.shorten_key(&session.access_key).await?;
        ex.principal = Some(conduit_state::Principal::of(key));
        Ok(self.token_response(&access, &refresh, &identity.email))
    }

    /// Refreshes at the IdP and reads who the person is now. Without an IdP refresh token there
    /// is nothing to check with: the session ends (fail closed).
    async fn recheck(
        &self,
        session: &Session,
    ) -> Result<(Identity, Option<Box<conduit_core::seal::SealedCredential>>), IdpError> {
        let Some(sealed) = &session.idp_refresh else {
            return Err(IdpError::Refused(
                "the IdP issued no refresh token at sign-in (add offline_access to signin.scopes, or allow refresh tokens for this client)".into(),
            ));
        };
        let plain = self
            .gw
            .unsealing_key(&sealed.master_key_id)
            .unseal(sealed)
            .map_err(|e| IdpError::Refused(format!("the sealed IdP refresh token cannot be opened ({e})")))?;
        let plain = std::str::from_utf8(&plain)
            .map_err(|_| IdpError::Refused("the sealed IdP refresh token is not text".into()))?;
        let tokens = self.si.provider.refresh(plain).await?;
        let identity = match &tokens.id_token {
            Some(t) => {
                let claims = self.si.provider.verify(t, &self.expect(None)).await?;
                let got = self.identity(&claims).map_err(IdpError::Refused)?;
                if got.sub != session.identity.sub {
                    return Err(IdpError::Refused(
                        "the refreshed ID token is for another subject".into(),
                    ));
                }
                got
            }
            None => session.identity.clone(),
        };
        let sealed = match &tokens.refresh_token {
            Some(t) => Some(Box::new(
                self.seal(&identity.sub, t)
                    .map_err(|e| IdpError::Unavailable(e.to_string()))?,
            )),
            None => session.idp_refresh.clone(),
        };
        Ok((identity, sealed))
    }

    /// Ends a session and revokes its access token now.
    async fn end_session(&self, id: &str, why: &str) -> Result<(), GatewayError> {
        let ended = self
            .records()
            .update::<Session, _>(&format!("{SESSION}{id}"), |s| {
                (s.ended_at.is_none()).then(|| Session {
                    ended_at: Some(self.now),
                    ended_why: Some(why.to_string()),
                    ..s
                })
            })
            .await
            .map_err(store_error)?;
        if let Some(s) = ended {
            self.revoke_key(&s.access_key).await?;
        }
        Ok(())
    }

    async fn revoke_key(&self, key_id: &str) -> Result<(), GatewayError> {
        revoke_key(&self.gw.state, key_id, self.now).await.map_err(store_error)
    }

    /// The access token a refresh replaced stays valid a minute more, for requests under way.
    async fn shorten_key(&self, key_id: &str) -> Result<(), GatewayError> {
        let keys = &self.gw.state.keys;
        if let Some(mut k) = keys.by_id(key_id).await.map_err(store_error)?
            && k.revoked_at.is_none()
        {
            let until = self.now + OVERLAP_SECS;
            if k.expires_at.is_none_or(|t| t > until) {
                k.expires_at = Some(until);
                keys.update(&k).await.map_err(store_error)?;
            }
        }
        Ok(())
    }

    async fn revoke_token(&self, token: &str) -> Result<(), GatewayError> {
        if token.starts_with(REFRESH_PREFIX) {
            if let Some(id) = self
                .records()
                .text(&format!("{REFRESH}{}", signin::hash(token)))
                .await
                .map_err(store_error)?
            {
                self.end_session(&id, "signed out (refresh token revoked)").await?;
            }
        } else if conduit_core::keys::check_format(token).is_ok() {
            let key = self
                .gw
                .state
                .keys
                .by_hash(&conduit_core::keys::KeyHash::of(token))
                .await
                .map_err(store_error)?;
            // Only sign-in tokens: a stand-in key is revoked by an operator, not by whoever holds it.
            if let Some(session) = key.and_then(|k| k.session) {
                self.end_session(&session, "signed out (access token revoked)").await?;
            }
        }
        Ok(())
    }

    async fn bearer(&self, headers: &HeaderMap) -> Result<conduit_state::Principal, GatewayError> {
        crate::stages::authenticate::principal(self.gw.state.keys.as_ref(), headers, self.now).await
    }

    fn managed_settings(&self, principal: &conduit_state::Principal, headers: &HeaderMap) -> Response<GatewayBody> {
        let managed = &self.cfg().managed;
        let served = principal
            .team
            .as_ref()
            .and_then(|t| managed.teams.get(t))
            .or(managed.default.as_ref());
        let Some(served) = served else {
            let mut resp = json_response(
                StatusCode::NOT_FOUND,
                &json!({"type": "error", "error": {"type": "not_found_error", "message": "no managed settings for this user"}}),
            );
            no_store(&mut resp);
            return resp;
        };
        let etag = format!("\"{}\"", served.checksum);
        let matches = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        let mut resp = if matches {
            let mut r = Response::new(GatewayBody::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            json_response(
                StatusCode::OK,
                &json!({
                    "uuid": uuid_of(&served.checksum),
                    "checksum": served.checksum,
                    "settings": served.settings,
                }),
            )
        };
        set(&mut resp, header::ETAG, &etag);
        resp
    }

    async fn usage(&self, principal: &conduit_state::Principal) -> Answer {
        let status = self.gw.state.budgets.status(self.now).await.map_err(store_error)?;
        let scopes = principal.scopes();
        let rows: Vec<_> = status.into_iter().filter(|s| scopes.contains(&s.scope)).collect();
        let cents = |micros: u64| micros / 10_000;
        let percent = |s: &conduit_state::budget::BudgetStatus| {
            s.spent_micros
                .saturating_mul(100)
                .checked_div(s.limit_micros)
                .map_or(100, |p| p as i64)
        };
        // The binding budget: the fullest.
        let active = rows.iter().max_by(|a, b| {
            (a.spent_micros as u128 * b.limit_micros.max(1) as u128)
                .cmp(&(b.spent_micros as u128 * a.limit_micros.max(1) as u128))
        });
        let body = match active {
            Some(a) => json!({
                "extra_usage": {
                    "is_enabled": true,
                    "monthly_limit": cents(a.limit_micros),
                    "used_credits": cents(a.spent_micros),
                    "utilization": percent(a),
                    "currency": "USD",
                },
                "limits": rows.iter().map(|s| json!({
                    "kind": "spend",
                    "group": s.period,
                    "scope": s.scope,
                    "percent": percent(s),
                    "resets_at": s.resets_at,
                    "severity": if percent(s) >= 95 { "critical" } else if percent(s) >= 75 { "warning" } else { "normal" },
                    "is_active": std::ptr::eq(s, a),
                })).collect::<Vec<_>>(),
            }),
            None => {
                let spent = self.spent(&principal.owner).await?;
                json!({
                    "extra_usage": {
                        "is_enabled": true, "monthly_limit": null, "used_credits": cents(spent.0), "utilization": null, "currency": "USD",
                        "daily": {"limit": null, "used_credits": cents(spent.1), "utilization": null},
                        "weekly": {"limit": null, "used_credits": cents(spent.2), "utilization": null},
                    },
                    "limits": [],
                })
            }
        };
        let mut resp = json_response(StatusCode::OK, &body);
        no_store(&mut resp);
        Ok(resp)
    }

    /// The person's spend this UTC month, day and week (from Monday), micro-dollars, from the ledger.
    async fn spent(&self, owner: &str) -> Result<(u64, u64, u64), GatewayError> {
        let today = crate::clock::format_date(self.now);
        let days = self.now.div_euclid(86_400);
        // 1970-01-01 was a Thursday: Monday is three days before a day ≡ 0 (mod 7) … + 4.
        let monday = crate::clock::format_date((days - (days + 3).rem_euclid(7)) * 86_400);
        let month = format!("{}-01", &today[..7]);
        let since = if monday < month { monday.clone() } else { month.clone() };
        let rows = self.gw.state.spend.range(&since, &today).await.map_err(store_error)?;
        let (mut m, mut d, mut w) = (0u64, 0u64, 0u64);
        for r in rows.iter().filter(|r| r.owner == owner) {
            let c = r.cost_micros;
            if r.day >= month {
                m += c;
            }
            if r.day == today {
                d += c;
            }
            if r.day >= monday {
                w += c;
            }
        }
        Ok((m, d, w))
    }

    async fn telemetry(&self, path: &str, req: Request<Incoming>) -> Answer {
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let encoding = req.headers().get(header::CONTENT_ENCODING).cloned();
        let body = read_body(
            req,
            &self.gw.config.limits,
            4 << 20,
            "telemetry batches are accepted up to 4 MiB",
        )
        .await?;
        if let Some(base) = &self.cfg().otlp_forward_url {
            match self.si.otlp_in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    let client = self.si.http.clone();
                    let url = format!("{base}{path}");
                    tokio::spawn(async move {
                        let _permit = permit;
                        let mut r = Request::builder().method(Method::POST).uri(&url);
                        if let Some(ct) = content_type {
                            r = r.header(header::CONTENT_TYPE, ct);
                        }
                        if let Some(ce) = encoding {
                            r = r.header(header::CONTENT_ENCODING, ce);
                        }
                        let Ok(r) = r.body(Full::new(body)) else { return };
                        match tokio::time::timeout(Duration::from_secs(10), client.request(r)).await {
                            Ok(Ok(resp)) if resp.status().is_success() => {}
                            Ok(Ok(resp)) => tracing::debug!(
                                status = resp.status().as_u16(),
                                "the OTLP collector refused a forwarded batch"
                            ),
                            _ => tracing::debug!("the OTLP collector did not take a forwarded batch"),
                        }
                    });
                }
                Err(_) => tracing::debug!("OTLP forwarding saturated; a client batch was dropped"),
            }
        }
        Ok(json_response(StatusCode::OK, &json!({"partialSuccess": {}})))
    }
}

/// Revokes a key now (the key store tells every replica's cache).
pub async fn revoke_key(state: &conduit_state::State, key_id: &str, now: i64) -> crate::error::Result<()> {
    if let Some(mut k) = state.keys.by_id(key_id).await?
        && k.revoked_at.is_none()
    {
        k.revoked_at = Some(now);
        state.keys.update(&k).await?;
    }
    Ok(())
}

/// One person's sessions, and whether they are blocked.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct UserView {
    /// Email.
    pub email: String,
    /// Blocked since (RFC 3339).
    pub blocked_at: Option<String>,
    /// Their sessions.
    pub sessions: Vec<SessionView>,
}

/// A session as `conduit users list` shows it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SessionView {
    /// Id.
    pub id: String,
    /// Client.
    pub surface: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Signed in (RFC 3339).
    pub created_at: String,
    /// Last refresh (RFC 3339).
    pub refreshed_at: String,
    /// Ended (RFC 3339) and why.
    pub ended: Option<String>,
}

/// Every person with a session or a block.
pub async fn users(state: &conduit_state::State) -> crate::error::Result<Vec<UserView>> {
    let records = Records(state.signin.as_ref());
    let mut by_email: std::collections::BTreeMap<String, UserView> = Default::default();
    let fmt = crate::clock::format_rfc3339;
    for (_, u) in records.all::<UserRecord>(USER).await? {
        by_email.insert(
            u.email.clone(),
            UserView {
                email: u.email,
                blocked_at: u.blocked_at.map(fmt),
                sessions: Vec::new(),
            },
        );
    }
    for (_, s) in records.all::<Session>(SESSION).await? {
        let view = by_email.entry(s.identity.email.clone()).or_insert_with(|| UserView {
            email: s.identity.email.clone(),
            blocked_at: None,
            sessions: Vec::new(),
        });
        view.sessions.push(SessionView {
            id: s.id,
            surface: s.surface,
            team: s.identity.team,
            groups: s.identity.groups,
            created_at: fmt(s.created_at),
            refreshed_at: fmt(s.refreshed_at),
            ended: s
                .ended_at
                .map(|t| format!("{} ({})", fmt(t), s.ended_why.unwrap_or_default())),
        });
    }
    Ok(by_email.into_values().collect())
}

/// `conduit users revoke`: ends every session of `email` now (their access tokens are refused on
/// every replica at the next request), their dashboard sessions and the admin tokens they
/// created there, and blocks new sign-ins until [`restore_user`].
pub async fn revoke_user(state: &conduit_state::State, email: &str, by: &str) -> crate::error::Result<Revoked> {
    let email = email.trim().to_ascii_lowercase();
    let now = crate::clock::now_unix();
    let records = Records(state.signin.as_ref());
    let name = format!("{USER}{email}");
    let blocked = UserRecord {
        email: email.clone(),
        blocked_at: Some(now),
        blocked_by: Some(by.to_string()),
    };
    if records
        .update::<UserRecord, _>(&name, |_| Some(blocked.clone()))
        .await?
        .is_none()
    {
        records.create(&name, &blocked).await?;
    }
    let mut ended = 0;
    for (name, s) in records.all::<Session>(SESSION).await? {
        if s.identity.email != email || s.ended_at.is_some() {
            continue;
        }
        let done = records
            .update::<Session, _>(&name, |s| {
                (s.ended_at.is_none()).then(|| Session {
                    ended_at: Some(now),
                    ended_why: Some(format!("revoked by {by}")),
                    ..s
                })
            })
            .await?;
        if let Some(s) = done {
            revoke_key(state, &s.access_key, now).await?;
            ended += 1;
        }
    }
    // Access tokens of sessions that raced this revocation: every unexpired sign-in key of theirs.
    for k in state.keys.list().await? {
        if k.session.is_some() && k.owner == email && k.unusable_reason(now).is_none() {
            revoke_key(state, &k.id, now).await?;
        }
    }
    // Their dashboard: every SSO session ends, and the scoped admin tokens they created from it
    // are revoked (a token outliving its creator's access would be a way back in).
    let mut admin_sessions = 0;
    for (name, a) in records
        .all::<crate::admin_auth::AdminSession>(crate::admin_auth::ADMIN_SESSION)
        .await?
    {
        if a.email == email
            && let Some(read) = records.read::<crate::admin_auth::AdminSession>(&name).await?
        {
            admin_sessions += usize::from(records.remove(&name, &read.raw).await?);
        }
    }
    let creator = format!("sso:{email}");
    let mut admin_tokens = Vec::new();
    for t in crate::admin_auth::tokens(state).await? {
        if t.created_by == creator && t.revoked_at.is_none() {
            crate::admin_auth::revoke_token(state, &t.id).await?;
            admin_tokens.push(t.id);
        }
    }
    tracing::info!(
        user = %email,
        sessions = ended,
        admin_sessions,
        admin_tokens = admin_tokens.len(),
        by,
        "user signed out everywhere and blocked"
    );
    Ok(Revoked {
        sessions_ended: ended,
        admin_sessions_ended: admin_sessions,
        admin_tokens_revoked: admin_tokens,
    })
}

/// What [`revoke_user`] ended.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Revoked {
    /// Sign-in sessions ended (their access keys revoked).
    pub sessions_ended: usize,
    /// Dashboard SSO sessions ended.
    pub admin_sessions_ended: usize,
    /// Scoped admin tokens they had created from the dashboard, now revoked.
    pub admin_tokens_revoked: Vec<String>,
}

/// Lifts a [`revoke_user`] block; whether there was one.
pub async fn restore_user(state: &conduit_state::State, email: &str) -> crate::error::Result<bool> {
    let email = email.trim().to_ascii_lowercase();
    let records = Records(state.signin.as_ref());
    let lifted = records
        .update::<UserRecord, _>(&format!("{USER}{email}"), |u| {
            u.blocked_at.is_some().then_some(UserRecord {
                blocked_at: None,
                blocked_by: None,
                ..u
            })
        })
        .await?;
    Ok(lifted.is_some())
}

/// RFC 8628 §6.1: 8 characters of a 20-consonant alphabet (no vowels: no words), `XXXX-XXXX`;
/// about 34 bits.
fn new_user_code() -> Result<String, GatewayError> {
    const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut code = String::with_capacity(9);
    while code.len() < 9 {
        for b in random_bytes::<16>()? {
            if code.len() == 4 {
                code.push('-');
            }
            if code.len() < 9 && b < 240 {
                code.push(ALPHABET[(b % 20) as usize] as char);
            }
        }
    }
    Ok(code)
}

/// What a person typed, as the code is stored: letters upper-cased, a dash after four.
fn normalize_code(typed: &str) -> String {
    let letters: String = typed
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_uppercase())
        .take(8)
        .collect();
    if letters.len() == 8 {
        format!("{}-{}", &letters[..4], &letters[4..])
    } else {
        letters
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], GatewayError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| {
        GatewayError::new(
            ErrorKind::Internal,
            Fault::Gateway,
            format!("OS random source failed: {e}"),
        )
    })?;
    Ok(b)
}

/// `n` random bytes, base64url.
fn random_token(n: usize) -> Result<String, GatewayError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| {
        GatewayError::new(
            ErrorKind::Internal,
            Fault::Gateway,
            format!("OS random source failed: {e}"),
        )
    })?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> String {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    url[..end].to_string()
}

fn constant_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A stable UUID-shaped id for a settings document (from its checksum).
fn uuid_of(checksum: &str) -> String {
    let h = checksum.trim_start_matches("sha256:");
    if h.len() < 32 {
        return h.to_string();
    }
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn field<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

async fn read_form(
    req: Request<Incoming>,
    limits: &crate::config::Limits,
) -> Result<Vec<(String, String)>, GatewayError> {
    let body = read_body(req, limits, 64 << 10, "sign-in forms are accepted up to 64 KiB").await?;
    let text =
        std::str::from_utf8(&body).map_err(|_| GatewayError::client(ErrorKind::BadRequest, "the form is not UTF-8"))?;
    Ok(oidc::parse_form(text))
}

/// A sign-in or telemetry body: the request path's own bounded read (`inspect::read`: size and
/// `limits.body_read_timeout_secs`, so a body that never comes cannot hold a place under
/// `limits.max_in_flight`), with this endpoint's smaller size cap.
async fn read_body(
    req: Request<Incoming>,
    limits: &crate::config::Limits,
    max: u64,
    too_large: &'static str,
) -> Result<bytes::Bytes, GatewayError> {
    let limits = crate::config::Limits {
        max_body_bytes: max.min(limits.max_body_bytes),
        ..*limits
    };
    crate::stages::inspect::read(req.into_body(), &limits)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::PayloadTooLarge => GatewayError::client(ErrorKind::PayloadTooLarge, too_large),
            _ => e,
        })
}

fn set(resp: &mut Response<GatewayBody>, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(name, v);
    }
}

fn no_store(resp: &mut Response<GatewayBody>) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn json_response(status: StatusCode, body: &Value) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(&mut resp);
    resp
}

/// RFC 6749 §5.2 / RFC 8628 §3.5.
fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response<GatewayBody> {
    json_response(status, &json!({"error": code, "error_description": description}))
}

fn html_with(status: StatusCode, body: String, cookies: &[String], form_action: &str) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No script, no frames; forms post only here, and (the confirmation page) our 303 on to the
    // IdP, which browsers check against form-action too.
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    no_store(&mut resp);
    for c in cookies {
        set(&mut resp, header::SET_COOKIE, c);
    }
    resp
}

/// An outcome page: no form on it.
fn html(status: StatusCode, body: String, cookies: &[String]) -> Response<GatewayBody> {
    html_with(status, body, cookies, "'none'")
}

fn store_error(e: crate::error::Error) -> GatewayError {
    GatewayError::new(
        ErrorKind::StoreUnavailable,
        Fault::Gateway,
        "the gateway cannot reach its store to sign you in; retry shortly",
    )
    .with_cause(e)
}

fn idp_unavailable(e: IdpError) -> GatewayError {
    let mut err = GatewayError::new(
        ErrorKind::UpstreamUnreachable,
        Fault::Upstream,
        format!("sign-in cannot continue: {e}"),
    );
    err.retry_after = Some(30);
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_base20_and_normalize() {
        for _ in 0..200 {
            let c = new_user_code().unwrap();
            assert_eq!(c.len(), 9, "{c}");
            assert_eq!(&c[4..5], "-");
            assert!(
                c.chars()
                    .filter(|&ch| ch != '-')
                    .all(|ch| "BCDFGHJKLMNPQRSTVWXZ".contains(ch)),
                "{c}"
            );
            assert_eq!(normalize_code(&c.to_lowercase().replace('-', " ")), c);
        }
        assert_eq!(normalize_code("abc"), "ABC");
    }
}
