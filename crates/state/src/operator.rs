//! What an operator does to the state — issue, revoke and limit keys, set and re-seal
//! credentials, report spend, import prices, give findings feedback — with its checks, shared by
//! the admin API (a gateway running) and the CLI (no gateway: straight to the state), so both
//! paths run the same code and say the same things.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use conduit_core::error::{Error, Result};
use conduit_core::keys;
use conduit_core::seal::{MasterKey, SealedCredential};
use conduit_wire::protocol::Provider;

use crate::ledger::{By, ReportLine};
use crate::records::{FindingRecord, KeyRecord, RateLimits, SpendRow};
use crate::store::{CredentialStore, FindingStore, KeyStore, SpendStore};

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
    pub limits: RateLimits,
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
pub async fn create_key(keys: &dyn KeyStore, req: NewKeyRequest) -> Result<CreatedKey> {
    let owner = req.owner.trim();
    if owner.is_empty() || owner.len() > 256 || owner.chars().any(char::is_control) {
        return Err(Error::msg(format!(
            "owner {:?} is not valid; give an e-mail address or user name",
            req.owner
        )));
    }
    let team = normalise_label("team", req.team)?;
    let name = normalise_label("name", req.name)?;
    let now = conduit_core::clock::now_unix();
    if let Some(t) = req.expires_at
        && t <= now
    {
        return Err(Error::msg(format!(
            "expiry {} is in the past; give a future date such as {}",
            conduit_core::clock::format_rfc3339(t),
            conduit_core::clock::format_date(now + 90 * 86_400)
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
        session: None,
    };
    keys.insert(&new.hash, &record).await?;
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
pub async fn key(keys: &dyn KeyStore, id: &str) -> Result<KeyRecord> {
    keys.by_id(id)
        .await?
        .ok_or_else(|| Error::msg(format!("no key with id {id:?}; `conduit keys list` shows the ids")))
}

/// Revokes a key; effective on the next request. Revoking twice is harmless.
pub async fn revoke_key(keys: &dyn KeyStore, id: &str) -> Result<KeyRecord> {
    let mut record = key(keys, id).await?;
    if record.revoked_at.is_none() {
        record.revoked_at = Some(conduit_core::clock::now_unix());
        keys.update(&record).await?;
    }
    Ok(record)
}

/// Seals and stores the credential for `provider`, bumping its version.
pub async fn set_credential(
    credentials: &dyn CredentialStore,
    master: &MasterKey,
    provider: &str,
    secret: Zeroizing<String>,
) -> Result<CredentialInfo> {
    let provider = Provider::parse(provider).ok_or_else(|| {
        Error::msg(format!(
            "unknown provider {provider:?}; expected one of: {}",
            Provider::names()
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
    if provider == Provider::Bedrock {
        conduit_wire::sigv4::AwsCredential::parse(&secret).map_err(Error::msg)?;
    }
    let id = "default";
    let version = credentials
        .get(provider.as_str(), id)
        .await?
        .map(|c| c.version + 1)
        .unwrap_or(1);
    let sealed = master.seal(
        provider.as_str(),
        id,
        version,
        secret.as_bytes(),
        conduit_core::clock::now_unix(),
    )?;
    credentials.put(&sealed).await?;
    Ok(CredentialInfo::from(&sealed))
}

/// Metadata of every credential.
pub async fn credentials(credentials: &dyn CredentialStore) -> Result<Vec<CredentialInfo>> {
    Ok(credentials.list().await?.iter().map(CredentialInfo::from).collect())
}

/// Re-seals every credential from `old` to `new` in one transaction; returns how many.
pub async fn rotate_master(credentials: &dyn CredentialStore, old: &MasterKey, new: &MasterKey) -> Result<usize> {
    if old.id() == new.id() {
        return Err(Error::msg(format!(
            "the new master key is the current one ({}); generate a different key",
            old.id()
        )));
    }
    let now = conduit_core::clock::now_unix();
    let resealed = credentials
        .list()
        .await?
        .iter()
        .map(|c| {
            let plain = old.unseal(c)?;
            new.seal(&c.provider, &c.id, c.version, &plain, now)
        })
        .collect::<Result<Vec<_>>>()?;
    credentials.reseal_all(&resealed, new.id()).await?;
    Ok(resealed.len())
}

/// A spend report: counters summed by one dimension over a range of UTC days.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpendReport {
    /// The dimension.
    pub by: By,
    /// First day (YYYY-MM-DD), inclusive.
    pub since: String,
    /// Last day, inclusive.
    pub until: String,
    /// One line per group, most expensive first.
    pub lines: Vec<ReportLine>,
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

fn unpriced_models(rows: &[SpendRow]) -> Vec<UnpricedModel> {
    let mut by: BTreeMap<(&str, &str), UnpricedModel> = Default::default();
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

/// The UTC days of a spend report's `--since`/`--until`; defaults: the last 30 days up to today.
pub fn spend_range(since: Option<&str>, until: Option<&str>) -> Result<(String, String)> {
    Ok(conduit_core::clock::TimeRange::parse(since, until, Some(30))?.days())
}

/// Builds a spend report from the store.
pub async fn spend(spend: &dyn SpendStore, by: By, since: &str, until: &str) -> Result<SpendReport> {
    let rows = spend.range(since, until).await?;
    Ok(SpendReport {
        by,
        since: since.into(),
        until: until.into(),
        lines: crate::ledger::report(&rows, by),
        unpriced_models: unpriced_models(&rows),
    })
}

/// Parses a price file: LiteLLM JSON (`model_prices_and_context_window.json`) or `[[price]]` TOML.
pub fn parse_price_file(content: &str) -> Result<conduit_wire::prices::Imported> {
    let today = conduit_core::clock::format_date(conduit_core::clock::now_unix());
    if content.trim_start().starts_with('{') {
        conduit_wire::prices::import_litellm(content.as_bytes(), &today)
    } else {
        Ok(conduit_wire::prices::Imported {
            rows: conduit_wire::prices::parse_toml(content, "override")?,
            ..Default::default()
        })
    }
}

/// Replaces a key's rate limits; fields left `None` in `update` keep their value, `Some(0)` clears.
pub async fn update_key_limits(keys: &dyn KeyStore, id: &str, update: RateLimits) -> Result<KeyRecord> {
    let mut record = key(keys, id).await?;
    let merge = |old: Option<u64>, new: Option<u64>| match new {
        Some(0) => None,
        Some(n) => Some(n),
        None => old,
    };
    let l = &mut record.limits;
    l.rpm = merge(l.rpm.map(u64::from), update.rpm.map(u64::from)).map(|n| n as u32);
    l.tpm = merge(l.tpm, update.tpm);
    l.max_streams = merge(l.max_streams.map(u64::from), update.max_streams.map(u64::from)).map(|n| n as u32);
    keys.update(&record).await?;
    Ok(record)
}

/// Marks a finding as a false positive.
pub async fn mark_false_positive(findings: &dyn FindingStore, id: &str, by: &str) -> Result<FindingRecord> {
    findings.mark_false_positive(id, by).await?.ok_or_else(|| {
        Error::msg(format!(
            "there is no finding {id:?}; `conduit findings list` shows their ids (f_…)"
        ))
    })
}

/// Per-category feedback figures.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct CategoryStats {
    /// Findings in alert mode (forwarded).
    pub alerts: u64,
    /// Findings whose request was blocked.
    pub blocks: u64,
    /// Findings marked as false positives.
    pub false_positives: u64,
    /// false_positives / (alerts + blocks).
    pub false_positive_rate: f64,
}

/// Aggregates findings by category.
pub fn finding_stats(findings: &[FindingRecord]) -> BTreeMap<String, CategoryStats> {
    let mut out: BTreeMap<String, CategoryStats> = BTreeMap::new();
    for f in findings {
        let s = out.entry(f.category.clone()).or_default();
        if f.action == "blocked" {
            s.blocks += 1;
        } else {
            s.alerts += 1;
        }
        if f.false_positive.is_some() {
            s.false_positives += 1;
        }
    }
    for s in out.values_mut() {
        let total = s.alerts + s.blocks;
        s.false_positive_rate = if total == 0 {
            0.0
        } else {
            s.false_positives as f64 / total as f64
        };
    }
    out
}
