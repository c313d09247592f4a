//! Administrative operations on the store, shared by the admin API (gateway running) and the CLI
//! (gateway stopped), so both paths run the same code and checks.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys;
use crate::seal::{MasterKey, SealedCredential};
use crate::store::{KeyRecord, Store};

/// Input for a new stand-in key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewKeyRequest {
    /// Engineer (e-mail or user name).
    pub owner: String,
    /// Team for attribution.
    #[serde(default)]
    pub team: Option<String>,
    /// Label.
    #[serde(default)]
    pub name: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Rate limits.
    #[serde(default)]
    pub limits: crate::admission::RateLimits,
}

/// A created key: the only response that ever carries the secret.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The stand-in key, shown once.
    pub key: String,
    /// Its record.
    pub record: KeyRecord,
}

/// What may be shown about a credential: never the plaintext, never a hash of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CredentialInfo {
    /// Provider.
    pub provider: String,
    /// Name within the provider.
    pub id: String,
    /// Version, incremented per set.
    pub version: u32,
    /// Sealing master key id.
    pub master_key_id: String,
    /// Unix seconds.
    pub updated_at: i64,
}

impl From<&SealedCredential> for CredentialInfo {
    fn from(c: &SealedCredential) -> Self {
        CredentialInfo {
            provider: c.provider.clone(),
            id: c.id.clone(),
            version: c.version,
            master_key_id: c.master_key_id.clone(),
            updated_at: c.updated_at,
        }
    }
}

/// Creates a stand-in key.
pub fn create_key(store: &dyn Store, req: NewKeyRequest) -> Result<CreatedKey> {
    let owner = req.owner.trim();
    if owner.is_empty() || owner.len() > 256 || owner.chars().any(char::is_control) {
        return Err(Error::msg(format!(
            "owner {:?} is not valid; give an e-mail address or user name",
            req.owner
        )));
    }
    let team = normalise_label("team", req.team)?;
    let name = normalise_label("name", req.name)?;
    let now = crate::clock::now_unix();
    if let Some(t) = req.expires_at
        && t <= now
    {
        return Err(Error::msg(format!(
            "expiry {} is in the past; give a future date such as {}",
            crate::clock::format_rfc3339(t),
            crate::clock::format_date(now + 90 * 86_400)
        )));
    }
    let new = keys::generate().map_err(|e| Error::msg(format!("OS random source failed: {e}")))?;
    let record = KeyRecord {
        id: new.id.clone(),
        hint: new.hint.clone(),
        owner: owner.to_string(),
        team,
        name,
        created_at: now,
        expires_at: req.expires_at,
        revoked_at: None,
        limits: req.limits,
    };
    store.insert_key(&new.hash, &record)?;
    Ok(CreatedKey {
        key: new.secret,
        record,
    })
}

fn normalise_label(what: &str, v: Option<String>) -> Result<Option<String>> {
    match v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
        Some(s) if s.len() > 128 || s.chars().any(char::is_control) => Err(Error::msg(format!(
            "{what} {s:?} is not valid; use up to 128 printable characters"
        ))),
        other => Ok(other),
    }
}

/// A key by id, or a message naming the id.
pub fn key(store: &dyn Store, id: &str) -> Result<KeyRecord> {
    store
        .key(id)?
        .ok_or_else(|| Error::msg(format!("no key with id {id:?}; `conduit keys list` shows the ids")))
}

/// Revokes a key; effective on the next request. Revoking twice is harmless.
pub fn revoke_key(store: &dyn Store, id: &str) -> Result<KeyRecord> {
    let mut record = key(store, id)?;
    if record.revoked_at.is_none() {
        record.revoked_at = Some(crate::clock::now_unix());
        store.update_key(&record)?;
    }
    Ok(record)
}

/// Seals and stores the credential for `provider`, bumping its version.
pub fn set_credential(
    store: &dyn Store,
    master: &MasterKey,
    provider: &str,
    secret: Zeroizing<String>,
) -> Result<CredentialInfo> {
    let provider = crate::protocol::Provider::parse(provider).ok_or_else(|| {
        Error::msg(format!(
            "unknown provider {provider:?}; expected one of: {}",
            crate::protocol::Provider::names()
        ))
    })?;
    let secret = Zeroizing::new(secret.trim().to_string());
    if secret.is_empty() {
        return Err(Error::msg(format!(
            "the {provider} credential is empty; nothing was stored"
        )));
    }
    if secret.bytes().any(|b| b.is_ascii_control()) {
        return Err(Error::msg(format!(
            "the {provider} credential contains control characters and could not be sent in a header; nothing was stored"
        )));
    }
    if provider == crate::protocol::Provider::Bedrock {
        crate::sigv4::AwsCredential::parse(&secret).map_err(Error::msg)?;
    }
    let id = "default";
    let version = store
        .credential(provider.as_str(), id)?
        .map(|c| c.version + 1)
        .unwrap_or(1);
    let sealed = master.seal(
        provider.as_str(),
        id,
        version,
        secret.as_bytes(),
        crate::clock::now_unix(),
    )?;
    store.put_credential(&sealed)?;
    Ok(CredentialInfo::from(&sealed))
}

/// Metadata of every credential.
pub fn credentials(store: &dyn Store) -> Result<Vec<CredentialInfo>> {
    Ok(store.credentials()?.iter().map(CredentialInfo::from).collect())
}

/// Re-seals every credential from `old` to `new` in one transaction; returns how many.
pub fn rotate_master(store: &dyn Store, old: &MasterKey, new: &MasterKey) -> Result<usize> {
    if old.id() == new.id() {
        return Err(Error::msg(format!(
            "the new master key is the current one ({}); generate a different key",
            old.id()
        )));
    }
    let now = crate::clock::now_unix();
    let resealed = store
        .credentials()?
        .iter()
        .map(|c| {
            let plain = old.unseal(c)?;
            new.seal(&c.provider, &c.id, c.version, &plain, now)
        })
        .collect::<Result<Vec<_>>>()?;
    store.reseal_all(&resealed, new.id())?;
    Ok(resealed.len())
}

/// A spend report: counters summed by one dimension over a range of UTC days.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpendReport {
    /// The dimension.
    pub by: crate::ledger::By,
    /// First day (YYYY-MM-DD), inclusive.
    pub since: String,
    /// Last day, inclusive.
    pub until: String,
    /// One line per group, most expensive first.
    pub lines: Vec<crate::ledger::ReportLine>,
    /// Models with no price in the range, billed at their provider's ceiling: each needs a price
    /// (`conduit prices import`).
    #[serde(default)]
    pub unpriced_models: Vec<UnpricedModel>,
}

/// A model the price table does not know, and how often it was used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpricedModel {
    /// Provider.
    pub provider: String,
    /// Model id as recorded.
    pub model: String,
    /// Requests billed at the ceiling.
    pub requests: u64,
    /// What they were billed, micro-dollars.
    pub cost_micros: u64,
}

fn unpriced_models(rows: &[crate::ledger::SpendRow]) -> Vec<UnpricedModel> {
    let mut by: std::collections::BTreeMap<(&str, &str), UnpricedModel> = Default::default();
    for r in rows.iter().filter(|r| r.unpriced > 0) {
        let m = by.entry((&r.provider, &r.model)).or_insert_with(|| UnpricedModel {
            provider: r.provider.clone(),
            model: r.model.clone(),
            requests: 0,
            cost_micros: 0,
        });
        m.requests += r.unpriced;
        // A row mixes priced and unpriced requests only if the price table changed mid-day.
        m.cost_micros += r.cost_micros * r.unpriced / r.requests.max(1);
    }
    by.into_values().collect()
}

/// Validates a report range; defaults: the last 30 days up to today (UTC).
pub fn spend_range(since: Option<&str>, until: Option<&str>) -> Result<(String, String)> {
    let today = crate::clock::now_unix().div_euclid(86_400);
    let day = |what: &str, v: Option<&str>, default_days_ago: i64| -> Result<String> {
        match v {
            Some(d) => crate::clock::parse_date_or_time(d)
                .map(crate::clock::format_date)
                .ok_or_else(|| Error::msg(format!("--{what} {d:?} is not a date; use YYYY-MM-DD (UTC)"))),
            None => Ok(crate::clock::format_date((today - default_days_ago) * 86_400)),
        }
    };
    let (since, until) = (day("since", since, 29)?, day("until", until, 0)?);
    if since > until {
        return Err(Error::msg(format!("--since {since} is after --until {until}")));
    }
    Ok((since, until))
}

/// Builds a spend report from the store.
pub fn spend(store: &dyn Store, by: crate::ledger::By, since: &str, until: &str) -> Result<SpendReport> {
    let rows = store.spend(since, until)?;
    Ok(SpendReport {
        by,
        since: since.into(),
        until: until.into(),
        lines: crate::ledger::report(&rows, by),
        unpriced_models: unpriced_models(&rows),
    })
}

/// Parses a price file: LiteLLM JSON (`model_prices_and_context_window.json`) or `[[price]]` TOML.
pub fn parse_price_file(content: &str) -> Result<crate::prices::Imported> {
    let today = crate::clock::format_date(crate::clock::now_unix());
    if content.trim_start().starts_with('{') {
        crate::prices::import_litellm(content.as_bytes(), &today)
    } else {
        Ok(crate::prices::Imported {
            rows: crate::prices::parse_toml(content, "override")?,
            ..Default::default()
        })
    }
}

/// Replaces a key's rate limits; fields left `None` in `update` keep their value, `Some(0)` clears.
pub fn update_key_limits(store: &dyn Store, id: &str, update: crate::admission::RateLimits) -> Result<KeyRecord> {
    let mut record = key(store, id)?;
    let merge = |old: Option<u64>, new: Option<u64>| match new {
        Some(0) => None,
        Some(n) => Some(n),
        None => old,
    };
    let l = &mut record.limits;
    l.rpm = merge(l.rpm.map(u64::from), update.rpm.map(u64::from)).map(|n| n as u32);
    l.tpm = merge(l.tpm, update.tpm);
    l.max_streams = merge(l.max_streams.map(u64::from), update.max_streams.map(u64::from)).map(|n| n as u32);
    store.update_key(&record)?;
    Ok(record)
}
