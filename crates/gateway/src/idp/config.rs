//! `[signin]`: the IdP Conduit signs people in with, and what a sign-in grants. Absent `issuer`,
//! sign-in is off and its paths answer 404 like any unknown path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// `[signin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignIn {
    /// The OIDC issuer URL, exactly as the IdP writes it in `iss`.
    pub issuer: Option<String>,
    /// Conduit's client id at the IdP.
    pub client_id: Option<String>,
    /// File holding the client secret (or `CONDUIT_OIDC_CLIENT_SECRET`); none: a public client
    /// (PKCE only).
    pub client_secret_file: Option<PathBuf>,
    /// The origin people and clients reach this gateway at (`https://conduit.corp.example`);
    /// required unless the gateway listens on loopback.
    pub public_url: Option<String>,
    /// Scopes asked of the IdP (default `openid email profile offline_access`).
    pub scopes: Option<Vec<String>>,
    /// Extra authorization-request parameters (Google: `{access_type = "offline"}` for refresh
    /// tokens). Those Conduit sets itself (state, nonce, PKCE, redirect) cannot be overridden.
    #[serde(default)]
    pub extra_auth_params: BTreeMap<String, String>,
    /// Only these email domains may sign in (empty: any the IdP vouches for).
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    /// Only members of one of these IdP groups may sign in (empty: any).
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Claim holding the email (default `email`).
    pub email_claim: Option<String>,
    /// Claim holding the groups (default `groups`).
    pub groups_claim: Option<String>,
    /// Refuse an email the IdP does not mark `email_verified` (default true).
    pub require_verified_email: Option<bool>,
    /// Access-token lifetime, seconds (default 900).
    pub access_ttl_secs: Option<u64>,
    /// A session's absolute lifetime, hours (default 720): refreshes stop after it.
    pub session_ttl_hours: Option<u64>,
    /// How long a device code waits for its person, seconds (default 600).
    pub device_code_ttl_secs: Option<u64>,
    /// Poll interval asked of clients, seconds (default 5).
    pub poll_interval_secs: Option<u64>,
    /// Clock difference tolerated with the IdP, seconds (default 60).
    pub clock_skew_secs: Option<u64>,
    /// Plain text shown beside the code in Claude Code's sign-in screen (≤ 500 characters).
    pub login_notice: Option<String>,
    /// IdP group → Conduit team, first match in order.
    #[serde(default)]
    pub teams: Vec<RawTeamMap>,
    /// JSON file of Claude Code managed settings: `{"default": {…}, "teams": {"NAME": {…}}}`.
    pub managed_settings_file: Option<PathBuf>,
    /// OTLP/HTTP collector base URL the telemetry intake forwards to (none: accepted, dropped).
    pub otlp_forward_url: Option<String>,
    /// Dashboard SSO: role → the IdP groups that grant it (`admin = ["conduit-admins"]`).
    #[serde(default)]
    pub admin_roles: BTreeMap<String, Vec<String>>,
    /// The origin browsers reach the admin listener at (required for dashboard SSO unless it
    /// listens on loopback).
    pub admin_public_url: Option<String>,
    /// Dashboard session lifetime, hours (default 8).
    pub admin_session_hours: Option<u64>,
}

/// One `[[signin.teams]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeamMap {
    /// The IdP group.
    pub group: String,
    /// The Conduit team its members are attributed to.
    pub team: String,
}

/// Validated `[signin]`.
#[derive(Debug, Clone)]
pub struct SignInConfig {
    /// Issuer.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Option<zeroize::Zeroizing<String>>,
    /// Origin, no trailing slash; `None`: derived from a loopback `Host`.
    pub public_url: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Extra authorization-request parameters.
    pub extra_auth_params: Vec<(String, String)>,
    /// Allowed email domains, lowercase.
    pub allowed_email_domains: Vec<String>,
    /// Allowed groups.
    pub allowed_groups: Vec<String>,
    /// Email claim.
    pub email_claim: String,
    /// Groups claim.
    pub groups_claim: String,
    /// Require `email_verified`.
    pub require_verified_email: bool,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// Session lifetime.
    pub session_ttl: Duration,
    /// Device-code lifetime.
    pub device_code_ttl: Duration,
    /// Poll interval.
    pub poll_interval: Duration,
    /// Clock skew.
    pub clock_skew: Duration,
    /// Login notice.
    pub login_notice: Option<String>,
    /// Group → team, in order.
    pub teams: Vec<(String, String)>,
    /// Managed settings.
    pub managed: ManagedSettings,
    /// OTLP forward base URL.
    pub otlp_forward_url: Option<String>,
    /// Role → IdP groups, for dashboard SSO.
    pub admin_roles: Vec<(crate::roles::Role, Vec<String>)>,
    /// The admin listener's public origin.
    pub admin_public_url: Option<String>,
    /// Dashboard session lifetime.
    pub admin_session_ttl: Duration,
}

/// Managed settings documents, with their checksums.
#[derive(Debug, Clone, Default)]
pub struct ManagedSettings {
    /// For everyone without a team entry.
    pub default: Option<Served>,
    /// Per team.
    pub teams: BTreeMap<String, Served>,
}

/// One settings document as served.
#[derive(Debug, Clone)]
pub struct Served {
    /// The `settings` object.
    pub settings: Value,
    /// `sha256:<hex>` over its canonical form (keys sorted at every level, no whitespace).
    pub checksum: String,
}

impl Served {
    /// A document and its checksum.
    pub fn new(settings: Value) -> Served {
        let mut canonical = String::new();
        write_canonical(&settings, &mut canonical);
        let checksum = format!(
            "sha256:{}",
            conduit_core::hex::encode(&conduit_core::keys::KeyHash::of(&canonical).0)
        );
        Served { settings, checksum }
    }
}

/// JSON with object keys sorted at every level and no whitespace (Claude Code's checksum form).
pub fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl RawSignIn {
    /// Validates; `None` when sign-in is off. `listen_loopback`: whether the gateway listens on
    /// loopback only (then `public_url` may be left out).
    pub fn validate(self, env: &dyn Fn(&str) -> Option<String>, listen_loopback: bool) -> Result<Option<SignInConfig>> {
        let Some(issuer) = self.issuer else {
            return Ok(None);
        };
        let bad = |key: &str, msg: String| Error::msg(format!("signin.{key}: {msg}"));
        super::oidc::check_url(&issuer).map_err(|e| bad("issuer", e))?;
        let client_id = self
            .client_id
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| bad("client_id", "is required with signin.issuer; register Conduit as an OIDC client at the IdP and put its client id here".into()))?;
        let client_secret = match (
            env("CONDUIT_OIDC_CLIENT_SECRET").filter(|s| !s.is_empty()),
            &self.client_secret_file,
        ) {
            (Some(s), _) => Some(zeroize::Zeroizing::new(s)),
            (None, Some(path)) => {
                let shown = path.display().to_string();
                let s = std::fs::read_to_string(path)
                    .map_err(|e| bad("client_secret_file", format!("reading {shown:?}: {e}")))?;
                let s = s.trim().to_string();
                if s.is_empty() {
                    return Err(bad("client_secret_file", format!("{shown:?} is empty")));
                }
                Some(zeroize::Zeroizing::new(s))
            }
            (None, None) => None,
        };
        let public_url = match self.public_url {
            Some(u) => {
                let u = u.trim_end_matches('/').to_string();
                let uri: http::Uri = u
                    .parse()
                    .map_err(|_| bad("public_url", format!("{u:?} is not a URL")))?;
                if uri.path() != "/" && !uri.path().is_empty() {
                    return Err(bad(
                        "public_url",
                        format!("{u:?} has a path; give the origin only (https://conduit.corp.example)"),
                    ));
                }
                super::oidc::check_url(&u).map_err(|e| bad("public_url", e))?;
                Some(u)
            }
            None if listen_loopback => None,
            None => {
                return Err(bad(
                    "public_url",
                    "is required when the gateway listens beyond loopback: set it to the origin people reach Conduit at (https://conduit.corp.example); without it the IdP redirect and the sign-in URLs would come from the client-controlled Host header".into(),
                ));
            }
        };
        let scopes = self.scopes.unwrap_or_else(|| {
            ["openid", "email", "profile", "offline_access"]
                .map(String::from)
                .to_vec()
        });
        if !scopes.iter().any(|s| s == "openid") {
            return Err(bad(
                "scopes",
                format!("{scopes:?} lacks openid, without which the IdP sends no ID token"),
            ));
        }
        let bounded = |key: &str, v: Option<u64>, default: u64, min: u64, max: u64| -> Result<u64> {
            let v = v.unwrap_or(default);
            if (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(bad(key, format!("{v} is outside {min}..={max}")))
            }
        };
        const OURS: [&str; 9] = [
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "prompt",
        ];
        if let Some(k) = self.extra_auth_params.keys().find(|k| OURS.contains(&k.as_str())) {
            return Err(bad(
                "extra_auth_params",
                format!("{k:?} is set by Conduit itself and cannot be overridden"),
            ));
        }
        let extra_auth_params = self.extra_auth_params.into_iter().collect();
        let login_notice = self.login_notice.filter(|n| !n.trim().is_empty());
        if let Some(n) = &login_notice
            && n.chars().count() > 500
        {
            return Err(bad(
                "login_notice",
                format!("is {} characters; at most 500", n.chars().count()),
            ));
        }
        let mut teams = Vec::new();
        for t in self.teams {
            crate::budget::validate_scope(&format!("team:{}", t.team)).map_err(|e| bad("teams", e.to_string()))?;
            teams.push((t.group, t.team));
        }
        let managed = match &self.managed_settings_file {
            None => ManagedSettings::default(),
            Some(path) => load_managed(path).map_err(|e| bad("managed_settings_file", e))?,
        };
        if let Some(u) = &self.otlp_forward_url {
            super::oidc::check_url(u).map_err(|e| bad("otlp_forward_url", e))?;
        }
        let mut admin_roles = Vec::new();
        for (role, groups) in self.admin_roles {
            let r = crate::roles::Role::parse(&role).map_err(|e| bad("admin_roles", e.to_string()))?;
            admin_roles.push((r, groups));
        }
        let admin_public_url = match self.admin_public_url {
            Some(u) => {
                let u = u.trim_end_matches('/').to_string();
                super::oidc::check_url(&u).map_err(|e| bad("admin_public_url", e))?;
                Some(u)
            }
            None => None,
        };
        Ok(Some(SignInConfig {
            issuer,
            client_id,
            client_secret,
            public_url,
            scopes,
            extra_auth_params,
            allowed_email_domains: self
                .allowed_email_domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .collect(),
            allowed_groups: self.allowed_groups,
            email_claim: self.email_claim.unwrap_or_else(|| "email".into()),
            groups_claim: self.groups_claim.unwrap_or_else(|| "groups".into()),
            require_verified_email: self.require_verified_email.unwrap_or(true),
            access_ttl: Duration::from_secs(bounded("access_ttl_secs", self.access_ttl_secs, 900, 60, 86_400)?),
            session_ttl: Duration::from_secs(
                3600 * bounded("session_ttl_hours", self.session_ttl_hours, 720, 1, 8760)?,
            ),
            device_code_ttl: Duration::from_secs(bounded(
                "device_code_ttl_secs",
                self.device_code_ttl_secs,
                600,
                60,
                3600,
            )?),
            poll_interval: Duration::from_secs(bounded("poll_interval_secs", self.poll_interval_secs, 5, 1, 60)?),
            clock_skew: Duration::from_secs(bounded("clock_skew_secs", self.clock_skew_secs, 60, 0, 600)?),
            login_notice,
            teams,
            managed,
            otlp_forward_url: self.otlp_forward_url.map(|u| u.trim_end_matches('/').to_string()),
            admin_roles,
            admin_public_url,
            admin_session_ttl: Duration::from_secs(
                3600 * bounded("admin_session_hours", self.admin_session_hours, 8, 1, 24)?,
            ),
        }))
    }
}

fn load_managed(path: &std::path::Path) -> std::result::Result<ManagedSettings, String> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {shown:?}: {e}"))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{shown:?} is not JSON: {e}"))?;
    let Value::Object(mut doc) = doc else {
        return Err(format!(
            "{shown:?} must be an object {{\"default\": {{…}}, \"teams\": {{…}}}}"
        ));
    };
    let object = |what: &str, v: Value| match v {
        Value::Object(_) => Ok(Served::new(v)),
        _ => Err(format!(
            "{what} in {shown:?} must be a JSON object of Claude Code settings"
        )),
    };
    let mut out = ManagedSettings::default();
    if let Some(d) = doc.remove("default") {
        out.default = Some(object("\"default\"", d)?);
    }
    if let Some(t) = doc.remove("teams") {
        let Value::Object(t) = t else {
            return Err(format!(
                "\"teams\" in {shown:?} must map team names to settings objects"
            ));
        };
        for (team, settings) in t {
            let served = object(&format!("teams.{team:?}"), settings)?;
            out.teams.insert(team, served);
        }
    }
    if let Some(k) = doc.keys().next() {
        return Err(format!("{shown:?} has {k:?}; only \"default\" and \"teams\" are read"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_over_sorted_keys_without_whitespace() {
        let v: Value = serde_json::from_str(r#"{"b": {"z": 1, "a": [true, null]}, "a": "x"}"#).unwrap();
        let mut s = String::new();
        write_canonical(&v, &mut s);
        assert_eq!(s, r#"{"a":"x","b":{"a":[true,null],"z":1}}"#);
        let served = Served::new(v);
        assert!(served.checksum.starts_with("sha256:") && served.checksum.len() == 71);
        // Python: hashlib.sha256(b'{}').hexdigest()
        assert_eq!(
            Served::new(serde_json::json!({})).checksum,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn a_public_listener_needs_a_public_url_and_values_are_bounded() {
        let raw = || RawSignIn {
            issuer: Some("https://idp.corp.example".into()),
            client_id: Some("conduit".into()),
            ..Default::default()
        };
        let none = |_: &str| None;
        let err = raw().validate(&none, false).unwrap_err().to_string();
        assert!(
            err.contains("signin.public_url") && err.contains("Host header"),
            "{err}"
        );
        assert!(raw().validate(&none, true).unwrap().is_some());
        let err = RawSignIn {
            access_ttl_secs: Some(5),
            ..raw()
        }
        .validate(&none, true)
        .unwrap_err()
        .to_string();
        assert!(err.contains("access_ttl_secs") && err.contains('5'), "{err}");
        let err = RawSignIn {
            issuer: Some("http://idp.corp.example".into()),
            ..raw()
        }
        .validate(&none, true)
        .unwrap_err()
        .to_string();
        assert!(err.contains("signin.issuer") && err.contains("https"), "{err}");
        assert!(RawSignIn::default().validate(&none, false).unwrap().is_none());
    }
}
