//! # conduit-state-sled
//!
//! The embedded state backend: every `conduit-state` trait on one sled database under
//! `<data_dir>/store`, held by one process at a time (while a gateway runs, the CLI goes through
//! its admin API). The only crate that names sled.
//!
//! Trees: `meta` (schema version, master key id), `keys` (key hash → record), `key_ids` (key id →
//! key hash), `credentials` (`provider/id` → sealed credential), `spend` (`day\0key\0model` →
//! counters), `prices` (`provider\0model` → override), `budgets` (scope → limits), `findings`
//! (time-ordered id → finding metadata), `policy_modes` (run-time overrides), `uploads`
//! (`provider/file id` → what an upload through the gateway carried). Records are JSON.
//!
//! Damage on disk: opening reads every entry once (sled checks each page's CRC as it reads), so
//! a damaged file is refused at start-up with the ways out, never found by a request. sled's
//! recovery also ends the log at the first entry it cannot read — right after a crash that is a
//! torn tail, but on a store damaged at rest it would silently drop what follows. So a clean
//! close writes `<dir>/store.seal` (the entry count and a CRC-32 of every tree's keys and values),
//! and opening compares and removes it before any write: a store that no longer matches its seal
//! is refused. After a crash there is no seal, and sled's torn-tail recovery stands (what a torn
//! tail can lose is at most the last moments of counters; the audit log has every request).
//!
//! Where the work runs: reads of single records (a key by hash, a credential, an upload, a meta
//! value) are served from sled's page cache in about a microsecond and run inline; everything that
//! fsyncs or scans a tree runs on tokio's blocking pool, so a request's task never waits on a
//! disk. Budgets use the in-process [`BudgetBook`]: one process owns the store, so its memory is
//! the whole truth.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use conduit_core::error::{Error, Result};
use conduit_core::keys::KeyHash;
use conduit_core::seal::SealedCredential;
use conduit_state::records::{BudgetLimit, FindingRecord, KeyRecord, META_MASTER_KEY_ID, SpendRow, UploadRecord};
use conduit_state::store::{
    BudgetLimitStore, CredentialChange, CredentialStore, FindingStore, Hub, KeyChange, KeyStore, MetaStore,
    PolicyModeStore, PriceStore, SignInStore, SpendStore, UploadStore, Watch,
};
use conduit_state::{BudgetBook, State};
use conduit_wire::prices::PriceRow;

/// Schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
const META_SCHEMA: &str = "schema_version";

/// Opens (creating if needed) the state under `dir`, checking the schema version; `budget_defaults`
/// are the config file's budgets.
pub async fn open(dir: &Path, budget_defaults: &[(String, BudgetLimit)]) -> Result<State> {
    let sled = Sled::open(dir)?;
    let budgets = BudgetBook::open(Arc::new(sled.clone()), Arc::new(sled.clone()), budget_defaults).await?;
    Ok(State {
        keys: Arc::new(sled.clone()),
        credentials: Arc::new(sled.clone()),
        budgets: Arc::new(budgets),
        budget_limits: Arc::new(sled.clone()),
        spend: Arc::new(sled.clone()),
        findings: Arc::new(sled.clone()),
        policy_modes: Arc::new(sled.clone()),
        prices: Arc::new(sled.clone()),
        uploads: Arc::new(sled.clone()),
        meta: Arc::new(sled.clone()),
        signin: Arc::new(sled),
    })
}

/// The sled database and the hubs its writes announce changes on. Cheap to clone.
#[derive(Clone)]
pub struct Sled(Arc<Inner>);

struct Inner {
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
    signin: sled::Tree,
    key_changes: Hub<KeyChange>,
    credential_changes: Hub<CredentialChange>,
    budget_changes: Hub<String>,
    spend_changes: Hub<String>,
    finding_changes: Hub<String>,
    mode_changes: Hub<String>,
    price_changes: Hub<()>,
    meta_changes: Hub<String>,
    /// Where the close writes the seal.
    seal: std::path::PathBuf,
    /// Whether the seal on disk describes the store (set by a close, cleared by the next operation).
    sealed: std::sync::RwLock<bool>,
    /// Why a store operation failed on the disk, if one did (`ping`, so `/readyz`, reports it).
    failing: std::sync::Mutex<Option<String>>,
}

impl Inner {
    /// Holds the store unsealed for one operation: a seal written by [`Inner::close`] is removed
    /// first, so an operation after the close (a straggler) never leaves a seal that no longer
    /// describes the store — at worst the next start has nothing to compare. While operations
    /// hold this, a close waits for them.
    fn unsealed(&self) -> Result<std::sync::RwLockReadGuard<'_, bool>> {
        loop {
            {
                let sealed = self.sealed.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                if !*sealed {
                    return Ok(sealed);
                }
            }
            let mut sealed = self.sealed.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *sealed {
                remove_seal(&self.seal)?;
                *sealed = false;
            }
        }
    }

    /// Remembers an operation that failed on the store itself (a full or failing disk). Never
    /// cleared: sled keeps refusing writes after one failed, until the process restarts (and a
    /// read succeeding says nothing about writes).
    fn note(&self, failed: Option<&Error>) {
        let mut failing = self.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match failed {
            // Only sled's own failures (`sled_err`), not a refused value.
            Some(e) if e.to_string().starts_with(SLED_FAILED) => {
                if failing.is_none() {
                    tracing::error!(error = %e, "the embedded store cannot be written; /readyz reports it until Conduit restarts");
                }
                *failing = Some(e.to_string());
            }
            _ => {}
        }
    }

    /// The writes are done: flush, then seal what is on disk (see the module docs).
    fn close(&self) -> Result<()> {
        let mut sealed = self.sealed.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*sealed {
            self.db.flush().map_err(sled_err)?;
            let contents = Contents::read(&self.db).map_err(sled_err)?;
            write_seal(&self.seal, contents).map_err(|e| {
                Error::msg(format!(
                    "writing the store seal {:?}: {e}",
                    self.seal.display().to_string()
                ))
            })?;
            *sealed = true;
        }
        Ok(())
    }
}

impl Drop for Inner {
    /// The last handle is gone (the CLI's commands end this way): seal, unless already sealed.
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "the store could not be sealed at close; the next start cannot compare it");
        }
    }
}

impl Sled {
    /// Opens the database under `dir` (`<dir>/store`), checking the schema version.
    pub fn open(dir: &Path) -> Result<Sled> {
        conduit_core::fsperm::create_private_dir(dir)
            .map_err(|e| Error::msg(format!("creating data directory {:?}: {e}", dir.display().to_string())))?;
        let path = dir.join("store");
        // sled checks each page's CRC as it reads it, and may panic on damage it does not expect:
        // both become the one refusal below. Every entry is read once here, so damage is found
        // at start-up, not by the request that happens to touch it (or, worse, by a budget or
        // key lookup that then fails on every request).
        // (Whether the store existed before, not sled's `was_recovered`: sled takes a store whose
        // first segment is damaged for a new one.)
        let existed = path.exists();
        let opened = std::panic::catch_unwind(|| {
            let db = sled::Config::new()
                .path(&path)
                .mode(sled::Mode::HighThroughput)
                .open()?;
            let contents = Contents::read(&db)?;
            Ok::<_, sled::Error>((db, contents))
        });
        let (db, contents) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(e @ (sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)))) => {
                return Err(damaged(&path, &e.to_string()));
            }
            Ok(Err(sled::Error::Unsupported(e))) => {
                return Err(Error::msg(format!(
                    "the store at {:?} cannot be opened by this build ({e}): it was written by another sled version or configuration; run the Conduit release that wrote it",
                    path.display().to_string()
                )));
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("sled panicked reading it");
                // Its first line, bounded: a panic message may quote what it read.
                let what: String = what.lines().next().unwrap_or_default().chars().take(160).collect();
                return Err(damaged(&path, &what));
            }
            Ok(Err(e)) => {
                let hint = if e.to_string().contains("lock") || e.to_string().contains("WouldBlock") {
                    "; another Conduit process (a running gateway) holds it: use the CLI against its admin API, or stop it"
                } else {
                    ""
                };
                return Err(Error::msg(format!(
                    "opening the store at {:?}: {e}{hint}",
                    path.display().to_string()
                )));
            }
        };
        check_seal(dir, &path, contents, existed)?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_err);
        let inner = Inner {
            meta: tree("meta")?,
            keys: tree("keys")?,
            key_ids: tree("key_ids")?,
            credentials: tree("credentials")?,
            spend: tree("spend")?,
            prices: tree("prices")?,
            budgets: tree("budgets")?,
            findings: tree("findings")?,
            policy_modes: tree("policy_modes")?,
            uploads: tree("uploads")?,
            signin: tree("signin")?,
            key_changes: Hub::default(),
            credential_changes: Hub::default(),
            budget_changes: Hub::default(),
            spend_changes: Hub::default(),
            finding_changes: Hub::default(),
            mode_changes: Hub::default(),
            price_changes: Hub::default(),
            meta_changes: Hub::default(),
            seal: dir.join(SEAL),
            sealed: std::sync::RwLock::new(false),
            failing: std::sync::Mutex::new(None),
            db,
        };
        match inner.meta.get(META_SCHEMA).map_err(sled_err)? {
            None => {
                inner
                    .meta
                    .insert(META_SCHEMA, SCHEMA_VERSION.to_string().as_bytes())
                    .map_err(sled_err)?;
                inner.db.flush().map_err(sled_err)?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_string().as_bytes() => {}
            Some(v) => {
                return Err(Error::msg(format!(
                    "the store at {:?} has schema version {}, this build reads version {SCHEMA_VERSION}; run a Conduit release that matches it",
                    path.display().to_string(),
                    String::from_utf8_lossy(&v)
                )));
            }
        }
        Ok(Sled(Arc::new(inner)))
    }

    /// Runs `f` on tokio's blocking pool (fsyncs, scans).
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let _open = inner.unsealed()?;
            let result = f(&inner);
            inner.note(result.as_ref().err());
            result
        })
        .await
        .map_err(|e| Error::msg(format!("a store task failed: {e}")))?
    }
}

/// The seal a clean close leaves beside the store.
const SEAL: &str = "store.seal";

/// What the store holds, in brief: its entries, and a CRC-32 of every tree's name, keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Contents {
    entries: u64,
    crc32: u32,
}

impl Contents {
    /// Reads every entry of every tree, in name order (sled verifies each page's checksum as it
    /// reads it).
    fn read(db: &sled::Db) -> sled::Result<Contents> {
        let mut names = db.tree_names();
        names.sort();
        let mut crc = crc32fast::Hasher::new();
        let mut entries = 0u64;
        for name in names {
            crc.update(&name);
            for entry in db.open_tree(&name)?.iter() {
                let (k, v) = entry?;
                crc.update(&(k.len() as u64).to_le_bytes());
                crc.update(&k);
                crc.update(&(v.len() as u64).to_le_bytes());
                crc.update(&v);
                entries += 1;
            }
        }
        Ok(Contents {
            entries,
            crc32: crc.finalize(),
        })
    }
}

/// Compares the store with the seal of its last clean close, if there is one, then removes the
/// seal — durably, before anything is written — so a later crash leaves none.
fn check_seal(dir: &Path, store: &Path, now: Contents, existed: bool) -> Result<()> {
    let path = dir.join(SEAL);
    let shown = path.display().to_string();
    if !existed && path.exists() {
        // A new store beside an old seal (the store was moved aside, the seal not): nothing to
        // compare.
        tracing::warn!(seal = %shown, "a new store was created beside the seal of an earlier one; the seal is removed");
        return remove_seal(&path);
    }
    let sealed = match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice::<Contents>(&bytes).map_err(|e| {
            Error::msg(format!(
                "the store seal {shown:?} cannot be read ({e}); if the store beside it is known to be good, remove the seal and start again"
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::msg(format!("reading the store seal {shown:?}: {e}"))),
    };
    if let Some(sealed) = sealed
        && sealed != now
    {
        return Err(damaged(
            store,
            &format!(
                "it no longer matches the seal of its last clean close: {} entries (CRC-32 {:08x}) then, {} ({:08x}) now — sled's recovery dropped what it could not read, or a Conduit release that keeps no seal wrote to it since; if you accept the store as it is, remove {shown:?}",
                sealed.entries, sealed.crc32, now.entries, now.crc32
            ),
        ));
    }
    if sealed.is_some() {
        remove_seal(&path)?;
    }
    Ok(())
}

/// Removes the seal durably (the directory synced): a crash after this leaves no seal.
fn remove_seal(path: &Path) -> Result<()> {
    let removed = match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    removed
        .and_then(|()| std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all())
        .map_err(|e| Error::msg(format!("removing the store seal {:?}: {e}", path.display().to_string())))
}

/// Writes the seal atomically (a temporary file, synced, renamed over, the directory synced).
fn write_seal(path: &Path, contents: Contents) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("seal.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(&contents).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The refusal to start on a damaged store: what is wrong, where, and the ways out.
fn damaged(path: &Path, cause: &str) -> Error {
    Error::msg(format!(
        "the store at {:?} is damaged ({cause}); Conduit will not start on it rather than lose or invent keys, credentials, budgets and spend. \
         Restore the data directory from a backup (docs/install.md, \"Backup and restore\"), or move {:?} and {:?} aside to start with an empty store \
         (keys and credentials must then be issued again; every request is still in the audit log: conduit audit export)",
        path.display().to_string(),
        path.display().to_string(),
        path.with_file_name(SEAL).display().to_string(),
    ))
}

/// How every sled failure begins (`Inner::note` tells them from refused values by it).
const SLED_FAILED: &str = "store error";

/// A sled failure, as the one sentence the caller shows.
fn sled_err(e: sled::Error) -> Error {
    Error::msg(format!("{SLED_FAILED}: {e}"))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::msg(format!("corrupt {what} record in the store: {e}")))
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::msg(format!("encoding a {what} record: {e}")))
}

/// Every value of `tree`, decoded as `what` records, in key order.
fn values<T: DeserializeOwned>(tree: &sled::Tree, what: &str) -> Result<Vec<T>> {
    tree.iter()
        .values()
        .map(|v| decode(what, &v.map_err(sled_err)?))
        .collect()
}

/// Every entry of `tree` as `(key text, f(value))`, in key order.
fn entries<T>(tree: &sled::Tree, f: impl Fn(&[u8]) -> Result<T>) -> Result<Vec<(String, T)>> {
    tree.iter()
        .map(|kv| {
            let (k, v) = kv.map_err(sled_err)?;
            Ok((text(&k), f(&v)?))
        })
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn credential_key(provider: &str, id: &str) -> String {
    format!("{provider}/{id}")
}

#[async_trait]
impl KeyStore for Sled {
    async fn insert(&self, hash: &KeyHash, record: &KeyRecord) -> Result<()> {
        let (hash, record) = (*hash, record.clone());
        let id = record.id.clone();
        self.blocking(move |s| {
            let value = encode("key", &record)?;
            use sled::Transactional;
            (&s.keys, &s.key_ids)
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
            s.db.flush().map_err(sled_err)?;
            s.key_changes.send(KeyChange { id, hash });
            Ok(())
        })
        .await
    }

    async fn by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>> {
        let s = &self.0;
        s.keys
            .get(hash.0)
            .map_err(sled_err)?
            .map(|v| decode("key", &v))
            .transpose()
    }

    async fn by_id(&self, id: &str) -> Result<Option<KeyRecord>> {
        let s = &self.0;
        match s.key_ids.get(id.as_bytes()).map_err(sled_err)? {
            Some(hash) => s
                .keys
                .get(hash)
                .map_err(sled_err)?
                .map(|v| decode("key", &v))
                .transpose(),
            None => Ok(None),
        }
    }

    async fn update(&self, record: &KeyRecord) -> Result<()> {
        let record = record.clone();
        self.blocking(move |s| {
            let hash = s
                .key_ids
                .get(record.id.as_bytes())
                .map_err(sled_err)?
                .ok_or_else(|| Error::msg(format!("no key with id {:?}", record.id)))?;
            s.keys.insert(&hash, encode("key", &record)?).map_err(sled_err)?;
            // Revocation must survive a crash right after the CLI said it worked.
            s.db.flush().map_err(sled_err)?;
            let mut h = [0u8; 32];
            if hash.len() == 32 {
                h.copy_from_slice(&hash);
            }
            s.key_changes.send(KeyChange {
                id: record.id,
                hash: KeyHash(h),
            });
            Ok(())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<KeyRecord>> {
        self.blocking(|s| {
            let mut all: Vec<KeyRecord> = values(&s.keys, "key")?;
            all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(all)
        })
        .await
    }

    async fn entries(&self) -> Result<Vec<(KeyHash, KeyRecord)>> {
        self.blocking(|s| {
            s.keys
                .iter()
                .map(|kv| {
                    let (k, v) = kv.map_err(sled_err)?;
                    let hash: [u8; 32] = k
                        .as_ref()
                        .try_into()
                        .map_err(|_| Error::msg("corrupt key in the store: its hash is not 32 bytes"))?;
                    Ok((KeyHash(hash), decode("key", &v)?))
                })
                .collect()
        })
        .await
    }

    fn watch(&self) -> Watch<KeyChange> {
        self.0.key_changes.watch()
    }
}

#[async_trait]
impl CredentialStore for Sled {
    async fn put(&self, c: &SealedCredential) -> Result<()> {
        let c = c.clone();
        self.blocking(move |s| {
            s.credentials
                .insert(credential_key(&c.provider, &c.id), encode("credential", &c)?)
                .map_err(sled_err)?;
            s.db.flush().map_err(sled_err)?;
            s.credential_changes.send(CredentialChange {
                provider: c.provider.clone(),
                id: c.id.clone(),
            });
            Ok(())
        })
        .await
    }

    async fn get(&self, provider: &str, id: &str) -> Result<Option<SealedCredential>> {
        self.0
            .credentials
            .get(credential_key(provider, id))
            .map_err(sled_err)?
            .map(|v| decode("credential", &v))
            .transpose()
    }

    async fn list(&self) -> Result<Vec<SealedCredential>> {
        self.blocking(|s| values(&s.credentials, "credential")).await
    }

    async fn reseal_all(&self, credentials: &[SealedCredential], master_key_id: &str) -> Result<()> {
        let encoded = credentials
            .iter()
            .map(|c| Ok((credential_key(&c.provider, &c.id), encode("credential", c)?)))
            .collect::<Result<Vec<_>>>()?;
        let changed: Vec<CredentialChange> = credentials
            .iter()
            .map(|c| CredentialChange {
                provider: c.provider.clone(),
                id: c.id.clone(),
            })
            .collect();
        let master_key_id = master_key_id.to_string();
        self.blocking(move |s| {
            use sled::Transactional;
            (&s.credentials, &s.meta)
                .transaction(|(creds, meta)| {
                    for (k, v) in &encoded {
                        creds.insert(k.as_bytes(), v.as_slice())?;
                    }
                    meta.insert(META_MASTER_KEY_ID, master_key_id.as_bytes())?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| Error::msg(format!("re-sealing credentials failed, nothing was changed: {e:?}")))?;
            s.db.flush().map_err(sled_err)?;
            for c in changed {
                s.credential_changes.send(c);
            }
            s.meta_changes.send(META_MASTER_KEY_ID.to_string());
            Ok(())
        })
        .await
    }

    fn watch(&self) -> Watch<CredentialChange> {
        self.0.credential_changes.watch()
    }
}

#[async_trait]
impl BudgetLimitStore for Sled {
    async fn list(&self) -> Result<Vec<(String, BudgetLimit)>> {
        self.blocking(|s| entries(&s.budgets, |v| decode("budget", v))).await
    }

    async fn put(&self, scope: &str, limit: &BudgetLimit) -> Result<()> {
        let (scope, limit) = (scope.to_string(), *limit);
        self.blocking(move |s| {
            if limit == BudgetLimit::default() {
                s.budgets.remove(scope.as_bytes()).map_err(sled_err)?;
            } else {
                s.budgets
                    .insert(scope.as_bytes(), encode("budget", &limit)?)
                    .map_err(sled_err)?;
            }
            s.db.flush().map_err(sled_err)?;
            s.budget_changes.send(scope);
            Ok(())
        })
        .await
    }

    fn watch(&self) -> Watch<String> {
        self.0.budget_changes.watch()
    }
}

#[async_trait]
impl SpendStore for Sled {
    async fn add(&self, deltas: &[SpendRow]) -> Result<()> {
        let deltas = deltas.to_vec();
        self.blocking(move |s| {
            // All or nothing (one sled transaction), so a caller may retry a refused batch
            // without counting any row twice.
            let reset = std::cell::RefCell::new(Vec::new());
            s.spend
                .transaction(|tx| {
                    reset.borrow_mut().clear();
                    for e in &deltas {
                        let key = format!("{}\0{}\0{}", e.day, e.key_id, e.model);
                        let mut row: SpendRow = match tx.get(key.as_bytes())?.map(|v| serde_json::from_slice(&v)) {
                            Some(Ok(r)) => r,
                            Some(Err(err)) => {
                                reset
                                    .borrow_mut()
                                    .push(format!("{} {} {}: {err}", e.day, e.key_id, e.model));
                                SpendRow::default()
                            }
                            None => SpendRow::default(),
                        };
                        row.merge_row(e);
                        let value = serde_json::to_vec(&row)
                            .map_err(|err| sled::transaction::ConflictableTransactionError::Abort(err.to_string()))?;
                        tx.insert(key.as_bytes(), value)?;
                    }
                    Ok(())
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Abort(why) => {
                        Error::msg(format!("spend rows not added (nothing was): {why}"))
                    }
                    sled::transaction::TransactionError::Storage(e) => sled_err(e),
                })?;
            for r in reset.borrow().iter() {
                // A corrupt row cannot be repaired from here; what it held is in the audit log.
                tracing::error!(row = %r, "a corrupt spend row was reset before adding to it");
            }
            // One fsync per batch: what a flush returned for survives a crash or an exit.
            s.spend.flush().map_err(sled_err)?;
            if let Some(first) = deltas.first() {
                s.spend_changes.send(first.day.clone());
            }
            Ok(())
        })
        .await
    }

    async fn range(&self, since: &str, until: &str) -> Result<Vec<SpendRow>> {
        let (since, until) = (since.to_string(), until.to_string());
        self.blocking(move |s| {
            let mut rows = Vec::new();
            for kv in s.spend.range(since.as_bytes()..) {
                let (k, v) = kv.map_err(sled_err)?;
                if k.get(..until.len()).is_some_and(|day| day > until.as_bytes()) {
                    break;
                }
                rows.push(decode::<SpendRow>("spend", &v)?);
            }
            Ok(rows)
        })
        .await
    }

    fn watch(&self) -> Watch<String> {
        self.0.spend_changes.watch()
    }
}

#[async_trait]
impl FindingStore for Sled {
    async fn record(&self, findings: &[FindingRecord]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for r in findings {
            batch.insert(r.id.as_bytes(), encode("finding", r)?);
        }
        // On the request path (the policy stage awaits it): applied in memory, inline, and synced
        // by sled's own periodic flush — no fsync per finding (`FindingStore::record`).
        let s = &self.0;
        let _open = s.unsealed()?;
        let applied = s.findings.apply_batch(batch).map_err(sled_err);
        s.note(applied.as_ref().err());
        applied?;
        if let Some(f) = findings.first() {
            s.finding_changes.send(f.id.clone());
        }
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<FindingRecord>> {
        self.blocking(move |s| {
            s.findings
                .iter()
                .rev()
                .take(limit)
                .map(|kv| decode("finding", &kv.map_err(sled_err)?.1))
                .collect()
        })
        .await
    }

    async fn mark_false_positive(&self, id: &str, by: &str) -> Result<Option<FindingRecord>> {
        let (id, by) = (id.to_string(), by.to_string());
        self.blocking(move |s| {
            let Some(v) = s.findings.get(id.as_bytes()).map_err(sled_err)? else {
                return Ok(None);
            };
            let mut record: FindingRecord = decode("finding", &v)?;
            record.false_positive = Some(by);
            s.findings
                .insert(id.as_bytes(), encode("finding", &record)?)
                .map_err(sled_err)?;
            s.findings.flush().map_err(sled_err)?;
            s.finding_changes.send(id);
            Ok(Some(record))
        })
        .await
    }

    async fn prune(&self, before: i64) -> Result<usize> {
        self.blocking(move |s| {
            // Ids are `f_` + hex Unix nanoseconds: the tree is in time order.
            let bound = format!("f_{:016x}", (before.max(0) as u64).saturating_mul(1_000_000_000));
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for k in s.findings.range(..bound.as_bytes()).keys() {
                batch.remove(k.map_err(sled_err)?);
                n += 1;
            }
            if n > 0 {
                s.findings.apply_batch(batch).map_err(sled_err)?;
                s.findings.flush().map_err(sled_err)?;
            }
            Ok(n)
        })
        .await
    }

    fn watch(&self) -> Watch<String> {
        self.0.finding_changes.watch()
    }
}

#[async_trait]
impl PolicyModeStore for Sled {
    async fn list(&self) -> Result<Vec<(String, String)>> {
        self.blocking(|s| entries(&s.policy_modes, |v| Ok(text(v)))).await
    }

    async fn set(&self, key: &str, mode: Option<&str>) -> Result<()> {
        let (key, mode) = (key.to_string(), mode.map(str::to_string));
        self.blocking(move |s| {
            match &mode {
                Some(m) => s.policy_modes.insert(key.as_bytes(), m.as_bytes()),
                None => s.policy_modes.remove(key.as_bytes()),
            }
            .map_err(sled_err)?;
            s.policy_modes.flush().map_err(sled_err)?;
            s.mode_changes.send(key);
            Ok(())
        })
        .await
    }

    fn watch(&self) -> Watch<String> {
        self.0.mode_changes.watch()
    }
}

#[async_trait]
impl PriceStore for Sled {
    async fn overrides(&self) -> Result<Vec<PriceRow>> {
        self.blocking(|s| values(&s.prices, "price")).await
    }

    async fn put_overrides(&self, rows: &[PriceRow]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for r in rows {
            batch.insert(format!("{}\0{}", r.provider, r.model).as_bytes(), encode("price", r)?);
        }
        self.blocking(move |s| {
            s.prices.apply_batch(batch).map_err(sled_err)?;
            s.db.flush().map_err(sled_err)?;
            s.price_changes.send(());
            Ok(())
        })
        .await
    }

    fn watch(&self) -> Watch<()> {
        self.0.price_changes.watch()
    }
}

#[async_trait]
impl UploadStore for Sled {
    async fn put(&self, record: &UploadRecord) -> Result<()> {
        let key = format!("{}/{}", record.provider, record.id);
        let value = encode("upload", record)?;
        self.blocking(move |s| {
            s.uploads.insert(key.as_bytes(), value).map_err(sled_err)?;
            s.uploads.flush().map_err(sled_err)?;
            Ok(())
        })
        .await
    }

    async fn get(&self, provider: &str, id: &str) -> Result<Option<UploadRecord>> {
        self.0
            .uploads
            .get(format!("{provider}/{id}").as_bytes())
            .map_err(sled_err)?
            .map(|v| decode("upload", &v))
            .transpose()
    }

    async fn list(&self) -> Result<Vec<UploadRecord>> {
        self.blocking(|s| values(&s.uploads, "upload")).await
    }
}

#[async_trait]
impl MetaStore for Sled {
    async fn get(&self, name: &str) -> Result<Option<String>> {
        Ok(self.0.meta.get(name).map_err(sled_err)?.map(|v| text(&v)))
    }

    async fn set(&self, name: &str, value: &str) -> Result<()> {
        let (name, value) = (name.to_string(), value.to_string());
        self.blocking(move |s| {
            s.meta.insert(name.as_bytes(), value.as_bytes()).map_err(sled_err)?;
            s.db.flush().map_err(sled_err)?;
            s.meta_changes.send(name);
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.0.meta.get(META_SCHEMA).map_err(sled_err)?;
        // Reads are served from memory even when the disk refuses writes: say why writes fail.
        let failing = self
            .0
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match failing {
            Some(why) => Err(Error::msg(format!(
                "{why} — writes to the embedded store fail (spend rows wait in memory; keys and credentials cannot change); free space on its disk, then restart Conduit: sled does not resume writing after a failed write, and the audit log has every request"
            ))),
            None => Ok(()),
        }
    }

    fn watch(&self) -> Watch<String> {
        self.0.meta_changes.watch()
    }

    async fn close(&self) -> Result<()> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || inner.close())
            .await
            .map_err(|e| Error::msg(format!("a store task failed: {e}")))?
    }
}

#[async_trait]
impl SignInStore for Sled {
    async fn get(&self, name: &str) -> Result<Option<String>> {
        Ok(self.0.signin.get(name).map_err(sled_err)?.map(|v| text(&v)))
    }

    async fn swap(&self, name: &str, expected: Option<&str>, new: Option<&str>) -> Result<bool> {
        let (name, expected, new) = (name.to_string(), expected.map(str::to_owned), new.map(str::to_owned));
        self.blocking(move |s| {
            let swapped = s
                .signin
                .compare_and_swap(name.as_bytes(), expected.as_deref(), new.as_deref())
                .map_err(sled_err)?
                .is_ok();
            if swapped {
                s.db.flush().map_err(sled_err)?;
            }
            Ok(swapped)
        })
        .await
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let prefix = prefix.to_string();
        self.blocking(move |s| {
            s.signin
                .scan_prefix(prefix.as_bytes())
                .map(|kv| kv.map(|(k, v)| (text(&k), text(&v))).map_err(sled_err))
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct AtDir(std::path::PathBuf);

    #[async_trait]
    impl conduit_state::conformance::Backend for AtDir {
        async fn open(&self, budget_defaults: &[(String, BudgetLimit)]) -> Result<State> {
            open(&self.0, budget_defaults).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_state_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        conduit_state::conformance::run(&AtDir(dir.path().to_path_buf())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newer_schema_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let state = open(dir.path(), &[]).await.unwrap();
            state.meta.set(META_SCHEMA, "99").await.unwrap();
        }
        let err = open(dir.path(), &[]).await.err().unwrap().to_string();
        assert!(
            err.contains("schema version 99") && err.contains("reads version 1"),
            "{err}"
        );
    }

    /// Issue 20: a store damaged on disk (a failing disk, a bad restore, a truncated copy) is
    /// refused at open with the path and the ways out — never opened half-readable, never a panic.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_store_is_refused_at_open_naming_the_path_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        {
            let state = open(dir.path(), &[]).await.unwrap();
            for i in 0..200 {
                state.meta.set(&format!("filler-{i}"), &"x".repeat(200)).await.unwrap();
            }
        }
        let db = dir.path().join("store").join("db");
        let good = std::fs::read(&db).unwrap();
        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 3] = [
            ("bytes flipped", |d: &mut Vec<u8>| {
                for i in (0..d.len()).step_by(997) {
                    d[i] ^= 0x5a;
                }
            }),
            ("truncated", |d: &mut Vec<u8>| d.truncate(1000)),
            ("emptied", |d: &mut Vec<u8>| d.clear()),
        ];
        for (what, damage) in damages {
            let mut bytes = good.clone();
            damage(&mut bytes);
            std::fs::write(&db, &bytes).unwrap();
            let err = open(dir.path(), &[])
                .await
                .err()
                .unwrap_or_else(|| panic!("{what}: opened"))
                .to_string();
            assert!(
                err.contains("is damaged") && err.contains("store") && err.contains("Backup and restore"),
                "{what}: {err}"
            );
        }
        std::fs::write(&db, &good).unwrap();
        let seal = dir.path().join(SEAL);
        let sealed = std::fs::read(&seal).expect("a clean close leaves a seal");
        // A seal that does not match (as sled's recovery leaves a store damaged at rest: it ends
        // the log at the first bad entry and opens what precedes) is refused, naming the way out.
        let other = serde_json::to_vec(&Contents { entries: 1, crc32: 7 }).unwrap();
        std::fs::write(&seal, &other).unwrap();
        let err = open(dir.path(), &[]).await.err().unwrap().to_string();
        assert!(
            err.contains("no longer matches the seal") && err.contains("remove"),
            "{err}"
        );
        std::fs::write(&seal, b"{not json").unwrap();
        let err = open(dir.path(), &[]).await.err().unwrap().to_string();
        assert!(err.contains("cannot be read"), "{err}");
        std::fs::write(&seal, &sealed).unwrap();
        {
            let _state = open(dir.path(), &[]).await.expect("the undamaged store opens again");
            assert!(
                !seal.exists(),
                "the seal is removed while the store is open: a crash leaves none"
            );
        }
        assert!(seal.exists(), "…and written again at the close");
        // The store moved aside, its seal left behind: the new, empty store opens.
        std::fs::rename(dir.path().join("store"), dir.path().join("store.old")).unwrap();
        drop(
            open(dir.path(), &[])
                .await
                .expect("a new store beside an old seal opens"),
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_process_is_told_to_use_the_admin_api() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Sled::open(dir.path()).unwrap();
        let err = Sled::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("admin API"), "{err}");
    }
}
