//! Sign-in state: what the IdP sign-in (the gateway's `signin` module) keeps between the requests
//! of one sign-in and across the lifetime of a session, on any backend, through the
//! compare-and-swap [`SignInStore`].
//!
//! | name                  | value                                                            |
//! |-----------------------|------------------------------------------------------------------|
//! | `grant:<H(device)>`   | a [`DeviceGrant`]: one RFC 8628 device authorization, pending → approved / denied |
//! | `code:<USER-CODE>`    | `<H(device)>`: the code a person types finds its grant          |
//! | `state:<H(state)>`    | `<H(device)>`: the IdP's callback finds the grant it answers    |
//! | `session:<id>`        | a [`Session`]: one signed-in client, its refresh token's hash    |
//! | `refresh:<H(token)>`  | `<id>`: a refresh token finds its session                       |
//! | `user:<email>`        | a [`UserRecord`]: whether the person may sign in                 |
//!
//! `H` is hex SHA-256: device codes, OAuth `state` values and refresh tokens are never stored,
//! only their hashes. The IdP's own refresh token is stored sealed under the master key
//! (AES-256-GCM, bound to the session id), never in the clear. Access tokens are stand-in keys
//! (`KeyStore`) with [`crate::records::KeyRecord::session`] set and a short expiry, so
//! authentication, revocation on every replica, budgets and rate limits are the keys' own.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use conduit_core::error::{Error, Result};
use conduit_core::seal::SealedCredential;

use crate::store::SignInStore;

/// Prefix of device grants.
pub const GRANT: &str = "grant:";
/// Prefix of the user-code index.
pub const USER_CODE: &str = "code:";
/// Prefix of the OAuth `state` index.
pub const STATE: &str = "state:";
/// Prefix of sessions.
pub const SESSION: &str = "session:";
/// Prefix of the refresh-token index.
pub const REFRESH: &str = "refresh:";
/// Prefix of user records.
pub const USER: &str = "user:";
/// `adminstate:<H(state)>` → a dashboard sign-in under way (`{expires_at}`).
pub const ADMIN_STATE: &str = "adminstate:";
/// `adminsession:<H(cookie)>` → a dashboard SSO session.
pub const ADMIN_SESSION: &str = "adminsession:";
/// `admintoken:<H(token)>` → a scoped admin token.
pub const ADMIN_TOKEN: &str = "admintoken:";

/// Hex SHA-256: how a secret (device code, state, refresh token) is named in the store.
pub fn hash(secret: &str) -> String {
    conduit_core::hex::encode(&conduit_core::keys::KeyHash::of(secret).0)
}

/// Who signed in, as the IdP said at the last sign-in or refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The IdP's subject.
    pub sub: String,
    /// Verified email: the owner of the access tokens, what spend is attributed to.
    pub email: String,
    /// Display name, if the IdP sent one.
    #[serde(default)]
    pub name: Option<String>,
    /// The IdP groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The Conduit team the groups map to.
    #[serde(default)]
    pub team: Option<String>,
}

/// Where one device authorization stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum GrantStatus {
    /// Waiting for a person to confirm the code in a browser.
    Pending,
    /// The browser was sent to the IdP; the callback carries the state whose hash is here.
    Authorizing {
        /// `H(state)`.
        state_hash: String,
    },
    /// The IdP authenticated this person; the next token poll gets a session.
    Approved {
        /// Who.
        identity: Identity,
        /// The IdP's refresh token, sealed (bound to the subject).
        #[serde(default)]
        idp_refresh: Option<Box<SealedCredential>>,
    },
    /// Refused (the person chose Deny, or the IdP or Conduit's rules refused them).
    Denied {
        /// Why, for the audit and the browser (never shown to the polling client).
        reason: String,
    },
}

/// One RFC 8628 device authorization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceGrant {
    /// `H(device_code)`.
    pub device_hash: String,
    /// The code the person confirms (`XXXX-XXXX`, RFC 8628 §6.1's base-20 alphabet).
    pub user_code: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which polls get `expired_token`.
    pub expires_at: i64,
    /// Seconds the client must wait between polls (raised by `slow_down`).
    pub interval_secs: u64,
    /// Unix milliseconds of the last poll.
    #[serde(default)]
    pub last_poll_ms: Option<i64>,
    /// The `surface` the client named (`claude_code`), or `conduit-cli`.
    #[serde(default)]
    pub surface: Option<String>,
    /// Where it stands.
    pub status: GrantStatus,
}

/// One signed-in client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// `ses_…`.
    pub id: String,
    /// Who, as of the last refresh.
    pub identity: Identity,
    /// The client (`claude_code`, `conduit-cli`).
    #[serde(default)]
    pub surface: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds: no refresh after this, however recent the last (the absolute lifetime).
    pub expires_at: i64,
    /// Unix seconds of the last refresh.
    pub refreshed_at: i64,
    /// `H(refresh token)` of the one refresh token that is valid now.
    pub refresh_hash: String,
    /// `H(refresh token)` of the one it replaced: presented again, it means the token was copied,
    /// and the session ends (RFC 9700 §4.14.2 refresh-token rotation).
    #[serde(default)]
    pub previous_refresh_hash: Option<String>,
    /// Id of the current access token's key record.
    pub access_key: String,
    /// The IdP's refresh token, sealed (bound to the subject).
    #[serde(default)]
    pub idp_refresh: Option<Box<SealedCredential>>,
    /// Unix seconds when it ended (revoked, signed out, refused by the IdP).
    #[serde(default)]
    pub ended_at: Option<i64>,
    /// Why it ended.
    #[serde(default)]
    pub ended_why: Option<String>,
}

/// What Conduit knows of a person beyond their sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Email.
    pub email: String,
    /// Unix seconds since when they may not sign in (`conduit users revoke`), if so.
    #[serde(default)]
    pub blocked_at: Option<i64>,
    /// Who blocked them.
    #[serde(default)]
    pub blocked_by: Option<String>,
}

/// Typed access to the sign-in records: JSON over the store's compare-and-swap.
#[derive(Clone, Copy)]
pub struct Records<'a>(pub &'a dyn SignInStore);

/// A record as read: the value, and the stored text a compare-and-swap must find unchanged.
#[derive(Debug, Clone)]
pub struct Read<T> {
    /// The value.
    pub value: T,
    /// Its stored form.
    pub raw: String,
}

impl<'a> Records<'a> {
    /// The record under `name`.
    pub async fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<Read<T>>> {
        let Some(raw) = self.0.get(name).await? else {
            return Ok(None);
        };
        let value = serde_json::from_str(&raw)
            .map_err(|e| Error::msg(format!("the sign-in record {:?} is unreadable: {e}", shown(name))))?;
        Ok(Some(Read { value, raw }))
    }

    /// Creates `name`; `false` if it exists.
    pub async fn create<T: Serialize>(&self, name: &str, value: &T) -> Result<bool> {
        self.0.swap(name, None, Some(&to_json(value)?)).await
    }

    /// Replaces what `old` read; `false` if it changed since.
    pub async fn replace<T: Serialize>(&self, name: &str, old: &str, value: &T) -> Result<bool> {
        self.0.swap(name, Some(old), Some(&to_json(value)?)).await
    }

    /// Deletes what `old` read; `false` if it changed since.
    pub async fn remove(&self, name: &str, old: &str) -> Result<bool> {
        self.0.swap(name, Some(old), None).await
    }

    /// A plain string value (the indexes).
    pub async fn text(&self, name: &str) -> Result<Option<String>> {
        self.0.get(name).await
    }

    /// Applies `change` to the record under `name` until it sticks (another replica may write in
    /// between); `change` returning `None` leaves the record as it is. The record as written, or
    /// `None` if there was none or nothing changed.
    pub async fn update<T, F>(&self, name: &str, mut change: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(T) -> Option<T>,
    {
        for _ in 0..16 {
            let Some(read) = self.read::<T>(name).await? else {
                return Ok(None);
            };
            let Some(next) = change(read.value) else {
                return Ok(None);
            };
            if self.replace(name, &read.raw, &next).await? {
                return Ok(Some(next));
            }
        }
        Err(Error::msg(format!(
            "the sign-in record {:?} kept changing under 16 attempts to update it; retry",
            shown(name)
        )))
    }

    /// Every record whose name starts with `prefix`, skipping unreadable ones.
    pub async fn all<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>> {
        Ok(self
            .0
            .scan(prefix)
            .await?
            .into_iter()
            .filter_map(|(name, raw)| serde_json::from_str(&raw).ok().map(|v| (name, v)))
            .collect())
    }

    /// Deletes every grant, index entry and session past its expiry at `now` (sessions are kept
    /// a day after they end, for `conduit users list`); how many records went.
    pub async fn prune(&self, now: i64) -> Result<usize> {
        let mut gone = 0;
        for (name, raw) in self.0.scan(GRANT).await? {
            let Ok(grant) = serde_json::from_str::<DeviceGrant>(&raw) else {
                continue;
            };
            if grant.expires_at <= now && self.0.swap(&name, Some(&raw), None).await? {
                gone += 1;
                let code = format!("{USER_CODE}{}", grant.user_code);
                if let Some(v) = self.0.get(&code).await?
                    && v == grant.device_hash
                {
                    gone += usize::from(self.0.swap(&code, Some(&v), None).await?);
                }
                if let GrantStatus::Authorizing { state_hash } = &grant.status {
                    let state = format!("{STATE}{state_hash}");
                    if let Some(v) = self.0.get(&state).await? {
                        gone += usize::from(self.0.swap(&state, Some(&v), None).await?);
                    }
                }
            }
        }
        for (name, raw) in self.0.scan(SESSION).await? {
            let Ok(session) = serde_json::from_str::<Session>(&raw) else {
                continue;
            };
            let done = session.ended_at.map_or(session.expires_at, |t| t + 86_400);
            if done <= now && self.0.swap(&name, Some(&raw), None).await? {
                gone += 1;
                for h in std::iter::once(&session.refresh_hash).chain(session.previous_refresh_hash.iter()) {
                    let index = format!("{REFRESH}{h}");
                    if let Some(v) = self.0.get(&index).await?
                        && v == session.id
                    {
                        gone += usize::from(self.0.swap(&index, Some(&v), None).await?);
                    }
                }
            }
        }
        // Indexes of retired refresh tokens outlive their rotation (a copy presented later ends
        // the session); they go once the session record has.
        for (name, id) in self.0.scan(REFRESH).await? {
            if self.0.get(&format!("{SESSION}{id}")).await?.is_none() {
                gone += usize::from(self.0.swap(&name, Some(&id), None).await?);
            }
        }
        // Dashboard sign-ins and sessions past their expiry, and admin tokens a month past theirs
        // (kept that long so `conduit admin-tokens list` still explains a refusal).
        for (prefix, grace) in [(ADMIN_STATE, 0), (ADMIN_SESSION, 0), (ADMIN_TOKEN, 30 * 86_400)] {
            for (name, raw) in self.0.scan(prefix).await? {
                let expires = serde_json::from_str::<Expiring>(&raw).ok().and_then(|e| e.expires_at);
                if expires.is_some_and(|t| t + grace <= now) {
                    gone += usize::from(self.0.swap(&name, Some(&raw), None).await?);
                }
            }
        }
        Ok(gone)
    }
}

/// Any record with an expiry.
#[derive(Deserialize)]
struct Expiring {
    expires_at: Option<i64>,
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::msg(format!("encoding a sign-in record: {e}")))
}

/// A record's name for messages: the kind, never the hash (a hash of a secret is still not shown).
fn shown(name: &str) -> &str {
    name.split_once(':').map_or(name, |(kind, _)| kind)
}
