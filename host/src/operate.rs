//! The operator's actions, written once for the CLI: [`Operator`], implemented by [`Local`] (on
//! the state itself, while no gateway runs — sled admits one process) and by [`AdminClient`]
//! (through a running gateway's admin API, the same endpoints `admin.rs` serves). [`connect`]
//! picks by whether the admin address answers. Both sides end in `conduit_state::operator`, so
//! the rules (id checks, key hashing, sealing) are the same either way.

use async_trait::async_trait;
use http::Method;
use serde_json::json;
use zeroize::Zeroizing;

use conduit_state::State;

use crate::admin_client::AdminClient;
use conduit_core::error::{Error, Result};
use conduit_core::seal::MasterKey;
use conduit_gateway::admin_auth::{AdminToken, Role};
use conduit_gateway::config::{Config, MasterKeySource};
use conduit_gateway::signin::UserView;
use conduit_state::budget::BudgetStatus;
use conduit_state::ledger::By;
use conduit_state::operator::{self, CreatedKey, CredentialInfo, NewKeyRequest, SpendReport};
use conduit_state::records::{BudgetLimit, KeyRecord, RateLimits};
use conduit_wire::prices::PriceRow;

/// What an operator can do, wherever the state is.
#[async_trait]
pub trait Operator: Send + Sync {
    /// Issues a key (the secret is in the answer, once).
    async fn create_key(&self, req: NewKeyRequest) -> Result<CreatedKey>;
    /// Replaces a key's rate limits.
    async fn update_key_limits(&self, id: &str, limits: RateLimits) -> Result<KeyRecord>;
    /// Every key (never a secret).
    async fn keys(&self) -> Result<Vec<KeyRecord>>;
    /// One key.
    async fn key(&self, id: &str) -> Result<KeyRecord>;
    /// Revokes a key; effective on its next request.
    async fn revoke_key(&self, id: &str) -> Result<KeyRecord>;
    /// Seals and stores a provider credential.
    async fn set_credential(&self, provider: &str, secret: Zeroizing<String>) -> Result<CredentialInfo>;
    /// Credential metadata (no plaintext, ever).
    async fn credentials(&self) -> Result<Vec<CredentialInfo>>;
    /// Re-seals every credential under `new` (`encoded` is its base64 text, what the API takes).
    async fn rotate_master(&self, new: MasterKey, encoded: &str) -> Result<usize>;
    /// Sets (an empty limit: clears) a scope's budget.
    async fn set_budget(&self, scope: &str, limit: BudgetLimit) -> Result<()>;
    /// Every budget with what is spent and reserved now.
    async fn budgets(&self) -> Result<Vec<BudgetStatus>>;
    /// The spend report for UTC days `since..=until`.
    async fn spend(&self, by: By, since: &str, until: &str) -> Result<SpendReport>;
    /// The price table in force (shipped rows and the organisation's overrides).
    async fn prices(&self) -> Result<Vec<PriceRow>>;
    /// Imports a price file as overrides; returns how many rows, and what was skipped.
    async fn import_prices(&self, content: &str) -> Result<(usize, serde_json::Value)>;
    /// People signed in with the IdP (or blocked), with their sessions.
    async fn users(&self) -> Result<Vec<UserView>>;
    /// Ends every session of a person now and blocks new sign-ins; how many sessions ended.
    async fn revoke_user(&self, email: &str) -> Result<conduit_gateway::signin::Revoked>;
    /// Lifts a block; whether there was one.
    async fn restore_user(&self, email: &str) -> Result<bool>;
    /// Creates a scoped admin token; the secret (once) and its record.
    async fn create_admin_token(
        &self,
        roles: Vec<Role>,
        expires_at: i64,
        name: Option<String>,
    ) -> Result<(String, AdminToken)>;
    /// Every scoped admin token.
    async fn admin_tokens(&self) -> Result<Vec<AdminToken>>;
    /// Revokes a scoped admin token.
    async fn revoke_admin_token(&self, id: &str) -> Result<AdminToken>;
}

/// The running gateway's admin API if it answers on the configured address, else the state.
pub async fn connect(config: Config) -> Result<Box<dyn Operator>> {
    if AdminClient::is_listening(config.admin_listen).await {
        let token = conduit_gateway::gateway::resolve_admin_token(&config, false)?;
        return Ok(Box::new(AdminClient::new(config.admin_listen, token)));
    }
    let state = conduit_gateway::gateway::open_state(&config).await.map_err(|e| {
        e.context(format!(
            "no gateway answers on the admin address {}, and",
            config.admin_listen
        ))
    })?;
    Ok(Box::new(Local { state, config }))
}

/// Checks an id or provider name before it becomes a path segment of an admin URL.
pub(crate) fn path_segment(s: &str) -> Result<&str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(Error::msg(format!("{s:?} is not a valid id")));
    }
    Ok(s)
}

/// The state itself, while no gateway runs.
pub struct Local {
    state: State,
    config: Config,
}

impl Local {
    async fn master_key(&self) -> Result<MasterKey> {
        conduit_gateway::gateway::resolve_master_key(&self.config.master_key, self.state.meta.as_ref(), true).await
    }
}

#[async_trait]
impl Operator for Local {
    async fn create_key(&self, req: NewKeyRequest) -> Result<CreatedKey> {
        operator::create_key(self.state.keys.as_ref(), req).await
    }
    async fn update_key_limits(&self, id: &str, limits: RateLimits) -> Result<KeyRecord> {
        operator::update_key_limits(self.state.keys.as_ref(), id, limits).await
    }
    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        self.state.keys.list().await
    }
    async fn key(&self, id: &str) -> Result<KeyRecord> {
        operator::key(self.state.keys.as_ref(), id).await
    }
    async fn revoke_key(&self, id: &str) -> Result<KeyRecord> {
        operator::revoke_key(self.state.keys.as_ref(), id).await
    }
    async fn set_credential(&self, provider: &str, secret: Zeroizing<String>) -> Result<CredentialInfo> {
        let master = self.master_key().await?;
        operator::set_credential(self.state.credentials.as_ref(), &master, provider, secret).await
    }
    async fn credentials(&self) -> Result<Vec<CredentialInfo>> {
        operator::credentials(self.state.credentials.as_ref()).await
    }
    async fn rotate_master(&self, new: MasterKey, _encoded: &str) -> Result<usize> {
        let old = self.master_key().await?;
        let n = operator::rotate_master(self.state.credentials.as_ref(), &old, &new).await?;
        if let MasterKeySource::Generated(path) = &self.config.master_key {
            conduit_gateway::gateway::replace_secret_file(path, new.to_base64().as_bytes())?;
        }
        Ok(n)
    }
    async fn set_budget(&self, scope: &str, limit: BudgetLimit) -> Result<()> {
        self.state.budgets.set(scope, limit).await
    }
    async fn budgets(&self) -> Result<Vec<BudgetStatus>> {
        self.state.budgets.status(conduit_core::clock::now_unix()).await
    }
    async fn spend(&self, by: By, since: &str, until: &str) -> Result<SpendReport> {
        operator::spend(self.state.spend.as_ref(), by, since, until).await
    }
    async fn prices(&self) -> Result<Vec<PriceRow>> {
        let table = conduit_wire::prices::PriceTable::shipped()?.with_overrides(self.state.prices.overrides().await?);
        Ok(table.rows().into_iter().cloned().collect())
    }
    async fn import_prices(&self, content: &str) -> Result<(usize, serde_json::Value)> {
        let imported = operator::parse_price_file(content)?;
        self.state.prices.put_overrides(&imported.rows).await?;
        Ok((imported.rows.len(), json!(imported.skipped)))
    }
    async fn users(&self) -> Result<Vec<UserView>> {
        conduit_gateway::signin::users(&self.state).await
    }
    async fn revoke_user(&self, email: &str) -> Result<conduit_gateway::signin::Revoked> {
        conduit_gateway::signin::revoke_user(&self.state, email, "the CLI").await
    }
    async fn restore_user(&self, email: &str) -> Result<bool> {
        conduit_gateway::signin::restore_user(&self.state, email).await
    }
    async fn create_admin_token(
        &self,
        roles: Vec<Role>,
        expires_at: i64,
        name: Option<String>,
    ) -> Result<(String, AdminToken)> {
        conduit_gateway::admin_auth::create_token(&self.state, roles, expires_at, name, "the CLI (local store)").await
    }
    async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        conduit_gateway::admin_auth::tokens(&self.state).await
    }
    async fn revoke_admin_token(&self, id: &str) -> Result<AdminToken> {
        conduit_gateway::admin_auth::revoke_token(&self.state, id).await
    }
}

#[async_trait]
impl Operator for AdminClient {
    async fn create_key(&self, req: NewKeyRequest) -> Result<CreatedKey> {
        self.call(Method::POST, "/v1/keys", Some(json!(req))).await
    }
    async fn update_key_limits(&self, id: &str, limits: RateLimits) -> Result<KeyRecord> {
        let path = format!("/v1/keys/{}", path_segment(id)?);
        self.call(Method::PATCH, &path, Some(json!({"limits": limits}))).await
    }
    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        let v: serde_json::Value = self.call(Method::GET, "/v1/keys", None).await?;
        Ok(serde_json::from_value(v["keys"].clone())?)
    }
    async fn key(&self, id: &str) -> Result<KeyRecord> {
        self.call(Method::GET, &format!("/v1/keys/{}", path_segment(id)?), None)
            .await
    }
    async fn revoke_key(&self, id: &str) -> Result<KeyRecord> {
        let path = format!("/v1/keys/{}/revoke", path_segment(id)?);
        self.call(Method::POST, &path, None).await
    }
    async fn set_credential(&self, provider: &str, secret: Zeroizing<String>) -> Result<CredentialInfo> {
        let path = format!("/v1/credentials/{}", path_segment(provider)?);
        self.call(Method::PUT, &path, Some(json!({"secret": secret.as_str()})))
            .await
    }
    async fn credentials(&self) -> Result<Vec<CredentialInfo>> {
        let v: serde_json::Value = self.call(Method::GET, "/v1/credentials", None).await?;
        Ok(serde_json::from_value(v["credentials"].clone())?)
    }
    async fn rotate_master(&self, _new: MasterKey, encoded: &str) -> Result<usize> {
        let body = json!({"master_key": encoded});
        let v: serde_json::Value = self
            .call(Method::POST, "/v1/credentials/rotate-master", Some(body))
            .await?;
        Ok(v["resealed"].as_u64().unwrap_or(0) as usize)
    }
    async fn set_budget(&self, scope: &str, limit: BudgetLimit) -> Result<()> {
        let path = format!("/v1/budgets/{scope}");
        let _: serde_json::Value = self.call(Method::PUT, &path, Some(json!(limit))).await?;
        Ok(())
    }
    async fn budgets(&self) -> Result<Vec<BudgetStatus>> {
        let v: serde_json::Value = self.call(Method::GET, "/v1/budgets", None).await?;
        Ok(serde_json::from_value(v["budgets"].clone())?)
    }
    async fn spend(&self, by: By, since: &str, until: &str) -> Result<SpendReport> {
        let by = serde_json::to_value(by)?.as_str().unwrap_or("team").to_string();
        let path = format!("/v1/spend?by={by}&since={since}&until={until}");
        self.call(Method::GET, &path, None).await
    }
    async fn prices(&self) -> Result<Vec<PriceRow>> {
        let v: serde_json::Value = self.call(Method::GET, "/v1/prices", None).await?;
        Ok(serde_json::from_value(v["prices"].clone())?)
    }
    async fn import_prices(&self, content: &str) -> Result<(usize, serde_json::Value)> {
        let body = json!({"content": content});
        let v: serde_json::Value = self.call(Method::POST, "/v1/prices/import", Some(body)).await?;
        Ok((v["imported"].as_u64().unwrap_or(0) as usize, v["skipped"].clone()))
    }
    async fn users(&self) -> Result<Vec<UserView>> {
        let v: serde_json::Value = self.call(Method::GET, "/v1/users", None).await?;
        Ok(serde_json::from_value(v["users"].clone())?)
    }
    async fn revoke_user(&self, email: &str) -> Result<conduit_gateway::signin::Revoked> {
        let path = format!("/v1/users/{}/revoke", email_segment(email)?);
        self.call(Method::POST, &path, None).await
    }
    async fn restore_user(&self, email: &str) -> Result<bool> {
        let path = format!("/v1/users/{}/restore", email_segment(email)?);
        let v: serde_json::Value = self.call(Method::POST, &path, None).await?;
        Ok(v["was_blocked"].as_bool().unwrap_or(false))
    }
    async fn create_admin_token(
        &self,
        roles: Vec<Role>,
        expires_at: i64,
        name: Option<String>,
    ) -> Result<(String, AdminToken)> {
        let body = json!({"roles": roles, "expires_at": expires_at, "name": name});
        let v: serde_json::Value = self.call(Method::POST, "/v1/admin-tokens", Some(body)).await?;
        let token = v["token"].as_str().unwrap_or_default().to_string();
        Ok((token, serde_json::from_value(v["record"].clone())?))
    }
    async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        let v: serde_json::Value = self.call(Method::GET, "/v1/admin-tokens", None).await?;
        Ok(serde_json::from_value(v["admin_tokens"].clone())?)
    }
    async fn revoke_admin_token(&self, id: &str) -> Result<AdminToken> {
        let path = format!("/v1/admin-tokens/{}/revoke", path_segment(id)?);
        self.call(Method::POST, &path, None).await
    }
}

/// Checks an email before it becomes a path segment.
fn email_segment(s: &str) -> Result<&str> {
    let ok = s.contains('@') && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"@._+-".contains(&b));
    if !ok {
        return Err(Error::msg(format!(
            "{s:?} is not an email address Conduit can name (letters, digits, @ . _ + -)"
        )));
    }
    Ok(s)
}
