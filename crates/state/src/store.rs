//! The seam between Conduit and where its state lives: one narrow, async trait per kind of state,
//! each with a way to watch changes, bundled in [`crate::State`]. A backend is a crate that implements
//! them (`conduit-state-sled` today); the gateway, the admin API and the CLI see only these traits,
//! and `conformance` is the suite every backend must pass.
//!
//! Rules every implementation keeps:
//! - **No blocking on the caller's task.** A call that waits on a disk or a network runs where it
//!   does not stall a request (sled: fsyncs and scans on the blocking pool; reads of hot records,
//!   served from sled's page cache in microseconds, inline).
//! - **A write is durable when it returns**, except spend rows, which are durable after
//!   [`SpendStore::add`] returns for the whole batch (the ledger folds them first), and findings
//!   ([`FindingStore::record`]), which the policy stage writes on the request path: they may be
//!   synced later (their metadata is in the request's audit record too).
//! - **Watchers hear every change made through this process** once the write is durable, before
//!   the call returns; a watcher that falls behind gets `RecvError::Lagged` and must assume
//!   everything changed. (A shared backend also relays the changes other processes make.)
//! - Errors are one specific sentence naming what failed ([`conduit_core::Error`]).

use async_trait::async_trait;
use tokio::sync::broadcast;

use conduit_core::error::Result;
use conduit_core::keys::KeyHash;
use conduit_core::seal::SealedCredential;
use conduit_wire::prices::PriceRow;

use crate::records::{BudgetLimit, FindingRecord, KeyRecord, SpendRow, UploadRecord};

/// The id a change carries when a backend cannot say what changed (a shared backend's listener
/// reconnected after a gap): whatever a watcher caches of that kind may be stale.
pub const EVERYTHING: &str = "*";

/// A subscription to one kind of change.
pub type Watch<C> = broadcast::Receiver<C>;

/// Where a backend announces the changes of one kind. Sending never blocks and never fails: with
/// no watcher the change is simply not heard.
#[derive(Debug)]
pub struct Hub<C: Clone>(broadcast::Sender<C>);

impl<C: Clone> Default for Hub<C> {
    fn default() -> Self {
        Hub(broadcast::channel(1024).0)
    }
}

impl<C: Clone> Hub<C> {
    /// Announces a change.
    pub fn send(&self, change: C) {
        let _ = self.0.send(change);
    }

    /// A new subscription (hears changes sent from now on).
    pub fn watch(&self) -> Watch<C> {
        self.0.subscribe()
    }
}

/// A key was added or its record changed (revoked, new limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// Key id.
    pub id: String,
    /// Its hash (how the request path finds it).
    pub hash: KeyHash,
}

/// A credential was set or re-sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialChange {
    /// Provider name.
    pub provider: String,
    /// Credential id within the provider.
    pub id: String,
}

/// Stand-in keys: only their hashes and records, never the secrets.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Adds a new key; fails, naming the id, if the id or the hash exists.
    async fn insert(&self, hash: &KeyHash, record: &KeyRecord) -> Result<()>;
    /// The record of a presented key, by its hash (the request path).
    async fn by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>>;
    /// A key by id.
    async fn by_id(&self, id: &str) -> Result<Option<KeyRecord>>;
    /// Replaces an existing key's record (revoke, update); fails, naming the id, if there is none.
    async fn update(&self, record: &KeyRecord) -> Result<()>;
    /// All keys, oldest first.
    async fn list(&self) -> Result<Vec<KeyRecord>>;
    /// Every key's hash with its record (moving a store: `conduit store copy`).
    async fn entries(&self) -> Result<Vec<(KeyHash, KeyRecord)>>;
    /// Keys added or changed.
    fn watch(&self) -> Watch<KeyChange>;
}

/// Provider credentials, sealed under the master key (this layer never sees plaintext).
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// Stores (replaces) a sealed credential.
    async fn put(&self, credential: &SealedCredential) -> Result<()>;
    /// The credential `id` of `provider`.
    async fn get(&self, provider: &str, id: &str) -> Result<Option<SealedCredential>>;
    /// All sealed credentials.
    async fn list(&self) -> Result<Vec<SealedCredential>>;
    /// Atomically replaces all credentials and the recorded master key id (master key rotation):
    /// afterwards either everything is sealed under the new key, or nothing changed.
    async fn reseal_all(&self, credentials: &[SealedCredential], master_key_id: &str) -> Result<()>;
    /// Credentials set or re-sealed.
    fn watch(&self) -> Watch<CredentialChange>;
}

/// The budget limits set at run time (CLI, admin API), by scope: `org`, `team:NAME`, `key:ID`.
/// Enforcement (reserve, settle) is [`Budgets`], which reads these.
#[async_trait]
pub trait BudgetLimitStore: Send + Sync + 'static {
    /// Every stored limit.
    async fn list(&self) -> Result<Vec<(String, BudgetLimit)>>;
    /// Sets a scope's limit; an empty limit removes it.
    async fn put(&self, scope: &str, limit: &BudgetLimit) -> Result<()>;
    /// Scopes whose limit changed.
    fn watch(&self) -> Watch<String>;
}

/// The spend ledger's rows: counters per UTC day × key × model.
#[async_trait]
pub trait SpendStore: Send + Sync + 'static {
    /// Adds each delta (one or more requests folded) to its row, all or nothing: durable when it
    /// returns `Ok`, and nothing added when it returns an error, so the ledger retries a refused
    /// batch without counting a row twice.
    async fn add(&self, deltas: &[SpendRow]) -> Result<()>;
    /// Rows for UTC days `since..=until` (YYYY-MM-DD).
    async fn range(&self, since: &str, until: &str) -> Result<Vec<SpendRow>>;
    /// Rows were added (the day of each batch's first row).
    fn watch(&self) -> Watch<String>;
}

/// Policy findings: metadata only, never the matched text.
#[async_trait]
pub trait FindingStore: Send + Sync + 'static {
    /// Appends findings; called on the request path, so it must not wait on a disk (durable
    /// within the backend's flush interval).
    async fn record(&self, findings: &[FindingRecord]) -> Result<()>;
    /// Findings, newest first, at most `limit`.
    async fn list(&self, limit: usize) -> Result<Vec<FindingRecord>>;
    /// Marks a finding as a false positive; `None` if there is no such finding.
    async fn mark_false_positive(&self, id: &str, by: &str) -> Result<Option<FindingRecord>>;
    /// Removes findings recorded before `before` (Unix seconds); returns how many (retention).
    async fn prune(&self, before: i64) -> Result<usize>;
    /// Findings recorded or marked (their ids).
    fn watch(&self) -> Watch<String>;
}

/// Run-time policy mode overrides: category or prefix → `off|alert|block`.
#[async_trait]
pub trait PolicyModeStore: Send + Sync + 'static {
    /// Every override.
    async fn list(&self) -> Result<Vec<(String, String)>>;
    /// Sets (or with `None` clears) an override.
    async fn set(&self, key: &str, mode: Option<&str>) -> Result<()>;
    /// Keys whose override changed.
    fn watch(&self) -> Watch<String>;
}

/// The organisation's price overrides (rows replacing or adding to the shipped table).
#[async_trait]
pub trait PriceStore: Send + Sync + 'static {
    /// Every override.
    async fn overrides(&self) -> Result<Vec<PriceRow>>;
    /// Adds or replaces overrides (by provider and model).
    async fn put_overrides(&self, rows: &[PriceRow]) -> Result<()>;
    /// Overrides changed.
    fn watch(&self) -> Watch<()>;
}

/// Files uploaded through the gateway (what was scanned; a batch file's requests).
#[async_trait]
pub trait UploadStore: Send + Sync + 'static {
    /// Records an upload.
    async fn put(&self, record: &UploadRecord) -> Result<()>;
    /// An upload, by provider and the provider's file id.
    async fn get(&self, provider: &str, id: &str) -> Result<Option<UploadRecord>>;
    /// Every upload (moving a store).
    async fn list(&self) -> Result<Vec<UploadRecord>>;
}

/// Sign-in state (`crate::signin`): device grants, sessions and user records, each one JSON value
/// under a name. Every write is a compare-and-swap, so two replicas can never both consume one
/// device code or both rotate one refresh token: the loser sees `false` and re-reads.
#[async_trait]
pub trait SignInStore: Send + Sync + 'static {
    /// The value under `name`.
    async fn get(&self, name: &str) -> Result<Option<String>>;
    /// Sets `name` to `new` (`None` deletes it) if it holds `expected` now (`None`: absent);
    /// whether it did. Durable when it returns `true`.
    async fn swap(&self, name: &str, expected: Option<&str>, new: Option<&str>) -> Result<bool>;
    /// Every `(name, value)` whose name starts with `prefix`, in name order.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, String)>>;
}

/// Small named values: the master key id, the schema version.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// A value.
    async fn get(&self, name: &str) -> Result<Option<String>>;
    /// Sets a value.
    async fn set(&self, name: &str, value: &str) -> Result<()>;
    /// A cheap round trip proving the backend answers (`/readyz`).
    async fn ping(&self) -> Result<()>;
    /// Names whose value changed.
    fn watch(&self) -> Watch<String>;
    /// The process is stopping and its writes are done: an embedded store seals itself, so the
    /// next start can tell damage at rest from a clean stop (conduit-state-sled). An operation
    /// after it is still served (and unseals). A shared database has nothing to do.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
