//! The client side of sign-in, for every tool that is not Claude Code: `conduit login --gateway
//! URL` runs the device flow from a terminal (RFC 8628: open the link, confirm the code, sign in
//! at the IdP) and keeps the tokens in a 0600 file; `conduit token` prints a valid access token,
//! refreshing it when a third of its life (at most five minutes) is left — what Claude Code's `apiKeyHelper`, Codex's
//! `auth.command` and an SDK's key-from-command take.
//!
//! The file is `$CONDUIT_CREDENTIALS`, else `$XDG_CONFIG_HOME/conduit/credentials.json`, else
//! `~/.config/conduit/credentials.json`. Tokens never go to stdout except `conduit token`'s one
//! line, and never to a non-loopback `http://` gateway.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use conduit_core::error::{Error, Result};
use conduit_gateway::idp::oidc::{check_url, form};
use conduit_gateway::upstream::{Network, UpstreamClient, build_client};

/// What `conduit login` keeps.
#[derive(Serialize, Deserialize)]
pub struct Stored {
    /// The gateway's origin.
    pub gateway: String,
    /// Its token endpoint.
    pub token_endpoint: String,
    /// Its revocation endpoint, if it has one.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// The current access token.
    pub access_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// The access token's lifetime as issued, seconds.
    #[serde(default)]
    pub lifetime_secs: i64,
    /// The refresh token.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Who signed in.
    #[serde(default)]
    pub email: Option<String>,
}

/// Where the tokens are kept.
pub fn credentials_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CONDUIT_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| Error::msg("neither CONDUIT_CREDENTIALS, XDG_CONFIG_HOME nor HOME is set: say where to keep the sign-in (CONDUIT_CREDENTIALS=FILE)"))?;
    Ok(base.join("conduit").join("credentials.json"))
}

fn client(ca_file: Option<PathBuf>) -> Result<UpstreamClient> {
    build_client(&Network {
        connect_timeout: Duration::from_secs(10),
        response_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        extra_ca_file: ca_file,
        proxy: None,
    })
}

async fn call(http: &UpstreamClient, method: Method, url: &str, body: Option<String>) -> Result<(StatusCode, Value)> {
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, concat!("conduit-cli/", env!("CARGO_PKG_VERSION")));
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| Error::msg(format!("building a request to {url}: {e}")))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), http.request(req))
        .await
        .map_err(|_| Error::msg(format!("{url} did not answer within 30 s")))?
        .map_err(|e| Error::msg(format!("{url} is unreachable: {e}")))?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| Error::msg(format!("reading the answer from {url}: {e}")))?
        .to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, v))
}

/// An endpoint from the metadata if it is on the gateway's origin, else the default path.
fn endpoint(meta: &Value, name: &str, base: &str, default: &str) -> String {
    meta.get(name)
        .and_then(Value::as_str)
        .filter(|u| u.starts_with(&format!("{base}/")))
        .map_or_else(|| format!("{base}{default}"), str::to_owned)
}

/// `conduit login --gateway URL`.
pub async fn login(gateway: &str, ca_file: Option<PathBuf>) -> Result<()> {
    let base = gateway.trim_end_matches('/').to_string();
    check_url(&base).map_err(|e| Error::msg(format!("--gateway: {e}")))?;
    let http = client(ca_file)?;
    let (status, meta) = call(
        &http,
        Method::GET,
        &format!("{base}/.well-known/oauth-authorization-server"),
        None,
    )
    .await?;
    if status != StatusCode::OK {
        return Err(Error::msg(format!(
            "{base} does not offer sign-in (its metadata answered {status}); check the URL, or ask whether [signin] is configured"
        )));
    }
    let device = endpoint(
        &meta,
        "device_authorization_endpoint",
        &base,
        "/oauth/device_authorization",
    );
    let token = endpoint(&meta, "token_endpoint", &base, "/oauth/token");
    let revocation = meta
        .get("revocation_endpoint")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with(&format!("{base}/")))
        .map(str::to_owned);
    let (status, grant) = call(&http, Method::POST, &device, Some(form(&[("surface", "conduit-cli")]))).await?;
    if status != StatusCode::OK {
        return Err(Error::msg(format!(
            "{device} refused to start a sign-in ({status}): {}",
            describe(&grant)
        )));
    }
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let device_code = field(&grant, "device_code");
    let uri = grant
        .get("verification_uri_complete")
        .or_else(|| grant.get("verification_uri"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    eprintln!("To sign in, open {uri}");
    eprintln!("and check that it shows the code {}", field(&grant, "user_code"));
    if let Some(n) = grant.get("login_notice").and_then(Value::as_str) {
        eprintln!("{n}");
    }
    let mut interval = grant.get("interval").and_then(Value::as_u64).unwrap_or(5).max(1);
    let deadline =
        std::time::Instant::now() + Duration::from_secs(grant.get("expires_in").and_then(Value::as_u64).unwrap_or(600));
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        if std::time::Instant::now() > deadline {
            return Err(Error::msg(
                "the sign-in was not approved in time; run conduit login again",
            ));
        }
        let body = form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", &device_code),
        ]);
        let (status, answer) = call(&http, Method::POST, &token, Some(body)).await?;
        if status == StatusCode::OK {
            let stored = stored_from(&base, &token, revocation.clone(), &answer, None)?;
            save(&stored)?;
            eprintln!(
                "Signed in to {base} as {}. `conduit token` prints your access token.",
                stored.email.as_deref().unwrap_or("(unknown)")
            );
            return Ok(());
        }
        match answer.get("error").and_then(Value::as_str) {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += 5,
            Some("access_denied") => {
                return Err(Error::msg(
                    "the sign-in was refused in the browser or by the identity provider",
                ));
            }
            Some("expired_token") => {
                return Err(Error::msg(
                    "the sign-in was not approved in time; run conduit login again",
                ));
            }
            _ => return Err(Error::msg(format!("{token} answered {status}: {}", describe(&answer)))),
        }
    }
}

fn stored_from(
    base: &str,
    token_endpoint: &str,
    revocation: Option<String>,
    answer: &Value,
    old_refresh: Option<String>,
) -> Result<Stored> {
    let access = answer
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::msg("the gateway's token answer has no access_token"))?;
    let expires_in = answer.get("expires_in").and_then(Value::as_i64).unwrap_or(300);
    Ok(Stored {
        gateway: base.to_string(),
        token_endpoint: token_endpoint.to_string(),
        revocation_endpoint: revocation,
        access_token: access.to_string(),
        expires_at: conduit_core::clock::now_unix() + expires_in,
        lifetime_secs: expires_in,
        refresh_token: answer
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(old_refresh),
        email: answer.get("email").and_then(Value::as_str).map(str::to_owned),
    })
}

fn describe(v: &Value) -> String {
    let e = v.get("error").and_then(Value::as_str).unwrap_or("unexpected answer");
    match v.get("error_description").and_then(Value::as_str) {
        Some(d) => format!("{e} ({d})"),
        None => e.to_string(),
    }
}

fn load() -> Result<Stored> {
    let path = credentials_path()?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::msg(format!(
            "no sign-in at {:?} ({e}); run `conduit login --gateway https://conduit.corp.example` first",
            path.display().to_string()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::msg(format!(
            "{:?} is not a sign-in Conduit wrote ({e}); run conduit login again",
            path.display().to_string()
        ))
    })
}

fn save(stored: &Stored) -> Result<()> {
    let path = credentials_path()?;
    if let Some(dir) = path.parent() {
        conduit_core::fsperm::create_private_dir(dir)
            .map_err(|e| Error::msg(format!("creating {:?}: {e}", dir.display().to_string())))?;
    }
    let text = serde_json::to_vec_pretty(stored).map_err(|e| Error::msg(format!("encoding the sign-in: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    conduit_core::fsperm::write_private(&tmp, &text)
        .map_err(|e| Error::msg(format!("writing {:?}: {e}", tmp.display().to_string())))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::msg(format!("replacing {:?}: {e}", path.display().to_string())))
}

/// `conduit token`: a valid access token on stdout.
pub async fn token(ca_file: Option<PathBuf>) -> Result<()> {
    let stored = load()?;
    let now = conduit_core::clock::now_unix();
    // Refreshed with a third of its life left, at most five minutes: Claude Code keeps a helper's
    // key five minutes by default, and it must still be valid when used.
    let margin = (stored.lifetime_secs / 3).clamp(10, 300);
    if stored.expires_at - now > margin {
        println!("{}", stored.access_token);
        return Ok(());
    }
    let Some(refresh) = stored.refresh_token.clone() else {
        return Err(Error::msg(format!(
            "the access token has expired and there is no refresh token; run `conduit login --gateway {}`",
            stored.gateway
        )));
    };
    let http = client(ca_file)?;
    let body = form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    let (status, answer) = call(&http, Method::POST, &stored.token_endpoint, Some(body)).await?;
    if status == StatusCode::OK {
        let next = stored_from(
            &stored.gateway,
            &stored.token_endpoint,
            stored.revocation_endpoint.clone(),
            &answer,
            Some(refresh),
        )?;
        save(&next)?;
        println!("{}", next.access_token);
        return Ok(());
    }
    // Another `conduit token` may have refreshed at the same moment: take what it stored.
    if let Ok(again) = load()
        && again.refresh_token.as_deref() != Some(refresh.as_str())
        && again.expires_at - now > 60
    {
        println!("{}", again.access_token);
        return Ok(());
    }
    Err(Error::msg(format!(
        "the gateway refused to refresh the sign-in ({}); run `conduit login --gateway {}`",
        describe(&answer),
        stored.gateway
    )))
}

/// `conduit logout`: revokes the tokens at the gateway (best effort) and forgets them.
pub async fn logout(ca_file: Option<PathBuf>) -> Result<()> {
    let stored = load()?;
    if let Some(rev) = &stored.revocation_endpoint {
        let http = client(ca_file)?;
        for t in std::iter::once(&stored.access_token).chain(stored.refresh_token.iter()) {
            if let Err(e) = call(&http, Method::POST, rev, Some(form(&[("token", t)]))).await {
                eprintln!("warning: revoking at the gateway failed ({e}); the local sign-in is removed anyway");
            }
        }
    }
    let path = credentials_path()?;
    std::fs::remove_file(&path).map_err(|e| Error::msg(format!("removing {:?}: {e}", path.display().to_string())))?;
    eprintln!("Signed out of {}.", stored.gateway);
    Ok(())
}
