//! Who is calling the admin API, and what they may do there.
//!
//! Three ways in, each ending in a [`Caller`] with roles:
//! - the **bootstrap admin token** (`CONDUIT_ADMIN_TOKEN` / `<data_dir>/admin.token`): role
//!   `admin`; refused once `[admin] bootstrap_token = false`;
//! - a **scoped admin token** (`cas_…`, `conduit admin-tokens create --role finance --expires …`):
//!   its roles, until it expires or is revoked; stored as a hash only;
//! - a **dashboard SSO session** (`signin::admin`): an HttpOnly, SameSite=Strict cookie; roles from
//!   the person's IdP groups (`[signin.admin_roles]`). A state-changing call with the cookie must
//!   also carry `x-conduit-csrf` (the MAC of the session, from `GET /auth/whoami`).
//!
//! Roles: `viewer` reads spend, budgets, keys, findings, policies, users; `finance` also sets
//! budgets and imports prices; `security` also sets policy modes, marks false positives, exports
//! and verifies the audit log, and revokes keys and users; `admin` does everything (keys,
//! credentials, the master key, admin tokens). Every state-changing call is an audit record
//! (`treatment` `admin`) naming the actor, the action, the object and, for settings, before/after.

use http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use conduit_state::signin::{self, Records};

use crate::error::{Error, Result};
use crate::gateway::Gateway;
pub use crate::roles::{Role, action, needed};

/// The dashboard session's cookie.
pub const SESSION_COOKIE: &str = "conduit_admin";

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `bootstrap-token`, `token:adm_…`, `sso:EMAIL`.
    pub actor: String,
    /// The roles.
    pub roles: Vec<Role>,
    /// The SSO session's hash, when the cookie authenticated the call (CSRF applies).
    pub session: Option<String>,
}

impl Caller {
    /// Whether one of the roles grants `need` (any role grants a viewer's reads; admin grants all).
    pub fn may(&self, need: Role) -> bool {
        self.roles
            .iter()
            .any(|&r| r == Role::Admin || r == need || need == Role::Viewer)
    }

    /// The roles as text.
    pub fn roles_text(&self) -> String {
        self.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// The stored value of a setting a route changes, for the audit's before/after.
pub async fn setting(gw: &Gateway, segments: &[&str]) -> Option<serde_json::Value> {
    match segments {
        ["v1", "budgets", scope] => {
            let scope = crate::percent::decode(scope);
            let stored = gw.state.budget_limits.list().await.ok()?;
            Some(
                stored
                    .into_iter()
                    .find(|(s, _)| *s == scope)
                    .map_or(serde_json::Value::Null, |(_, l)| serde_json::json!(l)),
            )
        }
        ["v1", "policies", "modes", category] => {
            let modes = gw.state.policy_modes.list().await.ok()?;
            Some(
                modes
                    .into_iter()
                    .find(|(c, _)| c == category)
                    .map_or(serde_json::Value::Null, |(_, m)| m.into()),
            )
        }
        _ => None,
    }
}

/// A scoped admin token as stored (`admintoken:<H(token)>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminToken {
    /// `adm_…`.
    pub id: String,
    /// Label.
    #[serde(default)]
    pub name: Option<String>,
    /// Roles.
    pub roles: Vec<Role>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; required (no admin token lives for ever).
    pub expires_at: i64,
    /// Who created it.
    pub created_by: String,
    /// Unix seconds, if revoked.
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

/// How a scoped admin token begins (the bootstrap token, generated, begins `cat_`).
pub const SCOPED_PREFIX: &str = "cas_";

/// Where scoped admin tokens and dashboard sessions are kept in the sign-in store.
pub use conduit_state::signin::{ADMIN_SESSION, ADMIN_TOKEN};

/// A dashboard SSO session (`adminsession:<H(cookie)>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminSession {
    /// Who.
    pub email: String,
    /// Roles from their groups at sign-in.
    pub roles: Vec<Role>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Creates a scoped admin token; the secret (shown once) and its record.
pub async fn create_token(
    state: &conduit_state::State,
    roles: Vec<Role>,
    expires_at: i64,
    name: Option<String>,
    by: &str,
) -> Result<(String, AdminToken)> {
    let now = crate::clock::now_unix();
    if roles.is_empty() {
        return Err(Error::msg(
            "an admin token needs at least one role (--role viewer|finance|security|admin)",
        ));
    }
    if expires_at <= now {
        return Err(Error::msg(
            "the admin token's expiry is in the past; give a future date (--expires YYYY-MM-DD)",
        ));
    }
    if expires_at > now + 400 * 86_400 {
        return Err(Error::msg(
            "an admin token may live at most 400 days; give an earlier --expires",
        ));
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| Error::msg(format!("OS random source failed: {e}")))?;
    use base64::Engine;
    let secret = format!(
        "{SCOPED_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let mut id = [0u8; 6];
    getrandom::fill(&mut id).map_err(|e| Error::msg(format!("OS random source failed: {e}")))?;
    let record = AdminToken {
        id: format!("adm_{}", crate::hex::encode(&id)),
        name,
        roles,
        created_at: now,
        expires_at,
        created_by: by.to_string(),
        revoked_at: None,
    };
    Records(state.signin.as_ref())
        .create(&format!("{ADMIN_TOKEN}{}", signin::hash(&secret)), &record)
        .await?;
    Ok((secret, record))
}

/// Every scoped admin token (never a secret).
pub async fn tokens(state: &conduit_state::State) -> Result<Vec<AdminToken>> {
    let mut all: Vec<AdminToken> = Records(state.signin.as_ref())
        .all::<AdminToken>(ADMIN_TOKEN)
        .await?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    all.sort_by_key(|t| t.created_at);
    Ok(all)
}

/// Revokes a scoped admin token by id.
pub async fn revoke_token(state: &conduit_state::State, id: &str) -> Result<AdminToken> {
    let records = Records(state.signin.as_ref());
    for (name, t) in records.all::<AdminToken>(ADMIN_TOKEN).await? {
        if t.id == id {
            let now = crate::clock::now_unix();
            return records
                .update::<AdminToken, _>(&name, |t| {
                    Some(AdminToken {
                        revoked_at: t.revoked_at.or(Some(now)),
                        ..t
                    })
                })
                .await?
                .ok_or_else(|| Error::msg(format!("admin token {id} vanished while being revoked")));
        }
    }
    Err(Error::msg(format!(
        "no admin token {id}; `conduit admin-tokens list` shows them"
    )))
}

/// Why a call is not authenticated: one sentence.
pub type Unauthenticated = String;

/// Authenticates an admin call.
pub async fn caller(gw: &Gateway, headers: &HeaderMap) -> std::result::Result<Caller, Unauthenticated> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(token) = bearer {
        // Comparing digests keeps the comparison constant-time in the token length too.
        let a = Sha256::digest(token.as_bytes());
        let b = Sha256::digest(gw.admin_token.as_bytes());
        if bool::from(a.ct_eq(&b)) {
            if !gw.config.admin.bootstrap_token {
                return Err("the bootstrap admin token is disabled ([admin] bootstrap_token = false); use a scoped admin token (cas_…) or sign in to the dashboard".into());
            }
            return Ok(Caller {
                actor: "bootstrap-token".into(),
                roles: vec![Role::Admin],
                session: None,
            });
        }
        if token.starts_with(SCOPED_PREFIX) {
            let now = crate::clock::now_unix();
            let found = Records(gw.state.signin.as_ref())
                .read::<AdminToken>(&format!("{ADMIN_TOKEN}{}", signin::hash(token)))
                .await
                .map_err(|e| format!("the admin tokens cannot be read right now ({e}); retry"))?;
            return match found.map(|r| r.value) {
                Some(t) if t.revoked_at.is_some() => Err(format!("admin token {} was revoked", t.id)),
                Some(t) if t.expires_at <= now => Err(format!(
                    "admin token {} expired at {}",
                    t.id,
                    crate::clock::format_rfc3339(t.expires_at)
                )),
                Some(t) => Ok(Caller {
                    actor: format!("token:{}", t.id),
                    roles: t.roles,
                    session: None,
                }),
                None => Err("the admin token is not known to this gateway".into()),
            };
        }
        return Err("wrong admin token".into());
    }
    let secure = gw
        .signin
        .as_ref()
        .is_some_and(|si| crate::idp::admin_cookies_secure(&si.config));
    if let Some(cookie) = crate::idp::cookie(headers, &crate::idp::cookie_name(secure, SESSION_COOKIE)) {
        let hash = signin::hash(cookie);
        let now = crate::clock::now_unix();
        let found = Records(gw.state.signin.as_ref())
            .read::<AdminSession>(&format!("{ADMIN_SESSION}{hash}"))
            .await
            .map_err(|e| format!("the dashboard sessions cannot be read right now ({e}); retry"))?;
        let session = match found.map(|r| r.value) {
            Some(s) if s.expires_at > now => s,
            _ => return Err("the dashboard session has expired; sign in again".into()),
        };
        // A person revoked since they signed in is out of the dashboard too.
        let user = Records(gw.state.signin.as_ref())
            .read::<signin::UserRecord>(&format!("{}{}", signin::USER, session.email))
            .await
            .map_err(|e| format!("the sign-in records cannot be read right now ({e}); retry"))?;
        if user.is_some_and(|u| u.value.blocked_at.is_some()) {
            return Err(format!(
                "{}'s access was revoked (`conduit users restore` lifts it); sign in again once restored",
                session.email
            ));
        }
        return Ok(Caller {
            actor: format!("sso:{}", session.email),
            roles: session.roles,
            session: Some(hash),
        });
    }
    Err("missing admin credentials; send `Authorization: Bearer <token>` (CONDUIT_ADMIN_TOKEN, <data_dir>/admin.token, or a scoped cas_… token), or sign in to the dashboard".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn each_role_reaches_exactly_its_surface() {
        let get = Method::GET;
        let (put, post) = (Method::PUT, Method::POST);
        assert_eq!(needed(&get, &["v1", "spend"]), Role::Viewer);
        assert_eq!(needed(&get, &["v1", "audit", "export"]), Role::Security);
        assert_eq!(needed(&put, &["v1", "budgets", "team:x"]), Role::Finance);
        assert_eq!(needed(&put, &["v1", "policies", "modes", "secrets"]), Role::Security);
        assert_eq!(needed(&post, &["v1", "keys"]), Role::Admin);
        assert_eq!(needed(&put, &["v1", "credentials", "anthropic"]), Role::Admin);
        assert_eq!(needed(&post, &["v1", "admin-tokens"]), Role::Admin);
        let c = |roles: Vec<Role>| Caller {
            actor: "t".into(),
            roles,
            session: None,
        };
        assert!(c(vec![Role::Finance]).may(Role::Viewer));
        assert!(c(vec![Role::Finance]).may(Role::Finance));
        assert!(!c(vec![Role::Finance]).may(Role::Security));
        assert!(!c(vec![Role::Viewer]).may(Role::Finance));
        assert!(c(vec![Role::Viewer, Role::Security]).may(Role::Security));
        assert!(c(vec![Role::Admin]).may(Role::Finance) && c(vec![Role::Admin]).may(Role::Admin));
        assert!(!c(vec![Role::Security]).may(Role::Admin));
    }
}
