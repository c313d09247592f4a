//! Durable state behind a small trait, so a multi-replica deployment can later move some of it to a
//! shared engine. The embedded default is sled, one process at a time: while a gateway runs, the
//! CLI goes through the admin API instead of opening the store.
//!
//! Trees (sled): `meta` (schema version, master key id), `keys` (key hash → record),
//! `key_ids` (key id → key hash), `credentials` (`provider/id` → sealed credential), `spend`
//! (`day\0key\0model` → counters), `prices` (overrides), `budgets` (scope → limits), `findings`
//! (time-ordered id → finding metadata), `policy_modes` (run-time overrides), `uploads`
//! (`provider/file id` → what an upload through the gateway carried).
//! Records are JSON; new fields are added with `#[serde(default)]` so old records still load.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::admission::{BudgetLimit, RateLimits};
use crate::error::{Error, Result};
use crate::keys::KeyHash;
use crate::ledger::SpendRow;
use crate::prices::PriceRow;
use crate::seal::SealedCredential;

/// Schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// A stand-in key as stored: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// Public id (`key_…`).
    pub id: String,
    /// Last four characters of the secret, to help a person match key and id.
    pub hint: String,
    /// The engineer it was issued to.
    pub owner: String,
    /// Team for attribution.
    #[serde(default)]
    pub team: Option<String>,
    /// Free-form label (`laptop`, `ci`).
    #[serde(default)]
    pub name: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which the key is refused.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Unix seconds when revoked; refused from then on.
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// Per-key rate limits.
    #[serde(default)]
    pub limits: RateLimits,
}

impl KeyRecord {
    /// Why the key may not be used at `now`, if it may not.
    pub fn unusable_reason(&self, now: i64) -> Option<String> {
        if let Some(t) = self.revoked_at {
            return Some(format!("was revoked at {}", crate::clock::format_rfc3339(t)));
        }
        match self.expires_at {
            Some(t) if now >= t => Some(format!("expired at {}", crate::clock::format_rfc3339(t))),
            _ => None,
        }
    }
}

/// What the gateway and the CLI need from durable storage.
pub trait Store: Send + Sync + 'static {
    /// Adds a new key; fails if the id or hash exists.
    fn insert_key(&self, hash: &KeyHash, record: &KeyRecord) -> Result<()>;
    /// Looks a presented key up by its hash (the request path).
    fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>>;
    /// Looks a key up by id.
    fn key(&self, id: &str) -> Result<Option<KeyRecord>>;
    /// Replaces an existing key's record (revoke, update).
    fn update_key(&self, record: &KeyRecord) -> Result<()>;
    /// All keys, oldest first.
    fn keys(&self) -> Result<Vec<KeyRecord>>;
    /// Stores (replaces) a sealed credential.
    fn put_credential(&self, credential: &SealedCredential) -> Result<()>;
    /// The credential `id` for `provider`.
    fn credential(&self, provider: &str, id: &str) -> Result<Option<SealedCredential>>;
    /// All sealed credentials.
    fn credentials(&self) -> Result<Vec<SealedCredential>>;
    /// Atomically replaces all credentials and the recorded master key id (master key rotation).
    fn reseal_all(&self, credentials: &[SealedCredential], master_key_id: &str) -> Result<()>;
    /// A metadata value.
    fn meta(&self, name: &str) -> Result<Option<String>>;
    /// Sets a metadata value.
    fn set_meta(&self, name: &str, value: &str) -> Result<()>;
    /// A cheap round trip proving the store answers (`/readyz`).
    fn ping(&self) -> Result<()>;
    /// Adds a day × key × model delta (one or more requests, folded) to its counters (atomically).
    fn add_spend(&self, delta: &SpendRow) -> Result<()>;
    /// Makes the spend rows written so far durable (the ledger calls it after each batch).
    fn sync_spend(&self) -> Result<()> {
        Ok(())
    }
    /// Counter rows for UTC days `since..=until` (YYYY-MM-DD).
    fn spend(&self, since: &str, until: &str) -> Result<Vec<SpendRow>>;
    /// The organisation's price overrides.
    fn price_overrides(&self) -> Result<Vec<PriceRow>>;
    /// Adds or replaces price overrides (by provider and model pattern).
    fn put_price_overrides(&self, rows: &[PriceRow]) -> Result<()>;
    /// Every budget: scope (`org`, `team:NAME`, `key:ID`) → limits.
    fn budgets(&self) -> Result<Vec<(String, BudgetLimit)>>;
    /// Sets a scope's budget; an empty limit removes it.
    fn put_budget(&self, scope: &str, limit: &BudgetLimit) -> Result<()>;
    /// Appends policy findings (metadata only: never the matched text).
    fn record_findings(&self, records: &[FindingRecord]) -> Result<()>;
    /// Findings, newest first, at most `limit`.
    fn findings(&self, limit: usize) -> Result<Vec<FindingRecord>>;
    /// Marks a finding as a false positive; `None` if there is no such finding.
    fn mark_false_positive(&self, id: &str, by: &str) -> Result<Option<FindingRecord>>;
    /// Removes findings recorded before `before` (Unix seconds); returns how many (retention).
    fn prune_findings(&self, before: i64) -> Result<usize>;
    /// Run-time policy mode overrides (category or prefix → mode).
    fn policy_modes(&self) -> Result<Vec<(String, String)>>;
    /// Sets (or with `None` clears) a run-time policy mode.
    fn set_policy_mode(&self, key: &str, mode: Option<&str>) -> Result<()>;
    /// Records a file uploaded through the gateway (what was scanned, and for a batch input file
    /// each request's facts, so a batch that runs it can be bounded).
    fn put_upload(&self, record: &UploadRecord) -> Result<()>;
    /// A file uploaded through the gateway, by provider and the provider's file id.
    fn upload(&self, provider: &str, id: &str) -> Result<Option<UploadRecord>>;
}

/// A file uploaded through the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Provider (`openai`, `anthropic`, `azure`).
    pub provider: String,
    /// The provider's file id.
    pub id: String,
    /// `purpose` of the upload (`batch`, `assistants`, …).
    pub purpose: String,
    /// The key that uploaded it.
    pub key_id: String,
    /// Unix seconds.
    pub created: i64,
    /// Bytes.
    pub bytes: u64,
    /// A batch file's requests (their facts: model, input bytes, max output, tier).
    #[serde(default)]
    pub requests: Vec<crate::content::RequestFacts>,
}

/// One policy finding, as stored and exported: where and what kind, never the text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRecord {
    /// `f_` + time-ordered hex.
    pub id: String,
    /// Unix seconds.
    pub time: i64,
    /// The request's `x-conduit-request-id`.
    pub request_id: String,
    /// Stand-in key id.
    pub key_id: String,
    /// Its team.
    pub team: Option<String>,
    /// The policy that reported it.
    pub policy: String,
    /// Dotted category.
    pub category: String,
    /// Rule or term id.
    pub rule_id: String,
    /// JSON path of the segment, or `request` for request-level findings.
    pub location: String,
    /// Byte span in the segment.
    pub start: u32,
    pub end: u32,
    /// The category's mode when it was found: `alert` or `block`.
    pub mode: String,
    /// What happened to the request: `forwarded` or `blocked`.
    pub action: String,
    /// Marked as a false positive (by whom).
    #[serde(default)]
    pub false_positive: Option<String>,
}

/// Metadata name holding the id of the master key that sealed the credentials.
pub const META_MASTER_KEY_ID: &str = "master_key_id";
const META_SCHEMA: &str = "schema_version";

/// The embedded sled store.
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    keys: sled::Tree,
    key_ids: sled::Tree,
    credentials: sled::Tree,
    spend: sled::Tree,
    prices: sled::Tree,
    budgets: sled::Tree,
    findings: sled::Tree,
    policy_modes: sled::Tree,
    uploads: sled::Tree,
}

impl SledStore {
    /// Opens (creating if needed) the store under `dir`, checking the schema version.
    pub fn open(dir: &Path) -> Result<SledStore> {
        crate::fsperm::create_private_dir(dir)
            .map_err(|e| Error::msg(format!("creating data directory {:?}: {e}", dir.display().to_string())))?;
        let path = dir.join("store");
        let db = sled::Config::new().path(&path).mode(sled::Mode::HighThroughput).open().map_err(|e| {
            let hint = if e.to_string().contains("lock") || e.to_string().contains("WouldBlock") {
                "; another Conduit process (a running gateway) holds it: use the CLI against its admin API, or stop it"
            } else {
                ""
            };
            Error::msg(format!("opening the store at {:?}: {e}{hint}", path.display().to_string()))
        })?;
        let store = SledStore {
            meta: db.open_tree("meta").map_err(sled_err)?,
            keys: db.open_tree("keys").map_err(sled_err)?,
            key_ids: db.open_tree("key_ids").map_err(sled_err)?,
            credentials: db.open_tree("credentials").map_err(sled_err)?,
            spend: db.open_tree("spend").map_err(sled_err)?,
            prices: db.open_tree("prices").map_err(sled_err)?,
            budgets: db.open_tree("budgets").map_err(sled_err)?,
            findings: db.open_tree("findings").map_err(sled_err)?,
            policy_modes: db.open_tree("policy_modes").map_err(sled_err)?,
            uploads: db.open_tree("uploads").map_err(sled_err)?,
            db,
        };
        match store.meta(META_SCHEMA)? {
            None => store.set_meta(META_SCHEMA, &SCHEMA_VERSION.to_string())?,
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(Error::msg(format!(
                    "the store at {:?} has schema version {v}, this build reads version {SCHEMA_VERSION}; run a Conduit release that matches it",
                    path.display().to_string()
                )));
            }
        }
        Ok(store)
    }

    fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| Error::msg(format!("corrupt {what} record in the store: {e}")))
    }
}

/// A sled failure, as the one sentence the caller shows.
fn sled_err(e: sled::Error) -> Error {
    Error::msg(format!("store error: {e}"))
}

fn credential_key(provider: &str, id: &str) -> String {
    format!("{provider}/{id}")
}

impl Store for SledStore {
    fn insert_key(&self, hash: &KeyHash, record: &KeyRecord) -> Result<()> {
        let value = serde_json::to_vec(record)?;
        use sled::Transactional;
        (&self.keys, &self.key_ids)
            .transaction(|(keys, ids)| {
                if ids.get(record.id.as_bytes())?.is_some() || keys.get(hash.0)?.is_some() {
                    return sled::transaction::abort(());
                }
                keys.insert(&hash.0, value.as_slice())?;
                ids.insert(record.id.as_bytes(), &hash.0)?;
                Ok(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(()) => {
                    Error::msg(format!("a key with id {:?} already exists", record.id))
                }
                sled::transaction::TransactionError::Storage(e) => sled_err(e),
            })?;
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>> {
        self.keys
            .get(hash.0)
            .map_err(sled_err)?
            .map(|v| Self::decode("key", &v))
            .transpose()
    }

    fn key(&self, id: &str) -> Result<Option<KeyRecord>> {
        match self.key_ids.get(id.as_bytes()).map_err(sled_err)? {
            Some(hash) => self
                .keys
                .get(hash)
                .map_err(sled_err)?
                .map(|v| Self::decode("key", &v))
                .transpose(),
            None => Ok(None),
        }
    }

    fn update_key(&self, record: &KeyRecord) -> Result<()> {
        let hash = self
            .key_ids
            .get(record.id.as_bytes())
            .map_err(sled_err)?
            .ok_or_else(|| Error::msg(format!("no key with id {:?}", record.id)))?;
        self.keys.insert(hash, serde_json::to_vec(record)?).map_err(sled_err)?;
        // Revocation must survive a crash right after the CLI said it worked.
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    fn keys(&self) -> Result<Vec<KeyRecord>> {
        let mut all = self
            .keys
            .iter()
            .values()
            .map(|v| Self::decode::<KeyRecord>("key", &v.map_err(sled_err)?))
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    fn put_credential(&self, c: &SealedCredential) -> Result<()> {
        self.credentials
            .insert(credential_key(&c.provider, &c.id), serde_json::to_vec(c)?)
            .map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    fn credential(&self, provider: &str, id: &str) -> Result<Option<SealedCredential>> {
        self.credentials
            .get(credential_key(provider, id))
            .map_err(sled_err)?
            .map(|v| Self::decode("credential", &v))
            .transpose()
    }

    fn credentials(&self) -> Result<Vec<SealedCredential>> {
        self.credentials
            .iter()
            .values()
            .map(|v| Self::decode("credential", &v.map_err(sled_err)?))
            .collect()
    }

    fn reseal_all(&self, credentials: &[SealedCredential], master_key_id: &str) -> Result<()> {
        let encoded = credentials
            .iter()
            .map(|c| Ok((credential_key(&c.provider, &c.id), serde_json::to_vec(c)?)))
            .collect::<Result<Vec<_>>>()?;
        use sled::Transactional;
        (&self.credentials, &self.meta)
            .transaction(|(creds, meta)| {
                for (k, v) in &encoded {
                    creds.insert(k.as_bytes(), v.as_slice())?;
                }
                meta.insert(META_MASTER_KEY_ID, master_key_id.as_bytes())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| Error::msg(format!("re-sealing credentials failed, nothing was changed: {e:?}")))?;
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    fn meta(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .meta
            .get(name)
            .map_err(sled_err)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        self.meta.insert(name, value.as_bytes()).map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    fn ping(&self) -> Result<()> {
        self.meta.get(META_SCHEMA).map_err(sled_err)?;
        Ok(())
    }

    fn add_spend(&self, e: &SpendRow) -> Result<()> {
        let key = format!("{}\0{}\0{}", e.day, e.key_id, e.model);
        let mut corrupt = None;
        self.spend
            .update_and_fetch(key.as_bytes(), |old| {
                let mut row: SpendRow = match old.map(serde_json::from_slice) {
                    Some(Ok(r)) => r,
                    Some(Err(err)) => {
                        corrupt = Some(err.to_string());
                        SpendRow::default()
                    }
                    None => SpendRow::default(),
                };
                row.merge_row(e);
                serde_json::to_vec(&row).ok()
            })
            .map_err(sled_err)?;
        match corrupt {
            Some(err) => Err(Error::msg(format!("corrupt spend row {key:?} was reset: {err}"))),
            None => Ok(()),
        }
    }

    fn sync_spend(&self) -> Result<()> {
        self.spend.flush().map_err(sled_err)?;
        Ok(())
    }

    fn spend(&self, since: &str, until: &str) -> Result<Vec<SpendRow>> {
        let mut rows = Vec::new();
        for kv in self.spend.range(since.as_bytes()..) {
            let (k, v) = kv.map_err(sled_err)?;
            if k.get(..until.len()).is_some_and(|day| day > until.as_bytes()) {
                break;
            }
            rows.push(Self::decode::<SpendRow>("spend", &v)?);
        }
        Ok(rows)
    }

    fn price_overrides(&self) -> Result<Vec<PriceRow>> {
        self.prices
            .iter()
            .values()
            .map(|v| Self::decode("price", &v.map_err(sled_err)?))
            .collect()
    }

    fn budgets(&self) -> Result<Vec<(String, BudgetLimit)>> {
        self.budgets
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(sled_err)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), Self::decode("budget", &v)?))
            })
            .collect()
    }

    fn put_budget(&self, scope: &str, limit: &BudgetLimit) -> Result<()> {
        if *limit == BudgetLimit::default() {
            self.budgets.remove(scope).map_err(sled_err)?;
        } else {
            self.budgets
                .insert(scope, serde_json::to_vec(limit)?)
                .map_err(sled_err)?;
        }
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    fn record_findings(&self, records: &[FindingRecord]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for r in records {
            let value = serde_json::to_vec(r).map_err(|e| Error::msg(format!("encoding a finding: {e}")))?;
            batch.insert(r.id.as_bytes(), value);
        }
        self.findings.apply_batch(batch).map_err(sled_err)?;
        Ok(())
    }

    fn findings(&self, limit: usize) -> Result<Vec<FindingRecord>> {
        self.findings
            .iter()
            .rev()
            .take(limit)
            .map(|kv| {
                let (_, v) = kv.map_err(sled_err)?;
                Self::decode("finding", &v)
            })
            .collect()
    }

    fn mark_false_positive(&self, id: &str, by: &str) -> Result<Option<FindingRecord>> {
        let Some(v) = self.findings.get(id.as_bytes()).map_err(sled_err)? else {
            return Ok(None);
        };
        let mut record: FindingRecord = Self::decode("finding", &v)?;
        record.false_positive = Some(by.to_string());
        let value = serde_json::to_vec(&record).map_err(|e| Error::msg(format!("encoding a finding: {e}")))?;
        self.findings.insert(id.as_bytes(), value).map_err(sled_err)?;
        self.findings.flush().map_err(sled_err)?;
        Ok(Some(record))
    }

    fn prune_findings(&self, before: i64) -> Result<usize> {
        // Ids are `f_` + hex Unix nanoseconds: the tree is in time order.
        let bound = format!("f_{:016x}", (before.max(0) as u64).saturating_mul(1_000_000_000));
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in self.findings.range(..bound.as_bytes()).keys() {
            batch.remove(k.map_err(sled_err)?);
            n += 1;
        }
        if n > 0 {
            self.findings.apply_batch(batch).map_err(sled_err)?;
        }
        Ok(n)
    }

    fn policy_modes(&self) -> Result<Vec<(String, String)>> {
        self.policy_modes
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(sled_err)?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ))
            })
            .collect()
    }

    fn set_policy_mode(&self, key: &str, mode: Option<&str>) -> Result<()> {
        match mode {
            Some(m) => self
                .policy_modes
                .insert(key.as_bytes(), m.as_bytes())
                .map_err(sled_err)?,
            None => self.policy_modes.remove(key.as_bytes()).map_err(sled_err)?,
        };
        self.policy_modes.flush().map_err(sled_err)?;
        Ok(())
    }

    fn put_upload(&self, record: &UploadRecord) -> Result<()> {
        let key = format!("{}/{}", record.provider, record.id);
        self.uploads
            .insert(key.as_bytes(), serde_json::to_vec(record)?)
            .map_err(sled_err)?;
        self.uploads.flush().map_err(sled_err)?;
        Ok(())
    }

    fn upload(&self, provider: &str, id: &str) -> Result<Option<UploadRecord>> {
        match self
            .uploads
            .get(format!("{provider}/{id}").as_bytes())
            .map_err(sled_err)?
        {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    fn put_price_overrides(&self, rows: &[PriceRow]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for r in rows {
            batch.insert(
                format!("{}\0{}", r.provider, r.model).as_bytes(),
                serde_json::to_vec(r)?,
            );
        }
        self.prices.apply_batch(batch).map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            hint: "abcd".into(),
            owner: "alice@corp.example".into(),
            team: Some("payments".into()),
            name: None,
            created_at: 1,
            expires_at: None,
            revoked_at: None,
            limits: RateLimits::default(),
        }
    }

    #[test]
    fn keys_by_hash_and_id_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let hash = KeyHash::of("ck_x");
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.insert_key(&hash, &record("key_1")).unwrap();
            assert!(s.insert_key(&hash, &record("key_1")).is_err(), "duplicate id refused");
            let mut r = s.key("key_1").unwrap().unwrap();
            r.revoked_at = Some(5);
            s.update_key(&r).unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.key_by_hash(&hash).unwrap().unwrap().revoked_at, Some(5));
        assert_eq!(s.keys().unwrap().len(), 1);
        assert!(s.key_by_hash(&KeyHash::of("ck_y")).unwrap().is_none());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        SledStore::open(dir.path())
            .unwrap()
            .set_meta(META_SCHEMA, "99")
            .unwrap();
        let err = SledStore::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[test]
    fn unusable_reasons() {
        let mut r = record("k");
        assert_eq!(r.unusable_reason(10), None);
        r.expires_at = Some(10);
        assert!(r.unusable_reason(10).unwrap().starts_with("expired at 1970-01-01"));
        r.revoked_at = Some(3);
        assert!(r.unusable_reason(0).unwrap().starts_with("was revoked"));
    }
}
