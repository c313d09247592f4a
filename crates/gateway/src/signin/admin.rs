//! Dashboard SSO, on the admin listener: the authorization-code flow with PKCE and nonce against
//! the `[signin]` IdP, roles from the person's groups (`[signin.admin_roles]`), a session cookie
//! (HttpOnly, SameSite=Strict, Secure unless on loopback) and a CSRF token for state-changing
//! calls.
//!
//! ```text
//! GET  /auth/login     → 303 to the IdP (state bound to this browser by a cookie)
//! GET  /auth/callback  the IdP's answer → session cookie → 303 /dashboard
//! GET  /auth/whoami    {actor, roles, csrf}: what the dashboard shows and sends back
//! POST /auth/logout    ends the session (needs the CSRF header)
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};

use conduit_state::signin::{self, Records};

use super::{Ctx, SignIn, cookie, html, json_response, random_token, set};
use crate::admin_auth::{ADMIN_SESSION, AdminSession, Role};
use crate::body::GatewayBody;
use crate::gateway::Gateway;

/// The session cookie.
pub use crate::admin_auth::SESSION_COOKIE;
const STATE_COOKIE: &str = "conduit_admin_state";
use conduit_state::signin::ADMIN_STATE as STATE;
/// The header a cookie-authenticated state-changing call carries.
pub const CSRF_HEADER: &str = "x-conduit-csrf";

/// Whether the admin listener serves `path` here.
pub fn serves(path: &str) -> bool {
    matches!(path, "/auth/login" | "/auth/callback" | "/auth/whoami" | "/auth/logout")
}

/// The CSRF token of a session (its hash's MAC under the sign-in key).
pub fn csrf_of(gw: &Gateway, session_hash: &str) -> String {
    let key = gw.master_key().derive("conduit/signin/v1");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_ref());
    URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, format!("admin-csrf\0{session_hash}").as_bytes()).as_ref())
}

/// Whether a cookie-authenticated call carries its session's CSRF token.
pub fn csrf_ok(gw: &Gateway, headers: &HeaderMap, session_hash: &str) -> bool {
    let presented = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    super::constant_eq(presented, &csrf_of(gw, session_hash))
}

/// Answers one `/auth/…` request.
pub async fn handle(gw: &Gateway, req: Request<Incoming>, peer: std::net::SocketAddr) -> Response<GatewayBody> {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == "/auth/whoami" {
        // Token or session alike (the dashboard asks either way, sign-in configured or not).
        return match crate::admin_auth::caller(gw, req.headers()).await {
            Ok(c) => json_response(
                StatusCode::OK,
                &json!({
                    "signed_in": true,
                    "actor": c.actor,
                    "roles": c.roles,
                    "csrf": c.session.as_deref().map(|h| csrf_of(gw, h)),
                }),
            ),
            // Not an error for the page (it asks before it knows): who it is not, and whether SSO is on.
            Err(why) => json_response(
                StatusCode::OK,
                &json!({
                    "signed_in": false,
                    "why": why,
                    "sso": gw.signin.as_ref().is_some_and(|s| !s.config.admin_roles.is_empty()),
                }),
            ),
        };
    }
    let Some(si) = gw.signin.as_deref() else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": "dashboard sign-in is off: configure [signin] with [signin.admin_roles] (docs/sign-in.md)"}}),
        );
    };
    let ctx = Ctx {
        gw,
        si,
        now: crate::clock::now_unix(),
    };
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/auth/login") if !si.admin_logins.allow(peer.ip()) => {
            let mut r = failure(
                "Too many sign-ins",
                "Too many dashboard sign-ins from this address; wait a minute.",
            );
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            set(&mut r, header::RETRY_AFTER, "60");
            r
        }
        (Method::GET, "/auth/login") => login(&ctx, si, req.headers()).await,
        (Method::GET, "/auth/callback") => {
            let query = req.uri().query().map(super::oidc::parse_form).unwrap_or_default();
            callback(&ctx, si, req.headers(), &query).await
        }
        (Method::POST, "/auth/logout") => {
            if let Some(c) = admin_cookie_value(&ctx, req.headers(), SESSION_COOKIE) {
                let hash = signin::hash(c);
                if !csrf_ok(gw, req.headers(), &hash) {
                    return json_response(
                        StatusCode::FORBIDDEN,
                        &json!({"error": {"message": "sign-out needs the x-conduit-csrf header"}}),
                    );
                }
                let records = Records(gw.state.signin.as_ref());
                let name = format!("{ADMIN_SESSION}{hash}");
                if let Ok(Some(read)) = records.read::<AdminSession>(&name).await {
                    let _ = records.remove(&name, &read.raw).await;
                }
            }
            let mut resp = json_response(StatusCode::OK, &json!({"signed_out": true}));
            set(
                &mut resp,
                header::SET_COOKIE,
                &admin_cookie(&ctx, SESSION_COOKIE, "", "Strict", 0),
            );
            resp
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": {"message": format!("{} is not served on {path}", req.method())}}),
        ),
    }
}

/// A cookie for the admin listener: Secure unless it is reached on loopback over plain HTTP.
fn admin_cookie(ctx: &Ctx<'_>, name: &str, value: &str, same_site: &str, max_age: i64) -> String {
    let secure = crate::idp::admin_cookies_secure(ctx.cfg());
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}{}",
        crate::idp::cookie_name(secure, name),
        if secure { "; Secure" } else { "" }
    )
}

/// A dashboard cookie's value, under the name it is set with.
fn admin_cookie_value<'h>(ctx: &Ctx<'_>, headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let secure = crate::idp::admin_cookies_secure(ctx.cfg());
    cookie(headers, &crate::idp::cookie_name(secure, name))
}

/// The admin listener's origin.
fn admin_base(ctx: &Ctx<'_>, headers: &HeaderMap) -> Option<String> {
    if let Some(u) = &ctx.cfg().admin_public_url {
        return Some(u.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    super::oidc::is_loopback(name).then(|| format!("http://{host}"))
}

fn failure(title: &str, msg: &str) -> Response<GatewayBody> {
    html(StatusCode::BAD_REQUEST, super::pages::outcome(title, msg), &[])
}

async fn login(ctx: &Ctx<'_>, si: &SignIn, headers: &HeaderMap) -> Response<GatewayBody> {
    if ctx.cfg().admin_roles.is_empty() {
        return failure(
            "Dashboard sign-in is off",
            "No [signin.admin_roles] are configured, so no one could be given a role. Use an admin token.",
        );
    }
    let Some(base) = admin_base(ctx, headers) else {
        return failure(
            "Dashboard sign-in is not set up",
            "Set signin.admin_public_url to the address you reach this dashboard at.",
        );
    };
    let Ok(state) = random_token(32) else {
        return failure("Sign-in failed", "The OS random source failed.");
    };
    let state_hash = signin::hash(&state);
    let record = json!({"expires_at": ctx.now + 600}).to_string();
    if Records(ctx.gw.state.signin.as_ref())
        .0
        .swap(&format!("{STATE}{state_hash}"), None, Some(&record))
        .await
        .is_err()
    {
        return failure("Sign-in failed", "The gateway's store is not answering; retry shortly.");
    }
    let verifier = ctx.mac("admin-pkce", &state);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let nonce = ctx.mac("admin-nonce", &state);
    let url = match si
        .provider
        .authorization_url(&format!("{base}/auth/callback"), &state, &nonce, &challenge)
        .await
    {
        Ok(u) => u,
        Err(e) => return failure("The identity provider is not answering", &e.to_string()),
    };
    let mut resp = Response::new(GatewayBody::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    set(&mut resp, header::LOCATION, &url);
    set(
        &mut resp,
        header::SET_COOKIE,
        &admin_cookie(ctx, STATE_COOKIE, &state_hash, "Lax", 600),
    );
    super::no_store(&mut resp);
    resp
}

async fn callback(
    ctx: &Ctx<'_>,
    si: &SignIn,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Response<GatewayBody> {
    let Some(state) = super::field(query, "state") else {
        return failure("Sign-in failed", "The identity provider's answer has no state.");
    };
    let state_hash = signin::hash(state);
    let records = Records(ctx.gw.state.signin.as_ref());
    let name = format!("{STATE}{state_hash}");
    let Ok(Some(raw)) = records.text(&name).await else {
        return failure(
            "This sign-in is not waiting",
            "It expired or finished. Open the dashboard and sign in again.",
        );
    };
    // Single use, and only in the browser that started it.
    if !matches!(records.0.swap(&name, Some(&raw), None).await, Ok(true)) {
        return failure("This sign-in is not waiting", "It was already used.");
    }
    let live = serde_json::from_str::<serde_json::Value>(&raw)
        .ok()
        .and_then(|v| v["expires_at"].as_i64())
        .is_some_and(|t| t > ctx.now);
    if !live || admin_cookie_value(ctx, headers, STATE_COOKIE) != Some(state_hash.as_str()) {
        return failure(
            "Sign-in failed",
            "This answer did not come back to the browser that started the sign-in, in time. Sign in again.",
        );
    }
    if let Some(err) = super::field(query, "error") {
        let err: String = err
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return failure(
            "Sign-in refused",
            &format!("The identity provider refused the sign-in ({err})."),
        );
    }
    let Some(base) = admin_base(ctx, headers) else {
        return failure("Dashboard sign-in is not set up", "Set signin.admin_public_url.");
    };
    let Some(code) = super::field(query, "code") else {
        return failure("Sign-in failed", "The identity provider's answer has no code.");
    };
    let verifier = ctx.mac("admin-pkce", state);
    let tokens = match si
        .provider
        .exchange(code, &verifier, &format!("{base}/auth/callback"))
        .await
    {
        Ok(t) => t,
        Err(e) => return failure("Sign-in failed", &e.to_string()),
    };
    let Some(id_token) = tokens.id_token else {
        return failure("Sign-in failed", "The identity provider sent no ID token.");
    };
    let nonce = ctx.mac("admin-nonce", state);
    let claims = match si.provider.verify(&id_token, &ctx.expect(Some(&nonce))).await {
        Ok(c) => c,
        Err(e) => return failure("Sign-in refused", &e.to_string()),
    };
    let identity = match ctx.identity(&claims) {
        Ok(i) => i,
        Err(why) => return failure("Sign-in refused", &why),
    };
    if let Err(why) = ctx.admitted(&identity).await {
        return failure("Sign-in refused", &why);
    }
    let mut roles: Vec<Role> = ctx
        .cfg()
        .admin_roles
        .iter()
        .filter(|(_, groups)| groups.iter().any(|g| identity.groups.contains(g)))
        .map(|(r, _)| *r)
        .collect();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        tracing::info!(user = %identity.email, "dashboard sign-in refused: no admin role");
        return failure(
            "No dashboard role",
            &format!(
                "{} is in none of the groups that [signin.admin_roles] gives a role. Ask your Conduit administrators.",
                identity.email
            ),
        );
    }
    let Ok(secret) = random_token(32) else {
        return failure("Sign-in failed", "The OS random source failed.");
    };
    let session = AdminSession {
        email: identity.email.clone(),
        roles: roles.clone(),
        created_at: ctx.now,
        expires_at: ctx.now + ctx.cfg().admin_session_ttl.as_secs() as i64,
    };
    if records
        .create(&format!("{ADMIN_SESSION}{}", signin::hash(&secret)), &session)
        .await
        .is_err()
    {
        return failure("Sign-in failed", "The gateway's store is not answering; retry shortly.");
    }
    tracing::info!(user = %identity.email, roles = ?roles, "dashboard sign-in");
    let mut resp = Response::new(GatewayBody::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    set(&mut resp, header::LOCATION, "/dashboard");
    let max_age = ctx.cfg().admin_session_ttl.as_secs() as i64;
    set(
        &mut resp,
        header::SET_COOKIE,
        &admin_cookie(ctx, SESSION_COOKIE, &secret, "Strict", max_age),
    );
    set(
        &mut resp,
        header::SET_COOKIE,
        &admin_cookie(ctx, STATE_COOKIE, "", "Lax", 0),
    );
    super::no_store(&mut resp);
    resp
}
